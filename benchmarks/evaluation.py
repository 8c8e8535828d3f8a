"""Evaluation cost: aestudy's IS-NLL (seconds and peak memory, in a fresh process) and pythae's estimator.

Peak memory is the child process's resident-set high-water mark (VmHWM, reset before each estimate) minus its
resident set just before the estimate (model and images loaded), so it measures what the estimator holds at once.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aestudy.models import ModelConfig, build_model
from aestudy.objectives import is_nll
from benchmarks.loops import pythae_vae, quiet

STATUS = Path("/proc/self/status")
# glibc keeps freed heap memory resident (its mmap threshold grows with the largest block freed), which would
# blur the peak; a fixed low threshold makes every large tensor its own mapping, returned to the OS when freed.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_kib(field: str) -> int:
    """A `/proc/self/status` memory field in KiB (0 where /proc is missing)."""
    if not STATUS.exists():
        return 0
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for child processes started inside, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reset_peak() -> None:
    """Reset this process's VmHWM to its current resident set (Linux: write 5 to /proc/self/clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# how `is_nll` is called for each variant: its defaults, and the estimator as it was before issue 13
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, "reference": {"fused": False, "fp32_matmul": "default"}}


def _child_is_nll(state: dict[str, Tensor], cfg: ModelConfig, images: Tensor, jobs: list[tuple[int, int, str]],
                  chunk_size: int, batch_size: int, seed: int, threads: int) -> list[dict[str, Any]]:
    """In a fresh process, for each (n_images, k, variant): seconds, peak extra MiB and mean ± s.e. of is_nll."""
    torch.set_num_threads(threads)
    model = build_model(cfg)
    model.load_state_dict(state)
    model.eval()
    results = []
    for n, k, variant in jobs:
        _reset_peak()
        before = _status_kib("VmRSS")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        nll = is_nll(model, images[:n], k=k, batch_size=batch_size, chunk_size=chunk_size,
                     generator=torch.Generator().manual_seed(seed), **VARIANTS[variant]).double()
        seconds = time.perf_counter() - start
        results.append({"images": n, "k": k, "variant": variant, "seconds": seconds,
                        "load1": (load + os.getloadavg()[0]) / 2, "nll_values": nll.tolist(),
                        "peak_extra_mib": max(0, _status_kib("VmHWM") - before) / 1024, "nll": float(nll.mean()),
                        "nll_sem": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else 0.0})
    return results


def is_nll_costs(model: nn.Module, images: Tensor, jobs: list[tuple[int, int, str]], *, chunk_size: int = 100,
                 batch_size: int = 100, seed: int = 0, threads: int = 1) -> list[dict[str, Any]]:
    """IS-NLL −L_k on the first n images for each (n, k, variant), in one fresh (spawned) process, in order;
    `variant` is a key of `VARIANTS` ("default": `is_nll`'s defaults; "reference": the unfused estimator on
    torch's default GEMM path, as before issue 13).

    Each job reports its seconds, its peak memory above the resident set it started from, and mean NLL ± s.e.
    """
    state = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
    n_max = max(n for n, _, _ in jobs)
    args = (state, model.config, images[:n_max].cpu(), jobs, chunk_size, batch_size, seed, threads)
    with _environ(MALLOC_ENV), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.submit(_child_is_nll, *args).result()
    return [{**r, "chunk_size": chunk_size, "batch_size": batch_size} for r in results]


def pythae_agreement(model: nn.Module, images: Tensor, *, k: int, seed: int = 0) -> dict[str, Any]:
    """aestudy's is_nll vs pythae's `get_nll`, per image on the same model: paired mean difference ± s.e.

    pythae's `get_nll(x, n_samples=k, batch_size=100)` returns the mean log-likelihood estimate (not an NLL),
    one image at a time; the paired differences carry the Monte-Carlo error of both estimators.
    """
    start = time.perf_counter()
    ours = is_nll(model, images, k=k, generator=torch.Generator().manual_seed(seed)).double()
    ours_seconds = time.perf_counter() - start
    theirs_model = pythae_vae(model).eval()
    theirs = []
    start = time.perf_counter()
    with quiet(), torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in range(images.shape[0]):
            theirs.append(-float(theirs_model.get_nll(images[i:i + 1], n_samples=k, batch_size=min(k, 100))))
    theirs_seconds = time.perf_counter() - start
    diff = ours - torch.tensor(theirs, dtype=torch.float64)
    n = len(diff)
    sem = float(diff.std() / math.sqrt(n)) if n > 1 else math.inf
    mean_diff = float(diff.mean())
    return {"k": k, "images": n, "aestudy_nll": float(ours.mean()), "pythae_nll": sum(theirs) / n,
            "mean_diff": mean_diff, "diff_sem": sem, "within_3_sem": abs(mean_diff) <= 3 * sem,
            "aestudy_seconds": ours_seconds, "pythae_seconds": theirs_seconds,
            "pythae_seconds_per_10k": theirs_seconds / n * 10_000}
