"""The matmul floor: exactly the GEMMs of an MLP's forward + backward pass, timed on their own.

For every `nn.Linear` (in forward order) a training step runs three GEMMs, in the layouts autograd uses:
forward `addmm(b, x, Wᵀ)`: (B, in) @ (in, out); weight gradient `gᵀ @ x`: (out, B) @ (B, in); input
gradient `g @ W`: (B, out) @ (out, in), skipped for the first layer because its input (the data) needs no
gradient. Everything else a real step does (activations, loss, optimizer, Python) costs more than this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aestudy.errors import ConfigError

ROLES: tuple[str, ...] = ("forward", "weight_grad", "input_grad")


@dataclass(frozen=True)
class Gemm:
    """One matrix product (m, k) @ (k, n) of a training step."""

    layer: str  # module name, e.g. "encoder.trunk.0"
    role: str  # one of ROLES
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        """2·m·k·n floating-point operations (a multiply and an add per term)."""
        return 2 * self.m * self.k * self.n


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The model's `nn.Linear` layers in registration (= forward) order; other weighted layers are refused."""
    layers: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            layers.append((name, module))
        elif any(True for _ in module.parameters(recurse=False)):
            raise ConfigError(f"the GEMM floor covers models built from nn.Linear layers only; {name!r} is a "
                              f"{type(module).__name__}: use arch='mlp' or arch='linear'.")
    if not layers:
        raise ConfigError("the model has no nn.Linear layer, so it has no GEMM floor; use arch='mlp' or 'linear'.")
    return layers


def step_gemms(model: nn.Module, batch_size: int) -> list[Gemm]:
    """The GEMMs of one forward + backward step at `batch_size`, forward pass first, then backward."""
    layers = linear_layers(model)
    forward = [Gemm(name, "forward", batch_size, lin.in_features, lin.out_features) for name, lin in layers]
    backward: list[Gemm] = []
    for i, (name, lin) in reversed(list(enumerate(layers))):
        backward.append(Gemm(name, "weight_grad", lin.out_features, batch_size, lin.in_features))
        if i > 0:
            backward.append(Gemm(name, "input_grad", batch_size, lin.out_features, lin.in_features))
    return forward + backward


def epoch_batches(n: int, batch_size: int) -> list[int]:
    """Batch sizes of one pass over n samples: full batches, then the ragged last one if any."""
    full, rest = divmod(n, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def epoch_flops(model: nn.Module, n: int, batch_size: int) -> int:
    """GEMM FLOPs of one training epoch over n samples."""
    return sum(g.flops for b in epoch_batches(n, batch_size) for g in step_gemms(model, b))


def _operands(gemm: Gemm, generator: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
    """(a, b, bias) laid out as autograd's Linear forward/backward passes them to addmm/mm."""
    def rand(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator).to(dtype)

    if gemm.role == "forward":  # x (B, in) @ W.t(); W stored (out, in)
        return rand(gemm.m, gemm.k), rand(gemm.n, gemm.k).t(), rand(gemm.n)
    if gemm.role == "weight_grad":  # g.t() @ x; g stored (B, out)
        return rand(gemm.k, gemm.m).t(), rand(gemm.k, gemm.n), None
    return rand(gemm.m, gemm.k), rand(gemm.k, gemm.n), None  # g (B, out) @ W (out, in)


class GemmFloor:
    """Operands for every GEMM of a model's training steps, ready to be timed with nothing else running.

    `dtype=torch.bfloat16` gives the floor of a bf16-autocast step (the GEMMs autocast runs in bf16).
    """

    def __init__(self, model: nn.Module, batch_sizes: list[int], seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.steps = {b: [(g, *_operands(g, generator, dtype)) for g in step_gemms(model, b)]
                      for b in set(batch_sizes)}

    def run_step(self, batch_size: int) -> None:
        """Run the GEMMs of one step (outputs discarded)."""
        for _, a, b, bias in self.steps[batch_size]:
            if bias is None:
                torch.mm(a, b)
            else:
                torch.addmm(bias, a, b)

    def time_batches(self, batches: list[int]) -> float:
        """Wall seconds for the GEMMs of these steps, in order."""
        start = time.perf_counter()
        for b in batches:
            self.run_step(b)
        return time.perf_counter() - start

    def gemm_rates(self, batch_size: int, repeats: int = 30) -> list[dict[str, object]]:
        """Per-GEMM microseconds and GFLOP/s at `batch_size` (median of `repeats` single calls)."""
        rows: list[dict[str, object]] = []
        for gemm, a, b, bias in self.steps[batch_size]:
            times = []
            for _ in range(repeats + 3):
                start = time.perf_counter()
                torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)
                times.append(time.perf_counter() - start)
            seconds = sorted(times[3:])[repeats // 2]
            rows.append({"layer": gemm.layer, "role": gemm.role, "shape": f"({gemm.m}x{gemm.k}) @ ({gemm.k}x{gemm.n})",
                         "flops": gemm.flops, "us": seconds * 1e6, "gflops_per_s": gemm.flops / seconds / 1e9})
        return rows
