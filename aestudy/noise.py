"""Corruption for denoising autoencoders: additive Gaussian σ, salt-and-pepper p, random masking."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aestudy.errors import ConfigError
from aestudy.validate import is_number

NOISE_KINDS: tuple[str, ...] = ("gaussian", "salt_pepper", "mask")


@dataclass(frozen=True)
class NoiseConfig:
    """A corruption: kind "gaussian" (level = σ >= 0), "salt_pepper" (level = p in [0, 1], the share of pixels
    set to 0 or 1 with equal odds) or "mask" (level = share of pixels zeroed, in [0, 1])."""

    kind: str = "gaussian"
    level: float = 0.3

    def __post_init__(self) -> None:
        kind = str(self.kind) if isinstance(self.kind, str) else self.kind
        if kind not in NOISE_KINDS:
            raise ConfigError(f"kind={self.kind!r} is not a noise kind; valid values: {', '.join(NOISE_KINDS)}.")
        # is_number refuses bools, NaN and inf; a numpy scalar is stored as a plain float (configs are hashed
        # into cache keys and read back from checkpoints with weights_only=True)
        number = is_number(self.level)
        if kind == "gaussian":
            if not (number and self.level >= 0):
                raise ConfigError(f"level={self.level!r} is invalid for kind='gaussian'; it is the noise σ, "
                                  "a number >= 0.")
        elif not (number and 0 <= self.level <= 1):
            raise ConfigError(f"level={self.level!r} is invalid for kind={kind!r}; it is a probability, "
                              "a number in [0, 1].")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "level", float(self.level))


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
