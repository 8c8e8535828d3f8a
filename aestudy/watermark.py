"""The last cell of every notebook: versions, device, seed, profile and wall time, shown and recorded."""

from __future__ import annotations

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
    return f"{cpu_name()} ({torch.get_num_threads()} torch threads)"


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
