"""Blur measures: blurring lowers both, white noise is flat, the documented invariances hold, bad input is named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_sample_images

from aestudy import blur, metrics
from aestudy.errors import ConfigError


def _photo_patches(n: int = 8, side: int = 32) -> torch.Tensor:
    """Real colour patches (N, 3, side, side) in [0, 1] from scikit-learn's sample photo."""
    photo = load_sample_images().images[0]
    rng = np.random.default_rng(0)
    tops, lefts = rng.integers(0, 427 - side, n), rng.integers(0, 640 - side, n)
    patches = np.stack([photo[t:t + side, s:s + side] for t, s in zip(tops, lefts, strict=True)])
    return torch.from_numpy(patches).permute(0, 3, 1, 2).double() / 255


def _gaussian_blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect"))


@pytest.mark.parametrize("window", ["hann", None])
def test_gaussian_blur_lowers_both_measures(window):
    x = _photo_patches()
    y = _gaussian_blurred(x, 1.5)
    assert (blur.high_frequency_share(y, window=window) < blur.high_frequency_share(x, window=window)).all()
    assert (blur.laplacian_variance(y) < blur.laplacian_variance(x)).all()
    rel = blur.relative_blur(y, x, window=window)
    assert rel["hf_ratio"] < 0.5 and rel["laplacian_ratio"] < 0.5
    same = blur.relative_blur(x, x, window=window)
    assert same["hf_ratio"] == pytest.approx(1.0) and same["laplacian_ratio"] == pytest.approx(1.0)


def test_more_blur_is_monotone():
    x = _photo_patches(4)
    shares = [float(blur.high_frequency_share(_gaussian_blurred(x, s)).mean()) for s in (0.0, 0.5, 1.0, 2.0)]
    assert shares == sorted(shares, reverse=True)


@pytest.mark.parametrize("window", ["hann", None])
@pytest.mark.parametrize("cutoff", [0.1, 0.25, 0.4])
def test_white_noise_share_is_the_area_share(window, cutoff):
    noise = torch.randn((400, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    area = blur.frequency_area_share(32, 32, cutoff)
    share = blur.high_frequency_share(noise, cutoff=cutoff, window=window)
    assert abs(float(share.mean()) - area) < 0.01  # 400 images x 3 channels: standard error ~0.002
    if cutoff == 0.25:  # the continuous approximation: the square minus the disc of radius c
        assert area == pytest.approx(1 - math.pi * cutoff**2, abs=0.01)


def test_white_noise_radial_profile_is_flat():
    noise = torch.randn((400, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    centres, power = blur.radial_profile(noise, n_bins=8, window=None)
    assert len(centres) == 8 and np.all(np.diff(centres) > 0)
    assert power.max() / power.min() < 1.15  # E|F|^2 = N sigma^2 in every bin; 400 images average the rest


def test_photos_fall_with_frequency():
    _, power = blur.radial_profile(_photo_patches(16), n_bins=8)
    assert power[0] > 10 * power[-1]  # roughly 1/f^2: natural images put most power at low frequencies


def test_scale_invariances():
    x = _photo_patches()
    y = _gaussian_blurred(x, 1.0)
    share = blur.high_frequency_share(x)
    torch.testing.assert_close(blur.high_frequency_share(0.3 * x + 0.2), share)  # contrast and offset
    torch.testing.assert_close(blur.laplacian_variance(0.5 * x), 0.25 * blur.laplacian_variance(x))  # a^2
    torch.testing.assert_close(blur.laplacian_variance(x + 0.3), blur.laplacian_variance(x))  # offset
    rel = blur.relative_blur(y, x)
    both = blur.relative_blur(0.5 * y, 0.5 * x)  # one contrast scale on both sets cancels in both ratios
    assert both["laplacian_ratio"] == pytest.approx(rel["laplacian_ratio"])
    assert both["hf_ratio"] == pytest.approx(rel["hf_ratio"])
    alone = blur.relative_blur(0.5 * y, x)  # on the samples alone: the share ratio is unchanged, Laplacian's not
    assert alone["hf_ratio"] == pytest.approx(rel["hf_ratio"])
    assert alone["laplacian_ratio"] == pytest.approx(0.25 * rel["laplacian_ratio"])


def test_laplacian_variance_is_metrics_sharpness():
    x = _photo_patches(3).float()
    torch.testing.assert_close(blur.laplacian_variance(x), metrics.sharpness(x.double()))


def test_channels_sum_power():
    x = _photo_patches(2)
    grey = x[:, :1]
    torch.testing.assert_close(blur.power_spectrum(grey.expand(-1, 3, -1, -1)), 3 * blur.power_spectrum(grey))
    torch.testing.assert_close(blur.high_frequency_share(grey.expand(-1, 3, -1, -1)), blur.high_frequency_share(grey))


def test_constant_image_share_is_nan():
    assert torch.isnan(blur.high_frequency_share(torch.full((1, 1, 8, 8), 0.5))).all()


def test_bad_input_is_named():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"^samples are \(3, 8, 8\) images but data are \(1, 8, 8\); compare"):
        blur.relative_blur(torch.rand(2, 3, 8, 8), x)
    with pytest.raises(ConfigError, match=r"^images has shape \(8, 8\); it must be a non-empty \(N, C, H, W\)"):
        blur.high_frequency_share(torch.rand(8, 8))
    with pytest.raises(ConfigError, match=r"^cutoff=0\.8 is invalid; it must be a finite number in \(0, 0\.707107\)"):
        blur.high_frequency_share(x, cutoff=0.8)
    with pytest.raises(ConfigError, match=r"^window='hamming' is invalid; valid values: 'hann', None"):
        blur.power_spectrum(x, window="hamming")
