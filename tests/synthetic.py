"""Small synthetic inputs several test files share (importable from tests, like idx_fixtures)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

SHAPE = (1, 4, 4)


def low_rank_images(n: int, seed: int = 0) -> torch.Tensor:
    """`n` images (n, 1, 4, 4) in [0, 1] near a 3-dimensional subspace: PCA and linear models recover it."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((3, 16), generator=g)
    mix = torch.rand((n, 3), generator=g)
    return (mix @ base / 3 + 0.05 * torch.rand((n, 16), generator=g)).clamp(0, 1).view(n, *SHAPE)


def spy_on_mmd(module: Any, monkeypatch: Any) -> list[Any]:
    """Replace `module.mmd` by a spy that records the `bandwidths` of each call (and still computes the MMD²)."""
    seen: list[Any] = []
    real: Callable[..., Any] = module.mmd

    def spy(x: Any, y: Any, *, bandwidths: Any = None, **kw: Any) -> Any:
        seen.append(bandwidths)
        return real(x, y, bandwidths=bandwidths, **kw)

    monkeypatch.setattr(module, "mmd", spy)
    return seen
