"""Metrics for autoencoders and their samples; each docstring gives the definition and the units.

Conventions: images are `(N, C, H, W)` in [0, 1]; per-image values are `(N,)`; log-likelihoods are nats per
image (summed over pixels); model-based metrics run batched, without gradients, in eval mode, on the
model's device, and return CPU tensors or Python floats.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aestudy.data import check_image_values
from aestudy.errors import ConfigError
from aestudy.evaluation import EVAL_BATCH, batched, batches, encode_means, evaluating, model_device
from aestudy.objectives import bits_per_dim, elbo_terms, gaussian_kl_per_dim, is_nll
from aestudy.validate import as_int

ArrayLike = Tensor | np.ndarray

# PSNR of identical images would be +inf; the MSE floor caps it at 10 log10(1e10) = 100 dB.
_MSE_FLOOR = 1e-10


# --- plumbing ---------------------------------------------------------------------------------------------

def _as_float64(a: ArrayLike, name: str) -> Tensor:
    """A 2-D float64 CPU tensor (N, D) from a tensor or an array."""
    t = torch.as_tensor(a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a))
    if t.dim() != 2:
        raise ConfigError(f"{name} has shape {tuple(t.shape)}; it must be 2-D (samples, features).")
    return t.to(torch.float64)


def _as_numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


# --- reconstruction quality -------------------------------------------------------------------------------

def mse_per_image(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error per image, averaged over pixels (images in [0, 1], so units are intensity²), (N,)."""
    return (x - x_hat).pow(2).flatten(1).mean(dim=1)


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(1 / MSE) in dB for images in [0, 1], (N,).

    The MSE is floored at 1e-10, so identical images score 100 dB instead of +inf.
    """
    return 10.0 * torch.log10(1.0 / mse_per_image(x, x_hat).clamp_min(_MSE_FLOOR))


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """A normalised 1-D Gaussian window of odd `size` (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable 'valid' filtering of each channel of (N, C, H, W) with a 1-D window."""
    c, size = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)


def ssim(x: Tensor, x_hat: Tensor, *, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), dimensionless, ≤ 1 (1 iff identical), (N,).

    Local statistics use a Gaussian window (11 taps, σ = 1.5) over the 'valid' region; C1 = (0.01 L)²,
    C2 = (0.03 L)² with L = `data_range`; the SSIM map is averaged over positions and channels. Images
    smaller than the window (e.g. 8×8 digits) use the largest odd window that fits.
    """
    if x.shape != x_hat.shape or x.dim() != 4:
        raise ConfigError(f"ssim needs two (N, C, H, W) tensors of one shape; got {tuple(x.shape)} and "
                          f"{tuple(x_hat.shape)}.")
    size = min(window_size, x.shape[2], x.shape[3])
    size -= 1 - size % 2  # keep it odd so the window has a centre
    dtype = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
    window = _gaussian_window(size, sigma).to(x.device, dtype)
    a, b = x.to(dtype), x_hat.to(dtype)
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a * mu_a
    var_b = _blur(b * b, window) - mu_b * mu_b
    cov = _blur(a * b, window) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1).to(x.dtype)


