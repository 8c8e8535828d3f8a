"""Denoising: seeded corrupted inputs, and how well each model's output recovers the clean images (PSNR, SSIM).

The corruptions themselves live in `aestudy.noise`. Taught in notebook 04 section 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.evaluation import generator_on, reconstruct
from aestudy.metrics import psnr, ssim
from aestudy.noise import NoiseConfig, corrupt

DENOISING_NOISES: tuple[str, ...] = ("gaussian", "salt_pepper")


def denoising_noise(kind: str, level: float) -> NoiseConfig:
    """The noise a denoising model is trained on, validated with the notebook's parameter names."""
    if kind not in DENOISING_NOISES:
        raise ConfigError(f"train_noise={kind!r} is invalid; valid values: {', '.join(DENOISING_NOISES)}.")
    number = isinstance(level, (int, float)) and not isinstance(level, bool)
    if not (number and 0 < level <= 1):
        raise ConfigError(f"train_noise_level={level!r} is invalid; it must be a number in (0, 1] (σ for "
                          "'gaussian', the corrupted share p for 'salt_pepper').")
    return NoiseConfig(kind, float(level))


def noise_grid(levels: Mapping[str, Sequence[float]], train_noise: NoiseConfig) -> list[NoiseConfig]:
    """Evaluation noises: each kind at each level, plus the training noise itself (sorted, no duplicates)."""
    pairs = {(kind, float(level)) for kind, kinds_levels in levels.items() for level in kinds_levels}
    pairs.add((train_noise.kind, train_noise.level))
    return [NoiseConfig(kind, level) for kind, level in sorted(pairs)]


def corrupted(images: Tensor, noise: NoiseConfig, *, seed: int = 0) -> Tensor:
    """A seeded corrupted copy of `images`, so every model sees the very same noisy inputs."""
    return corrupt(images, noise, generator=generator_on(seed))


def denoising_table(models: Mapping[str, nn.Module], clean: Tensor, noises: Sequence[NoiseConfig], *,
                    seed: int = 0, batch_size: int = 1000) -> pd.DataFrame:
    """PSNR (dB) and SSIM of each model's output for corrupted `clean` images, scored against the clean ones.

    One row per (model, noise kind, level); the model "noisy input" scores the corrupted images themselves.
    Columns: model, noise, level, psnr (mean dB), psnr_sem, ssim (mean).
    """
    rows = []
    for noise in noises:
        noisy = corrupted(clean, noise, seed=seed)
        outputs = {"noisy input": noisy} | {name: reconstruct(m, noisy, batch_size=batch_size)
                                            for name, m in models.items()}
        for name, out in outputs.items():
            p = psnr(clean, out).double()
            rows.append({"model": name, "noise": noise.kind, "level": noise.level, "psnr": float(p.mean()),
                         "psnr_sem": float(p.std() / math.sqrt(p.numel())) if p.numel() > 1 else 0.0,
                         "ssim": float(ssim(clean, out).mean())})
    return pd.DataFrame(rows)


def denoising_rows(models: Mapping[str, nn.Module], clean: Tensor, noise: NoiseConfig, *,
                   seed: int = 0) -> dict[str, Tensor]:
    """Image rows for a viewer: clean, noisy, then each model's output for the noisy images."""
    noisy = corrupted(clean, noise, seed=seed)
    return {"clean": clean, "noisy": noisy} | {name: reconstruct(m, noisy) for name, m in models.items()}
