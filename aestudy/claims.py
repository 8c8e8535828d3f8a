"""The claims ledger: every claim a notebook makes is recorded with its evidence in `metrics.json`.

Two kinds of claim:

* **asserted** — the study's own logic depends on it (e.g. ELBO ≤ log p(x)). In the `standard` and `full`
  profiles a failing asserted claim raises `ClaimFailed` after it has been recorded; in `smoke` (tiny runs
  cannot settle claims) it is only recorded.
* **examined** — a textbook statement under test (e.g. "the VAE generalises better"). Its verdict is recorded
  either way and it never raises; the report shows which held and which did not. A comparative one goes through
  `aestudy.stats.compare` (or `compare_auroc` / `compare_accuracy`) and `examine`, which records the three-way
  verdict ("holds", "does not hold", "inconclusive") with its effect, interval, p-value, seeds and test.

Sanity is enforced in every profile and for both kinds: each measured number must be finite, and every
`bounds={"name": (lo, hi)}` entry must hold.

The ledger file is the `path` argument, else `$AESTUDY_METRICS_FILE` (where `aestudy run` puts each
notebook's ledger), else `runs/interactive/metrics.json` in the checkout (git-ignored; a notebook run by hand in
JupyterLab leaves nothing untracked), else `~/.cache/aestudy/interactive/metrics.json` for an installed package.
Layout: ``{"schema": 1, "notebooks": {NOTEBOOK: {"claims": [record, ...], "metrics": {name: value}}}}``,
NOTEBOOK being the name the notebook gives its `Study`. Writes are read-modify-write under a file lock and
atomic, so concurrent notebooks sharing one file never lose each other's records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

from aestudy.atomic import atomic_write_json
from aestudy.config import resolve_profile
from aestudy.errors import ClaimFailed, ConfigError, DataError
from aestudy.stats import Verdict

SCHEMA = 1
METRICS_FILE_ENV = "AESTUDY_METRICS_FILE"
DEFAULT_NOTEBOOK = "notebook"
KINDS: tuple[str, ...] = ("asserted", "examined")
ENFORCING_PROFILES: tuple[str, ...] = ("standard", "full")
TABLE_COLUMNS: tuple[str, ...] = ("id", "kind", "statement", "measured", "holds", "enforced")
# Columns of the statistical verdict (examined comparative claims; empty for the others).
VERDICT_COLUMNS: tuple[str, ...] = ("verdict", "effect", "ci", "p_value", "n_seeds", "test")


def interactive_ledger() -> Path:
    """Where a notebook run by hand keeps its ledger: the checkout's git-ignored `runs/interactive/metrics.json`,
    or `~/.cache/aestudy/interactive/metrics.json` when aestudy is installed without a checkout."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists() and (checkout / "notebooks").is_dir():
        return checkout / "runs" / "interactive" / "metrics.json"
    return Path("~/.cache/aestudy/interactive/metrics.json").expanduser()


def metrics_path(path: str | os.PathLike | None = None) -> Path:
    """The ledger file: `path`, else $AESTUDY_METRICS_FILE (set by `aestudy run`), else `interactive_ledger()`."""
    if path is not None:
        return Path(path)
    return Path(os.environ[METRICS_FILE_ENV]) if os.environ.get(METRICS_FILE_ENV) else interactive_ledger()


def notebook_name(notebook: str | None = None) -> str:
    """The notebook a record belongs to: `notebook` (a Study passes its own name), else "notebook"."""
    return notebook or DEFAULT_NOTEBOOK


def to_jsonable(value: Any) -> Any:
    """Convert numbers, tensors, arrays, paths and containers to plain JSON (non-finite floats as strings)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        # JSON has no NaN/inf; keep them visible as text rather than dropping them.
        return number if math.isfinite(number) else str(number)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _empty_ledger() -> dict[str, Any]:
    return {"schema": SCHEMA, "notebooks": {}}


def load_metrics(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read the ledger (an empty one when the file does not exist yet)."""
    file = metrics_path(path)
    if not file.exists():
        return _empty_ledger()
    try:
        ledger = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"The metrics file {file} is not valid JSON ({exc}); delete it or point "
            f"${METRICS_FILE_ENV} at a fresh file."
        ) from exc
    if not isinstance(ledger, dict) or ledger.get("schema") != SCHEMA or "notebooks" not in ledger:
        raise DataError(f"The metrics file {file} is not an aestudy ledger with schema {SCHEMA}.")
    return ledger


