"""`aestudy compare RUN_A RUN_B`: what changed between two runs, as markdown and one self-contained HTML page.

Three tables, read from each run's `metrics.json`:

* **parameters that differ**: every notebook's effective parameters, plus the run-level settings (profile,
  device, git commit, package versions);
* **verdicts that flipped**: claims whose verdict (holds / does not hold / inconclusive, see
  `aestudy.runner.report.claim_verdict`) differs, and claims recorded in one run only;
* **metrics with their change**: every number the notebooks recorded (scalars, and the numeric cells of
  table and dict metrics), each claim's effect when it has one, and each notebook's wall time, with B − A and
  the relative change; numbers equal in both runs are counted, not listed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aestudy.runner.report import (
    COMPARISON_METRIC,
    CONFIG_METRICS,
    FIGURES_METRIC,
    Block,
    claim_stats,
    claim_verdict,
    render_html,
    render_markdown,
    resolve_run_dir,
)

PARAMETER_COLUMNS: tuple[str, ...] = ("notebook", "parameter", "A", "B")
METRIC_COLUMNS: tuple[str, ...] = ("notebook", "metric", "A", "B", "change", "relative change")
VERDICT_COLUMNS: tuple[str, ...] = ("notebook", "claim", "statement", "verdict in A", "verdict in B")
RUN_LEVEL = "(run)"
ABSENT = "(absent)"


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: the differing parameters, flipped verdicts and changed metrics (see module doc)."""

    run_a: Path
    run_b: Path
    parameters: pd.DataFrame
    verdicts: pd.DataFrame
    metrics: pd.DataFrame
    unchanged_metrics: int


def _load(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def _show(value: Any) -> str:
    return ABSENT if value is _MISSING else json.dumps(value, ensure_ascii=False)


_MISSING = object()


def _run_settings(metrics: Mapping[str, Any]) -> dict[str, Any]:
    env = metrics.get("environment") or {}
    settings = {"profile": metrics.get("profile"), "device": (env.get("device") or {}).get("requested"),
                "device (resolved)": (env.get("device") or {}).get("resolved"),
                "git commit": (env.get("git") or {}).get("commit")}
    settings |= {f"package {name}": version for name, version in (env.get("packages") or {}).items()}
    return settings


def _parameters(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    per_notebook = (metrics.get("environment") or {}).get("parameters")
    if not per_notebook:
        per_notebook = {name: entry.get("parameters") or {} for name, entry in metrics.get("notebooks", {}).items()}
    return {RUN_LEVEL: _run_settings(metrics), **per_notebook}


def parameter_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    """Rows (notebook, parameter, A, B) for every parameter or run setting whose value differs (JSON text)."""
    pa, pb = _parameters(a), _parameters(b)
    rows = []
    for notebook in dict.fromkeys([*pa, *pb]):
        left, right = pa.get(notebook, {}), pb.get(notebook, {})
        for name in dict.fromkeys([*left, *right]):
            va, vb = left.get(name, _MISSING), right.get(name, _MISSING)
            if va != vb:
                rows.append({"notebook": notebook, "parameter": name, "A": _show(va), "B": _show(vb)})
    return pd.DataFrame(rows, columns=list(PARAMETER_COLUMNS))


def _claims(metrics: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {str(c.get("id")): (name, c) for name, entry in metrics.get("notebooks", {}).items()
            for c in entry.get("claims", [])}


def verdict_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    """Rows (notebook, claim, statement, verdict in A, verdict in B) for claims whose verdict differs or that one
    run lacks."""
    ca, cb = _claims(a), _claims(b)
    rows = []
    for claim_id in dict.fromkeys([*ca, *cb]):
        notebook, claim = ca.get(claim_id) or cb[claim_id]
        va = claim_verdict(ca[claim_id][1]) if claim_id in ca else ABSENT
        vb = claim_verdict(cb[claim_id][1]) if claim_id in cb else ABSENT
        if va != vb:
            rows.append({"notebook": notebook, "claim": claim_id, "statement": claim.get("statement"),
                         "verdict in A": va, "verdict in B": vb})
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


_LABEL_CHARS = 40  # the longest text cell used in a row's name


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row_label(row: Mapping[str, Any], index: int) -> str:
    """A table row's name: its short text cells (e.g. `VAE/prior`), else its position.

    Skipped: non-finite numbers the ledger stores as text ("nan", "inf": a cell, not a name) and long texts (an
    evidence sentence would make the key unreadable)."""
    texts = [v for v in row.values() if isinstance(v, str) and v.strip() and len(v) <= _LABEL_CHARS
             and v.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity")]
    return "/".join(texts) if texts else str(index)


def numbers(metrics: Mapping[str, Any]) -> Iterator[tuple[str, str, float]]:
    """Every recorded number of a run as (notebook, name, value): scalar metrics, numeric cells of table metrics
    (`metric[row].column`), numeric values of dict metrics (`metric.key`), claim effects, wall times."""
    for notebook, entry in metrics.get("notebooks", {}).items():
        if _is_number(entry.get("wall_s")):
            yield notebook, "wall time (s)", float(entry["wall_s"])
        for name, value in (entry.get("metrics") or {}).items():
            if name in (COMPARISON_METRIC, FIGURES_METRIC, *CONFIG_METRICS):
                continue
            if _is_number(value):
                yield notebook, name, float(value)
            elif isinstance(value, list):
                for i, row in enumerate(value):
                    if isinstance(row, Mapping):
                        label = _row_label(row, i)
                        for column, cell in row.items():
                            if _is_number(cell):
                                yield notebook, f"{name}[{label}].{column}", float(cell)
                    elif _is_number(row):
                        yield notebook, f"{name}[{i}]", float(row)
            elif isinstance(value, Mapping):
                for key, inner in value.items():
                    if _is_number(inner):
                        yield notebook, f"{name}.{key}", float(inner)
        for claim in entry.get("claims", []):
            stats = claim_stats(claim)
            if _is_number(stats.get("effect")):
                yield notebook, f"effect of {claim.get('id')}", float(stats["effect"])


def metric_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[pd.DataFrame, int]:
    """Rows (notebook, metric, A, B, change = B − A, relative change = change / |A|) for every number that
    differs or exists in one run only, and the count of numbers equal in both."""
    na = {(nb, name): value for nb, name, value in numbers(a)}
    nb_ = {(nb, name): value for nb, name, value in numbers(b)}
    rows, unchanged = [], 0
    for key in dict.fromkeys([*na, *nb_]):
        va, vb = na.get(key), nb_.get(key)
        if va is not None and vb is not None and va == vb:
            unchanged += 1
            continue
        change = None if va is None or vb is None else vb - va
        relative = None if change is None or va == 0 else f"{change / abs(va):+.1%}"
        rows.append({"notebook": key[0], "metric": key[1], "A": ABSENT if va is None else va,
                     "B": ABSENT if vb is None else vb, "change": change, "relative change": relative})
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS)), unchanged


def compare_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]) -> RunComparison:
    """Compare two run folders (each holding `metrics.json`; `runs/latest` links are followed).

    Raises ConfigError when a folder holds no run.
    """
    dir_a, dir_b = resolve_run_dir(run_a), resolve_run_dir(run_b)
    a, b = _load(dir_a), _load(dir_b)
    metrics, unchanged = metric_changes(a, b)
    return RunComparison(dir_a, dir_b, parameter_changes(a, b), verdict_changes(a, b), metrics, unchanged)


