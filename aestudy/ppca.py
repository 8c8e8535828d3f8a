"""Probabilistic PCA (Tipping & Bishop 1999): exact log p(x) and p(z|x), the ground truth for ELBO/IWAE checks.

Model: z ~ N(0, I_k), x | z ~ N(W z + μ, σ² I_D).  Marginal x ~ N(μ, W Wᵀ + σ² I_D).
Posterior z | x ~ N(M⁻¹ Wᵀ (x − μ), σ² M⁻¹), M = Wᵀ W + σ² I_k.
For any Gaussian q(z|x): ELBO(q) = log p(x) − KL(q ‖ p(z|x)), so ELBO ≤ log p(x) with equality at q = p(z|x).
Everything here is float64 (it is the reference the float32 models are checked against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl_divergence

from aestudy.errors import ConfigError, DataError
from aestudy.evaluation import batched, encode_means
from aestudy.models import LOGVAR_MIN, VAE, ModelConfig
from aestudy.objectives import chunked_log_mean_exp

_LOG_2PI = math.log(2.0 * math.pi)


def _rows(x: Tensor) -> Tensor:
    """Images (N, C, H, W) or rows (N, D) -> float64 rows (N, D)."""
    return x.flatten(1).double() if x.dim() > 2 else x.double()


@dataclass(frozen=True, eq=False)
class PPCA:
    """A pPCA model from (W (D, k), mu (D,), sigma2 > 0); `PPCA.fit` gives the maximum-likelihood one."""

    W: Tensor
    mu: Tensor
    sigma2: float

    def __post_init__(self) -> None:
        if self.W.dim() != 2:
            raise ConfigError(f"W has shape {tuple(self.W.shape)}; it must be (D, k).")
        if self.mu.shape != (self.W.shape[0],):
            raise ConfigError(f"mu has shape {tuple(self.mu.shape)}; it must be ({self.W.shape[0]},) to match W.")
        if not (isinstance(self.sigma2, (int, float)) and 0 < self.sigma2 < math.inf):
            raise ConfigError(f"sigma2={self.sigma2!r} is invalid; it must be a number > 0.")
        object.__setattr__(self, "W", self.W.double())
        object.__setattr__(self, "mu", self.mu.double())
        object.__setattr__(self, "sigma2", float(self.sigma2))

    @classmethod
    def fit(cls, x: Tensor, latent_dim: int) -> PPCA:
        """Closed-form ML fit: σ² = mean discarded eigenvalue of the covariance, W = U_k (Λ_k − σ² I)^½."""
        rows = _rows(x)
        n, d = rows.shape
        if not (isinstance(latent_dim, int) and 1 <= latent_dim < d):
            raise ConfigError(f"latent_dim={latent_dim!r} is invalid; it must be an integer in [1, {d - 1}].")
        mu = rows.mean(dim=0)
        centred = rows - mu
        evals, evecs = torch.linalg.eigh(centred.T @ centred / n)  # ascending
        evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
        sigma2 = float(evals[latent_dim:].mean())
        if sigma2 <= 0:
            raise DataError(f"pPCA fit on {n} rows of dimension {d}: the {d - latent_dim} discarded eigenvalues "
                            "are all 0, so σ² = 0; use fewer latent dimensions or more (varied) data.")
        W = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0.0).sqrt()
        return cls(W=W, mu=mu, sigma2=sigma2)

    @property
    def data_dim(self) -> int:
        """D."""
        return self.W.shape[0]

    @property
    def latent_dim(self) -> int:
        """k."""
        return self.W.shape[1]

    def marginal(self) -> LowRankMultivariateNormal:
        """p(x) = N(μ, W Wᵀ + σ² I) (low-rank + diagonal, evaluated with Woodbury identities)."""
        return LowRankMultivariateNormal(self.mu, self.W, torch.full_like(self.mu, self.sigma2))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) in nats per row, (N,) float64."""
        return self.marginal().log_prob(_rows(x))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) + log p(z) for z of shape (..., N, k), x (N, D): (..., N)."""
        rows = _rows(x)
        mean = z @ self.W.T + self.mu  # (..., N, D)
        log_px_z = -0.5 * ((rows - mean) ** 2).sum(-1) / self.sigma2 - 0.5 * self.data_dim * (
            _LOG_2PI + math.log(self.sigma2))
        log_pz = -0.5 * (z * z).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        return log_px_z + log_pz

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact p(z|x): (mean (N, k), covariance (k, k), shared by all x)."""
        M = self.W.T @ self.W + self.sigma2 * torch.eye(self.latent_dim, dtype=self.W.dtype)
        M_inv = torch.cholesky_inverse(torch.linalg.cholesky(M))
        return (_rows(x) - self.mu) @ self.W @ M_inv, self.sigma2 * M_inv

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n rows x = W z + μ + σ ε, (n, D) float64."""
        z = torch.randn((n, self.latent_dim), generator=generator, dtype=torch.float64)
        eps = torch.randn((n, self.data_dim), generator=generator, dtype=torch.float64)
        return z @ self.W.T + self.mu + math.sqrt(self.sigma2) * eps


def _chol(q_cov: Tensor) -> Tensor:
    """Cholesky factor of q's covariance, (k, k) or (N, k, k)."""
    return torch.linalg.cholesky(q_cov.double())


