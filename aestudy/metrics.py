"""Metrics for autoencoders and their samples; each docstring gives the definition and the units.

Conventions: images are `(N, C, H, W)` in [0, 1]; per-image values are `(N,)`; log-likelihoods are nats per
image (summed over pixels); model-based metrics run batched, without gradients, in eval mode, on the
model's device, and return CPU tensors or Python floats.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from aestudy.data import check_image_values
from aestudy.errors import ConfigError
from aestudy.objectives import bits_per_dim, elbo_terms, gaussian_kl_per_dim, is_nll

ArrayLike = Tensor | np.ndarray

ANOMALY_SCORES: tuple[str, ...] = ("recon", "neg_elbo", "is_nll")
# PSNR of identical images would be +inf; the MSE floor caps it at 10 log10(1e10) = 100 dB.
_MSE_FLOOR = 1e-10


# --- plumbing ---------------------------------------------------------------------------------------------

def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batches(images: Tensor, labels: Tensor | None, batch_size: int,
             device: torch.device) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(x, y) batches moved to `device`; y is None when `labels` is."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size={batch_size!r} is invalid; it must be an integer >= 1.")
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        y = None if labels is None else labels[start:start + batch_size].to(device)
        yield x, y


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


def reconstruction_metrics(model: nn.Module, images: Tensor, *, batch_size: int = 1000,
                           labels: Tensor | None = None) -> dict[str, float]:
    """Mean per-image MSE (intensity²), PSNR (dB) and SSIM of `model.reconstruct` (decoder mean at z = μ).

    Raises ConfigError when `images` are not finite and in [0, 1] (PSNR/SSIM assume that range).
    """
    check_image_values(images, "the image tensor given to reconstruction_metrics")
    parts: dict[str, list[Tensor]] = {"mse": [], "psnr": [], "ssim": []}
    with _evaluating(model):
        for x, y in _batches(images, labels, batch_size, _device(model)):
            x_hat = model.reconstruct(x, y)
            parts["mse"].append(mse_per_image(x, x_hat).cpu())
            parts["psnr"].append(psnr(x, x_hat).cpu())
            parts["ssim"].append(ssim(x, x_hat).cpu())
    return {name: float(torch.cat(values).mean()) for name, values in parts.items()}


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
    with _evaluating(model):
        for x, y in _batches(images, labels, batch_size, _device(model)):
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
    with _evaluating(model):
        nll = is_nll(model, images, k=k, batch_size=batch_size, chunk_size=chunk_size, generator=generator,
                     labels=labels, progress=progress).double()
    return {
        "nll": float(nll.mean()),
        "nll_sem": float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else 0.0,
        "bits_per_dim": float(bits_per_dim(nll.mean(), _num_pixels(images))),
        "k": int(k),
    }


# --- the latent space -------------------------------------------------------------------------------------

def encode_means(model: nn.Module, images: Tensor, *, batch_size: int = 1000,
                 labels: Tensor | None = None) -> Tensor:
    """Posterior means E_q[z|x] (the AE's codes), (N, D) on the CPU."""
    with _evaluating(model):
        return torch.cat([model.encode(x, y).mu.cpu()
                          for x, y in _batches(images, labels, batch_size, _device(model))])


def kl_per_dim(model: nn.Module, images: Tensor, *, batch_size: int = 1000,
               labels: Tensor | None = None) -> Tensor:
    """KL(q(z_d|x) ‖ N(0, 1)) per latent dimension, averaged over images, nats, (D,); a VAE only."""
    if not getattr(model, "is_variational", False):
        raise ConfigError("kl_per_dim needs a variational model (kind='vae'); an AE has no q(z|x) density.")
    total: Tensor | None = None
    with _evaluating(model):
        for x, y in _batches(images, labels, batch_size, _device(model)):
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


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidths: tuple[float, ...] | None = None,
        chunk_size: int = 1024) -> float:
    """Unbiased squared maximum mean discrepancy MMD²_u between samples x (m, D) and y (n, D), dimensionless.

    Kernel: the mean of RBF kernels exp(−‖a − b‖² / (2h²)) over `bandwidths` h; None uses h·(½, 1, 2) with
    h the median pairwise distance of (up to 1,000 of) the pooled points. ≈ 0 (may dip slightly below)
    when x and y come from one distribution, > 0 otherwise. Used for aggregated posterior vs prior.
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

def _labelled_subset(x: np.ndarray, y: np.ndarray, n_labels: int | None,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of `n_labels` labelled examples (all of them when None or ≥ the set size)."""
    if n_labels is None or n_labels >= len(y):
        return x, y
    n_classes = len(np.unique(y))
    if not (isinstance(n_labels, int) and n_labels >= n_classes):
        raise ConfigError(f"n_labels={n_labels!r} is invalid; it must be None (all labels) or an integer >= "
                          f"the number of classes ({n_classes}), so every class is represented.")
    idx, _ = train_test_split(np.arange(len(y)), train_size=n_labels, stratify=y, random_state=seed)
    return x[idx], y[idx]