def reconstruction_metrics(model: nn.Module, inputs: Tensor, *, targets: Tensor | None = None,
                           labels: Tensor | None = None, per_image: bool = False,
                           batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """MSE (intensity²), PSNR (dB) and SSIM of the model's reconstructions (decoder mean at z = μ(x)).

    The model reads `inputs` (N, C, H, W) — e.g. binarized or corrupted images — and its outputs are scored
    against `targets` (the clean or grey-level images the decoder mean estimates; default: the inputs).
    `labels` (N,) feed a class-conditional model. Returns the means over images as floats, or with
    `per_image=True` the per-image values as (N,) CPU tensors. The caller's model is left unchanged.

    Raises:
        ConfigError: when `targets` and `inputs` differ in shape, or are not finite and in [0, 1] (PSNR and SSIM
            assume that range).
    """
    targets = inputs if targets is None else targets
    check_image_values(inputs, "the inputs given to reconstruction_metrics")
    if targets is not inputs:
        check_image_values(targets, "the targets given to reconstruction_metrics")
    if targets.shape != inputs.shape:
        raise ConfigError(f"inputs and targets must have one shape; got {tuple(inputs.shape)} and "
                          f"{tuple(targets.shape)}.")

    def scores(x: Tensor, y: Tensor | None, target: Tensor) -> Tensor:  # (B, 3): mse, psnr, ssim
        x_hat = model.reconstruct(x) if y is None else model.reconstruct(x, y)
        return torch.stack([mse_per_image(target, x_hat), psnr(target, x_hat), ssim(target, x_hat)], dim=1)

    values = batched(model, scores, inputs, labels, targets, batch_size=batch_size)  # (N, 3)
    per = {name: values[:, i] for i, name in enumerate(("mse", "psnr", "ssim"))}
    if per_image:
        return per
    return {name: float(v.double().mean()) for name, v in per.items()}


# --- likelihood bounds ------------------------------------------------------------------------------------

def _num_pixels(images: Tensor) -> int:
    return math.prod(images.shape[1:])


def elbo_per_image(model: nn.Module, images: Tensor, *, batch_size: int = 1000, n_samples: int = 1,
                   generator: torch.Generator | None = None, labels: Tensor | None = None
                   ) -> dict[str, Tensor]:
    """Per-image ELBO, E_q log p(x|z) ("recon") and KL, nats (N,) each; a VAE only (see objectives).

    Raises ConfigError when `images` are not finite and in [0, 1]: the likelihoods are densities on [0, 1]
    pixels, so e.g. 0..255 images would give impossible values (a Bernoulli "NLL" of −1e6 nats).
    """
    check_image_values(images, "the image tensor given to elbo_per_image")
    recon, kl = [], []
    with evaluating(model):
        for x, y in batches(images, labels, batch_size=batch_size, device=model_device(model)):
            terms = elbo_terms(model, x, y, n_samples=n_samples, generator=generator)
            recon.append(terms.recon.cpu())
            kl.append(terms.kl.cpu())
    recon_t, kl_t = torch.cat(recon), torch.cat(kl)
    return {"elbo": recon_t - kl_t, "recon": recon_t, "kl": kl_t}


def evaluate_elbo(model: nn.Module, images: Tensor, *, batch_size: int = 1000, n_samples: int = 1,
                  generator: torch.Generator | None = None, labels: Tensor | None = None) -> dict[str, float]:
    """Test ELBO of a VAE: means over images of elbo, recon = E_q log p(x|z), kl (nats per image).

    Also `elbo_sem` (standard error of the mean ELBO) and `bits_per_dim` = −ELBO / (D ln 2), the bound on
    the NLL in bits per pixel. For Bernoulli decoders pass binarized images (a fixed-seed test set).
    """
    per_image = elbo_per_image(model, images, batch_size=batch_size, n_samples=n_samples,
                               generator=generator, labels=labels)
    elbo = per_image["elbo"].double()
    return {
        "elbo": float(elbo.mean()),
        "recon": float(per_image["recon"].double().mean()),
        "kl": float(per_image["kl"].double().mean()),
        "bits_per_dim": float(bits_per_dim(-elbo.mean(), _num_pixels(images))),
        "elbo_sem": float(elbo.std() / math.sqrt(elbo.numel())) if elbo.numel() > 1 else 0.0,
    }


def evaluate_is_nll(model: nn.Module, images: Tensor, *, k: int = 1000, batch_size: int = 100,
                    chunk_size: int = 100, generator: torch.Generator | None = None,
                    labels: Tensor | None = None, progress: bool = False) -> dict[str, float]:
    """Importance-sampled test NLL −L_k (Burda et al. 2016): mean nats per image, its standard error, bits/dim.

    Returns nll, nll_sem, bits_per_dim and k. −L_k ≥ −log p(x) in expectation and tightens as k grows
    (k = 5,000 is the usual literature setting). Raises ConfigError when `images` are not finite and in [0, 1].
    """
    check_image_values(images, "the image tensor given to evaluate_is_nll")
    with evaluating(model):
        nll = is_nll(model, images, k=k, batch_size=batch_size, chunk_size=chunk_size, generator=generator,
                     labels=labels, progress=progress).double()
    return {
        "nll": float(nll.mean()),
        "nll_sem": float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else 0.0,
        "bits_per_dim": float(bits_per_dim(nll.mean(), _num_pixels(images))),
        "k": int(k),
    }


# --- the latent space -------------------------------------------------------------------------------------

def kl_per_dim(model: nn.Module, images: Tensor, *, batch_size: int = 1000,
               labels: Tensor | None = None) -> Tensor:
    """KL(q(z_d|x) ‖ N(0, 1)) per latent dimension, averaged over images, nats, (D,); a VAE only."""
    if not getattr(model, "is_variational", False):
        raise ConfigError("kl_per_dim needs a variational model (kind='vae'); an AE has no q(z|x) density.")
    total: Tensor | None = None
    with evaluating(model):
        for x, y in batches(images, labels, batch_size=batch_size, device=model_device(model)):
            post = model.encode(x, y)
            part = gaussian_kl_per_dim(post.mu, post.logvar).cpu().double().sum(dim=0)
            total = part if total is None else total + part
    if total is None:
        raise ConfigError("kl_per_dim got no images; pass at least one.")
    return (total / images.shape[0]).float()


def active_units(model: nn.Module, images: Tensor, *, threshold: float = 0.01, batch_size: int = 1000,
                 labels: Tensor | None = None) -> tuple[int, Tensor]:
    """Active latent units (Burda et al. 2016): d is active if Var_x(E_q[z_d|x]) > `threshold` (0.01).

    Returns (number active, the per-dimension variances (D,), latent units²).
    """
    means = encode_means(model, images, batch_size=batch_size, labels=labels).double()
    variances = means.var(dim=0)  # (D,), the diagonal of Cov_x(E_q[z|x])
    return int((variances > threshold).sum()), variances.float()


def prior_bandwidths(dim: int) -> tuple[float, float, float]:
    """RBF bandwidths h·(½, 1, 2) fixed by the prior N(0, I_dim): h = √(2·dim), the typical distance of two prior draws.

    ‖a − b‖² of two independent N(0, I_D) points is 2·χ²_D, mean 2D, so √(2D) is the prior's own length scale.
    Every MMD² to the prior that uses these bandwidths is one statistic (one kernel) whatever the codes' scale,
    so the MMD² of an AE's codes and of a VAE's aggregated posterior can be compared (Gretton et al. 2012,
    JMLR 13, §3: MMD² is a distance between distributions only for one fixed kernel).

    Raises:
        ConfigError: when `dim` is not an integer >= 1.
    """
    h = math.sqrt(2.0 * as_int(dim, "dim", low=1, meaning="the latent size"))
    return (0.5 * h, h, 2.0 * h)


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidths: tuple[float, ...] | None = None,
        chunk_size: int = 1024) -> float:
    """Unbiased squared maximum mean discrepancy MMD²_u between samples x (m, D) and y (n, D), dimensionless.

    Kernel: the mean of RBF kernels exp(−‖a − b‖² / (2h²)) over `bandwidths` h; None uses h·(½, 1, 2) with
    h the median pairwise distance of (up to 1,000 of) the pooled points. ≈ 0 (may dip slightly below)
    when x and y come from one distribution, > 0 otherwise. The default kernel depends on the samples, so
    two MMD² values are one statistic only with the same `bandwidths`: to compare several samples against
    one reference (codes of different models against the prior), pass fixed ones (`prior_bandwidths`).
    """
    a, b = _as_float64(x, "x"), _as_float64(y, "y")
    if a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ConfigError(f"mmd needs x (m, D) and y (n, D) with m, n >= 2 and one D; got {tuple(a.shape)} "
                          f"and {tuple(b.shape)}.")
    if bandwidths is None:
        pooled = torch.cat([a[:500], b[:500]])
        h = float(torch.pdist(pooled).median())
        bandwidths = (0.5 * h, h, 2.0 * h) if h > 0 else (1.0,)
    if not all(bw > 0 for bw in bandwidths):
        raise ConfigError(f"bandwidths={bandwidths!r} is invalid; every bandwidth must be > 0.")
    gammas = [1.0 / (2.0 * bw**2) for bw in bandwidths]

    def kernel_sum(p: Tensor, q: Tensor) -> float:
        total = 0.0
        for start in range(0, p.shape[0], chunk_size):
            d2 = torch.cdist(p[start:start + chunk_size], q).pow(2)  # (c, |q|)
            total += sum(float(torch.exp(-gamma * d2).sum()) for gamma in gammas)
        return total / len(gammas)

    m, n = a.shape[0], b.shape[0]
    # k(a, a) = 1 on the diagonal; the unbiased estimator leaves those m (and n) terms out.
    kxx = (kernel_sum(a, a) - m) / (m * (m - 1))
    kyy = (kernel_sum(b, b) - n) / (n * (n - 1))
    kxy = kernel_sum(a, b) / (m * n)
    return kxx + kyy - 2.0 * kxy


