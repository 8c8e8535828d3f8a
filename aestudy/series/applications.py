"""Notebook 04 (applications): what each model is said to be good for, measured — the pieces that only this
notebook needs (the reusable ones live in `denoising`, `probes`, `anomaly`, `generation`, `latent`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from torch import Tensor, nn

from aestudy.anomaly import neg_elbo
from aestudy.evaluation import reconstruct
from aestudy.latent import posterior_variance
from aestudy.metrics import mse_per_image


def uncertainty_table(model: nn.Module, sets: Mapping[str, Tensor], *, dims: Tensor | None = None,
                      seed: int = 0, n_samples: int = 1) -> pd.DataFrame:
    """Per image of each named set: posterior variance, −ELBO (nats) and reconstruction MSE (intensity²).

    Columns: set, posterior_var, neg_elbo, recon_mse.
    """
    frames = []
    for name, x in sets.items():
        frames.append(pd.DataFrame({
            "set": name,
            "posterior_var": posterior_variance(model, x, dims=dims).numpy(),
            "neg_elbo": neg_elbo(model, x, n_samples=n_samples, seed=seed).numpy(),
            "recon_mse": mse_per_image(x, reconstruct(model, x)).numpy(),
        }))
    return pd.concat(frames, ignore_index=True)