def linear_probe_accuracy(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                          n_labels: int | None = None, seed: int = 0, max_iter: int = 1000) -> float:
    """Test accuracy (share in [0, 1]) of logistic regression on standardised codes.

    Trained on a stratified subset of `n_labels` labelled training codes (None: all), chosen with `seed`.
    """
    x, y = _labelled_subset(_as_numpy(train_x), _as_numpy(train_y), n_labels, seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(x, y)
    return float(probe.score(_as_numpy(test_x), _as_numpy(test_y)))


def knn_accuracy(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                 k: int = 5, n_labels: int | None = None, seed: int = 0) -> float:
    """Test accuracy (share in [0, 1]) of a k-nearest-neighbour vote in the raw (unscaled) code space.

    Neighbours come from a stratified subset of `n_labels` labelled training codes (None: all).
    """
    x, y = _labelled_subset(_as_numpy(train_x), _as_numpy(train_y), n_labels, seed)
    if not (isinstance(k, int) and 1 <= k <= len(y)):
        raise ConfigError(f"k={k!r} is invalid; it must be an integer in [1, {len(y)}] (the labelled set size).")
    return float(KNeighborsClassifier(n_neighbors=k).fit(x, y).score(_as_numpy(test_x), _as_numpy(test_y)))


# --- anomaly detection ------------------------------------------------------------------------------------

def _scores_and_labels(scores_normal: ArrayLike, scores_anomalous: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    normal = _as_numpy(scores_normal).astype(np.float64).ravel()
    anomalous = _as_numpy(scores_anomalous).astype(np.float64).ravel()
    scores = np.concatenate([normal, anomalous])
    if not np.isfinite(scores).all() or len(normal) == 0 or len(anomalous) == 0:
        raise ConfigError("anomaly scores must be finite and both sets non-empty; got "
                          f"{len(normal)} normal and {len(anomalous)} anomalous scores, "
                          f"{int((~np.isfinite(scores)).sum())} not finite.")
    return scores, np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])


def anomaly_auroc(scores_normal: ArrayLike, scores_anomalous: ArrayLike) -> float:
    """Area under the ROC curve for telling anomalies from normal data by score (higher = more anomalous).

    In [0, 1]: 1 separates perfectly, 0.5 is chance, below 0.5 ranks anomalies as *more* normal.
    """
    scores, labels = _scores_and_labels(scores_normal, scores_anomalous)
    return float(roc_auc_score(labels, scores))


