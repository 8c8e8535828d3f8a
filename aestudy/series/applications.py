"""Notebook 04 (applications): what each model is said to be good for, measured — the pieces that only this
notebook needs (the reusable ones live in `denoising`, `probes`, `anomaly`, `generation`, `latent`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from aestudy.anomaly import check_class, neg_elbo, recon_error, unavailable_reason
from aestudy.data import DATASET_NAMES, Dataset, DatasetInfo
from aestudy.denoising import denoising_noise, denoising_table
from aestudy.errors import ConfigError
from aestudy.evaluation import encode_means
from aestudy.latent import posterior_variance
from aestudy.models import ModelConfig
from aestudy.noise import NoiseConfig
from aestudy.probes import active_features, probe_table
from aestudy.study import Study
from aestudy.train import TrainConfig, train_or_load

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
    "n_seeds": (2, 5, 10),  # training seeds of the replicate models behind the comparative claims
    "seed_limit": (2000, 10000, None),  # training images of each replicate (None = all)
    "seed_epochs": (1, 3, 10),  # epochs of each replicate
}



def check_parameters(study: Study, info: DatasetInfo) -> tuple[NoiseConfig, int | None, str | None]:
    """Notebook 04's own parameters, validated before any training: (training noise, held-out class, OOD set).

    `ood_dataset=None` picks "digits" ("fashion-mnist" when the study runs on digits). Your own data (a path):
    the held-out class is None when the images have no labels (no class can be held out), and the OOD set is
    the `ood_dataset` given, if its images have the data's shape, else None (the OOD sections are skipped).

    Raises:
        ConfigError: naming the parameter, the valid values and (for an OOD set not on this machine) the fix.
    """
    params = study.params
    noise = denoising_noise(params["train_noise"], params["train_noise_level"])
    anomaly_class = check_class(params["anomaly_class"], info) if info.labelled else None
    if study.config.dataset not in DATASET_NAMES:  # a path: no default OOD set has its image shape in general
        return noise, anomaly_class, own_data_ood(params["ood_dataset"], info)
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


def own_data_ood(ood_dataset: str | None, info: DatasetInfo) -> str | None:
    """The OOD set for your own images: `ood_dataset` when given and its images have `info.shape`, else None.

    Raises:
        ConfigError: an OOD set that is not on this machine, or whose image shape differs from the data's.
    """
    if ood_dataset is None:
        return None
    reason = unavailable_reason(ood_dataset)
    if reason:
        raise ConfigError(f"ood_dataset={ood_dataset!r} cannot be used: {reason}.")
    from aestudy.data import list_datasets

    shape = next(row.shape for row in list_datasets() if row.name == ood_dataset)
    if tuple(shape) != tuple(info.shape):
        raise ConfigError(f"ood_dataset={ood_dataset!r} is invalid for {info.name}: its images are "
                          f"{'x'.join(map(str, shape))}, the data's {'x'.join(map(str, info.shape))}; pick a dataset "
                          "of the same shape (e.g. photo-patches-32 for 3x32x32 images) or None (no OOD section).")
    return ood_dataset


def held_out_text(info: DatasetInfo, anomaly_class: int | None) -> str:
    """How the setup line names the held-out class ("none: no labels" for unlabelled data)."""
    if anomaly_class is None:
        return "held-out class: none (no labels)"
    return f"held-out class {anomaly_class} = {info.class_names[anomaly_class]}"


def uncertainty_table(model: nn.Module, sets: Mapping[str, tuple[Tensor, Tensor]], *, dims: Tensor | None = None,
                      seed: int = 0, n_samples: int = 1) -> pd.DataFrame:
    """Per image of each named (grey, binarized) set: posterior variance, −ELBO (nats) and reconstruction MSE.

    The model (trained on binarized images) sees the binarized images; its reconstruction is scored against the
    grey levels (`anomaly.recon_error`: against the binarized pixels the error would mostly be Bernoulli noise).
    Columns: set, posterior_var (latent units²), neg_elbo (nats), recon_mse (intensity²).
    """
    frames = []
    for name, (grey, binary) in sets.items():
        frames.append(pd.DataFrame({
            "set": name,
            "posterior_var": posterior_variance(model, binary, dims=dims).numpy(),
            "neg_elbo": neg_elbo(model, binary, n_samples=n_samples, seed=seed).numpy(),
            "recon_mse": recon_error(model, binary, grey).numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def replicate_models(data: Dataset, ae_cfg: ModelConfig, vae_cfg: ModelConfig, train_cfg: TrainConfig,
                     noise: NoiseConfig, seeds: Sequence[int]) -> dict[int, dict[str, nn.Module]]:
    """Section 1's four models (AE, DAE, VAE, DVAE) trained once per seed: {seed: {name: model on the CPU}}.

    The replicates behind the comparative claims (`aestudy.stats.compare` needs one value per training seed);
    `data` and `train_cfg` set their (smaller) training budget, the same for every model and seed.
    """
    out = {}
    for seed in seeds:
        cfg = replace(train_cfg, seed=int(seed), progress=False)
        runs = {"AE": (ae_cfg, cfg), "DAE": (ae_cfg, replace(cfg, noise=noise)), "VAE": (vae_cfg, cfg),
                "DVAE": (vae_cfg, replace(cfg, noise=noise))}
        out[int(seed)] = {name: train_or_load(m, t, data).model.cpu().eval() for name, (m, t) in runs.items()}
    return out


def replicate_denoising(replicates: Mapping[int, Mapping[str, nn.Module]], clean: Tensor,
                        noises: Sequence[NoiseConfig]) -> pd.DataFrame:
    """PSNR of every replicate model on every noise: columns seed, model, noise, level, psnr (dB)."""
    frames = [denoising_table(models, clean, noises, seed=seed).assign(seed=seed)
              for seed, models in replicates.items()]
    return pd.concat(frames, ignore_index=True)[["seed", "model", "noise", "level", "psnr"]]


def replicate_probes(replicates: Mapping[int, Mapping[str, nn.Module]], train_images: Tensor, train_labels: Tensor,
                     test_images: Tensor, test_labels: Tensor, *, label_counts: Sequence[int | None],
                     pca: tuple[Any, Any], max_iter: int = 200,
                     representations: Sequence[str] = ("AE", "VAE", "PCA", "raw pixels")) -> pd.DataFrame:
    """Linear-probe accuracy per replicate seed of AE codes, VAE means (active units only), PCA and raw pixels.

    Seed s probes its own AE and VAE and — paired with them — PCA and raw pixels on the same labelled draw
    (seed s), so `compare(..., paired=True)` sees the same labels in both arms; `representations` picks which
    are probed (a probe on raw pixels with every label is the slow one). Columns: seed, labels, representation,
    accuracy.
    """
    rows = []
    raw = (train_images.flatten(1).numpy(), test_images.flatten(1).numpy())
    for seed, models in replicates.items():
        vae_train, vae_test, _ = active_features(encode_means(models["VAE"], train_images),
                                                 encode_means(models["VAE"], test_images))
        features = {"AE": (encode_means(models["AE"], train_images), encode_means(models["AE"], test_images)),
                    "VAE": (vae_train, vae_test), "PCA": pca, "raw pixels": raw}
        features = {name: features[name] for name in representations}
        table = probe_table(features, train_labels, test_labels, label_counts=label_counts, repeats=1, seed=seed,
                            max_iter=max_iter)
        table = table[table["probe"] == "linear probe"]
        rows += [{"seed": seed, "labels": int(r.labels), "representation": r.representation, "accuracy": r.accuracy}
                 for r in table.itertuples()]
    return pd.DataFrame(rows)


def per_seed(table: pd.DataFrame, value: str, **where: Any) -> np.ndarray:
    """The `value` column of the rows matching `where` (column=value), one per seed in seed order."""
    rows = table
    for column, wanted in where.items():
        rows = rows[rows[column] == wanted]
    return rows.sort_values("seed")[value].to_numpy()
