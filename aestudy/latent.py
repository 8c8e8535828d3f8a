"""The latent space: the aggregate posterior, straight latent paths and their decoded images, prior holes,
projections for plots and the posterior variance.

Taught in notebook 03 section 3 (does the VAE's q(z) match its prior; are its interpolations smoother) and
notebook 04 section 5 (posterior variance as uncertainty).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.evaluation import EVAL_BATCH, batched, batches, evaluating, model_device
from aestudy.validate import as_int


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


def path_realism(model: nn.Module, classifier: Any, x_a: Tensor, x_b: Tensor, *, steps: int = 10) -> float:
    """Realism kept along straight latent paths, a ratio: the classifier's mean top-class probability on the
    interior decoded points (0 < t < 1) over that on the two ends (the reconstructions); < 1 = a dip midway."""
    images = latent_path_images(model, x_a, x_b, steps=steps)  # (N, S + 1, C, H, W)
    confidence = classifier.predict_proba(images.flatten(0, 1)).max(dim=1).values.view(images.shape[:2]).double()
    return float(confidence[:, 1:-1].mean() / confidence[:, [0, -1]].mean())


def prior_holes(model: nn.Module, classifier: Any, *, n: int, threshold: float = 0.5,
                generator: torch.Generator | None = None, batch_size: int = EVAL_BATCH) -> float:
    """Share in [0, 1] of prior samples x = decode(z), z ~ N(0, I), that the domain classifier cannot place.

    A sample falls in a "hole" when the classifier's top-class probability is below `threshold`;
    `classifier` needs `predict_proba(images) -> (N, K)` (see aestudy.classifier.DomainClassifier).
    """
    n = as_int(n, "n", low=1)
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
