"""The latent space: the aggregate posterior, straight latent paths and their decoded images, prior holes,
projections for plots and the posterior variance.

Taught in notebook 03 section 3 (does the VAE's q(z) match its prior; are its interpolations smoother) and
notebook 04 section 5 (posterior variance as uncertainty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.evaluation import EVAL_BATCH, batched, batches, encode_means, evaluating, model_device
from aestudy.metrics import mmd, prior_bandwidths
from aestudy.validate import as_float, as_int


def aggregate_posterior_sample(model: nn.Module, images: Tensor, *, generator: torch.Generator | None = None,
                               batch_size: int = EVAL_BATCH) -> Tensor:
    """One z ~ q(z|x) per image (N, D) on the CPU: a draw of the aggregated posterior (the AE: its codes)."""
    parts = []
    with evaluating(model):
        for (x,) in batches(images, batch_size=batch_size, device=model_device(model)):
            post = model.encode(x)
            if post.logvar is None:
                parts.append(post.mu.cpu())
            else:
                eps = torch.randn(post.mu.shape, generator=generator, dtype=post.mu.dtype)
                parts.append(post.mu.cpu() + torch.exp(0.5 * post.logvar.cpu()) * eps)
    return torch.cat(parts)


def mmd_to_prior(codes: Tensor, *, generator: torch.Generator | None = None) -> float:
    """MMD²_u between codes (N, D) and N draws of the prior N(0, I_D), dimensionless, with the prior's fixed kernel.

    The RBF bandwidths come from the prior alone (`metrics.prior_bandwidths(D)`), never from the codes, so the
    value of every model is the same statistic: an AE's codes of arbitrary scale and a VAE's aggregated
    posterior are measured with one kernel (notebook 03, section 3). ≈ 0 when the codes follow N(0, I).
    """
    if codes.dim() != 2 or codes.shape[0] < 2:
        raise ConfigError(f"mmd_to_prior needs codes (N, D) with N >= 2; got shape {tuple(codes.shape)}.")
    prior = torch.randn(codes.shape, generator=generator, dtype=torch.float64)
    return mmd(codes.double(), prior, bandwidths=prior_bandwidths(codes.shape[1]))


def relative_activity(model: nn.Module, images: Tensor, *, batch_size: int = EVAL_BATCH) -> Tensor:
    """Each unit's activity relative to the code's most active unit, scale-free: Var_x(E_q[z_d|x]) / max_d' (…), (D,).

    Burda et al. (2016) call a VAE unit active when Var_x(E_q[z_d|x]) > 0.01, a threshold in the prior's units
    (a unit that follows the prior has variance ≈ 1). An AE's code has no prior and an arbitrary scale: scaling
    the encoder's output by c (and the decoder's input by 1/c) changes nothing the AE computes but multiplies
    every variance by c², so the absolute threshold counts an AE's units as active or not by its scale alone.
    Relative to the most active unit the count ignores that scale, does not depend on the latent size (as a
    share of the total variance would), and for a VAE whose most active unit follows the prior (variance ≈ 1)
    it is Burda's criterion.
    """
    variances = encode_means(model, images, batch_size=batch_size).double().var(dim=0)  # (D,)
    top = variances.max()
    return variances / top if top > 0 else torch.zeros_like(variances)


def relative_active_units(model: nn.Module, images: Tensor, *, threshold: float = 0.01,
                          batch_size: int = EVAL_BATCH) -> int:
    """Units whose `relative_activity` exceeds `threshold` (0.01): an activity count that ignores the code's scale.

    Used for the collapse criterion of notebook 03, section 6 (a run with at most one such unit has collapsed),
    which must mean the same for AE and VAE codes.
    """
    threshold = as_float(threshold, "threshold", low=0.0, meaning="the relative variance threshold")
    return int((relative_activity(model, images, batch_size=batch_size) > threshold).sum())


def project_codes(codes: Tensor) -> np.ndarray:
    """Codes (N, D) onto their top two principal axes, *uncentred* (N, 2): N(0, I) projects to N(0, I₂) exactly."""
    x = codes.detach().cpu().double().numpy()
    if x.shape[1] <= 2:
        return x
    axes = PCA(n_components=2).fit(x).components_  # (2, D), orthonormal rows
    return x @ axes.T


def random_pairs(n_images: int, n_pairs: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n_pairs` index pairs (a, b) of distinct images among `n_images`, drawn with `seed`."""
    n_images = as_int(n_images, "n_images", low=2)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(n_images, (n_pairs,), generator=gen)
    b = (a + torch.randint(1, n_images, (n_pairs,), generator=gen)) % n_images  # never equal to a
    return a, b


def _path_images(model: nn.Module, x_a: Tensor, x_b: Tensor, steps: int) -> Tensor:
    """Decoded images along z(t) = (1 − t) μ(x_a) + t μ(x_b), t = 0, 1/steps, …, 1: (N, steps + 1, C, H, W)."""
    steps = as_int(steps, "steps", low=2)
    if x_a.shape != x_b.shape:
        raise ConfigError(f"x_a and x_b must have one shape; got {tuple(x_a.shape)} and {tuple(x_b.shape)}.")
    device = model_device(model)
    with evaluating(model):
        z_a, z_b = model.encode(x_a.to(device)).mu, model.encode(x_b.to(device)).mu  # (N, D) each
        t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=z_a.dtype)[None, :, None]  # (1, S, 1)
        z = (1 - t) * z_a[:, None, :] + t * z_b[:, None, :]  # (N, S, D)
        images = model.decode_mean(z.flatten(0, 1))  # (N * S, C, H, W)
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


