"""Notebook 02 (VAE maths and the ELBO): Monte-Carlo KL, IWAE, gradient estimators, rate and distortion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor, nn

from aestudy.data import Dataset
from aestudy.evaluation import batched, evaluating, generator_on, model_device
from aestudy.metrics import active_units, evaluate_elbo
from aestudy.models import ModelConfig
from aestudy.objectives import gaussian_kl, iwae_bound, mc_kl
from aestudy.series import shared
from aestudy.train import TrainConfig, TrainResult, train_or_load

SIZES = {  # knob: (smoke, standard, full)
    "limit": (2000, None, None),  # training images (None = all 55,000)
    "val_size": (500, 5000, 5000),
    "epochs": shared.SIZES["vae_epochs"],  # the main VAE = the reference VAE (aestudy.series.shared)
    "sweep_epochs": (1, 5, 30),  # the β sweep and the linear VAE
    "betas": ((0.5, 4.0), (0.1, 0.5, 1.0, 2.0, 4.0, 8.0), (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
    "warmup_beta": (4.0, 4.0, 8.0),
    "nll_k": (50, 1000, 5000),  # importance samples of the IS-NLL
    "nll_images": (200, 1000, 10000),  # test images of the IS-NLL
    "iwae_ks": ((1, 10, 100), (1, 10, 100, 1000), (1, 10, 100, 1000, 5000)),
    "exact_images": (200, 1000, 2000),  # test images of the exact (pPCA) checks
    "grad_repeats": (50, 300, 1000),  # independent estimates per gradient estimator
}



def kl_convergence(mu: Tensor, logvar: Tensor, sample_sizes: Sequence[int], *, seed: int = 0) -> pd.DataFrame:
    """Monte-Carlo KL estimates (with standard errors) against the closed form, for growing sample sizes."""
    gen = torch.Generator().manual_seed(seed)
    exact = gaussian_kl(mu, logvar)
    rows = []
    for n in sample_sizes:
        est, sem = mc_kl(mu, logvar, n, generator=gen)
        for i in range(len(mu)):
            rows.append({"n_samples": n, "posterior": i, "mc_kl": float(est[i]), "sem": float(sem[i]),
                         "analytic_kl": float(exact[i]), "z_score": float((est[i] - exact[i]) / sem[i])})
    return pd.DataFrame(rows)


def iwae_curve(model: nn.Module, images: Tensor, ks: Sequence[int], *, repeats: int = 5, seed: int = 0,
               chunk_size: int = 100) -> pd.DataFrame:
    """Mean IWAE bound L_k over `images` for each k (nats), averaged over `repeats` draws, with its sd."""
    device = model_device(model)
    gen = generator_on(seed, device)
    rows = []
    with evaluating(model):
        for k in ks:
            draws = torch.stack([iwae_bound(model, images.to(device), k, chunk_size=chunk_size,
                                            generator=gen).double().mean().cpu() for _ in range(repeats)])
            rows.append({"k": k, "iwae": float(draws.mean()), "sd": float(draws.std()) if repeats > 1 else 0.0})
    return pd.DataFrame(rows)


def gradient_variance(model: nn.Module, x: Tensor, sample_sizes: Sequence[int], *, repeats: int = 200,
                      seed: int = 0) -> pd.DataFrame:
    """Variance of two estimators of ∇_μ E_q[log p(x|z)] for one image: reparameterised vs score function.

    Reparameterised: mean over n draws of ∇_μ log p(x | μ + σε). Score function (REINFORCE): mean over n
    draws of log p(x|z) ∇_μ log q(z|x) = log p(x|z) (z − μ)/σ². Both are unbiased; variance is summed over
    latent dimensions and measured over `repeats` independent estimates.
    """
    device = model_device(model)
    gen = generator_on(seed, device)
    x = x.to(device)
    with evaluating(model):
        post = model.encode(x[:1])
    mu0, std = post.mu.detach(), torch.exp(0.5 * post.logvar.detach())
    rows = []
    for n in sample_sizes:
        reparam, score = [], []
        for _ in range(repeats):
            eps = torch.randn((n, mu0.shape[1]), generator=gen, device=device)
            mu = mu0.clone().requires_grad_(True)
            with evaluating(model, grad=True):
                logp = model.likelihood.log_prob(x[:1].expand(n, *x.shape[1:]), model.decode(mu + std * eps))
                (grad,) = torch.autograd.grad(logp.mean(), mu)
            reparam.append(grad.squeeze(0))
            score.append((logp.detach()[:, None] * eps / std).mean(dim=0))
        for name, grads in (("reparameterised", reparam), ("score function", score)):
            g = torch.stack(grads).cpu()
            rows.append({"estimator": name, "n_samples": n, "variance": float(g.var(dim=0).sum()),
                         "mean_norm": float(g.mean(dim=0).norm())})
    return pd.DataFrame(rows)


def rate_distortion_point(res: TrainResult, test_images: Tensor) -> dict[str, float]:
    """Rate (mean KL, nats), distortion (−E_q log p(x|z), nats) and active units of a trained VAE on test images."""
    terms = evaluate_elbo(res.model, test_images)
    n_active, _ = active_units(res.model, test_images)
    return {"rate": terms["kl"], "distortion": -terms["recon"], "elbo": terms["elbo"], "active_units": n_active}


def ae_distortion(model: nn.Module, images: Tensor) -> float:
    """Distortion −log p(x | decode(encode(x))) of a deterministic AE, mean nats per image (its rate is unbounded)."""
    def distortion(x: Tensor) -> Tensor:
        return -model.likelihood.log_prob(x, model.decode(model.encode(x).mu))

    return float(batched(model, distortion, images).double().mean())


def beta_sweep(data: Dataset, betas: Sequence[float], model_cfg: ModelConfig, train_cfg: TrainConfig, *,
               warmup_epochs: float = 0.0) -> tuple[pd.DataFrame, dict[float, TrainResult]]:
    """Rate, distortion and active units of β-VAEs trained at each β (optionally with KL warm-up)."""
    rows, results = [], {}
    for beta in betas:
        res = train_or_load(model_cfg, replace(train_cfg, beta=float(beta), warmup_epochs=warmup_epochs), data)
        results[beta] = res
        rows.append({"beta": float(beta), "warmup_epochs": warmup_epochs, "model": "β-VAE",
                     **rate_distortion_point(res, data.test.images)})
    return pd.DataFrame(rows), results