def _update_notebook(notebook: str | None, change: Callable[[dict[str, Any]], None],
                     path: str | os.PathLike | None = None) -> None:
    """Apply `change` to one notebook's entry under the file lock, then write the ledger atomically."""
    file = metrics_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(file) + ".lock"):
        ledger = load_metrics(file)
        entry = ledger["notebooks"].setdefault(notebook_name(notebook), {"claims": [], "metrics": {}})
        entry.setdefault("claims", [])
        entry.setdefault("metrics", {})
        change(entry)
        atomic_write_json(file, ledger, allow_nan=False)


def record_metric(name: str, value: Any, *, notebook: str | None = None,
                  path: str | os.PathLike | None = None) -> None:
    """Store a named measurement (replacing an earlier value of the same name) in the ledger at `path`."""
    plain = to_jsonable(value)

    def change(entry: dict[str, Any]) -> None:
        entry["metrics"][str(name)] = plain

    _update_notebook(notebook, change, path)


def _numbers(value: Any, name: str) -> list[tuple[str, float]]:
    """Every number inside `value` (recursing into containers and tensors), labelled by its path."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _numbers(value.item(), name)
        return [pair for i, v in enumerate(value.tolist()) for pair in _numbers(v, f"{name}[{i}]")]
    if isinstance(value, (bool, np.bool_)):
        return []
    if isinstance(value, numbers.Real):
        return [(name, float(value))]
    if isinstance(value, Mapping):
        return [pair for k, v in value.items() for pair in _numbers(v, f"{name}.{k}")]
    if isinstance(value, (list, tuple)):
        return [pair for i, v in enumerate(value) for pair in _numbers(v, f"{name}[{i}]")]
    return []


def _sanity_problems(measured: Mapping[str, Any], bounds: Mapping[str, tuple[float | None, float | None]]
                     ) -> list[str]:
    """Non-finite measured numbers and violated bounds, as readable sentences."""
    problems = [f"{label} = {number} is not finite"
                for key, value in measured.items() for label, number in _numbers(value, str(key))
                if not math.isfinite(number)]
    for key, (lo, hi) in bounds.items():
        for label, number in _numbers(measured[key], str(key)):
            if not math.isfinite(number):
                continue
            if (lo is not None and number < lo) or (hi is not None and number > hi):
                problems.append(f"{label} = {number:.6g} is outside its bounds [{lo}, {hi}]")
    return problems


def _validate_claim_args(claim_id: str, measured: Any, kind: str,
                         bounds: Mapping[str, Any] | None) -> dict[str, tuple[float | None, float | None]]:
    if not isinstance(claim_id, str) or not claim_id:
        raise ConfigError(f"claim_id={claim_id!r} is invalid; it must be a non-empty string.")
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is not a claim kind; valid values: {', '.join(KINDS)}.")
    if not isinstance(measured, Mapping):
        raise ConfigError(f"measured={measured!r} is invalid; it must be a dict of named values.")
    checked: dict[str, tuple[float | None, float | None]] = {}
    for key, pair in (bounds or {}).items():
        if key not in measured:
            raise ConfigError(f"bounds names {key!r}, which is not in measured; valid names: "
                              f"{', '.join(map(str, measured)) or '(none)'}.")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ConfigError(f"bounds[{key!r}]={pair!r} is invalid; it must be a (lo, hi) pair (None = open).")
        checked[key] = (pair[0], pair[1])
    return checked


class ClaimRecord(dict):
    """A recorded claim (a plain dict) that notebooks display as one verdict line rather than a dict dump."""

    def __repr__(self) -> str:
        if "verdict" in self:
            mark = {"does not hold": "DOES NOT HOLD"}.get(self["verdict"], self["verdict"])
        else:
            mark = "holds" if self.get("holds") else "DOES NOT HOLD"
        mode = "enforced" if self.get("enforced") else "recorded"
        lines = [f"[{self.get('kind')}, {mode}] {self.get('id')}: {mark} — {self.get('statement')}"]
        if "verdict" in self and not self.get("sanity"):
            lines.append(f"  evidence: {verdict_from_record(self).evidence()}")
        if self.get("measured") or "verdict" not in self:
            lines.append(f"  measured: {compact(self.get('measured', {}))}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def line(self) -> str:
        """The record's verdict in one line (`verdict_line`), as `Study.claim` / `Study.examine` display it."""
        return verdict_line(self)


