"""The series' wall time: `aestudy run --profile P` as a subprocess, cold (empty model cache) then warm."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNNER_MISSING = "not run (runner missing)"


def runner_available() -> bool:
    """Whether `aestudy run` exists (aestudy.runner.run and aestudy.runner.cli importable)."""
    return all(importlib.util.find_spec(name) is not None for name in ("aestudy.runner.run", "aestudy.runner.cli"))


def _one_run(profile: str, out: Path, cache: Path, threads: int, timeout_s: float) -> dict[str, Any]:
    """One `aestudy run` into `out` with $AESTUDY_CACHE=`cache`: status, total and per-notebook seconds."""
    env = {**os.environ, "AESTUDY_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "aestudy.runner.cli", "run", "--profile", profile, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout_s:.0f} s", "total_s": time.perf_counter() - start,
                "notebooks": {}}
    total = time.perf_counter() - start
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    status = "complete" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    result = {"status": status, "total_s": total, "notebooks": dict(state.get("wall_s", {}))}
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-2000:]
    return result


def series_wall_time(profiles: tuple[str, ...], *, threads: int, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Per-notebook wall time of `aestudy run` for each profile, cold (fresh model cache) then warm (same cache)."""
    if not runner_available():
        return {"status": RUNNER_MISSING}
    results: dict[str, Any] = {"status": "run", "omp_num_threads": threads}
    with tempfile.TemporaryDirectory(prefix="aestudy-bench-series-") as tmp:
        for profile in profiles:
            cache = Path(tmp) / f"cache-{profile}"
            cache.mkdir()
            cold = _one_run(profile, Path(tmp) / f"{profile}-cold", cache, threads, timeout_s)
            warm = (_one_run(profile, Path(tmp) / f"{profile}-warm", cache, threads, timeout_s)
                    if cold["status"] == "complete" else {"status": "not run (cold run failed)", "notebooks": {}})
            results[profile] = {"cold": cold, "warm": warm}
    return results
