"""Corruption for denoising autoencoders: additive Gaussian σ, salt-and-pepper p, random masking."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from aestudy.errors import ConfigError

NOISE_KINDS: tuple[str, ...] = ("gaussian", "salt_pepper", "mask")


@dataclass(frozen=True)
class NoiseConfig:
    """A corruption: kind "gaussian" (level = σ >= 0), "salt_pepper" (level = p in [0, 1], the share of pixels
    set to 0 or 1 with equal odds) or "mask" (level = share of pixels zeroed, in [0, 1])."""

    kind: str = "gaussian"
    level: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ConfigError(f"kind={self.kind!r} is not a noise kind; valid values: {', '.join(NOISE_KINDS)}.")
        number = isinstance(self.level, (int, float)) and not isinstance(self.level, bool)
        if self.kind == "gaussian":
            if not (number and 0 <= self.level < math.inf):
                raise ConfigError(f"level={self.level!r} is invalid for kind='gaussian'; it is the noise σ, "
                                  "a number >= 0.")
        elif not (number and 0 <= self.level <= 1):
            raise ConfigError(f"level={self.level!r} is invalid for kind={self.kind!r}; it is a probability, "
                              "a number in [0, 1].")


def corrupt(x: Tensor, noise: NoiseConfig, *, generator: torch.Generator | None = None) -> Tensor:
    """A corrupted copy of images `x` (values in [0, 1]), clamped to [0, 1]; pixels corrupted independently."""
    if noise.kind == "gaussian":
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + noise.level * eps).clamp(0.0, 1.0)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if noise.kind == "salt_pepper":
        # u < p picks the pixel; within that, u < p/2 is pepper (0) and the rest salt (1): one draw does both
        hit = u < noise.level
        salt = (u >= noise.level / 2).to(x.dtype)
        return torch.where(hit, salt, x).clamp(0.0, 1.0)
    return torch.where(u < noise.level, torch.zeros_like(x), x).clamp(0.0, 1.0)