VERDICT_SIGNS = {"holds": "✓", "does not hold": "✗", "inconclusive": "?"}
LINE_MEASURED_CHARS = 160


def verdict_line(record: Mapping[str, Any]) -> str:
    """One line saying what a claim's check found, shown in the cell that checks it (issue 19, item 3).

    An examined claim with a statistical verdict: "✓ ID: holds — effect +0.12 [0.05, 0.2] (min effect 0.1),
    Welch t p = 0.01, 5 vs 5 seeds"; an asserted invariant: "✓ ID: asserted: holds"; a two-way examined claim:
    "✗ ID: examined: DOES NOT HOLD — measured a=1, b=2". A failing invariant, a two-way claim and a record that
    failed its sanity checks also show their measured values or problems (cut to 160 characters).
    """
    if "verdict" in record:
        verdict = str(record["verdict"])
        mark = {"does not hold": "DOES NOT HOLD"}.get(verdict, verdict)
        if record.get("sanity"):
            detail = "failed its sanity checks: " + "; ".join(map(str, record["sanity"]))
        else:
            detail = verdict_from_record(record).evidence()
        text = f"{VERDICT_SIGNS.get(verdict, '?')} {record.get('id')}: {mark} — {detail}"
    else:
        holds = bool(record.get("holds"))
        mark = "holds" if holds else "DOES NOT HOLD"
        text = f"{'✓' if holds else '✗'} {record.get('id')}: {record.get('kind')}: {mark}"
        if record.get("sanity"):
            text += " — failed its sanity checks: " + "; ".join(map(str, record["sanity"]))
        elif record.get("kind") != "asserted" or not holds:
            measured = compact(record.get("measured", {}))
            cut = measured if len(measured) <= LINE_MEASURED_CHARS else measured[:LINE_MEASURED_CHARS - 1] + "…"
            text += f" — measured {cut}"
    return text


def compact(measured: Mapping[str, Any], *, digits: int = 4) -> str:
    """A one-line rendering of measured values (`name=value, ...`, numbers to `digits` significant digits)."""
    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, (int, float)):
            return f"{value:.{digits}g}"
        if isinstance(value, list):
            shown = ", ".join(fmt(v) for v in value[:4])
            return f"[{shown}{', …' if len(value) > 4 else ''}]"
        if isinstance(value, dict):
            return "{" + compact(value, digits=digits) + "}"
        return str(value)

    return ", ".join(f"{key}={fmt(value)}" for key, value in to_jsonable(dict(measured)).items())


