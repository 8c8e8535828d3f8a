"""Running a trained model over many images without changing it: the one batched-evaluation loop.

Every measurement in aestudy evaluates through `batched` (or `batches`) inside `evaluating`, so each one
runs without gradients, in eval mode, on the model's own device, in bounded memory, and leaves the
caller's model exactly as it found it (device, train/eval mode). Results come back on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from aestudy import precision
from aestudy.validate import as_int, require

EVAL_BATCH = 1000  # images per forward pass: large for speed, small enough for conv activations


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (where its evaluation runs)."""
    return next(model.parameters()).device


def generator_on(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on `device`: draws for a model happen on the model's device."""
    return torch.Generator(device=device).manual_seed(seed)


@contextlib.contextmanager
def evaluating(model: nn.Module, *, grad: bool = False) -> Iterator[None]:
    """Eval mode (and no gradients unless `grad`) for the block; every submodule's train/eval mode is restored after.

    `grad=True` serves measurements that differentiate through a frozen model (e.g. gradient estimators).
    fp32 GEMMs run on the backend `aestudy.precision` chose for the model's device (the caller's setting restored).
    """
    modes = [(module, module.training) for module in model.modules()]  # a part may be frozen in eval mode
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), None)  # a parameter-free stand-in: the CPU
        with torch.set_grad_enabled(grad), precision.fp32_matmul(device):
            yield
    finally:
        for module, training in modes:
            module.training = training


def batches(*tensors: Tensor | None, batch_size: int = EVAL_BATCH,
            device: torch.device | str = "cpu") -> Iterator[tuple[Tensor | None, ...]]:
    """Aligned slices of at most `batch_size` rows of each tensor, moved to `device` (None stays None).

    `batches(images, labels)` yields (x, y) pairs; every tensor must have the first tensor's length.

    Raises:
        ConfigError: when `batch_size` is not an integer >= 1 or the tensors differ in length.
    """
    batch_size = as_int(batch_size, "batch_size", low=1)
    n = tensors[0].shape[0]
    lengths = [t.shape[0] for t in tensors if t is not None]
    require(all(length == n for length in lengths), "tensors", lengths, "every tensor needs one length (rows)")
    for start in range(0, n, batch_size):
        yield tuple(None if t is None else t[start:start + batch_size].to(device) for t in tensors)


def batched(model: nn.Module, fn: Callable[..., Tensor], *tensors: Tensor | None,
            batch_size: int = EVAL_BATCH) -> Tensor:
    """`fn(*batch)` over aligned batches of `tensors` on the model's device, concatenated on the CPU (dim 0).

    `batched(model, fn, images, labels)` calls `fn(x, y)` with a batch (B, C, H, W) and its labels (B,) or
    None; `fn` returns a tensor whose first dimension is B. Runs inside `evaluating(model)`, so the model is
    left as it was; memory is bounded by one batch.
    """
    device = model_device(model)
    with evaluating(model):
        return torch.cat([fn(*batch).cpu() for batch in batches(*tensors, batch_size=batch_size, device=device)])


def _call(method: Callable[..., Any], x: Tensor, y: Tensor | None) -> Any:
    """`method(x)`, or `method(x, y)` for labelled batches: unconditional stand-ins need not take labels."""
    return method(x) if y is None else method(x, y)


def reconstruct(model: nn.Module, images: Tensor, *, labels: Tensor | None = None,
                batch_size: int = EVAL_BATCH) -> Tensor:
    """The decoder mean at z = μ(x) for every image, (N, C, H, W) in [0, 1] on the CPU."""
    return batched(model, lambda x, y: _call(model.reconstruct, x, y), images, labels, batch_size=batch_size)


def encode_means(model: nn.Module, images: Tensor, *, labels: Tensor | None = None,
                 batch_size: int = EVAL_BATCH) -> Tensor:
    """Posterior means E_q[z|x] (the AE's codes), (N, D) on the CPU."""
    return batched(model, lambda x, y: _call(model.encode, x, y).mu, images, labels, batch_size=batch_size)
