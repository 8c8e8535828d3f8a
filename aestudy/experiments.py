"""The measurements the notebooks make, each returning a tidy DataFrame or a dict (one home per experiment).

Notebooks call these and plot/check the results; every training goes through `train_or_load`, so a
re-run (or another notebook with the same configuration) loads cached models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from torch import Tensor, nn

from aestudy.data import Dataset, load_dataset
from aestudy.metrics import (
    active_units,
    encode_means,
    evaluate_elbo,
    reconstruction_metrics,
)
from aestudy.models import ModelConfig
from aestudy.objectives import gaussian_kl, iwae_bound, mc_kl
from aestudy.ppca import PPCA, elbo_with_gaussian_posterior, kl_to_posterior
from aestudy.train import TrainConfig, TrainResult, train_or_load

DecodeFn = Callable[[Tensor], Tensor]


# --- small building blocks --------------------------------------------------------------------------------

def decoder_fn(model: nn.Module) -> DecodeFn:
    """z (M, D) -> decoder-mean images in [0, 1] on the CPU (for plots and widgets)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def decode(z: Tensor) -> Tensor:
        model.eval()
        return model.likelihood.mean(model.decode(z.to(device=device, dtype=torch.float32))).cpu()

    return decode


def mse_per_pixel(model: nn.Module, images: Tensor) -> float:
    """Mean squared reconstruction error per pixel (intensity², images in [0, 1])."""
    return reconstruction_metrics(model, images)["mse"]


def pca_mse(train_images: Tensor, test_images: Tensor, latent_dim: int, *, seed: int = 0) -> float:
    """Test MSE per pixel of PCA with `latent_dim` components fitted on `train_images` (scikit-learn).

    Reconstructions are clipped to [0, 1], the intensity range every decoder here displays (the linear AE's
    `reconstruct` clamps the same way), so the comparison is like for like.
    """
    train, test = train_images.flatten(1).numpy(), test_images.flatten(1).numpy()
    pca = PCA(n_components=latent_dim, random_state=seed).fit(train)
    recon = np.clip(pca.inverse_transform(pca.transform(test)), 0.0, 1.0)
    return float(np.mean((recon - test) ** 2))


def history_in_mse(history: pd.DataFrame, *, num_pixels: int, sigma: float = 1.0) -> pd.DataFrame:
    """Turn a fixed-σ Gaussian NLL history (nats/image) into MSE per pixel: 2σ²(nll − ½D log 2πσ²)/D."""
    const = 0.5 * num_pixels * math.log(2 * math.pi * sigma**2)
    out = history.copy()
    for col in ("train_loss", "val_loss", "train_recon", "val_recon"):
        if col in out:
            out[col] = 2 * sigma**2 * (out[col] - const) / num_pixels
    return out


