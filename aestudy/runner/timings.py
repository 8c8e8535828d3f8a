"""Measured run time per notebook and profile: `notebooks/timings.json`, built from the wall times of `aestudy run`.

Each notebook shows "measured run time: smoke …, standard … (machine, date, commit)" at its top
(`aestudy.watermark.run_time_text`), read from this committed file, so the number a reader sees is one that a run
measured, never one written by hand. `record_timings(run_dir)` merges a finished run's `state.json` into it:

    make timings RUN=runs/NAME [NOTE="5 notebooks at once"]

File layout (schema 1): ``{"schema": 1, "notebooks": {"01_autoencoder_basics": {"smoke": {"wall_s", "date",
"commit", "dirty", "jobs", "machine", "run", "note"}, "standard": {...}}}}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aestudy.atomic import atomic_write_json
from aestudy.errors import ConfigError, DataError
from aestudy.watermark import TIMINGS_FILE, load_timings


def _machine(environment: dict[str, Any]) -> str:
    device = environment.get("device") or {}
    if device.get("resolved", "cpu") != "cpu" and device.get("name"):
        return str(device["name"])
    cores = device.get("cpu_count")
    cpu = device.get("cpu") or "CPU"
    return f"{cores}-core {cpu}" if cores else str(cpu)


def record_timings(run_dir: str | os.PathLike[str], *, path: str | os.PathLike[str] | None = None,
                   note: str | None = None) -> dict[str, dict[str, Any]]:
    """Merge the wall times of the notebooks a run finished into the timings file; return the entries written.

    run_dir: an `aestudy run` folder holding `state.json` (notebooks whose status is "done" and that have a wall
    time are recorded, keyed by notebook stem and the run's profile; an earlier entry of that pair is replaced).
    note: how the run was made when that matters for its time (e.g. "5 notebooks at once"), shown beside it.
    Raises ConfigError when `run_dir` has no state.json, DataError when it records no finished notebook.
    """
    state_file = Path(run_dir) / "state.json"
    if not state_file.is_file():
        raise ConfigError(f"{run_dir} holds no state.json: pass the folder of an `aestudy run` (e.g. runs/NAME).")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    profile, environment = state.get("profile"), state.get("environment") or {}
    git = environment.get("git") or {}
    date = str(state.get("finished") or state.get("started") or "")[:10]
    written: dict[str, dict[str, Any]] = {}
    for name, wall in (state.get("wall_s") or {}).items():
        if (state.get("status") or {}).get(name) != "done" or not isinstance(wall, (int, float)):
            continue
        written[Path(name).stem] = {
            "wall_s": round(float(wall), 1), "date": date, "commit": git.get("commit"), "dirty": git.get("dirty"),
            "jobs": state.get("jobs", 1), "machine": _machine(environment), "run": state.get("name"), "note": note}
    if not written:
        raise DataError(f"{run_dir} records no finished notebook with a wall time: nothing to record.")
    timings = load_timings(path)
    for stem, entry in written.items():
        timings["notebooks"].setdefault(stem, {})[str(profile)] = entry
    timings["notebooks"] = dict(sorted(timings["notebooks"].items()))
    atomic_write_json(Path(path) if path is not None else TIMINGS_FILE, timings, indent=1, sort_keys=False)
    return written


if __name__ == "__main__":  # make timings RUN=runs/NAME NOTE="..."
    import sys

    for stem, entry in record_timings(sys.argv[1], note=(sys.argv[2] or None) if len(sys.argv) > 2 else None).items():
        print(f"{stem}: {entry['wall_s']} s ({entry['run']}, {entry['date']})")
