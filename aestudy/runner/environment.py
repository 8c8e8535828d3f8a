"""What a run ran on: package versions, git commit, device, the kernel's Python (recorded in `metrics.json`).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aestudy.config import resolve_device
from aestudy.errors import ConfigError
from aestudy.precision import matmul_backend

PACKAGES: tuple[str, ...] = ("aestudy", "torch", "numpy", "scipy", "pandas", "scikit-learn", "matplotlib",
                             "seaborn", "papermill", "nbclient", "ipykernel")


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit(folder: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_info(device: str) -> dict[str, Any]:
    """The requested device, what it resolves to on this machine, and the hardware's name."""
    import torch

    from aestudy.watermark import cpu_name, device_name

    resolved = resolve_device(device)
    return {"requested": device, "resolved": str(resolved), "name": device_name(resolved), "cpu": cpu_name(),
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}


def kernel_python(kernel: str) -> str:
    """The executable a Jupyter kernel runs (ConfigError listing the installed kernels if it is unknown)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(kernel)
    except NoSuchKernel as exc:
        names = ", ".join(sorted(manager.find_kernel_specs()))
        raise ConfigError(f"--kernel {kernel!r} is not an installed Jupyter kernel; valid values: {names} "
                          "(`make setup` registers 'aestudy').") from exc
    return spec.argv[0] if spec.argv else ""


def environment(*, profile: str, device: str, kernel: str, notebooks_dir: Path,
                seeds: Mapping[str, Any]) -> dict[str, Any]:
    """Where and with what the run executed: versions, device, kernel, seeds, profile, git commit, and the fp32
    matrix-product backend the trainer picks on this machine (`aestudy.precision`; it changes speed, not results)."""
    return {
        "python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
        "packages": _package_versions(), "device": device_info(device), "profile": profile,
        "matmul": matmul_backend(resolve_device(device)),
        "kernel": {"name": kernel, "python": kernel_python(kernel)}, "seeds": dict(seeds),
        "git": _git_commit(notebooks_dir), "notebooks_dir": str(notebooks_dir),
    }
