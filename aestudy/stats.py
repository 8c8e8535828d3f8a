"""Statistics over training seeds (the replicates of a claim about models) and over evaluation images.

Taught in notebook 03 ("How a claim compares two models") and used by every notebook's comparative claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr

from aestudy.errors import ConfigError

# --- aggregation over seeds and evaluation images ------------------------------------------------------

def mean_sd(df: pd.DataFrame, by: str | Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean, sample sd (ddof = 1; NaN for one seed) and count of `values` per group, columns `v_mean`, `v_sd`, `n`."""
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (*keys, *values) if c not in df.columns]
    if missing:
        raise ConfigError(f"mean_sd: columns {missing} are not in the table; it has {list(df.columns)}.")
    grouped = df.groupby(keys, sort=False)[list(values)]
    out = pd.concat({"mean": grouped.mean(), "sd": grouped.std(ddof=1)}, axis=1)
    out.columns = [f"{value}_{stat}" for stat, value in out.columns]
    out = out[[f"{v}_{s}" for v in values for s in ("mean", "sd")]]
    out["n"] = grouped.size()
    return out


def mean_sd_text(df: pd.DataFrame, by: str | Sequence[str], values: Sequence[str], *,
                 digits: int = 4) -> pd.DataFrame:
    """The same groups as `mean_sd` rendered as "mean ± sd" strings (`digits` significant digits)."""
    stats = mean_sd(df, by, values)

    def text(mean: float, sd: float) -> str:
        return f"{mean:.{digits}g}" if not math.isfinite(sd) else f"{mean:.{digits}g} ± {sd:.2g}"

    return pd.DataFrame({v: [text(m, s) for m, s in zip(stats[f"{v}_mean"], stats[f"{v}_sd"], strict=True)]
                         for v in values}, index=stats.index)


def per_seed(df: pd.DataFrame, model: str, column: str, **where: Any) -> np.ndarray:
    """The values of `column` for `model` (one per seed), optionally filtered by other columns (`source=...`)."""
    rows = df[df["model"] == model]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if rows.empty:
        raise ConfigError(f"no rows for model={model!r} {where} in the {column!r} table.")
    return rows[column].to_numpy(dtype=float)


def consistently_lower(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether every value of `a` is below every value of `b`: a difference that no pair of seeds contradicts."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError(f"consistently_lower needs non-empty finite values; got {a.tolist()} and {b.tolist()}.")
    return bool(a.max() < b.min())


def lower_in_every_seed(df: pd.DataFrame, column: str, low: str, high: str, **where: Any) -> bool:
    """Whether model `low` has a lower `column` than model `high` in every seed pairing (see consistently_lower)."""
    return consistently_lower(per_seed(df, low, column, **where), per_seed(df, high, column, **where))


def means(df: pd.DataFrame, by: str, value: str) -> dict[Any, float]:
    """The mean of `value` per level of `by` (over seeds), as a plain dict."""
    return {k: float(v) for k, v in df.groupby(by, sort=False)[value].mean().items()}


def sign_test(timing: pd.DataFrame, faster: str, slower: str) -> dict[str, float]:
    """Paired sign test over timing rounds: in how many rounds `faster` took less time per step than `slower`.

    Returns wins, rounds, and the one-sided binomial p-value (scipy) of that many wins if neither were faster.
    """
    pivot = timing.pivot_table(index="round", columns="model", values="seconds_per_step")
    wins, rounds = int((pivot[faster] < pivot[slower]).sum()), len(pivot)
    p_value = float(binomtest(wins, rounds, 0.5, alternative="greater").pvalue)
    return {"wins": wins, "rounds": rounds, "p_value": p_value}


def spearman_table(df: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Spearman rank correlation ρ and its two-sided p-value (scipy.stats.spearmanr) for each column pair."""
    rows = []
    for x, y in pairs:
        missing = [c for c in (x, y) if c not in df.columns]
        if missing:
            raise ConfigError(f"spearman_table: columns {missing} are not in the table; it has {list(df.columns)}.")
        result = spearmanr(df[x], df[y])
        rows.append({"x": x, "y": y, "rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(df)})
    return pd.DataFrame(rows)