def check_claim(claim_id: str, statement: str, measured: Mapping[str, Any], holds: bool, *,
                profile: str | None = None, kind: str = "asserted", notebook: str | None = None,
                bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
                path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Record a claim with its evidence; raise `ClaimFailed` when it is insane or an enforced claim fails.

    `measured` holds the numbers the verdict rests on; `holds` is the verdict. The record (returned and
    stored, replacing any earlier record with the same id) has: id, statement, kind, measured, holds,
    enforced (would a failure raise: asserted kind in standard/full), profile, notebook, time (UTC ISO),
    bounds and sanity (a list of problems; `holds` is recorded False when there are any).
    """
    checked_bounds = _validate_claim_args(claim_id, measured, kind, bounds)
    profile = resolve_profile(profile)
    problems = _sanity_problems(measured, checked_bounds)
    verdict = bool(holds) and not problems
    enforced = kind == "asserted" and profile in ENFORCING_PROFILES
    record = {
        "id": claim_id, "statement": str(statement), "kind": kind, "measured": to_jsonable(dict(measured)),
        "holds": verdict, "enforced": enforced, "profile": profile, "notebook": notebook_name(notebook),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bounds": to_jsonable(checked_bounds), "sanity": problems,
    }

    _store_claim(record, notebook, path)
    if problems:
        raise ClaimFailed(f"Claim {claim_id!r} failed its sanity checks ({'; '.join(problems)}): "
                          f"{statement} — measured {compact(measured)}.")
    if enforced and not verdict:
        raise ClaimFailed(f"Claim {claim_id!r} does not hold in profile {profile!r}: {statement} — "
                          f"measured {compact(measured)}.")
    return ClaimRecord(record)


def _store_claim(record: dict[str, Any], notebook: str | None, path: str | os.PathLike | None) -> None:
    """Put `record` in its notebook's claims, replacing (in place) an earlier record with the same id."""
    def change(entry: dict[str, Any]) -> None:
        claims = [c for c in entry["claims"] if c.get("id") != record["id"]]
        position = next((i for i, c in enumerate(entry["claims"]) if c.get("id") == record["id"]), len(claims))
        claims.insert(position, record)
        entry["claims"] = claims

    _update_notebook(notebook, change, path)


def verdict_from_record(record: Mapping[str, Any]) -> Verdict:
    """The `Verdict` stored in an examined claim's record (its fields sit at the record's top level)."""
    values = {f.name: record.get(f.name) for f in dataclasses.fields(Verdict)}
    values["n_seeds"] = None if values["n_seeds"] is None else tuple(values["n_seeds"])
    values["replicates"] = values.get("replicates") or "seeds"  # records from before the field existed
    return Verdict(**values)


def examine(claim_id: str, statement: str, verdict: Verdict, *, measured: Mapping[str, Any] | None = None,
            notebook: str | None = None, profile: str | None = None,
            path: str | os.PathLike | None = None) -> ClaimRecord:
    """Record an examined comparative claim with its statistical verdict (from `aestudy.stats.compare` & co).

    The record (returned and stored in the ledger at `path`, else the usual file, replacing any earlier record
    with the same id) has the fields of `check_claim` with kind "examined" and enforced False, plus every field of
    `verdict` at top level: verdict ("holds" / "does not hold" / "inconclusive"), effect, ci_low, ci_high,
    p_value, n_seeds, n_images, test, min_effect, alpha, reason, higher_is_better, mean_a, mean_b. `holds` is
    `verdict == "holds"`, kept for readers of the two-way ledger. `measured` holds any further numbers to show.

    A contrary or inconclusive result is recorded, never raised.

    Raises:
        ClaimFailed: after recording (verdict "inconclusive", holds False, the problems under `sanity`), when a
            number in `measured` or in the verdict is not finite.
        ConfigError: for an empty claim id, a `measured` that is not a dict, or a `verdict` that is not a Verdict.
    """
    measured = {} if measured is None else measured
    _validate_claim_args(claim_id, measured, "examined", None)
    if not isinstance(verdict, Verdict):
        raise ConfigError(f"verdict={verdict!r} is invalid; it must be a Verdict from aestudy.stats.compare "
                          "(or compare_auroc / compare_accuracy).")
    stats = verdict.to_dict()
    problems = _sanity_problems({**measured, "verdict": {k: v for k, v in stats.items() if v is not None}}, {})
    if problems:
        stats["verdict"] = "inconclusive"
    record = {
        "id": claim_id, "statement": str(statement), "kind": "examined", "measured": to_jsonable(dict(measured)),
        "holds": stats["verdict"] == "holds", "enforced": False, "profile": resolve_profile(profile),
        "notebook": notebook_name(notebook), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bounds": {}, "sanity": problems, **to_jsonable(stats),
    }

    _store_claim(record, notebook, path)
    if problems:
        raise ClaimFailed(f"Claim {claim_id!r} failed its sanity checks ({'; '.join(problems)}): {statement} — "
                          f"{verdict}.")
    return ClaimRecord(record)


def _number_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)


def _verdict_cells(claim: Mapping[str, Any]) -> dict[str, Any]:
    """The claims-table cells of a claim's statistical verdict; empty for claims without one."""
    if "verdict" not in claim:
        return {"verdict": "", "effect": None, "ci": "", "p_value": None, "n_seeds": "", "test": ""}
    seeds, low, high = claim.get("n_seeds"), claim.get("ci_low"), claim.get("ci_high")
    # Written from the stored values (not through Verdict): a record that failed its sanity checks keeps
    # non-finite numbers as text ("nan"), and the table must still show it.
    ci = "no CI" if low is None or high is None else f"[{_number_text(low)}, {_number_text(high)}]"
    test = str(claim.get("test", ""))
    # A one-sample test has one arm (tested against a fixed value): its record stores (n, n), shown as "n".
    counts = "" if seeds is None else str(seeds[0]) if test.startswith("one-sample") else f"{seeds[0]} vs {seeds[1]}"
    return {"verdict": claim["verdict"], "effect": claim.get("effect"), "ci": ci, "p_value": claim.get("p_value"),
            "n_seeds": counts, "test": claim.get("test", "")}


