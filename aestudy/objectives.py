"""Objectives in nats per image: Gaussian KL, ELBO terms, β-ELBO / AE loss, KL warm-up, IWAE bound, IS-NLL.

ELBO(x) = E_q(z|x)[log p(x|z)] − KL(q(z|x) ‖ N(0, I)) ≤ log p(x)   (Kingma & Welling 2014)
L_k(x)  = E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)], z_i ~ q(z|x);  L_1 = ELBO ≤ L_k ≤ log p(x)   (Burda et al. 2016)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.models import Posterior, clamp_logvar
from aestudy.progress import progress as progress_bar


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) ‖ N(0, 1)) per latent dimension: ½ (μ² + σ² − 1 − log σ²), (B, D)."""
    logvar = clamp_logvar(logvar)
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag e^logvar) ‖ N(0, I)) summed over latent dimensions, (B,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{name}={value!r} is invalid; it must be an integer >= {minimum}.")


def mc_kl(mu: Tensor, logvar: Tensor, n_samples: int, *,
          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Monte-Carlo KL(q ‖ N(0, I)) = E_q[log q(z) − log p(z)]: (estimate (B,), standard error (B,))."""
    _check_int("n_samples", n_samples, 2)
    logvar = clamp_logvar(logvar)
    eps = torch.randn((n_samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # (S, B, D)
    log_ratio = (-0.5 * eps * eps - 0.5 * logvar + 0.5 * z * z).sum(dim=2)  # (S, B), log 2π cancels
    return log_ratio.mean(dim=0), log_ratio.std(dim=0) / math.sqrt(n_samples)


@dataclass
class ElboTerms:
    """Per-image ELBO parts in nats: recon = E_q log p(x|z) (≤ 0 for discrete x), kl = KL(q ‖ p(z))."""

    recon: Tensor  # (B,)
    kl: Tensor  # (B,)

    @property
    def elbo(self) -> Tensor:
        """recon − kl, a lower bound on log p(x), (B,)."""
        return self.recon - self.kl


def _require_variational(model: nn.Module, what: str) -> None:
    if not getattr(model, "is_variational", False):
        raise ConfigError(f"{what} needs a variational model (a VAE, config kind='vae'); this model is an AE, "
                          "whose encoder is a point mass, so q(z|x) has no density and the bound is undefined.")


def _repeat(t: Tensor | None, n: int) -> Tensor | None:
    """(B, ...) -> (n * B, ...), sample-major (copies 0..B-1, then again...)."""
    return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))


def elbo_terms(model: nn.Module, x: Tensor, y: Tensor | None = None, *, n_samples: int = 1,
               generator: torch.Generator | None = None) -> ElboTerms:
    """Reparameterised ELBO terms: recon averaged over `n_samples` draws z ~ q(z|x), KL analytic (VAE only)."""
    _require_variational(model, "elbo_terms")
    _check_int("n_samples", n_samples, 1)
    post = model.encode(x, y)
    post_s = Posterior(mu=_repeat(post.mu, n_samples), logvar=_repeat(post.logvar, n_samples))
    out = model.decode(post_s.rsample(generator), _repeat(y, n_samples))  # (S*B, C, H, W)
    recon = model.likelihood.log_prob(_repeat(x, n_samples), out).view(n_samples, -1).mean(dim=0)
    return ElboTerms(recon=recon, kl=gaussian_kl(post.mu, post.logvar))


def loss_terms(model: nn.Module, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0,
               target: Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss (a scalar to minimise) and its parts, batch means in nats per image.

    VAE: loss = mean(−E_q log p(target|z) + beta · KL), one reparameterised z per image (the β-ELBO).
    AE:  loss = mean(−log p(target|decode(encode(x)))), the reconstruction NLL; `beta` has nothing to weigh.
    `target` defaults to `x`; denoising passes the corrupted images as `x` and the clean ones as `target`.
    The dict holds detached scalars: "loss", "recon" = reconstruction NLL (so loss = recon + beta * kl),
    "kl" (0 for the AE).
    """
    target = x if target is None else target
    post = model.encode(x, y)
    out = model.decode(post.rsample(generator), y)
    recon_nll = -model.likelihood.log_prob(target, out)  # (B,)
    if post.logvar is None:
        kl = torch.zeros_like(recon_nll)
        loss = recon_nll.mean()
    else:
        kl = gaussian_kl(post.mu, post.logvar)
        loss = (recon_nll + beta * kl).mean()
    return loss, {"loss": loss.detach(), "recon": recon_nll.mean().detach(), "kl": kl.mean().detach()}


def kl_warmup(epoch_progress: float, warmup_epochs: float) -> float:
    """KL weight factor: a linear ramp 0 -> 1 over `warmup_epochs` (Bowman et al. 2016); 1.0 if no warm-up."""
    if not (isinstance(warmup_epochs, (int, float)) and warmup_epochs >= 0):
        raise ConfigError(f"warmup_epochs={warmup_epochs!r} is invalid; it must be a number >= 0.")
    if warmup_epochs == 0:
        return 1.0
    return float(min(1.0, max(0.0, epoch_progress / warmup_epochs)))


def chunked_log_mean_exp(log_weights: Callable[[int], Tensor], k: int, chunk_size: int) -> Tensor:
    """log (1/k) Σ_i e^{w_i} for k draws, asking `log_weights(c)` for (c, B) chunks: memory O(chunk_size)."""
    _check_int("k", k, 1)
    _check_int("chunk_size", chunk_size, 1)
    total: Tensor | None = None
    done = 0
    while done < k:
        c = min(chunk_size, k - done)
        part = torch.logsumexp(log_weights(c), dim=0)  # (B,)
        total = part if total is None else torch.logaddexp(total, part)
        done += c
    assert total is not None
    return total - math.log(k)


def _log_weights(model: nn.Module, x: Tensor, y: Tensor | None, post: Posterior, c: int,
                 generator: torch.Generator | None) -> Tensor:
    """log p(x, z_i) − log q(z_i|x) for c draws z_i ~ q(z|x), (c, B)."""
    mu, logvar = post.mu, clamp_logvar(post.logvar)
    eps = torch.randn((c, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # (c, B, D)
    out = model.decode(z.flatten(0, 1), _repeat(y, c))  # (c*B, C, H, W)
    log_px_z = model.likelihood.log_prob(_repeat(x, c), out).view(c, -1)  # (c, B)
    log_pz_minus_log_qz = (-0.5 * z * z + 0.5 * eps * eps + 0.5 * logvar).sum(dim=2)  # log 2π cancels
    return log_px_z + log_pz_minus_log_qz


def iwae_bound(model: nn.Module, x: Tensor, k: int, *, y: Tensor | None = None, chunk_size: int = 100,
               generator: torch.Generator | None = None) -> Tensor:
    """The IWAE bound L_k per image (B,), nats; chunks of `chunk_size` samples keep memory O(chunk_size)."""
    _require_variational(model, "iwae_bound")
    _check_int("k", k, 1)
    _check_int("chunk_size", chunk_size, 1)
    post = model.encode(x, y)
    return chunked_log_mean_exp(lambda c: _log_weights(model, x, y, post, c, generator), k, chunk_size)


def is_nll(model: nn.Module, images: Tensor, *, k: int = 1000, batch_size: int = 100, chunk_size: int = 100,
           generator: torch.Generator | None = None, labels: Tensor | None = None,
           progress: bool = False) -> Tensor:
    """Importance-sampled NLL −L_k per image (N,), nats, on the CPU; a standard test NLL at k = 5,000."""
    _require_variational(model, "is_nll")
    _check_int("batch_size", batch_size, 1)
    device = next(model.parameters()).device
    out: list[Tensor] = []
    starts = range(0, images.shape[0], batch_size)
    with torch.no_grad():
        for s in progress_bar(starts, desc=f"IS-NLL k={k}", enabled=progress, unit="batch"):
            x = images[s:s + batch_size].to(device)
            y = None if labels is None else labels[s:s + batch_size].to(device)
            out.append(-iwae_bound(model, x, k, y=y, chunk_size=chunk_size, generator=generator).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def bits_per_dim(nats: Tensor | float, num_pixels: int) -> Tensor | float:
    """nats per image -> bits per dimension: nats / (num_pixels · ln 2)."""
    return nats / (num_pixels * math.log(2.0))