# --- sample quality in a feature space --------------------------------------------------------------------

def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (Heusel et al. 2017), feature units².

    ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{½}) with unbiased covariances; the matrix square root is
    scipy's `sqrtm`, retried with 1e-6 added to the diagonals when it is not finite, and only its real part
    is kept (imaginary parts are round-off). Round-off below zero is reported as 0. Biased at small n:
    compare sets of equal size only.
    """
    a, b = _as_float64(feats_a, "feats_a").numpy(), _as_float64(feats_b, "feats_b").numpy()
    if a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ConfigError(f"frechet_distance needs two (n, D) sets with n >= 2 and one D; got {a.shape} "
                          f"and {b.shape}.")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular Σ (n < D) is handled below
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(cov_a.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    diff = mu_a - mu_b
    distance = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(np.real(covmean)))
    return max(distance, 0.0)


def _kth_neighbour_radii(points: Tensor, k: int, chunk_size: int) -> Tensor:
    """Distance from each point to its k-th nearest other point, (N,)."""
    radii = [torch.cdist(points[s:s + chunk_size], points).kthvalue(k + 1, dim=1).values  # +1: itself
             for s in range(0, points.shape[0], chunk_size)]
    return torch.cat(radii)


def _covered(points: Tensor, centres: Tensor, radii: Tensor, chunk_size: int) -> Tensor:
    """Whether each point lies inside some centre's ball of its radius, (M,) bool."""
    inside = [(torch.cdist(points[s:s + chunk_size], centres) <= radii[None, :]).any(dim=1)
              for s in range(0, points.shape[0], chunk_size)]
    return torch.cat(inside)