def claims_table(path: str | os.PathLike | None = None, notebook: str | None = None, *,
                 all_notebooks: bool = False) -> pd.DataFrame:
    """The "what we measured" table: one row per claim (id, kind, statement, measured, holds, enforced, and
    the statistical verdict's verdict, effect, ci, p_value, n_seeds, test — empty for claims without one).

    By default the rows are the current notebook's claims; `all_notebooks=True` lists every notebook's
    claims and adds a leading `notebook` column.
    """
    ledger = load_metrics(path)
    if all_notebooks:
        entries = list(ledger["notebooks"].items())
    else:
        name = notebook_name(notebook)
        entries = [(name, ledger["notebooks"].get(name, {}))]
    rows = [{"notebook": name, **{col: claim.get(col) for col in TABLE_COLUMNS},
             "measured": compact(claim.get("measured", {})), **_verdict_cells(claim)}
            for name, entry in entries for claim in entry.get("claims", [])]
    columns = (["notebook"] if all_notebooks else []) + list(TABLE_COLUMNS) + list(VERDICT_COLUMNS)
    return pd.DataFrame(rows, columns=["notebook", *TABLE_COLUMNS, *VERDICT_COLUMNS])[columns]


FIGURES_KEY = "figures"
FIGURES_DIR = "figures"
FIGURE_DPI = 100
FIGURE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


def record_figure(name: str, fig: Any, *, notebook: str | None = None, path: str | os.PathLike | None = None,
                  caption: str | None = None) -> Path:
    """Save `fig` as a PNG next to the ledger and list it in the notebook's ledger entry under "figures".

    The file is `<ledger folder>/figures/<notebook>/<name>.png` (written atomically, 100 dpi, tight bounding
    box); the entry gets `{"name", "path" (relative to the ledger folder, POSIX), "caption"}`, replacing an
    earlier figure of the same name in place. `fig` is a matplotlib Figure, an Axes (its figure is saved) or
    anything with `savefig(file, format=...)` (e.g. a seaborn grid). The report embeds these (aestudy.runner.report).

    Raises ConfigError for a name that is not a plain file stem (letters, digits, `.`, `_`, `-`; at most 80)
    or an object that cannot be saved as a figure. Returns the PNG's path.
    """
    import re  # local imports keep this addition from touching the module's import block

    from aestudy.atomic import atomic_write

    if not isinstance(name, str) or not re.match(FIGURE_NAME_PATTERN, name) or name.endswith("."):
        raise ConfigError(f"figure name={name!r} is invalid; use letters, digits, '.', '_' and '-' (at most 80 "
                          "characters, starting with a letter or digit), e.g. 'prior_samples'.")
    # An Axes has `.figure` but no `savefig`; a Figure and a seaborn grid have `savefig`.
    target = fig if callable(getattr(fig, "savefig", None)) else getattr(fig, "figure", None)
    if not callable(getattr(target, "savefig", None)):
        raise ConfigError(f"fig={type(fig).__name__} cannot be saved as a figure; pass a matplotlib Figure or Axes "
                          "(or an object with savefig, e.g. a seaborn FacetGrid).")
    ledger = metrics_path(path)
    key = notebook_name(notebook)
    relative = Path(FIGURES_DIR) / key / f"{name}.png"
    png = atomic_write(ledger.parent / relative,
                       lambda handle: target.savefig(handle, format="png", dpi=FIGURE_DPI, bbox_inches="tight"))
    item = {"name": name, "path": relative.as_posix(), "caption": str(caption) if caption else name}
    with FileLock(str(ledger) + ".lock"):  # the same read-modify-write as _update_notebook, at `ledger`
        data = load_metrics(ledger)
        entry = data["notebooks"].setdefault(key, {"claims": [], "metrics": {}})
        figures = list(entry.get(FIGURES_KEY) or [])
        names = [f.get("name") for f in figures]
        if name in names:
            figures[names.index(name)] = item
        else:
            figures.append(item)
        entry[FIGURES_KEY] = figures
        atomic_write_json(ledger, data, allow_nan=False)
    return png
