"""Decoder likelihoods agree with torch.distributions, are normalised densities, and have the stated means."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal

from aestudy.errors import ConfigError
from aestudy.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    build_likelihood,
    cb_log_norm,
    cb_mean,
)

SHAPE = (5, 1, 4, 3)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cb_density(logit: float):
    """x -> CB density at x (float64), for numeric integration."""
    lik = ContinuousBernoulliLikelihood()
    out = torch.tensor([[logit]], dtype=torch.float64)
    return lambda x: math.exp(float(lik.log_prob(torch.tensor([[x]], dtype=torch.float64), out)))


def test_bernoulli_log_prob_equals_torch_distribution_summed_over_pixels():
    logits = torch.randn(SHAPE, generator=_gen(), dtype=torch.float64) * 3
    x = torch.bernoulli(torch.full(SHAPE, 0.4, dtype=torch.float64), generator=_gen(1))
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    got = BernoulliLikelihood().log_prob(x, logits)
    assert got.shape == (SHAPE[0],)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [0.02, 1.0, 8.0])
def test_continuous_bernoulli_log_prob_equals_torch_distribution(scale):
    logits = torch.randn(SHAPE, generator=_gen(2), dtype=torch.float64) * scale
    x = torch.rand(SHAPE, generator=_gen(3), dtype=torch.float64)
    expected = ContinuousBernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    got = ContinuousBernoulliLikelihood().log_prob(x, logits)
    # torch's own expansion near λ = 0.5 is second order, so allow its truncation error
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("lam", [1e-6, 0.02, 0.3, 0.5 - 1e-4, 0.5, 0.5 + 1e-4, 0.7, 0.98, 1 - 1e-6])
def test_continuous_bernoulli_density_integrates_to_one(lam):
    logit = math.log(lam / (1 - lam))
    total, _ = integrate.quad(_cb_density(logit), 0.0, 1.0, epsabs=1e-12, epsrel=1e-10)
    assert total == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("lam", [0.01, 0.5 - 1e-4, 0.5, 0.5 + 1e-4, 0.9])
def test_continuous_bernoulli_mean_is_the_integral_of_x_times_density(lam):
    logit = math.log(lam / (1 - lam))
    density = _cb_density(logit)
    expected, _ = integrate.quad(lambda x: x * density(x), 0.0, 1.0, epsabs=1e-12, epsrel=1e-10)
    got = float(cb_mean(torch.tensor(logit, dtype=torch.float64)))
    assert got == pytest.approx(expected, abs=1e-8)


def test_continuous_bernoulli_mean_matches_torch_away_from_half_and_is_not_sigmoid():
    logits = torch.tensor([-4.0, -0.5, 0.5, 4.0], dtype=torch.float64)
    torch.testing.assert_close(cb_mean(logits), ContinuousBernoulli(logits=logits).mean, rtol=0, atol=1e-10)
    # far out, torch clamps λ (error ~1e-6); the closed form 1/(1 − e^{−a}) − 1/a is exact there
    far = torch.tensor([-30.0, 30.0], dtype=torch.float64)
    exact = torch.tensor([1 / 30 - math.exp(-30), 1 - 1 / 30 + math.exp(-30)], dtype=torch.float64)
    torch.testing.assert_close(cb_mean(far), exact, rtol=0, atol=1e-15)
    logits = torch.cat([far, logits])
    # the CB mean is less extreme than the BCE "probability" σ(logit)
    assert (cb_mean(logits) - 0.5).abs().lt((torch.sigmoid(logits) - 0.5).abs()).all()


def test_continuous_bernoulli_log_norm_is_smooth_and_finite_across_the_series_switch():
    a = torch.tensor([0.0, 1e-8, 0.0999999, 0.1, 0.1000001, -0.1, 50.0, -80.0], dtype=torch.float64,
                     requires_grad=True)
    value = cb_log_norm(a)
    assert value[0].item() == pytest.approx(math.log(2.0), abs=1e-15)
    assert value[2].item() == pytest.approx(value[3].item(), abs=1e-7)
    assert value[3].item() == pytest.approx(value[4].item(), abs=1e-7)
    # exact closed form log(a / tanh(a/2)) where it is well conditioned
    assert value[3].item() == pytest.approx(math.log(0.1 / math.tanh(0.05)), abs=1e-12)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(a.grad).all()
    f32 = cb_log_norm(torch.tensor([0.0, 1e-4, -1e-4, 0.1], dtype=torch.float32))
    assert torch.isfinite(f32).all()


@pytest.mark.parametrize("logit", [-60.0, -3.0, -1e-4, 0.0, 1e-4, 0.7, 60.0])
def test_continuous_bernoulli_samples_follow_the_cdf(logit):
    out = torch.full((20000,), logit, dtype=torch.float64)
    x = ContinuousBernoulliLikelihood().sample(out, _gen(4))
    assert x.min() >= 0 and x.max() <= 1
    mean = float(cb_mean(torch.tensor(logit, dtype=torch.float64)))
    se = float(x.std()) / math.sqrt(x.numel())
    assert abs(float(x.mean()) - mean) < 4 * se + 1e-9
    if abs(logit) < 10:  # torch's cdf is only accurate for moderate λ
        cdf = ContinuousBernoulli(logits=torch.tensor(logit, dtype=torch.float64)).cdf
        assert stats.kstest(x.numpy(), lambda v: cdf(torch.as_tensor(v)).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("sigma", [0.05, 1.0])
def test_gaussian_fixed_sigma_log_prob_equals_torch_normal(sigma):
    lik = GaussianLikelihood(sigma).double()
    mean = torch.rand(SHAPE, generator=_gen(5), dtype=torch.float64)
    x = torch.rand(SHAPE, generator=_gen(6), dtype=torch.float64)
    expected = Normal(mean, sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(x, mean), expected, rtol=0, atol=1e-9)
    assert list(lik.parameters()) == []


def test_gaussian_learned_sigma_is_one_trainable_scalar_starting_at_0_1():
    lik = GaussianLikelihood(None)
    (param,) = list(lik.parameters())
    assert param.shape == () and lik.sigma.item() == pytest.approx(0.1)
    mean = torch.rand(SHAPE, generator=_gen(7))
    x = (mean + 0.3 * torch.randn(SHAPE, generator=_gen(8))).detach()
    expected = Normal(mean, lik.sigma.item()).log_prob(x).flatten(1).sum(1)
    log_p = lik.log_prob(x, mean)
    torch.testing.assert_close(log_p, expected, rtol=1e-6, atol=1e-4)
    (-log_p.sum()).backward()
    assert param.grad is not None and param.grad.item() < 0  # residuals of 0.3 > σ = 0.1: σ should grow


def test_gaussian_param_squashes_into_unit_interval_unless_linear():
    raw = torch.tensor([-5.0, 0.0, 5.0])
    torch.testing.assert_close(GaussianLikelihood(0.1).param(raw), torch.sigmoid(raw))
    torch.testing.assert_close(GaussianLikelihood(0.1, squash=False).param(raw), raw)
    torch.testing.assert_close(GaussianLikelihood(0.1).mean(raw), torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("name", ["bernoulli", "cbernoulli", "gaussian"])
def test_means_and_samples_are_images_in_unit_interval(name):
    lik = build_likelihood(name, sigma=0.5)
    out = lik.param(torch.randn(SHAPE, generator=_gen(9)) * 10)
    for img in (lik.mean(out), lik.sample(out, _gen(10))):
        assert img.shape == SHAPE and img.min() >= 0 and img.max() <= 1
    torch.testing.assert_close(lik.sample(out, _gen(11)), lik.sample(out, _gen(11)))


def test_bernoulli_samples_are_binary_with_the_right_rate():
    out = torch.full((40000,), math.log(0.3 / 0.7))
    x = BernoulliLikelihood().sample(out, _gen(12))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert abs(x.mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 40000)


def test_unknown_likelihood_is_a_config_error_naming_valid_values():
    with pytest.raises(ConfigError, match=r"^likelihood='bce' is not a likelihood; valid values: "
                                          r"bernoulli, cbernoulli, gaussian\.$"):
        build_likelihood("bce")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sigma": 0.0}, "sigma=0.0 is invalid; it must be None (learned) or a finite number > 0."),
    ({"sigma": math.nan}, "sigma=nan is invalid; it must be None (learned) or a finite number > 0."),
    ({"sigma": None, "init_sigma": 20.0}, "init_sigma=20.0 is invalid; it must be a finite number in [0.001, 10]."),
    ({"sigma": 0.1, "squash": 1}, "squash=1 is invalid; it must be True or False."),
])
def test_gaussian_likelihood_options_are_checked(kwargs, message):
    with pytest.raises(ConfigError) as err:
        GaussianLikelihood(**kwargs)
    assert str(err.value) == message
    assert type(GaussianLikelihood(np.float32(0.5)).fixed_sigma) is float