def precision_recall(real: ArrayLike, fake: ArrayLike, *, k: int = 3,
                     chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of generated samples (Kynkäänniemi et al. 2019), shares in [0, 1].

    Each point's ball has the radius of its k-th nearest neighbour within its own set. Precision = share of
    fake points inside some real ball (fidelity); recall = share of real points inside some fake ball
    (coverage). Euclidean distances in float64, computed in chunks.
    """
    r, f = _as_float64(real, "real"), _as_float64(fake, "fake")
    if r.shape[1] != f.shape[1] or min(r.shape[0], f.shape[0]) <= k or not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"precision_recall needs (n, D) sets of one D with more than k={k!r} points each "
                          f"(k an integer >= 1); got {tuple(r.shape)} and {tuple(f.shape)}.")
    precision = _covered(f, r, _kth_neighbour_radii(r, k, chunk_size), chunk_size).double().mean()
    recall = _covered(r, f, _kth_neighbour_radii(f, k, chunk_size), chunk_size).double().mean()
    return float(precision), float(recall)


# --- representations: probes on the codes -----------------------------------------------------------------







# --- anomaly detection ------------------------------------------------------------------------------------









# --- what the decoder draws -------------------------------------------------------------------------------

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpness(images: Tensor) -> Tensor:
    """Variance of the Laplacian per image (3×3 kernel, 'valid' region), intensity², (N,): lower = blurrier."""
    c = images.shape[1]
    kernel = LAPLACIAN.to(images.device, images.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(images, kernel, groups=c).flatten(1).var(dim=1, correction=0)