def elbo_with_gaussian_posterior(ppca: PPCA, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> Tensor:
    """Closed-form ELBO (N,) for q(z|x) = N(q_mean (N, k), q_cov (k, k) or (N, k, k)).

    E_q log p(x|z) = −D/2 log 2πσ² − (‖x − μ − W m‖² + tr(W S Wᵀ)) / 2σ²;
    KL(q ‖ N(0, I)) = ½ (tr S + ‖m‖² − k − log det S).
    """
    rows, m, S = _rows(x), q_mean.double(), q_cov.double()
    L = _chol(S)
    resid = rows - ppca.mu - m @ ppca.W.T
    trace_wsw = torch.einsum("dk,...kl,dl->...", ppca.W, S, ppca.W)
    recon = -0.5 * ppca.data_dim * (_LOG_2PI + math.log(ppca.sigma2)) - 0.5 * (
        (resid**2).sum(-1) + trace_wsw) / ppca.sigma2
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    kl = 0.5 * (torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (m * m).sum(-1) - ppca.latent_dim - logdet)
    return recon - kl


def _log_weights(ppca: PPCA, x: Tensor, q_mean: Tensor, L: Tensor, c: int,
                 generator: torch.Generator | None) -> Tensor:
    """log p(x, z_i) − log q(z_i|x) for c draws z_i ~ q, (c, N)."""
    m = q_mean.double()
    eps = torch.randn((c, *m.shape), generator=generator, dtype=torch.float64)  # (c, N, k)
    z = m + (L @ eps.unsqueeze(-1)).squeeze(-1)
    log_q = (-0.5 * (eps * eps).sum(-1) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
             - 0.5 * ppca.latent_dim * _LOG_2PI)
    return ppca.log_joint(x, z) - log_q


def mc_elbo_with_gaussian_posterior(ppca: PPCA, x: Tensor, q_mean: Tensor, q_cov: Tensor, n_samples: int, *,
                                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Monte-Carlo ELBO E_q[log p(x, z) − log q(z|x)]: (estimate (N,), standard error (N,))."""
    if not (isinstance(n_samples, int) and n_samples >= 2):
        raise ConfigError(f"n_samples={n_samples!r} is invalid; it must be an integer >= 2.")
    log_w = _log_weights(ppca, x, q_mean, _chol(q_cov), n_samples, generator)
    return log_w.mean(dim=0), log_w.std(dim=0) / math.sqrt(n_samples)


def kl_to_posterior(ppca: PPCA, x: Tensor, q_mean: Tensor, q_cov: Tensor) -> Tensor:
    """KL(q(z|x) ‖ p(z|x)) per row (N,): the ELBO's gap."""
    post_mean, post_cov = ppca.posterior(x)
    q = MultivariateNormal(q_mean.double(), scale_tril=_chol(q_cov))
    return kl_divergence(q, MultivariateNormal(post_mean, covariance_matrix=post_cov))


def iwae_with_posterior(ppca: PPCA, x: Tensor, q_mean: Tensor, q_cov: Tensor, k: int, *,
                        generator: torch.Generator | None = None, chunk_size: int = 1000) -> Tensor:
    """One draw of the IWAE bound L_k (N,) with proposal q(z|x) = N(q_mean, q_cov)."""
    L = _chol(q_cov)
    return chunked_log_mean_exp(lambda c: _log_weights(ppca, x, q_mean, L, c, generator), k, chunk_size)


def linear_vae_from_ppca(ppca: PPCA, input_shape: tuple[int, int, int] | None = None) -> VAE:
    """A linear `VAE` (fixed-σ Gaussian) whose decoder is the pPCA and whose encoder is its exact posterior.

    Needs Wᵀ W diagonal (true of `PPCA.fit`), so that σ² M⁻¹ is diagonal like the VAE's q(z|x), and the posterior
    log-variances log(σ² / (‖w_j‖² + σ²)) ≥ LOGVAR_MIN, the smallest the VAE's q(z|x) holds (`models.clamp_logvar`).

    Raises:
        ConfigError: W has non-orthogonal columns.
        DataError: a posterior log-variance is below LOGVAR_MIN (a direction ~1e13 times the noise variance): the
            VAE would clamp it and its ELBO would no longer be log p(x).
    """
    k, d = ppca.latent_dim, ppca.data_dim
    wtw = ppca.W.T @ ppca.W
    if not torch.allclose(wtw, torch.diag(torch.diagonal(wtw)), atol=1e-8 * float(wtw.abs().max())):
        raise ConfigError("W has non-orthogonal columns, so the exact posterior has a full covariance that a "
                          "VAE's diagonal q(z|x) cannot represent; use PPCA.fit (orthogonal W).")
    shape = (1, 1, d) if input_shape is None else tuple(input_shape)
    cfg = ModelConfig(kind="vae", arch="linear", input_shape=shape, latent_dim=k, likelihood="gaussian",
                      sigma=math.sqrt(ppca.sigma2))
    vae = VAE(cfg)
    m_diag = torch.diagonal(wtw) + ppca.sigma2
    post_logvar = torch.log(ppca.sigma2 / m_diag)  # ≤ 0 always, so only the lower end can bind
    if bool((post_logvar < LOGVAR_MIN).any()):
        raise DataError(f"the exact posterior has log-variance {float(post_logvar.min()):.1f} < {LOGVAR_MIN} (σ² = "
                        f"{ppca.sigma2:.3g}), below what a VAE's q(z|x) holds, so the exact-posterior VAE would not be "
                        "exact; use fewer latent dimensions or data whose discarded directions are not ~0 variance.")
    A = ppca.W.T / m_diag[:, None]  # M⁻¹ Wᵀ, (k, D)
    with torch.no_grad():
        vae.encoder.head.weight.copy_(torch.cat([A, torch.zeros(k, d, dtype=A.dtype)]))
        vae.encoder.head.bias.copy_(torch.cat([-A @ ppca.mu, torch.log(ppca.sigma2 / m_diag)]))
        vae.decoder.trunk[-1].weight.copy_(ppca.W)
        vae.decoder.trunk[-1].bias.copy_(ppca.mu)
    return vae


def ppca_of_linear_vae(model: nn.Module) -> PPCA:
    """The exact marginal model of a linear fixed-σ Gaussian VAE: x = W z + b + σ ε is a pPCA."""
    last = model.decoder.trunk[-1]  # the only Linear layer of a linear decoder: (D, k) weight
    return PPCA(W=last.weight.detach().cpu(), mu=last.bias.detach().cpu(), sigma2=float(model.likelihood.sigma) ** 2)


def linear_vae_bounds(model: nn.Module, images: Tensor) -> pd.DataFrame:
    """Per image: exact log p(x) of a linear VAE, its closed-form ELBO, and KL(q(z|x) ‖ p(z|x)) (nats)."""
    ppca = ppca_of_linear_vae(model)
    q_mean = encode_means(model, images).double()  # (N, k)
    # The model's own q(z|x): VAE.encode returns the log-variance clamped to the range the model samples and scores
    # with, so this closed form follows the model (issue 17: the raw value of a linear encoder on RGB crops reached
    # −72, and the closed form of *that* q was 55 nats below the model's Monte-Carlo ELBO).
    logvar = batched(model, lambda x: model.encode(x).logvar, images).double()  # (N, k)
    q_cov = torch.diag_embed(logvar.exp())  # (N, k, k)
    log_px = ppca.log_prob(images)
    elbo = elbo_with_gaussian_posterior(ppca, images, q_mean, q_cov)
    kl = kl_to_posterior(ppca, images, q_mean, q_cov)
    return pd.DataFrame({"log_px": log_px.numpy(), "elbo": elbo.numpy(), "kl_to_posterior": kl.numpy(),
                         "gap": (log_px - elbo).numpy()})