def comparison_blocks(comparison: RunComparison) -> list[Block]:
    """The comparison as report blocks (rendered by aestudy.runner.report's markdown and HTML renderers)."""
    c = comparison
    blocks = [
        Block("h1", f"Comparing runs {c.run_a.name} and {c.run_b.name}"),
        Block("p", f"A = `{c.run_a}` · B = `{c.run_b}`: {len(c.parameters)} parameter(s) differ, "
                   f"{len(c.verdicts)} verdict(s) flipped, {len(c.metrics)} number(s) changed "
                   f"({c.unchanged_metrics} unchanged)."),
        Block("h2", "Parameters that differ"),
    ]
    blocks.append(Block("table", c.parameters) if len(c.parameters) else Block("p", "None."))
    blocks.append(Block("h2", "Verdicts that flipped"))
    blocks.append(Block("table", c.verdicts) if len(c.verdicts) else Block("p", "None: every claim has the same "
                                                                                "verdict in both runs."))
    blocks.append(Block("h2", "Metrics with their change"))
    blocks.append(Block("table", c.metrics) if len(c.metrics) else Block("p", "None: every number is equal."))
    return blocks


def write_comparison(comparison: RunComparison, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write `compare.md` and `compare.html` into folder `out` (created); return their paths."""
    from aestudy.atomic import atomic_write

    folder = Path(out)
    blocks = comparison_blocks(comparison)
    md, page = folder / "compare.md", folder / "compare.html"
    atomic_write(md, lambda handle: handle.write(render_markdown(blocks, folder).encode("utf-8")))
    atomic_write(page, lambda handle: handle.write(render_html(blocks).encode("utf-8")))
    return md, page



