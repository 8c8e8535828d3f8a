"""The fp32 GEMM backend: oneDNN where it is exact fp32, torch's default path (MKL / cuBLAS fp32) elsewhere.

`torch.set_float32_matmul_precision("medium")` lets torch route fp32 matrix products to a faster backend that
*may* compute in lower precision: on CPUs it sends them to oneDNN with the "bf16 allowed" math mode, and on
CUDA it allows TF32/bf16 tensor cores. Whether that is still fp32 arithmetic depends on the hardware:

- CPUs without AMX (e.g. AMD EPYC with AVX-512): oneDNN keeps fp32 math; relative error vs float64 ≈ 1e-6 for
  a (128 × 784) @ (784 × 512) product, the same order as MKL's fp32 (≈ 4e-7), and oneDNN's kernels were
  measured 1.0–2.1× as fast as MKL's on the project's machines (the gain depends on the host CPU; see
  benchmarks/README.md).
- CPUs with AMX (Intel Sapphire Rapids and later): oneDNN rounds the inputs to bf16 (8-bit mantissa,
  error ≈ 2e-3).
- CUDA: "medium" means TF32 (10-bit mantissa, error ≈ 5e-4) or bf16.

"Exact" here means fp32 arithmetic: the probe's relative error below `EXACT_TOLERANCE` = 1e-5, an order above
fp32 rounding (K = 784 terms: ≈ 1e-6 worst case) and two below TF32's (≈ 5e-4) and bf16's (≈ 2e-3). TF32 on
CUDA is therefore *not* exact: on a GPU the default stays fp32 (TF32 remains a separate, opt-in speed/accuracy
trade-off, like `TrainConfig.bf16`).

The probe runs once per process and device type (cached) and takes about a millisecond on CPU. Nothing is
changed at import: `fp32_matmul(device)` applies the choice inside a `with` block and restores the caller's
setting after (`fit` and the IS-NLL estimator use it). `matmul_backend(device)` returns the decision as plain
values for a run's recorded environment.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

from aestudy.validate import as_choice

EXACT_TOLERANCE = 1e-5  # max |error| / max |exact| of the probe product vs float64 that still counts as fp32
FAST_PRECISION = "medium"  # torch's setting that routes fp32 GEMMs to oneDNN (CPU) / TF32 (CUDA)
MODES: tuple[str, ...] = ("auto", "default")  # TrainConfig.fp32_matmul / fp32_matmul(mode=...)
_PROBE_SHAPE = (128, 784, 512)  # the first layer of the study's MLP at batch 128


def _device_type(device: str | torch.device | None) -> str:
    """'cpu' or 'cuda' (any 'cuda:N'); None means the CPU."""
    return "cpu" if device is None else torch.device(device).type


@contextlib.contextmanager
def _precision(value: str) -> Iterator[None]:
    """torch's fp32 matmul precision set to `value` inside, the caller's setting restored after."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def probe_error(device_type: str = "cpu") -> float:
    """Max relative error vs float64 of a (128 × 784) @ (784 × 512) fp32 product under precision "medium".

    Fixed seeded operands, so the same hardware gives the same number. fp32 ≈ 1e-6, TF32 ≈ 5e-4, bf16 ≈ 2e-3.
    """
    m, k, n = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    exact = a.double() @ b.double()
    with _precision(FAST_PRECISION):
        product = (a.to(device_type) @ b.to(device_type)).cpu().double()
    return float((product - exact).abs().max() / exact.abs().max())


def decide(device_type: str, relative_error: float, *, onednn_available: bool = True) -> dict[str, Any]:
    """The backend decision from a probe result (pure: tests feed it faked errors).

    Returns {"device_type", "precision" ("medium" or "highest"), "backend" (text), "probe_relative_error",
    "exact" (bool), "reason"}. "medium" is chosen only on CPU, with oneDNN available, when the error is below
    `EXACT_TOLERANCE`; on CUDA "medium" means TF32/bf16, which is never fp32-exact, so it stays "highest".
    """
    exact = relative_error < EXACT_TOLERANCE
    if device_type == "cpu" and onednn_available and exact:
        precision, backend = FAST_PRECISION, "oneDNN fp32"
        reason = f"oneDNN keeps fp32 arithmetic here (probe error {relative_error:.1e} < {EXACT_TOLERANCE:g})"
    elif device_type == "cpu":
        precision, backend = "highest", "torch default fp32 (MKL)"
        reason = ("oneDNN is not available in this torch build" if not onednn_available else
                  f"oneDNN would not be fp32 here (probe error {relative_error:.1e} >= {EXACT_TOLERANCE:g}: "
                  "bf16 inputs, an AMX CPU)")
    else:
        precision, backend = "highest", "torch default fp32 (cuBLAS, no TF32)"
        reason = (f"on {device_type} precision 'medium' means TF32/bf16 (probe error {relative_error:.1e}), "
                  "not fp32")
    return {"device_type": device_type, "precision": precision, "backend": backend,
            "probe_relative_error": relative_error, "exact": exact, "reason": reason}


@functools.cache
def _decision(device_type: str) -> dict[str, Any]:
    """The probe, run once per process and device type."""
    onednn = bool(torch.backends.mkldnn.is_available()) if device_type == "cpu" else True
    return decide(device_type, probe_error(device_type), onednn_available=onednn)


def matmul_backend(device: str | torch.device | None = None) -> dict[str, Any]:
    """The fp32 GEMM backend `fit` and the evaluators use on `device` (default CPU), as plain values.

    Keys: device_type, precision (the torch setting applied: "medium" or "highest"), backend, probe_relative_error,
    exact, reason. Record it with a run's environment (the probe runs once per process; about 1 ms on CPU).
    """
    return dict(_decision(_device_type(device)))


@contextlib.contextmanager
def fp32_matmul(device: str | torch.device | None = None, mode: str = "auto") -> Iterator[dict[str, Any]]:
    """Inside: fp32 GEMMs on the backend `matmul_backend(device)` chose (mode "auto"), or on torch's default
    path (mode "default": the caller's precision setting untouched). The caller's setting is restored after.

    Yields the decision (mode "default": None). Raises ConfigError for another mode.
    Only ever *raises* speed without leaving fp32: a caller who set "medium"/"high" themselves keeps it.
    """
    mode = as_choice(mode, "fp32_matmul", MODES)
    if mode == "default":
        yield None
        return
    decision = _decision(_device_type(device))
    if decision["precision"] == "highest" or torch.get_float32_matmul_precision() != "highest":
        yield decision
        return
    with _precision(decision["precision"]):
        yield decision