def off_manifold_distance(path_features: Tensor, reference: Tensor, *, scale: float) -> float:
    """Mean distance of a path's interior points to their nearest reference point, over `scale`, dimensionless.

    path_features: (N, S + 1, F) features of N paths of S + 1 points each (ends included, left out here);
    reference: (M, F) features of real held-out images; scale: the data's own nearest-neighbour distance
    (`reference_scale`), so 1 ≈ "as close to the data as a real image is". Lower = the path passes through
    images like real ones. A pixel cross-fade (1 − t)·x_a + t·x_b is a ghost of two images, far from every real
    image midway, so it scores worse than a path through real-looking images — the opposite of pixel roughness,
    which gives a cross-fade its best score (0). Source: the k-NN manifold view of Kynkäänniemi et al. 2019.
    """
    if path_features.dim() != 3 or path_features.shape[1] < 3:
        raise ConfigError(f"path_features must be (N, S + 1, F) with S >= 2; got {tuple(path_features.shape)}.")
    scale = as_float(scale, "scale", low=0.0, low_open=True, meaning="the data's nearest-neighbour distance")
    interior = path_features[:, 1:-1].reshape(-1, path_features.shape[-1]).double()
    ref = reference.double()
    nearest = torch.cat([torch.cdist(chunk, ref).min(dim=1).values for chunk in interior.split(1024)])
    return float(nearest.mean()) / scale


def reference_scale(reference: Tensor, held_out: Tensor) -> float:
    """The data's own nearest-neighbour scale: mean distance of held-out real features (K, F) to `reference` (M, F)."""
    near = torch.cat([torch.cdist(chunk.double(), reference.double()).min(dim=1).values
                      for chunk in held_out.split(1024)])
    return float(near.mean())


def path_off_manifold(model: nn.Module, embed: Any, x_a: Tensor, x_b: Tensor, reference: Tensor, *, scale: float,
                      steps: int = 10) -> float:
    """`off_manifold_distance` of decoded straight latent paths between x_a and x_b (N each), in `embed`'s features.

    embed: images (K, C, H, W) -> features (K, F), e.g. the domain classifier's `embed`; reference: (M, F)
    features of real held-out images; scale: `reference_scale` of the same features. Lower = more realistic.
    """
    images = latent_path_images(model, x_a, x_b, steps=steps)  # (N, S + 1, C, H, W)
    if images.dim() == 4:
        images = images[None]
    features = embed(images.flatten(0, 1)).view(images.shape[0], images.shape[1], -1)
    return off_manifold_distance(features, reference, scale=scale)


def path_realism(model: nn.Module, classifier: Any, x_a: Tensor, x_b: Tensor, *, steps: int = 10) -> float:
    """Realism kept along straight latent paths, a ratio: the classifier's mean top-class probability on the
    interior decoded points (0 < t < 1) over that on the two ends (the reconstructions); < 1 = a dip midway.

    NaN for a feature map without classes (no `predict_proba`, e.g. `aestudy.ae_features`' FID-AE extractor for
    unlabelled data): there is no class probability to keep."""
    if not hasattr(classifier, "predict_proba"):
        return math.nan
    images = latent_path_images(model, x_a, x_b, steps=steps)  # (N, S + 1, C, H, W)
    confidence = classifier.predict_proba(images.flatten(0, 1)).max(dim=1).values.view(images.shape[:2]).double()
    return float(confidence[:, 1:-1].mean() / confidence[:, [0, -1]].mean())


def prior_holes(model: nn.Module, classifier: Any, *, n: int, threshold: float = 0.5,
                generator: torch.Generator | None = None, batch_size: int = EVAL_BATCH) -> float:
    """Share in [0, 1] of prior samples x = decode(z), z ~ N(0, I), that the domain classifier cannot place.

    A sample falls in a "hole" when the classifier's top-class probability is below `threshold`;
    `classifier` needs `predict_proba(images) -> (N, K)` (see aestudy.classifier.DomainClassifier); NaN for a
    feature map without classes (FID-AE, unlabelled data).
    """
    n = as_int(n, "n", low=1)
    if not hasattr(classifier, "predict_proba"):
        return math.nan
    unsure = 0
    with evaluating(model):
        for start in range(0, n, batch_size):  # samples drawn in chunks: memory bounded by `batch_size`
            samples = model.sample(min(batch_size, n - start), generator=generator)
            confidence = classifier.predict_proba(samples).max(dim=1).values
            unsure += int((confidence < threshold).sum())
    return unsure / n


def interpolation_rows(models: Mapping[str, nn.Module], inputs: Tensor, originals: Tensor, i: int, j: int, *,
                       steps: int = 10) -> dict[str, Tensor]:
    """Image rows for test images i → j: the two originals, then each model's decoded straight latent path."""
    rows = {"A, B (data)": torch.stack([originals[i], originals[j]])}
    for name, model in models.items():
        rows[name] = latent_path_images(model, inputs[i], inputs[j], steps=steps)
    return rows


def posterior_variance(model: nn.Module, images: Tensor, *, dims: Tensor | None = None,
                       batch_size: int = EVAL_BATCH) -> Tensor:
    """Mean posterior variance σ²_d(x) over latent dimensions `dims` (all when None), latent units², (N,)."""
    if not getattr(model, "is_variational", False):
        raise ConfigError("posterior_variance needs a variational model (kind='vae'); an AE has no q(z|x) variance.")

    def mean_variance(x: Tensor) -> Tensor:
        var = model.encode(x).logvar.exp()  # (B, D)
        return (var if dims is None else var[:, dims.to(var.device)]).mean(dim=1)

    return batched(model, mean_variance, images, batch_size=batch_size)
