"""Blur measures for images and model samples, each also relative to the data (the seed text's "blurry outputs").

Two measures, both per image, lower = blurrier:

- **Laplacian variance** (`aestudy.metrics.sharpness`): the variance of the 3×3 Laplacian response, in
  intensity². Scales with contrast: multiplying an image by `a` multiplies it by `a²`.
- **High-frequency share**: the share of an image's spectral power at radial frequencies above `cutoff`
  (cycles per pixel; the Nyquist frequency along an axis is 0.5). Natural images have roughly 1/f² power
  (Field 1987; van der Schaaf & van Hateren 1996), so blurring removes the high end first. The DC term is
  excluded (the per-image, per-channel mean is subtracted first), so the share is invariant to brightness
  offsets and to contrast scaling (a ratio of powers). Colour images: the power spectra of the C channels are
  summed before the share is taken.

White noise has a flat expected spectrum, so its share equals the share of frequency bins above the cutoff
(`frequency_area_share`; ≈ 1 − π c² for the square [−½, ½]² of the discrete spectrum) — with or without the
window, because a window multiplies uncorrelated noise and leaves its expected spectrum flat.

`relative_blur(samples, data)` divides each measure's mean over `samples` by its mean over `data`: 1 means as
sharp as the data, below 1 blurrier. The Laplacian ratio is invariant to a contrast scale applied to both sets
(a² cancels) but not to one applied to the samples alone; the share ratio is invariant to either.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from aestudy.errors import ConfigError
from aestudy.metrics import sharpness
from aestudy.validate import as_choice, as_float

WINDOWS: tuple[str | None, ...] = ("hann", None)
DEFAULT_CUTOFF = 0.25  # cycles/pixel: half the Nyquist frequency


def _check_images(images: Tensor, name: str) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0 or min(images.shape[2:]) < 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"{name} has shape {shape}; it must be a non-empty (N, C, H, W) tensor with H, W >= 3.")
    return images.detach().to("cpu", torch.float64)


def laplacian_variance(images: Tensor) -> Tensor:
    """Variance of the 3×3 Laplacian per image ('valid' region, channels pooled), intensity², (N,) float64.

    The same measure as `aestudy.metrics.sharpness` (that function is reused), computed in float64.
    """
    return sharpness(_check_images(images, "images"))


def radial_frequency(height: int, width: int) -> Tensor:
    """Radial frequency |f| in cycles per pixel of each bin of an H×W discrete spectrum (unshifted), (H, W)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)
    fx = torch.fft.fftfreq(width, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def power_spectrum(images: Tensor, *, window: str | None = "hann") -> Tensor:
    """|FFT|² per image, summed over channels, after removing each channel's mean (and windowing), (N, H, W).

    window: "hann" (default) multiplies by a separable Hann window first, so the jump between opposite borders
    (the DFT treats an image as periodic) does not add spurious high-frequency power; None uses the raw image.
    Units: intensity² (unnormalised DFT power); only ratios of it are used here.
    """
    window = as_choice(window, "window", WINDOWS)
    x = _check_images(images, "images")
    x = x - x.mean(dim=(2, 3), keepdim=True)
    if window == "hann":
        h, w = x.shape[2:]
        wy = torch.hann_window(h, periodic=False, dtype=torch.float64)
        wx = torch.hann_window(w, periodic=False, dtype=torch.float64)
        x = x * (wy[:, None] * wx[None, :])
    return torch.fft.fft2(x).abs().pow(2).sum(dim=1)


def frequency_area_share(height: int, width: int, cutoff: float = DEFAULT_CUTOFF) -> float:
    """Share of the non-DC frequency bins of an H×W spectrum with |f| > cutoff: white noise's expected share."""
    r = radial_frequency(height, width)
    return float((r > cutoff).sum() / (r.numel() - 1))


def high_frequency_share(images: Tensor, *, cutoff: float = DEFAULT_CUTOFF, window: str | None = "hann") -> Tensor:
    """Share of spectral power at |f| > cutoff (cycles/pixel) among all non-DC power, per image, in [0, 1], (N,).

    Equivalently, the radially averaged power spectrum weighted by each ring's number of bins, summed above the
    cutoff over its sum over all rings. A constant image (no power) gives NaN. Lower = blurrier.
    Raises ConfigError for a cutoff outside (0, √½) (the corner of the spectrum) or a bad shape.
    """
    cutoff = as_float(cutoff, "cutoff", low=0.0, high=math.sqrt(0.5), low_open=True, high_open=True)
    power = power_spectrum(images, window=window)  # (N, H, W)
    r = radial_frequency(*power.shape[1:])
    total = power.flatten(1).sum(dim=1)  # the DC bin is ~0 after mean removal (exactly 0 without a window)
    high = (power * (r > cutoff)).flatten(1).sum(dim=1)
    return torch.where(total > 0, high / total, torch.full_like(total, math.nan))


def radial_profile(images: Tensor, *, n_bins: int = 16, window: str | None = "hann") -> tuple[np.ndarray, np.ndarray]:
    """The radially averaged power spectrum, averaged over images: (bin centres in cycles/pixel, mean power).

    Bins are equal-width rings over (0, ½] (corner frequencies above ½ are left out, as rings there are
    incomplete); each value is the mean power of the bins in that ring, averaged over images. For plots
    (log–log: natural images fall roughly as 1/f²). Units of power as in `power_spectrum`.
    """
    power = power_spectrum(images, window=window).mean(dim=0)  # (H, W)
    r = radial_frequency(*power.shape)
    edges = torch.linspace(0.0, 0.5, n_bins + 1, dtype=torch.float64)
    centres, values = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        ring = (r > lo) & (r <= hi)
        if ring.any():
            centres.append(float((lo + hi) / 2))
            values.append(float(power[ring].mean()))
    return np.array(centres), np.array(values)


def relative_blur(samples: Tensor, data: Tensor, *, cutoff: float = DEFAULT_CUTOFF,
                  window: str | None = "hann") -> dict[str, float]:
    """Blur of `samples` relative to `data` (both (N, C, H, W) in [0, 1], same C, H, W; N may differ).

    Returns means over images: laplacian_variance, laplacian_variance_data, laplacian_ratio (samples / data),
    hf_share, hf_share_data, hf_ratio (samples / data), and cutoff. Ratios below 1 mean blurrier than the data.
    Raises ConfigError when the shapes differ or an input is not (N, C, H, W).
    """
    s, d = _check_images(samples, "samples"), _check_images(data, "data")
    if s.shape[1:] != d.shape[1:]:
        raise ConfigError(f"samples are {tuple(s.shape[1:])} images but data are {tuple(d.shape[1:])}; compare "
                          "images of one (C, H, W).")
    lap_s, lap_d = float(laplacian_variance(s).mean()), float(laplacian_variance(d).mean())
    hf_s = float(torch.nanmean(high_frequency_share(s, cutoff=cutoff, window=window)))
    hf_d = float(torch.nanmean(high_frequency_share(d, cutoff=cutoff, window=window)))
    return {"laplacian_variance": lap_s, "laplacian_variance_data": lap_d, "laplacian_ratio": lap_s / lap_d,
            "hf_share": hf_s, "hf_share_data": hf_d, "hf_ratio": hf_s / hf_d, "cutoff": float(cutoff)}