def subset(data: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """The same dataset with a stratified `n`-image training split (validation/test capped at n too)."""
    return load_dataset(data.info.name, val_size=len(data.val), limit=n, binarize=data.binarize, seed=seed)


# --- notebook 01: AE vs PCA, generation, generalisation ---------------------------------------------------

def ae_config(arch: str, latent_dim: int, *, input_shape: tuple[int, int, int] = (1, 28, 28)) -> ModelConfig:
    """The plain autoencoder of notebook 01: MSE loss, i.e. a Gaussian decoder with fixed σ = 1."""
    return ModelConfig(kind="ae", arch=arch, latent_dim=latent_dim, likelihood="gaussian", sigma=1.0,
                       input_shape=input_shape)


def latent_size_sweep(data: Dataset, latent_sizes: Sequence[int], train_cfg: TrainConfig, *,
                      archs: Sequence[str] = ("linear", "mlp"),
                      lr_by_arch: dict[str, float] | None = None
                      ) -> tuple[pd.DataFrame, dict[tuple[str, int], TrainResult]]:
    """Test MSE per pixel vs latent size for AEs of each arch and for PCA; also the trained models."""
    rows, results = [], {}
    for k in latent_sizes:
        rows.append({"model": "PCA", "latent_dim": k, "test_mse": pca_mse(data.train.images, data.test.images, k)})
        for arch in archs:
            cfg = replace(train_cfg, lr=(lr_by_arch or {}).get(arch, train_cfg.lr))
            res = train_or_load(ae_config(arch, k, input_shape=data.info.shape), cfg, data)
            results[(arch, k)] = res
            rows.append({"model": f"{arch} AE", "latent_dim": k, "test_mse": mse_per_pixel(res.model, data.test.images),
                         "train_mse": mse_per_pixel(res.model, data.train.images[:5000])})
    return pd.DataFrame(rows), results


def code_box_uniform(codes: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
    """n points uniform over the bounding box of `codes` (N, D)."""
    lo, hi = codes.min(dim=0).values, codes.max(dim=0).values
    return lo + (hi - lo) * torch.rand((n, codes.shape[1]), generator=generator)


def decoded_sources(model: nn.Module, images: Tensor, n: int, *, seed: int = 0) -> dict[str, Tensor]:
    """Images decoded from: encodings of real images, z ~ N(0, I), and z uniform over the codes' box."""
    gen = torch.Generator().manual_seed(seed)
    real = images[:n]
    codes = encode_means(model, images)
    decode = decoder_fn(model)
    return {
        "encoded real images": decode(codes[:n]),
        "z ~ N(0, I)": decode(torch.randn((n, codes.shape[1]), generator=gen)),
        "z ~ U(code box)": decode(code_box_uniform(codes, n, generator=gen)),
        "real images": real,
    }


def generation_table(classifier: nn.Module, reference: Tensor, sources: dict[str, Tensor]) -> pd.DataFrame:
    """FID-style scores (domain-classifier features) of each image source against `reference` images."""
    from aestudy.classifier import generation_scores  # deferred: the classifier is only needed here

    rows = [{"source": name, **generation_scores(classifier, reference, images)} for name, images in sources.items()]
    return pd.DataFrame(rows).set_index("source")


def generalisation_gaps(data: Dataset, train_sizes: Sequence[int], latent_sizes: Sequence[int],
                        train_cfg: TrainConfig, *, samples_budget: int) -> pd.DataFrame:
    """Train/validation MSE and their gap for MLP AEs trained on subsets of each size (equal sample budget)."""
    rows = []
    for size in train_sizes:
        part = data if size >= len(data.train) else subset(data, size, seed=train_cfg.seed)
        epochs = max(1, math.ceil(samples_budget / len(part.train)))
        for k in latent_sizes:
            res = train_or_load(ae_config("mlp", k, input_shape=data.info.shape),
                                replace(train_cfg, epochs=epochs), part)
            train_mse = mse_per_pixel(res.model, part.train.images[:5000])
            val_mse = mse_per_pixel(res.model, data.val.images)
            rows.append({"train_size": len(part.train), "latent_dim": k, "epochs": epochs, "train_mse": train_mse,
                         "val_mse": val_mse, "gap": val_mse - train_mse})
    return pd.DataFrame(rows)


# --- notebook 02: KL, pPCA, gradient estimators, β ---------------------------------------------------------

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


def ppca_of_linear_vae(model: nn.Module) -> PPCA:
    """The exact marginal model of a linear fixed-σ Gaussian VAE: x = W z + b + σ ε is a pPCA."""
    last = model.decoder.trunk[-1]  # the only Linear layer of a linear decoder: (D, k) weight
    return PPCA(W=last.weight.detach().cpu(), mu=last.bias.detach().cpu(), sigma2=float(model.likelihood.sigma) ** 2)


def linear_vae_bounds(model: nn.Module, images: Tensor) -> pd.DataFrame:
    """Per image: exact log p(x) of a linear VAE, its closed-form ELBO, and KL(q(z|x) ‖ p(z|x)) (nats)."""
    ppca = ppca_of_linear_vae(model)
    with torch.no_grad():
        post = model.cpu().encode(images)
    q_mean, q_cov = post.mu.double(), torch.diag_embed(post.logvar.double().exp())  # (N, k), (N, k, k)
    log_px = ppca.log_prob(images)
    elbo = elbo_with_gaussian_posterior(ppca, images, q_mean, q_cov)
    kl = kl_to_posterior(ppca, images, q_mean, q_cov)
    return pd.DataFrame({"log_px": log_px.numpy(), "elbo": elbo.numpy(), "kl_to_posterior": kl.numpy(),
                         "gap": (log_px - elbo).numpy()})


def iwae_curve(model: nn.Module, images: Tensor, ks: Sequence[int], *, repeats: int = 5, seed: int = 0,
               chunk_size: int = 100) -> pd.DataFrame:
    """Mean IWAE bound L_k over `images` for each k (nats), averaged over `repeats` draws, with its sd."""
    gen = torch.Generator().manual_seed(seed)
    model = model.cpu().eval()
    rows = []
    with torch.no_grad():
        for k in ks:
            draws = torch.stack([iwae_bound(model, images, k, chunk_size=chunk_size, generator=gen).double().mean()
                                 for _ in range(repeats)])
            rows.append({"k": k, "iwae": float(draws.mean()), "sd": float(draws.std()) if repeats > 1 else 0.0})
    return pd.DataFrame(rows)


def gradient_variance(model: nn.Module, x: Tensor, sample_sizes: Sequence[int], *, repeats: int = 200,
                      seed: int = 0) -> pd.DataFrame:
    """Variance of two estimators of ∇_μ E_q[log p(x|z)] for one image: reparameterised vs score function.

    Reparameterised: mean over n draws of ∇_μ log p(x | μ + σε). Score function (REINFORCE): mean over n
    draws of log p(x|z) ∇_μ log q(z|x) = log p(x|z) (z − μ)/σ². Both are unbiased; variance is summed over
    latent dimensions and measured over `repeats` independent estimates.
    """
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        post = model.encode(x[:1])
    mu0, std = post.mu.detach(), torch.exp(0.5 * post.logvar.detach())
    rows = []
    for n in sample_sizes:
        reparam, score = [], []
        for _ in range(repeats):
            eps = torch.randn((n, mu0.shape[1]), generator=gen)
            mu = mu0.clone().requires_grad_(True)
            logp = model.likelihood.log_prob(x[:1].expand(n, *x.shape[1:]), model.decode(mu + std * eps))
            (grad,) = torch.autograd.grad(logp.mean(), mu)
            reparam.append(grad.squeeze(0))
            score.append((logp.detach()[:, None] * eps / std).mean(dim=0))
        for name, grads in (("reparameterised", reparam), ("score function", score)):
            g = torch.stack(grads)
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
    model = model.cpu().eval()
    with torch.no_grad():
        return float(-model.likelihood.log_prob(images, model.decode(model.encode(images).mu)).mean())


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