def roc_curve_points(scores_normal: ArrayLike, scores_anomalous: ArrayLike
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve (false-positive rate, true-positive rate, score thresholds), higher = more anomalous."""
    scores, labels = _scores_and_labels(scores_normal, scores_anomalous)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return fpr, tpr, thresholds


def anomaly_scores(model: nn.Module, images: Tensor, *, score: str = "recon", batch_size: int = 1000,
                   k: int = 100, generator: torch.Generator | None = None,
                   labels: Tensor | None = None) -> Tensor:
    """Per-image anomaly scores (N,), higher = more anomalous.

    score="recon": reconstruction MSE (intensity², any model); "neg_elbo": −ELBO in nats (a VAE);
    "is_nll": importance-sampled NLL −L_k in nats with `k` samples (a VAE).
    """
    if score == "recon":
        with _evaluating(model):
            return torch.cat([mse_per_image(x, model.reconstruct(x, y)).cpu()
                              for x, y in _batches(images, labels, batch_size, _device(model))])
    if score == "neg_elbo":
        return -elbo_per_image(model, images, batch_size=batch_size, generator=generator, labels=labels)["elbo"]
    if score == "is_nll":
        with _evaluating(model):
            return is_nll(model, images, k=k, batch_size=min(batch_size, 100), generator=generator,
                          labels=labels)
    raise ConfigError(f"score={score!r} is invalid; valid values: {', '.join(ANOMALY_SCORES)}.")


# --- what the decoder draws -------------------------------------------------------------------------------

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpness(images: Tensor) -> Tensor:
    """Variance of the Laplacian per image (3×3 kernel, 'valid' region), intensity², (N,): lower = blurrier."""
    c = images.shape[1]
    kernel = LAPLACIAN.to(images.device, images.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(images, kernel, groups=c).flatten(1).var(dim=1, correction=0)


def _decode_mean(model: nn.Module, z: Tensor) -> Tensor:
    """Decoder mean images for codes z (B, D)."""
    return model.likelihood.mean(model.decode(z))


def _path_images(model: nn.Module, x_a: Tensor, x_b: Tensor, steps: int) -> Tensor:
    """Decoded images along z(t) = (1 − t) μ(x_a) + t μ(x_b), t = 0, 1/steps, …, 1: (N, steps + 1, C, H, W)."""
    if not (isinstance(steps, int) and steps >= 2):
        raise ConfigError(f"steps={steps!r} is invalid; it must be an integer >= 2.")
    if x_a.shape != x_b.shape:
        raise ConfigError(f"x_a and x_b must have one shape; got {tuple(x_a.shape)} and {tuple(x_b.shape)}.")
    device = _device(model)
    with _evaluating(model):
        z_a, z_b = model.encode(x_a.to(device)).mu, model.encode(x_b.to(device)).mu  # (N, D) each
        t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=z_a.dtype)[None, :, None]  # (1, S, 1)
        z = (1 - t) * z_a[:, None, :] + t * z_b[:, None, :]  # (N, S, D)
        images = _decode_mean(model, z.flatten(0, 1))  # (N * S, C, H, W)
    return images.view(z.shape[0], steps + 1, *images.shape[1:]).cpu()


def latent_path_images(model: nn.Module, x_a: Tensor, x_b: Tensor, *, steps: int = 10) -> Tensor:
    """Decoded images along the straight latent path between the codes (posterior means) of x_a and x_b.

    For single images (C, H, W) the result is (steps + 1, C, H, W); for batches (N, C, H, W) it is
    (N, steps + 1, C, H, W). The ends are the reconstructions of x_a and x_b.
    """
    if x_a.dim() == 3:
        return _path_images(model, x_a[None], x_b[None], steps)[0]
    return _path_images(model, x_a, x_b, steps)


def interpolation_smoothness(model: nn.Module, x_a: Tensor, x_b: Tensor, *, steps: int = 10) -> float:
    """Roughness of decoded latent interpolations, dimensionless, ≥ 0: lower = smoother.

    Along the straight path between the codes of x_a and x_b, decoded to images m_0 … m_S (S = `steps`),
    the score is mean_i ‖m_{i+1} − 2 m_i + m_{i−1}‖² / ‖m_S − m_0‖² (squared second differences over the
    squared distance between the decoded ends), averaged over pairs. 0 means the decoded images change
    linearly along the path; an abrupt switch between the ends scores about 2 / (S − 1). Compare models at
    equal `steps`.
    """
    images = _path_images(model, x_a[None] if x_a.dim() == 3 else x_a,
                          x_b[None] if x_b.dim() == 3 else x_b, steps).double()
    second = images[:, 2:] - 2 * images[:, 1:-1] + images[:, :-2]  # (N, S - 1, C, H, W)
    roughness = second.pow(2).flatten(2).sum(dim=2).mean(dim=1)  # (N,)
    span = (images[:, -1] - images[:, 0]).pow(2).flatten(1).sum(dim=1)  # (N,)
    return float((roughness / span.clamp_min(1e-12)).mean())


def prior_holes(model: nn.Module, classifier: Any, *, n: int, threshold: float = 0.5,
                generator: torch.Generator | None = None, batch_size: int = 1000) -> float:
    """Share in [0, 1] of prior samples x = decode(z), z ~ N(0, I), that the domain classifier cannot place.

    A sample falls in a "hole" when the classifier's top-class probability is below `threshold`;
    `classifier` needs `predict_proba(images) -> (N, K)` (see aestudy.classifier.DomainClassifier).
    """
    if not (isinstance(n, int) and n >= 1):
        raise ConfigError(f"n={n!r} is invalid; it must be an integer >= 1.")
    unsure = 0
    with _evaluating(model):
        for start in range(0, n, batch_size):
            samples = model.sample(min(batch_size, n - start), generator=generator)
            confidence = classifier.predict_proba(samples).max(dim=1).values
            unsure += int((confidence < threshold).sum())
    return unsure / n
