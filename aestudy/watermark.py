"""The last cell of every notebook: versions, device, seed, profile and wall time, shown and recorded; and the first
facts: the notebook's measured run time per profile (`run_time_text`, from the committed `notebooks/timings.json`)."""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import torch

import aestudy
from aestudy.claims import record_metric
from aestudy.config import resolve_device, resolve_profile
from aestudy.errors import DataError


def cpu_name() -> str:
    """The CPU model as the OS reports it (Linux /proc/cpuinfo, else `platform.processor()`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str | torch.device = "auto") -> str:
    """A human name for the device the notebook ran on (GPU name, or CPU model and thread count)."""
    resolved = resolve_device(device) if isinstance(device, str) else device
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    if resolved.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({threads} torch thread{'' if threads == 1 else 's'})"


def watermark(*, seed: int, profile: str | None, device: str | torch.device, started_at: float,
              notebook: str | None = None, path: str | Path | None = None) -> pd.DataFrame:
    """Versions, device, seed, profile and wall time since `started_at` (a `time.time()` value).

    The same facts are stored in the ledger as the metric "watermark"; the returned one-column DataFrame
    (index = item) is what the notebook displays.
    """
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "sklearn": sklearn.__version__,
        "aestudy": aestudy.__version__,
        "platform": f"{platform.system()} {platform.release()} ({sys.platform})",
        "device": device_name(device),
        "seed": int(seed),
        "profile": resolve_profile(profile),
        "wall_time_s": round(time.time() - started_at, 1),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record_metric("watermark", facts, notebook=notebook, path=path)
    return pd.DataFrame({"value": [str(v) for v in facts.values()]}, index=pd.Index(list(facts), name="item"))


# ------------------------------------------------------------------ measured run time (the top of every notebook)

TIMINGS_SCHEMA = 1
# Committed beside the notebooks; written by `aestudy.runner.timings.record_timings` (make timings RUN=runs/NAME).
TIMINGS_FILE = Path(__file__).resolve().parents[1] / "notebooks" / "timings.json"
TIMED_PROFILES = ("smoke", "standard", "full")


def load_timings(path: str | Path | None = None) -> dict[str, Any]:
    """The timings file (`path`, default `notebooks/timings.json`), or an empty one when it does not exist.

    Raises DataError when the file is not a schema-1 timings file (the fix: delete it and record again).
    """
    file = Path(path) if path is not None else TIMINGS_FILE
    if not file.exists():
        return {"schema": TIMINGS_SCHEMA, "notebooks": {}}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"The timings file {file} is not valid JSON ({exc}); delete it and run "
                        "`make timings RUN=runs/NAME` again.") from exc
    valid = isinstance(data, dict) and data.get("schema") == TIMINGS_SCHEMA and isinstance(data.get("notebooks"), dict)
    if not valid:
        raise DataError(f"The timings file {file} is not an aestudy timings file with schema {TIMINGS_SCHEMA}; delete "
                        "it and run `make timings RUN=runs/NAME` again.")
    return data


def duration_text(seconds: float) -> str:
    """`42 s` under two minutes, `17 min` under two hours, else `2.5 h` (a reader's unit, rounded)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_time_text(notebook: str, *, path: str | Path | None = None) -> str:
    """"Measured run time: smoke 16 s, standard 17 min, full not measured yet", each measured time followed by
    where and when it was measured (machine, date, commit, how many notebooks ran at once), from the timings file.

    notebook: the notebook's stem or its number prefix ("01"). A profile without a recorded run says "not measured
    yet": the text never states a time no run measured. Raises DataError for a malformed timings file.
    """
    entries = load_timings(path)["notebooks"]
    key = next((k for k in entries if k == notebook or k.split("_", 1)[0] == notebook), None)
    timed = entries.get(key, {}) if key else {}
    parts = []
    for profile in TIMED_PROFILES:
        entry = timed.get(profile)
        if not isinstance(entry, dict) or not isinstance(entry.get("wall_s"), (int, float)):
            parts.append(f"{profile} not measured yet")
            continue
        commit = str(entry.get("commit") or "unknown commit")[:7] + (" + local changes" if entry.get("dirty") else "")
        where = [str(entry.get("machine") or "unknown machine"), str(entry.get("date") or "undated"),
                 f"commit {commit}"]
        if entry.get("note"):
            where.append(str(entry["note"]))
        elif isinstance(entry.get("jobs"), int) and entry["jobs"] > 1:
            where.append(f"{entry['jobs']} notebooks at once")
        parts.append(f"{profile} {duration_text(float(entry['wall_s']))} ({', '.join(where)})")
    return "**Measured run time:** " + "; ".join(parts) + "."
