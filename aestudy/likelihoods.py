"""Decoder likelihoods p(x|z): Bernoulli (logits), continuous Bernoulli, Gaussian (fixed or learned σ).

Every `log_prob` is in nats per image, summed over pixels: `(B, C, H, W) -> (B,)`.
A decoder produces raw outputs; `param(raw)` turns them into this likelihood's parameter tensor
(logits for the Bernoulli family, the mean for the Gaussian), which `log_prob`, `mean` and `sample` take.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.validate import as_bool, as_float

LIKELIHOOD_NAMES: tuple[str, ...] = ("bernoulli", "cbernoulli", "gaussian")

# Below this |logit| the continuous-Bernoulli formulas cancel catastrophically (λ -> 0.5), so their
# Taylor series are used instead; at 0.1 the truncation error of the series is < 1e-10.
_CB_TAYLOR_BELOW = 0.1
_LOG_2PI = math.log(2.0 * math.pi)


def _sum_pixels(t: Tensor) -> Tensor:
    """Sum a (B, ...) tensor over everything but the batch dimension."""
    return t.flatten(1).sum(dim=1)


class Likelihood(nn.Module):
    """A decoder distribution p(x|z) with parameters `out` (one per pixel)."""

    name: str = ""

    def param(self, raw: Tensor) -> Tensor:
        """Map the decoder's raw output to this likelihood's parameter tensor."""
        return raw

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x|out) in nats per image, summed over pixels: (B, C, H, W) -> (B,)."""
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        """The distribution's mean, an image in [0, 1]."""
        raise NotImplementedError

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw x ~ p(x|out), an image in [0, 1]."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels from logits: a density for binary images only."""

    name = "bernoulli"

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """Σ_pixels [x log σ(out) + (1 − x) log(1 − σ(out))]."""
        return -_sum_pixels(F.binary_cross_entropy_with_logits(out, x, reduction="none"))

    def mean(self, out: Tensor) -> Tensor:
        """σ(out)."""
        return torch.sigmoid(out)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Binary pixels x ~ Bernoulli(σ(out))."""
        return torch.bernoulli(torch.sigmoid(out), generator=generator)


def cb_log_norm(logits: Tensor) -> Tensor:
    """log C(λ) of the continuous Bernoulli, λ = σ(logits), stable for λ near 0, 0.5 and 1.

    C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ); with a = logits, 1 − 2λ = −tanh(a/2) and 2 artanh(1 − 2λ) = −a,
    so C = a / tanh(a/2) = |a| / tanh(|a|/2), whose series at 0 is 2 + a²/6 − a⁴/360 + a⁶/15120.
    """
    a = logits.abs()
    safe = torch.where(a < _CB_TAYLOR_BELOW, torch.ones_like(a), a)
    e = torch.exp(-safe)
    exact = torch.log(safe) - (torch.log1p(-e) - torch.log1p(e))  # log|a| − log tanh(|a|/2)
    a2 = a * a
    series = math.log(2.0) + torch.log1p(a2 / 12 - a2 * a2 / 720 + a2 * a2 * a2 / 30240)
    return torch.where(a < _CB_TAYLOR_BELOW, series, exact)


def cb_mean(logits: Tensor) -> Tensor:
    """E[x] of the continuous Bernoulli: λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)) = 1/(1 − e^{−a}) − 1/a."""
    a = logits
    small = a.abs() < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(a), a)
    exact = -1.0 / torch.expm1(-safe) - 1.0 / safe
    series = 0.5 + a / 12 - a**3 / 720
    return torch.where(small, series, exact).clamp(0.0, 1.0)


def cb_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Inverse-CDF draw x = log(1 + u(e^a − 1)) / a, computed for −|a| and mirrored (x ↦ 1 − x) for a > 0."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    neg = -logits.abs()
    small = neg.abs() < _CB_TAYLOR_BELOW
    safe = torch.where(small, -torch.ones_like(neg), neg)
    x_neg = torch.log1p(u * torch.expm1(safe)) / safe
    x_neg = torch.where(small, u + neg * u * (1 - u) / 2, x_neg)  # first-order series in a
    return torch.where(logits > 0, 1.0 - x_neg, x_neg).clamp(0.0, 1.0)


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a normalised density on [0, 1] per pixel.

    It is BCE plus the log-normaliser log C(λ) that BCE on grey levels lacks. `mean` is the distribution's
    mean (not σ(logits), the "probability" BCE would display); it is less extreme than σ(logits).
    """

    name = "cbernoulli"

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """Σ_pixels [x log λ + (1 − x) log(1 − λ) + log C(λ)], λ = σ(out)."""
        bce = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        return _sum_pixels(cb_log_norm(out) - bce)

    def mean(self, out: Tensor) -> Tensor:
        """The continuous-Bernoulli mean, in [0, 1]."""
        return cb_mean(out)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ CB(σ(out)) by inverting the CDF."""
        return cb_sample(out, generator)


class GaussianLikelihood(Likelihood):
    """N(x; mean, σ² I) with its full normalising constant; σ fixed, or one learned scalar `log_sigma`.

    `squash=True` makes the mean σ(raw) so it lies in [0, 1]; the linear model keeps an unbounded mean
    (squash=False) so that it is exactly probabilistic PCA. A learned σ starts at `init_sigma` (0.1, about
    the per-pixel reconstruction error of a trained Fashion-MNIST autoencoder) and is kept in [1e-3, 10].
    """

    name = "gaussian"

    def __init__(self, sigma: float | None = None, *, squash: bool = True, init_sigma: float = 0.1) -> None:
        super().__init__()
        sigma = as_float(sigma, "sigma", low=0, low_open=True, allow_none=True, none_means="learned")
        init_sigma = as_float(init_sigma, "init_sigma", low=1e-3, high=10.0)  # the learned σ's clamp range
        self.squash = as_bool(squash, "squash")
        self.learned = sigma is None
        # a fixed σ stays a Python float (exact in any dtype); a learned one is a float32 parameter
        self.fixed_sigma = None if sigma is None else float(sigma)
        if self.learned:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma)))

    @property
    def sigma(self) -> Tensor | float:
        """The current σ: the fixed float, or the learned scalar tensor (kept in [1e-3, 10])."""
        if self.fixed_sigma is not None:
            return self.fixed_sigma
        return self.log_sigma.clamp(math.log(1e-3), math.log(10.0)).exp()

    def param(self, raw: Tensor) -> Tensor:
        """The mean: σ(raw) when squashing, else raw."""
        return torch.sigmoid(raw) if self.squash else raw

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        """Σ_pixels [−(x − mean)²/(2σ²) − log σ − ½ log 2π]."""
        sigma = self.sigma
        log_sigma = math.log(sigma) if isinstance(sigma, float) else torch.log(sigma)
        z = (x - out) / sigma
        return _sum_pixels(-0.5 * z * z - log_sigma - 0.5 * _LOG_2PI)

    def mean(self, out: Tensor) -> Tensor:
        """The mean, clamped to [0, 1] for display."""
        return out.clamp(0.0, 1.0)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """mean + σ ε, clamped to [0, 1] (the density itself has unbounded support)."""
        eps = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return (out + self.sigma * eps).clamp(0.0, 1.0)


def build_likelihood(name: str, *, sigma: float | None = None, squash: bool = True) -> Likelihood:
    """The likelihood called `name` ("bernoulli" | "cbernoulli" | "gaussian")."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "cbernoulli":
        return ContinuousBernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(sigma, squash=squash)
    raise ConfigError(f"likelihood={name!r} is not a likelihood; valid values: {', '.join(LIKELIHOOD_NAMES)}.")
