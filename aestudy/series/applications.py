"""Notebook 04 (applications): what each model is said to be good for, measured — the pieces that only this
notebook needs (the reusable ones live in `denoising`, `probes`, `anomaly`, `generation`, `latent`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from torch import Tensor, nn

from aestudy.anomaly import check_class, neg_elbo, unavailable_reason
from aestudy.data import DATASET_NAMES, DatasetInfo
from aestudy.denoising import denoising_noise
from aestudy.errors import ConfigError
from aestudy.evaluation import reconstruct
from aestudy.latent import posterior_variance
from aestudy.metrics import mse_per_image
from aestudy.noise import NoiseConfig
from aestudy.study import Study

SIZES = {  # knob: (smoke, standard, full)
    "limit": (2000, None, None),  # training images (None = all 55,000)
    "val_size": (500, 5000, 5000),
    "epochs": (1, 5, 30),  # this notebook's own models
    "n_eval": (500, 2000, 10000),  # test images scored in each section
    "label_counts": ((100, 1000, None),) * 3,  # labelled training images for the probes (None = all)
    "probe_repeats": (1, 3, 5),  # draws of each small labelled set
    "probe_max_iter": (200, 200, 1000),  # lbfgs iterations of the linear probe
    "embedding": ("pca", "pca", "tsne"),
    "n_embed": (300, 2000, 3000),
    "nll_k": (20, 100, 1000),  # importance samples of the IS-NLL scores
    "table_limit": (None, 5000, None),  # training images per held-out-class model
    "table_epochs": (0, 3, 30),  # 0 = no table over held-out classes
    "background_rate": (0.2, 0.2, 0.2),  # share of pixels randomised in the background model's data (Ren et al. 2019)
    "n_per_class": (50, 500, 1000),  # synthetic images per class
}



def check_parameters(study: Study, info: DatasetInfo) -> tuple[NoiseConfig, int, str]:
    """Notebook 04's own parameters, validated before any training: (training noise, held-out class, OOD set).

    `ood_dataset=None` picks "digits" ("fashion-mnist" when the study runs on digits).

    Raises:
        ConfigError: naming the parameter, the valid values and (for an OOD set not on this machine) the fix.
    """
    params = study.params
    noise = denoising_noise(params["train_noise"], params["train_noise_level"])
    anomaly_class = check_class(params["anomaly_class"], info)
    ood_dataset = params["ood_dataset"]
    ood_name = ood_dataset or ("fashion-mnist" if study.config.dataset == "digits" else "digits")
    if ood_name not in DATASET_NAMES or ood_name == study.config.dataset:
        raise ConfigError(f"ood_dataset={ood_dataset!r} is invalid; valid values: None or one of "
                          f"{', '.join(n for n in DATASET_NAMES if n != study.config.dataset)} (not the training "
                          "dataset).")
    reason = unavailable_reason(ood_name)
    if reason:
        raise ConfigError(f"ood_dataset={ood_name!r} cannot be used: {reason}.")
    return noise, anomaly_class, ood_name


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
