"""Noise models have the stated statistics, stay in [0, 1], and validate their level."""

from __future__ import annotations

import math

import pytest
import torch

from aestudy.errors import ConfigError
from aestudy.noise import NoiseConfig, corrupt

N = 200_000  # pixels: binomial standard errors of ~1e-3


def _grey() -> torch.Tensor:
    return torch.full((N // 100, 1, 10, 10), 0.5)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_has_std_sigma_on_mid_grey():
    sigma = 0.1  # 5σ from the bounds: clamping touches ~1e-6 of pixels
    diff = corrupt(_grey(), NoiseConfig("gaussian", sigma), generator=_gen()) - 0.5
    se_std = sigma / math.sqrt(2 * N)
    assert abs(diff.std().item() - sigma) < 5 * se_std
    assert abs(diff.mean().item()) < 5 * sigma / math.sqrt(N)


def test_gaussian_noise_is_clamped_to_unit_interval():
    noisy = corrupt(_grey(), NoiseConfig("gaussian", 2.0), generator=_gen())
    assert noisy.min() == 0.0 and noisy.max() == 1.0
    share_clamped = ((noisy == 0) | (noisy == 1)).float().mean().item()
    assert abs(share_clamped - 2 * (1 - 0.5 * (1 + math.erf(0.25 / math.sqrt(2))))) < 0.01  # P(|ε| > 0.25)


@pytest.mark.parametrize("p", [0.05, 0.3, 1.0])
def test_salt_and_pepper_changes_share_p_to_zero_or_one_equally(p):
    clean = _grey()
    noisy = corrupt(clean, NoiseConfig("salt_pepper", p), generator=_gen(1))
    zeros, ones = (noisy == 0).float().mean().item(), (noisy == 1).float().mean().item()
    se = math.sqrt(p * (1 - p) / N) + 1e-12
    assert abs(zeros + ones - p) <= 4 * se
    assert abs(zeros - p / 2) <= 4 * math.sqrt(p / 2 * (1 - p / 2) / N)
    assert ((noisy == 0) | (noisy == 1) | (noisy == clean)).all()  # the rest is untouched


@pytest.mark.parametrize("p", [0.1, 0.75])
def test_mask_zeroes_share_p_and_leaves_the_rest(p):
    clean = _grey()
    noisy = corrupt(clean, NoiseConfig("mask", p), generator=_gen(2))
    assert abs((noisy == 0).float().mean().item() - p) <= 4 * math.sqrt(p * (1 - p) / N)
    assert ((noisy == 0) | (noisy == clean)).all()


@pytest.mark.parametrize("kind", ["gaussian", "salt_pepper", "mask"])
def test_level_zero_is_the_identity_and_input_is_not_modified(kind):
    x = torch.rand(4, 1, 6, 6, generator=_gen(3))
    before = x.clone()
    torch.testing.assert_close(corrupt(x, NoiseConfig(kind, 0.0), generator=_gen()), x)
    noisy = corrupt(x, NoiseConfig(kind, 0.5), generator=_gen(4))
    torch.testing.assert_close(noisy, corrupt(x, NoiseConfig(kind, 0.5), generator=_gen(4)))
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    torch.testing.assert_close(x, before)


@pytest.mark.parametrize(("kind", "level", "message"), [
    ("blur", 0.1, "kind='blur' is not a noise kind; valid values: gaussian, salt_pepper, mask."),
    ("gaussian", -0.1, "level=-0.1 is invalid for kind='gaussian'; it is the noise σ, a number >= 0."),
    ("gaussian", math.inf, "level=inf is invalid for kind='gaussian'; it is the noise σ, a number >= 0."),
    ("salt_pepper", 1.5, "level=1.5 is invalid for kind='salt_pepper'; it is a probability, a number in [0, 1]."),
    ("mask", -0.01, "level=-0.01 is invalid for kind='mask'; it is a probability, a number in [0, 1]."),
    ("mask", "0.5", "level='0.5' is invalid for kind='mask'; it is a probability, a number in [0, 1]."),
])
def test_invalid_noise_config_names_the_parameter_and_valid_values(kind, level, message):
    with pytest.raises(ConfigError) as err:
        NoiseConfig(kind, level)
    assert str(err.value) == message
