"""Notebook 04 (applications): what each model is said to be good for, measured — the pieces that only this
notebook needs (the reusable ones live in `denoising`, `probes`, `anomaly`, `generation`, `latent`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from aestudy.anomaly import (
    anomaly_auroc,
    anomaly_scores,
    auroc_table,
    check_class,
    complexity_corrected,
    model_scorers,
    neg_elbo,
    perturbed_dataset,
    recon_error,
    score_sets,
    split_by_class,
    unavailable_reason,
    without_class,
)
from aestudy.data import DATASET_NAMES, Dataset, DatasetInfo, Split
from aestudy.denoising import denoising_noise, denoising_table
from aestudy.ensemble import fit_many
from aestudy.errors import ConfigError
from aestudy.evaluation import encode_means, generator_on, model_device
from aestudy.generation import (
    classifier_labelled_samples,
    conditional_samples,
    fit_code_density,
    real_subset,
    tstr_results,
)
from aestudy.latent import posterior_variance
from aestudy.metrics import active_units
from aestudy.models import ModelConfig
from aestudy.noise import NoiseConfig
from aestudy.probes import active_features, probe_table
from aestudy.series import comparison, shared
from aestudy.series.basics import subset
from aestudy.stats import Verdict, compare, compare_to_value
from aestudy.study import Study
from aestudy.train import TrainConfig, train_or_load

SIZES = {  # knob: (smoke, standard, full)
    "limit": shared.SIZES["limit"],  # training images of the shown models (None = all 55,000)
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
    # Epochs of each replicate: section 1's four models and the CVAEs of section 4. A CVAE follows its label more
    # the longer it trains (measured in standard: 0.30-0.34 of samples recognised per seed at 3 epochs on 10k images,
    # 0.52 for the shown CVAE at 5 epochs on all images), so the CVAE verdicts speak for this budget, and say so.
    "seed_epochs": (1, 3, 10),
    # Images each replicate scores in sections 3 and 5 (test images, and as many OOD images). A per-seed AUROC on
    # 1,000 vs 1,000 images has a standard error of about 0.01, a fifth of the claims' minimum effect (0.05): the
    # seed-to-seed spread, not the image count, limits these claims, and IS-NLL costs k passes per image.
    "seed_eval": (500, 1000, 10000),
    # The held-out-class replicates (section 3): trained like the table over held-out classes (`table_limit`
    # images, `table_epochs` epochs in standard), so seed `seed`'s pair is the table's and is loaded, not retrained.
    "holdout_seed_limit": (2000, 5000, None),
    "holdout_seed_epochs": (1, 3, 10),
    # The VAE replicates of sections 3 and 5 (trained on binarized images of every class) are notebook 03's seed
    # replicates (its `subset` images, `rep_epochs` epochs, same configs): a series run loads them from the cache.
    # Measured in standard (1,000 test and OOD images each): IS-NLL AUROC 0.35-0.38 per seed (the shown reference VAE:
    # 0.42), ρ(σ², error) -0.25 to -0.36 (-0.39), ρ(−ELBO, error) 0.38-0.47 (0.41) agree with the shown model; the
    # posterior-variance AUROC does not: 0.95-1.00 per seed with all 16 units active, 0.30 for the reference VAE with
    # 7. Which units stay active depends on training, so that verdict speaks for this budget (the notebook says so).
    "lik_seed_limit": comparison.SIZES["subset"],
    "lik_seed_epochs": comparison.SIZES["rep_epochs"],
}

# Pre-specified minimum effects of notebook 04's examined claims about one method against a fixed value (chance,
# no correlation), each tested over training seeds with `stats.compare_to_value` (one value per seed). With 5 seeds
# a one-sample t test settles an effect of about 2.5 seed-to-seed standard deviations (issue 14's power figures):
# these minimum effects are settled when per-seed AUROCs and ρ vary by less than about 0.02-0.04 between seeds.
CHANCE_AUROC = 0.5
# AUROC units: 0.05 from chance is the smallest departure that changes whether one would use (or distrust) a score;
# it is also above the image noise of one replicate's AUROC (~0.01 at `seed_eval` = 1,000).
MIN_AUROC_EFFECT = 0.05
# Spearman ρ units: a rank correlation of 0.1 (1 % of rank variance) is the least that makes a score useful as an
# uncertainty signal for single images.
MIN_RHO = 0.1
# Share of CVAE samples the domain classifier assigns to the requested class, against a majority (0.5): 5 points
# past it, since the classifier's own error on real images is about 10 %, a "majority" by less is not a majority
# of samples that look like their class.
MAJORITY, MIN_MAJORITY_EFFECT = 0.5, 0.05



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


# --- seed replicates of the claims about one method (issue 14) -------------------------------------------------------

def seed_models(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset, seeds: Sequence[int]
                ) -> dict[int, nn.Module]:
    """`model_cfg` trained at `train_cfg` once per seed, the seeds as one batched computation (`ensemble.fit_many`:
    exact vs one `fit` per seed, each model cached under its own key): {seed: model on the CPU in eval mode}."""
    runs = fit_many(model_cfg, [replace(train_cfg, seed=int(s), progress=False) for s in seeds], data)
    return {int(s): r.model.cpu().eval() for s, r in zip(seeds, runs, strict=True)}


def likelihood_seed_models(binary: Dataset, vae_cfg: ModelConfig, train_cfg: TrainConfig, seeds: Sequence[int], *,
                           limit: int | None, data_seed: int) -> dict[int, nn.Module]:
    """VAEs on `limit` binarized training images (`basics.subset` drawn with `data_seed`), once per seed
    (`seed_models`): with notebook 03's subset, epochs and config they are its seed replicates of the VAE."""
    return seed_models(vae_cfg, train_cfg, subset(binary, limit, seed=data_seed), seeds)


def holdout_seed_aurocs(data: Dataset, anomaly_class: int, ae_cfg: ModelConfig, vae_cfg: ModelConfig,
                        train_cfg: TrainConfig, seeds: Sequence[int], test: tuple[Split, Split], *,
                        k: int | None, seed: int = 0) -> pd.DataFrame:
    """AUROC of each anomaly score with `anomaly_class` held out, per training seed of the AE and VAE pair.

    The AE and VAE are trained on every class of `data` (binarized) but `anomaly_class`, once per seed
    (`seed_models`); `test` = (grey, binarized) splits of the same test images, scored as in section 3
    (`anomaly.model_scorers`, IS-NLL with `k` samples when k is not None). Columns: seed, score, auroc.
    """
    held = without_class(data, anomaly_class)
    aes, vaes = seed_models(ae_cfg, train_cfg, held, seeds), seed_models(vae_cfg, train_cfg, held, seeds)
    (grey_normal, grey_anomalous), (normal, anomalous) = (split_by_class(test[0], anomaly_class),
                                                          split_by_class(test[1], anomaly_class))
    rows = []
    for s in aes:
        scores = score_sets(model_scorers(aes[s], vaes[s], k=k, seed=seed), (grey_normal, normal),
                            (grey_anomalous, anomalous))
        rows += [{"seed": s, "score": name, "auroc": row.auroc} for name, row in auroc_table(scores).iterrows()]
    return pd.DataFrame(rows)


def anomaly_beats_chance(aurocs: pd.DataFrame) -> Verdict:
    """The verdict on 04.anomaly-scores-beat-chance from `holdout_seed_aurocs`: "every score beats chance" holds
    for a seed at its worst score, so the per-seed minimum AUROC over scores is tested against 0.5."""
    worst = aurocs.groupby("seed")["auroc"].min().sort_index().to_numpy(dtype=float)
    return compare_to_value(worst, CHANCE_AUROC, higher_is_better=True, min_effect=MIN_AUROC_EFFECT)


LIKELIHOOD_VS_RECON_MIN_EFFECT = 0.02  # AUROC: a smaller difference would not change which detector one picks


def likelihood_beats_recon(aurocs: pd.DataFrame) -> Verdict:
    """The verdict on 04.likelihood-beats-recon-error from `holdout_seed_aurocs`: the VAE's IS-NLL AUROC minus the
    AE's reconstruction-error AUROC, paired by training seed (each seed's AE and VAE saw the same images in the same
    order), min effect `LIKELIHOOD_VS_RECON_MIN_EFFECT`. Needs the "VAE IS-NLL" score (k not None).

    Raises:
        ConfigError: when `aurocs` lacks either score.
    """
    table = aurocs.pivot(index="seed", columns="score", values="auroc").sort_index()
    missing = [name for name in ("VAE IS-NLL", "AE recon error") if name not in table.columns]
    if missing:
        raise ConfigError(f"likelihood_beats_recon: the AUROC table has no {', '.join(missing)} score; score the "
                          "held-out replicates with k set (IS-NLL).")
    return compare(table["VAE IS-NLL"].to_numpy(float), table["AE recon error"].to_numpy(float),
                   higher_is_better=True, min_effect=LIKELIHOOD_VS_RECON_MIN_EFFECT, paired=True)


def background_seed_models(binary: Dataset, vae_cfg: ModelConfig, train_cfg: TrainConfig, seeds: Sequence[int], *,
                           limit: int | None, data_seed: int, rate: float) -> dict[int, nn.Module]:
    """The likelihood-ratio background VAEs (Ren et al. 2019) of `likelihood_seed_models`' replicates: the same
    subset, config and budget, trained on it with a share `rate` of pixels randomised (`anomaly.perturbed_dataset`),
    once per seed, so each replicate VAE has its own background model."""
    return seed_models(vae_cfg, train_cfg, perturbed_dataset(subset(binary, limit, seed=data_seed), rate,
                                                             seed=data_seed), seeds)


def ood_fix_helps(table: pd.DataFrame, fix: str) -> Verdict:
    """The verdict on "the OOD fix `fix` flags the OOD set better than the raw IS-NLL", over training seeds:
    `likelihood_seed_table`'s auroc_<fix> minus auroc_is_nll, paired by seed (each fix is computed from the same
    replicate's IS-NLL), min effect `LIKELIHOOD_VS_RECON_MIN_EFFECT` (0.02 AUROC).

    Raises:
        ConfigError: when the table has no column for `fix` (the replicates were scored without backgrounds).
    """
    column = OOD_FIX_COLUMNS.get(fix)
    if column is None or column not in table.columns:
        raise ConfigError(f"ood_fix_helps: fix={fix!r} has no per-seed AUROC in the table (columns: "
                          f"{', '.join(table.columns)}); score the replicates with their background models.")
    ordered = table.sort_values("seed")
    return compare(ordered[column].to_numpy(float), ordered["auroc_is_nll"].to_numpy(float), higher_is_better=True,
                   min_effect=LIKELIHOOD_VS_RECON_MIN_EFFECT, paired=True)


OOD_FIX_COLUMNS = {"likelihood ratio": "auroc_likelihood_ratio",
                   "complexity-corrected IS-NLL": "auroc_complexity_corrected"}


def likelihood_seed_table(models: Mapping[int, nn.Module], inside: tuple[Tensor, Tensor],
                          outside: tuple[Tensor, Tensor], *, k: int, seed: int = 0,
                          backgrounds: Mapping[int, nn.Module] | None = None) -> pd.DataFrame:
    """Per VAE seed (trained on binarized images of every class): the OOD and uncertainty numbers of sections 3, 5.

    `inside` / `outside` = (grey, binarized) test and OOD images. Columns: seed; auroc_is_nll (IS-NLL with `k`
    samples, OOD vs test: < 0.5 means the OOD images look MORE likely); rho_var_error and rho_elbo_error (Spearman ρ
    of the mean posterior variance over active units, and of −ELBO, with the reconstruction MSE against grey
    levels, on the test images; `uncertainty_table`); auroc_var (posterior variance, OOD vs test); active_units;
    with `backgrounds` (seed -> its background VAE, `background_seed_models`) also auroc_likelihood_ratio (IS-NLL
    minus the background's IS-NLL, Ren et al. 2019) and auroc_complexity_corrected (Serrà et al. 2020), both from
    the same IS-NLL draws as auroc_is_nll.
    """
    rows = []
    for s, model in models.items():
        n_active, unit_var = active_units(model, inside[1])
        dims = torch.nonzero(unit_var > 0.01).flatten()
        unc = uncertainty_table(model, {"in": inside, "out": outside}, dims=dims if len(dims) else None, seed=seed)
        test, ood = unc[unc["set"] == "in"], unc[unc["set"] == "out"]
        nll = [anomaly_scores(model, x[1], score="is_nll", k=k, generator=generator_on(seed, model_device(model)))
               for x in (inside, outside)]
        fixes = {}
        if backgrounds is not None:
            background = backgrounds[s]
            bg = [anomaly_scores(background, x[1], score="is_nll", k=k,
                                 generator=generator_on(seed, model_device(background))) for x in (inside, outside)]
            ratio = [(n.cpu() - b.cpu()).numpy() for n, b in zip(nll, bg, strict=True)]
            corrected = [complexity_corrected(n, x[1]).numpy() for n, x in zip(nll, (inside, outside), strict=True)]
            fixes = {"auroc_likelihood_ratio": anomaly_auroc(*ratio),
                     "auroc_complexity_corrected": anomaly_auroc(*corrected)}
        rows.append({"seed": int(s), "auroc_is_nll": anomaly_auroc(nll[0].numpy(), nll[1].numpy()), **fixes,
                     "rho_var_error": float(spearmanr(test["posterior_var"], test["recon_mse"]).statistic),
                     "rho_elbo_error": float(spearmanr(test["neg_elbo"], test["recon_mse"]).statistic),
                     "auroc_var": anomaly_auroc(test["posterior_var"].to_numpy(), ood["posterior_var"].to_numpy()),
                     "active_units": int(n_active)})
    return pd.DataFrame(rows)


def ood_likelihood_failure(table: pd.DataFrame) -> Verdict:
    """The verdict on 04.ood-likelihood-failure: the per-seed IS-NLL AUROC (OOD vs test) BELOW chance."""
    return compare_to_value(table["auroc_is_nll"].to_numpy(dtype=float), CHANCE_AUROC, higher_is_better=False,
                            min_effect=MIN_AUROC_EFFECT)


def tracks_error(table: pd.DataFrame, column: str) -> Verdict:
    """The verdict on "`column` rises with the reconstruction error": per-seed Spearman ρ (`column` of
    `likelihood_seed_table`, rho_var_error or rho_elbo_error) above 0 by at least `MIN_RHO`."""
    return compare_to_value(table[column].to_numpy(dtype=float), 0.0, higher_is_better=True, min_effect=MIN_RHO)


def variance_flags_ood(table: pd.DataFrame) -> Verdict:
    """The verdict on 04.variance-flags-ood: the per-seed posterior-variance AUROC (OOD vs test) above chance."""
    return compare_to_value(table["auroc_var"].to_numpy(dtype=float), CHANCE_AUROC, higher_is_better=True,
                            min_effect=MIN_AUROC_EFFECT)


TSTR_MIN_EFFECT = 0.02  # accuracy: two points of test accuracy; less would not change which source one trains on
TSTR_REAL, TSTR_CVAE, TSTR_AE_GMM = "real images", "CVAE samples (own labels)", "AE + GMM samples (classifier labels)"


def tstr_seed_table(cvaes: Mapping[int, nn.Module], aes: Mapping[int, nn.Module], train: Split, test: Split,
                    info: DatasetInfo, classifier: Any, n_per_class: int, *, classifier_fn: Any) -> pd.DataFrame:
    """"Train on synthetic, test on real" per training seed: for seed s, `n_per_class` samples per class of the CVAE
    replicate `cvaes[s]`, as many samples of the AE replicate `aes[s]` + a 10-component GMM fitted to its codes of
    `train` (labelled by the domain `classifier`, the AE's fair sampler), and as many real images of `train`, each
    drawn with seed s; a classifier (`classifier_fn(dataset)`, as in section 4) is trained on each and tested on the
    real `test` split. Columns: seed, source, test_accuracy (share of `test`).

    Raises:
        ConfigError: when the seeds of `cvaes` and `aes` differ, or `test` has no labels (`tstr_results`).
    """
    if sorted(cvaes) != sorted(aes):
        raise ConfigError(f"tstr_seed_table: the CVAE seeds {sorted(cvaes)} and the AE seeds {sorted(aes)} must be the "
                          "same (one of each per training seed).")
    rows = []
    for s in sorted(cvaes):
        synthetic = conditional_samples(cvaes[s], n_per_class, seed=s)
        n = len(synthetic[1])
        density = fit_code_density(encode_means(aes[s], train.images), seed=s)
        sources = {TSTR_REAL: real_subset(train, n, seed=s), TSTR_CVAE: synthetic,
                   TSTR_AE_GMM: classifier_labelled_samples(aes[s], classifier, n, seed=s, density=density)}
        table, _ = tstr_results(sources, test, info, classifier_fn=classifier_fn)
        rows += [{"seed": int(s), "source": name, "test_accuracy": float(acc)}
                 for name, acc in table["test_accuracy"].items()]
    return pd.DataFrame(rows)


def tstr_verdicts(table: pd.DataFrame) -> tuple[Verdict, Verdict, str]:
    """The verdicts on 04.cvae-samples-train-better-than-ae-samples (CVAE samples vs AE + GMM samples) and
    04.real-data-beats-synthetic (real images vs the synthetic source with the higher mean accuracy), from
    `tstr_seed_table`: test accuracies paired by seed, min effect `TSTR_MIN_EFFECT`. Returns (cvae_vs_ae,
    real_vs_best, best synthetic source's name)."""
    pivot = table.pivot(index="seed", columns="source", values="test_accuracy").sort_index()
    cvae_vs_ae = compare(pivot[TSTR_CVAE].to_numpy(float), pivot[TSTR_AE_GMM].to_numpy(float), higher_is_better=True,
                         min_effect=TSTR_MIN_EFFECT, paired=True)
    best = str(pivot.drop(columns=TSTR_REAL).mean().idxmax())
    real_vs_best = compare(pivot[TSTR_REAL].to_numpy(float), pivot[best].to_numpy(float), higher_is_better=True,
                           min_effect=TSTR_MIN_EFFECT, paired=True)
    return cvae_vs_ae, real_vs_best, best


def cvae_agreement(models: Mapping[int, nn.Module], classifier: Any, n_per_class: int, *, seed: int = 0
                   ) -> pd.DataFrame:
    """Per class-conditional VAE seed: the share of its prior samples (`n_per_class` per class) that `classifier`
    (with `predict_proba(images) -> (N, K)`) assigns to the requested class. Columns: seed, agreement."""
    rows = []
    for s, model in models.items():
        images, labels = conditional_samples(model, n_per_class, seed=seed)
        predicted = classifier.predict_proba(images).argmax(dim=1)
        rows.append({"seed": int(s), "agreement": float((predicted == labels).double().mean())})
    return pd.DataFrame(rows)


def cvae_label_matters(agreement: pd.DataFrame, num_classes: int) -> Verdict:
    """The verdict on 04.cvae-label-matters: per-seed agreement above chance (1/K) by at least 1/K more, i.e. at
    least twice chance ("far more often than chance"; the min effect, in shares, is the claim's own 2/K line)."""
    chance = 1.0 / num_classes
    return compare_to_value(agreement["agreement"].to_numpy(dtype=float), chance, higher_is_better=True,
                            min_effect=chance)


def cvae_follows_label(agreement: pd.DataFrame) -> Verdict:
    """The verdict on 04.cvae-follows-label: per-seed agreement above a majority (0.5) by `MIN_MAJORITY_EFFECT`."""
    return compare_to_value(agreement["agreement"].to_numpy(dtype=float), MAJORITY, higher_is_better=True,
                            min_effect=MIN_MAJORITY_EFFECT)


# --- readings of surprising results (issue 19): one sentence each, its wording chosen from the measured values ---

def ood_reading(ood_table: pd.DataFrame, deciding: str) -> str:
    """Markdown interpreting the OOD AUROCs where they go against the textbook (a likelihood is a good anomaly score,
    and its fixes repair it): which score detects the deciding OOD set best, and what the likelihood ratio did there.

    `ood_table`: `anomaly.auroc_table` per OOD set, concatenated with index (OOD set, score) and an `auroc` column
    (AUROC, 0.5 = chance; optional `mean_normal`, `mean_anomalous`: mean score per group); `deciding`: the OOD set
    the verdicts use. Scores read: "AE recon error", "VAE IS-NLL", "likelihood ratio".
    Sources: Nalisnick et al. (2019), Ren et al. (2019), Serrà et al. (2020).

    Raises:
        ConfigError: when `deciding` or one of those scores is not in the table.
    """
    auroc = ood_table["auroc"]
    sets = list(dict.fromkeys(auroc.index.get_level_values(0)))
    if deciding not in sets:
        raise ConfigError(f"ood_reading: the deciding OOD set {deciding!r} is not in the table; it has {sets}.")
    here = auroc.loc[deciding]
    missing = [s for s in ("AE recon error", "VAE IS-NLL", "likelihood ratio") if s not in here.index]
    if missing:
        raise ConfigError(f"ood_reading needs the scores {missing} on {deciding!r}; it has {list(here.index)}.")
    best, nll, ratio = str(here.idxmax()), float(here["VAE IS-NLL"]), float(here["likelihood ratio"])
    lines = []
    if here[best] <= CHANCE_AUROC:
        lines.append(f"**Reading: no score detects {deciding} better than chance here** (the highest AUROC is "
                     f"{best}'s, {here[best]:.3f}): every score ranks these OOD images as more normal than the test "
                     "images, the failure Nalisnick et al. (2019) describe, reaching even the reconstruction error.")
    elif best == "AE recon error":
        lines.append(
            f"**Reading: the AE's reconstruction error is the best detector of {deciding}** (AUROC "
            f"{here[best]:.3f}, the VAE's IS-NLL {nll:.3f}). It asks whether the AE can redraw the image, which it "
            "learned from this data's shapes only; a likelihood sums per-pixel log-probabilities and is dominated by "
            "how simple the image is (how much of it is plain background), not by what it shows (Nalisnick et al. "
            "2019; Serrà et al. 2020).")
    else:
        lines.append(f"**Reading:** on {deciding} the best detector is {best} (AUROC {here[best]:.3f}); the AE's "
                     f"reconstruction error reaches {here['AE recon error']:.3f}.")
    elsewhere = [(s, float(auroc.loc[s]["likelihood ratio"]), float(auroc.loc[s]["VAE IS-NLL"])) for s in sets
                 if s != deciding and "likelihood ratio" in auroc.loc[s].index and "VAE IS-NLL" in auroc.loc[s].index]
    helped = [s for s, r, n in elsewhere if r > n]
    columns = ("mean_normal", "mean_anomalous")  # `auroc_table`'s mean score per group, when present
    means = (tuple(float(ood_table.loc[(deciding, "likelihood ratio"), c]) for c in columns)
             if set(columns) <= set(ood_table.columns) else ())
    if ratio < nll:
        survives = (f"; here the full model's preference for these images survives the subtraction (mean ratio "
                    f"{means[1]:.1f} on them vs {means[0]:.1f} on the test images: lower = more normal), and with the "
                    "shared low-level part removed it ranks them as normal more consistently"
                    if means and means[1] < means[0] else "")
        lines.append(
            f"**Reading: the likelihood ratio deepens the failure on {deciding}** (AUROC {nll:.3f} → {ratio:.3f})"
            + (f", although it helps on {', '.join(helped)}" if helped else "") + ". The ratio cancels only the part "
            "of the likelihood that the background model (trained on perturbed images of this data) captures"
            + survives + ". Ren et al. (2019) tuned the perturbation rate and the background model's weight decay on "
            "held-out OOD data, which a protocol that fixes the rate in advance cannot do.")
    else:
        lines.append(f"**Reading:** the likelihood ratio raises the AUROC on {deciding} ({nll:.3f} → {ratio:.3f}), "
                     "the repair Ren et al. (2019) report.")
    return "\n\n".join(lines)


def probe_reading(probe_results: pd.DataFrame, *, active: int, latent_dim: int, probe: str = "linear") -> str:
    """Markdown interpreting the few-label probes where they go against the M1 story (VAE means are good features):
    the worst and best representation at the fewest labels, and PCA against the AE codes at the most labels.

    `probe_results`: `probes.probe_table` rows (representation, probe, labels, accuracy; accuracy a share);
    `active`: the VAE's active units kept as features, of `latent_dim`. Source: Kingma et al. (2014), M1.

    Raises:
        ConfigError: when the table has no rows for `probe`.
    """
    rows = probe_results[probe_results["probe"].astype(str).str.contains(probe, case=False)]
    if rows.empty:
        raise ConfigError(f"probe_reading: no rows for probe {probe!r}; "
                          f"probes: {sorted(probe_results['probe'].unique())}.")
    mean = rows.groupby(["labels", "representation"])["accuracy"].mean()
    few, most = min(mean.index.get_level_values(0)), max(mean.index.get_level_values(0))
    at_few = mean.loc[few].sort_values()
    worst, best = str(at_few.index[0]), str(at_few.index[-1])
    lines = [f"**Reading:** with {few:,} labels the {probe} probe does best on {best} ({at_few[best]:.3f}) and worst "
             f"on {worst} ({at_few[worst]:.3f})."]
    if worst == "VAE":
        others = probe_results[~probe_results.index.isin(rows.index)]
        other_few = others[others["labels"] == few].groupby(["probe", "representation"])["accuracy"].mean()
        firsts = [str(name) for name in other_few.index.get_level_values(0).unique()
                  if other_few.loc[name].idxmax() == "VAE"]
        if firsts:  # another probe ranks the VAE's means first: the ranking is the probe's, not the features'
            lines[0] += (f" The {', '.join(firsts)} probe ranks the VAE's means first at the same labels, so which "
                         "features are weakest depends on the probe.")
        lines[0] += (f" The VAE's means being the weakest features for the {probe} probe goes against M1: the KL term "
                     "pulls every mean "
                     f"towards the prior's 0 and switches units off ({active} of {latent_dim} kept), so the code "
                     "keeps what helps reconstruction on average, not what separates classes; Kingma et al. (2014) "
                     "got M1's gains from longer-trained models and a transductive SVM on the codes (M1 + TSVM, "
                     "[glossary](../README.md#glossary)), which lets the unlabelled images' codes shape the decision "
                     "boundary too.")
    at_most = mean.loc[most]
    if {"AE", "PCA"} <= set(at_most.index) and at_most["PCA"] > at_most["AE"]:
        lines.append(f"With all {most:,} labels PCA ({at_most['PCA']:.3f}) beats the nonlinear AE codes "
                     f"({at_most['AE']:.3f}) of the same size: a reconstruction objective does not ask for classes "
                     "that a linear probe can separate, and PCA's directions of largest variance already carry them.")
    return "\n\n".join(lines)


def variance_ood_reading(lik_table: pd.DataFrame, *, shown_auroc: float, shown_active: int, latent_dim: int,
                         ood_name: str) -> str:
    """Markdown setting the shown model's posterior-variance AUROC (OOD vs test) beside the replicates' the verdict on
    04.variance-flags-ood rests on, and, when they fall on opposite sides of chance, why they can.

    `lik_table`: `likelihood_seed_table` rows (one per replicate seed: auroc_var, active_units); `shown_auroc`: the
    shown model's AUROC (0.5 = chance; > 0.5 = higher variance on the OOD images); `shown_active`: its active units
    of `latent_dim`. The variance is averaged over active units only, and which units stay active depends on training
    (Burda et al. 2016, active units; see `SIZES`' note on the replicates).

    Raises:
        ConfigError: when `lik_table` has no auroc_var or active_units column, or no rows.
    """
    missing = {"auroc_var", "active_units"} - set(lik_table.columns)
    if missing or lik_table.empty:
        raise ConfigError(f"variance_ood_reading needs likelihood_seed_table rows with auroc_var and active_units; "
                          f"missing {sorted(missing) or 'rows'}.")
    seeds = lik_table["auroc_var"].astype(float)
    units = lik_table["active_units"].astype(int)
    span = f"{seeds.min():.3f}" if seeds.min() == seeds.max() else f"{seeds.min():.3f} to {seeds.max():.3f}"
    unit_span = f"{units.min()}" if units.min() == units.max() else f"{units.min()} to {units.max()}"
    text = (f"**Reading:** the shown model's posterior-variance AUROC is {shown_auroc:.3f} with {shown_active} of "
            f"{latent_dim} units active; the {len(seeds)} replicates the verdict rests on give {span} with "
            f"{unit_span} active.")
    if (shown_auroc > CHANCE_AUROC) != (seeds.mean() > CHANCE_AUROC):
        higher = "higher" if seeds.mean() > CHANCE_AUROC else "lower"
        text += (f" They point opposite ways: the replicates give {ood_name} images a {higher} variance, the shown "
                 "model (the boxplot) the opposite. The score is the variance averaged over active units, and the "
                 "two are different models: trained for different budgets, they keep different units active, and a "
                 "unit that carries little information sits near σ² = 1 for every input, so which units enter the "
                 "average decides the direction. The verdict speaks for the replicates' budget; the boxplot for one "
                 "model.")
    return text


# --- readings added in round 6 (issue 19, reader 5): denoisers off their training noise, the two bounds as scores,
# --- the complexity correction where it hurts. Each sentence is chosen from the measured values.

DENOISER_PLAIN = {"DAE": "AE", "DVAE": "VAE"}  # each denoiser and the plain model of the same architecture
NOISE_SYMBOL = {"gaussian": "σ", "salt_pepper": "p"}
NOISE_NAME = {"gaussian": "Gaussian", "salt_pepper": "salt-and-pepper"}


def denoising_reading(table: pd.DataFrame, train_noise: NoiseConfig) -> str:
    """Markdown interpreting the denoisers (DAE, DVAE) off their training noise: on the training kind, whether their
    PSNR is higher at the training level than at the weakest level below it (a denoiser does worse on cleaner
    inputs), and on each other kind, whether it peaks above the weakest level and loses there to the plain model.

    `table`: `denoising.denoising_table` rows (model, noise, level, psnr in dB; higher = closer to the clean image);
    `train_noise`: the DAE/DVAE training noise (the run's `train_noise`, `train_noise_level`). Models absent from
    the table are skipped. Source: Vincent et al. (2008), denoising autoencoders.

    Raises:
        ConfigError: when the table lacks a column, or has no row of the training noise's kind.
    """
    missing = {"model", "noise", "level", "psnr"} - set(table.columns)
    if missing:
        raise ConfigError(f"denoising_reading needs denoising_table rows; missing columns {sorted(missing)}.")
    kind, level = train_noise.kind, float(train_noise.level)
    if not (table["noise"] == kind).any():
        raise ConfigError(f"denoising_reading: the table has no row of the training noise {kind!r}; it has "
                          f"{sorted(table['noise'].unique())}.")
    # Compared as shown (2 decimals, dB), so no sentence calls equal-looking numbers higher or lower.
    psnr = table[table["level"] > 0].groupby(["model", "noise", "level"])["psnr"].mean().round(2)
    models = set(psnr.index.get_level_values(0))
    denoisers = [d for d in DENOISER_PLAIN if d in models]

    def series(model: str, noise: str) -> pd.Series:
        if (model, noise) not in psnr.index.droplevel(2):
            return pd.Series(dtype=float)
        return psnr.loc[(model, noise)].sort_index()

    below = {d: series(d, kind)[lambda s: s.index <= level] for d in denoisers}
    rising = {d: s for d, s in below.items() if len(s) >= 2 and s.iloc[-1] > s.iloc[0]}
    symbol, kind_name = NOISE_SYMBOL.get(kind, "level"), NOISE_NAME.get(kind, kind)
    lines = []
    if rising:
        levels = " → ".join(f"{v:g}" for v in next(iter(rising.values())).index)
        seqs = "; ".join(f"{d} " + " → ".join(f"{v:.2f}" for v in s) + " dB" for d, s in rising.items())
        names = " and the ".join(rising)
        verb, whose = ("score", "their") if len(rising) > 1 else ("scores", "its")
        lines.append(
            f"**Reading: the {names} {verb} higher at {whose} training noise than on cleaner inputs.** On {kind_name} "
            f"noise at {symbol} = {levels} (the last is the training level, `train_noise_level` = {level:g}): {seqs}. "
            "A denoiser trained at one noise level is tuned to it: it learned to discard as much input detail as that "
            "noise destroys, so it treats a cleaner input as if it were that noisy and smooths away detail the input "
            "still had.")
    elif any(len(s) >= 2 for s in below.values()):
        low = min(s.index[0] for s in below.values() if len(s))
        lines.append(f"**Reading:** on {kind_name} noise the denoisers score at least as well at the weakest level "
                     f"({symbol} = {low:g}) as at their training level ({level:g}): cleaner inputs do not cost them "
                     "here.")
    others = []
    for other in sorted(set(psnr.index.get_level_values(1)) - {kind}):
        for d in denoisers:
            s = series(d, other)
            if len(s) < 2 or s.idxmax() == s.index[0]:
                continue
            low, peak, plain = s.index[0], s.idxmax(), DENOISER_PLAIN[d]
            text = (f"the {d} scores {s[peak]:.2f} dB at {NOISE_SYMBOL.get(other, 'level')} = {peak:g} but "
                    f"{s[low]:.2f} dB at the weakest, {low:g}")
            plain_low = series(plain, other)
            if low in plain_low.index and plain_low[low] > s[low]:
                text += f", where the plain {plain} ({plain_low[low]:.2f} dB) beats it"
            others.append((other, text))
    if others:
        by_kind = {}
        for other, text in others:
            by_kind.setdefault(other, []).append(text)
        lines.append(" ".join(f"On {NOISE_NAME.get(other, other)} noise {'; '.join(texts)}."
                              for other, texts in by_kind.items())
                     + f" The same tuning shows there: trained on {kind_name} noise at {level:g}, a denoiser expects a "
                     "heavily corrupted input and smooths a lightly corrupted one as much.")
    return "\n\n".join(lines)


BOUND_SCORES = ("VAE −ELBO", "VAE IS-NLL")


def bound_reading(shown: Mapping[str, pd.DataFrame], replicates: pd.DataFrame | None = None, *,
                  target: str = "the held-out class", explain: bool = True) -> str:
    """Markdown on the two likelihood bounds as anomaly scores: whether the looser −ELBO ranks anomalies better than
    the tighter IS-NLL (per training seed in `replicates`, and on each set in `shown`), and, when it does, why a
    tighter bound need not be a better score, with the measured gap −ELBO − IS-NLL on normal and anomalous images.

    `shown`: set name -> `anomaly.auroc_table` of one model (index score; columns auroc (0.5 = chance), optional
    mean_normal, mean_anomalous in nats); `replicates`: `holdout_seed_aurocs` rows (seed, score, auroc) or None;
    `target`: what the anomalies are, for the wording; `explain`: add the mechanism (once per notebook is enough).
    −ELBO(x) = −log p(x) + KL(q(z|x) ‖ p(z|x)) (Kingma & Welling 2014); the KL is the posterior gap, partly the
    encoder's amortisation error (Cremer et al. 2018).

    Raises:
        ConfigError: when neither argument holds both scores.
    """
    elbo, nll = BOUND_SCORES
    sets = {name: t for name, t in shown.items() if {elbo, nll} <= set(t.index)}
    has_reps = replicates is not None and {elbo, nll} <= set(replicates["score"])
    if not sets and not has_reps:
        raise ConfigError(f"bound_reading needs the scores {list(BOUND_SCORES)} in `shown` or `replicates`.")
    lines, elbo_better = [], False
    if has_reps:
        table = replicates.pivot(index="seed", columns="score", values="auroc").round(3)  # compared as shown
        n, wins, losses = len(table), int((table[elbo] > table[nll]).sum()), int((table[elbo] < table[nll]).sum())
        e, m = float(table[elbo].mean()), float(table[nll].mean())
        if wins == n:
            elbo_better = True
            lines.append(f"**Reading: the looser bound is the better anomaly score here.** −ELBO detects {target} "
                         f"better than the tighter IS-NLL in every one of the {n} training seeds (mean AUROC {e:.3f} "
                         f"against {m:.3f}).")
        elif losses == n:
            lines.append(f"**Reading:** the tighter IS-NLL detects {target} better than −ELBO in every one of the {n} "
                         f"training seeds (mean AUROC {m:.3f} against {e:.3f}), as a closer estimate of log p(x) "
                         "would.")
        else:
            lines.append(f"**Reading:** −ELBO detects {target} better than the IS-NLL in {wins} of the {n} training "
                         f"seeds (mean AUROC {e:.3f} against {m:.3f}): neither bound is the better score in every "
                         "seed.")
    gaps = []
    parts = []
    for name, t in sets.items():
        e, m = round(float(t.loc[elbo, "auroc"]), 3), round(float(t.loc[nll, "auroc"]), 3)
        if e > m:
            parts.append(f"on {name} −ELBO ranks better ({e:.3f} against the IS-NLL's {m:.3f})")
            elbo_better = True
        else:
            parts.append(f"on {name} the IS-NLL ranks at least as well ({m:.3f} against −ELBO's {e:.3f})")
        if e > m and {"mean_normal", "mean_anomalous"} <= set(t.columns):  # the gap read where −ELBO ranks better
            gaps.append((name, *(float(t.loc[elbo, c] - t.loc[nll, c]) for c in ("mean_anomalous", "mean_normal"))))
    if parts:
        text = "; ".join(parts)
        lines.append(f"**Reading (the two bounds):** {text}." if not lines else f"{text[0].upper()}{text[1:]}.")
    if elbo_better and explain:
        # How much of the KL term the IS-NLL removes is not measured here (log p(x) is unknown): notebook 02
        # measures it on a model whose log p(x) is exact, and what it removed here is the gap measured below.
        removed = (" (what it removed here is the gap −ELBO − IS-NLL measured below)" if gaps else "")
        lines.append("A tighter bound is a better estimate of log p(x), not a better anomaly score: −ELBO(x) = "
                     "−log p(x) + KL(q(z|x) ‖ p(z|x)), where the KL term is the gap between the encoder's posterior "
                     "and the true one. The IS-NLL removes part of that term; how much of it, notebook 02 measures on "
                     f"a model whose log p(x) is exact{removed}. The encoder was fitted to the training images, so on "
                     "unfamiliar inputs its posterior can be further off (the amortisation gap: Cremer, Li & "
                     "Duvenaud 2018, \"Inference Suboptimality in Variational Autoencoders\", ICML), and the gap "
                     "then adds to their score.")
    for name, out, inside in gaps if elbo_better else ():
        if out > inside:
            lines.append(f"Measured on {name}: the mean gap −ELBO − IS-NLL is {out:.2f} nats on the anomalous images "
                         f"against {inside:.2f} on the normal ones.")
        else:
            lines.append(f"Measured on {name}, though, the mean gap −ELBO − IS-NLL is not larger on the anomalous "
                         f"images ({out:.2f} nats against {inside:.2f} on the normal ones), so it does not explain "
                         "the difference there.")
    return "\n\n".join(lines)


def holdout_shown_reading(shown: pd.DataFrame, replicates: pd.DataFrame, *, shown_budget: tuple[int, int, int],
                          replicate_budget: tuple[int, int, int]) -> str:
    """Markdown comparing the shown held-out-class pair's AUROC on each score with the range over its replicates,
    and saying what differs between them (training images, epochs, scored test images), without naming a cause.

    `shown`: `anomaly.auroc_table` of the shown pair (index score, column auroc: 0.5 = chance); `replicates`:
    `holdout_seed_aurocs` rows (seed, score, auroc); each budget: (training images, epochs, test images scored).
    Values are compared as printed (3 decimals).

    Raises:
        ConfigError: when the two share no score.
    """
    scores = [name for name in shown.index if name in set(replicates["score"])]
    if not scores:
        raise ConfigError("holdout_shown_reading needs a score present in both `shown` and `replicates`.")
    n = int(replicates["seed"].nunique())
    rows = []
    for name in scores:
        s = round(float(shown.loc[name, "auroc"]), 3)
        reps = replicates.loc[replicates["score"] == name, "auroc"].round(3)
        lo, hi = float(reps.min()), float(reps.max())
        rows.append((name, s, lo, hi, "below" if s < lo else "above" if s > hi else "within"))
    listed = "; ".join(f"{name} {s:.3f} against {lo:.3f}–{hi:.3f}" for name, s, lo, hi, _ in rows)
    where = {pos for *_, pos in rows}
    if where == {"below"}:
        head = f"on every score the shown pair's AUROC is lower than every one of the {n} replicates' ({listed})"
    elif where == {"above"}:
        head = f"on every score the shown pair's AUROC is higher than every one of the {n} replicates' ({listed})"
    else:
        word = {"below": "below all of them", "above": "above all of them", "within": "inside their range"}
        head = "the shown pair's AUROC against the range over its {} replicates: {}".format(
            n, "; ".join(f"{name} {s:.3f} against {lo:.3f}–{hi:.3f} ({word[pos]})" for name, s, lo, hi, pos in rows))
    parts = [(a, b, what) for a, b, what in zip(shown_budget, replicate_budget,
                                                  ("training images", "epochs", "test images scored"), strict=True)]
    differ = [f"{what}: {a:,} for the shown pair against {b:,} for each replicate" for a, b, what in parts if a != b]
    if differ:
        tail = ("They differ in " + "; ".join(differ) + ". The shown pair is a single trained pair, so this run "
                "does not test which of these differences moves its AUROC.")
    else:
        tail = "The shown pair has the replicates' budget (training images, epochs, test images scored)."
    return f"**Reading (the shown pair against its replicates):** {head}. {tail}"


COMPLEXITY_FIX = "complexity-corrected IS-NLL"


def complexity_reading(ood_table: pd.DataFrame, *, normal: str = "test") -> str:
    """Markdown on Serrà et al. (2020)'s complexity correction S(x) = NLL(x) in bits − L(x) on every OOD set: by how
    much it moved the AUROC, and, where it lowered it, what the subtraction of L(x) did there.

    `ood_table`: `anomaly.auroc_table` per OOD set, concatenated with index (OOD set, score), columns auroc (0.5 =
    chance), mean_normal and mean_anomalous (mean score per group: IS-NLL in nats, S in bits). The mean compressed
    length L follows exactly from those means: mean L = mean IS-NLL / ln 2 − mean S (`anomaly.complexity_corrected`);
    `normal`: how the in-distribution images are named.

    Raises:
        ConfigError: when the table lacks the mean columns, or no set has both the IS-NLL and the correction.
    """
    missing = {"auroc", "mean_normal", "mean_anomalous"} - set(ood_table.columns)
    if missing:
        raise ConfigError(f"complexity_reading needs auroc_table columns; missing {sorted(missing)}.")
    base = "VAE IS-NLL"
    sets = [s for s in dict.fromkeys(ood_table.index.get_level_values(0))
            if {base, COMPLEXITY_FIX} <= set(ood_table.loc[s].index)]
    if not sets:
        raise ConfigError(f"complexity_reading: no OOD set has both {base!r} and {COMPLEXITY_FIX!r}.")
    lines, helped, level = [], [], []
    for s in sets:
        t = ood_table.loc[s]
        a_nll, a_fix = (round(float(t.loc[n, "auroc"]), 3) for n in (base, COMPLEXITY_FIX))  # compared as shown
        nll_in, nll_out = (float(t.loc[base, c]) / math.log(2) for c in ("mean_normal", "mean_anomalous"))
        l_in, l_out = (n - float(t.loc[COMPLEXITY_FIX, c])
                       for n, c in ((nll_in, "mean_normal"), (nll_out, "mean_anomalous")))
        if a_fix >= a_nll:
            (helped if a_fix > a_nll else level).append(f"{s} ({a_nll:.3f} → {a_fix:.3f}"
                          + (f"; these images are simpler for the compressor, mean L {l_out:.0f} against "
                             f"{l_in:.0f} bits, the case the correction is built for)" if l_out < l_in else ")"))
            continue
        head = (f"**Reading: the complexity correction lowers the AUROC on {s}** ({a_nll:.3f} → {a_fix:.3f}, "
                f"{a_fix - a_nll:+.3f}). S(x) subtracts each image's compressed length L(x) from its NLL in bits.")
        d_nll, d_l = nll_out - nll_in, l_out - l_in
        if d_nll > 0 and d_l > 0:
            share = (f"credits {100 * d_l / d_nll:.0f} % of their extra NLL ({d_l:.0f} of {d_nll:.0f} bits on "
                     "average) to generic complexity, which any compressor pays; what is left separates them less"
                     if d_l < d_nll else
                     f"takes away more than their extra NLL ({d_l:.0f} against {d_nll:.0f} bits on average), so "
                     "after it they look less anomalous on average than the test images")
            head += (f" These images cost the compressor more bits than the {normal} images too (mean L {l_out:.0f} "
                     f"against {l_in:.0f} bits), as they cost the model more (mean NLL {nll_out:.0f} against "
                     f"{nll_in:.0f} bits): the subtraction {share}. The correction is built for the opposite case, "
                     "OOD images simpler than the training data that a model finds too likely; it helps only where "
                     "simplicity is what misleads the likelihood.")
        elif d_l <= 0 < d_nll:
            head += (f" These images are cheaper for the compressor (mean L {l_out:.0f} against {l_in:.0f} bits), so "
                     "the subtraction widens the gap between the mean scores, but it also adds L(x)'s image-to-image "
                     "spread to every score, and here that reorders more images than the wider gap separates.")
        else:
            head += (f" Mean L: {l_out:.0f} bits on these images against {l_in:.0f} on the {normal} images; mean NLL "
                     f"{nll_out:.0f} against {nll_in:.0f} bits.")
        lines.append(head)
    for sets_, verb in ((helped, "raises the AUROC"), (level, "leaves the AUROC unchanged")):
        if sets_:
            lead = f"**Reading:** the complexity correction {verb} on " if not lines else f"It {verb} on "
            lines.append(lead + "; ".join(sets_) + ".")
    return "\n\n".join(lines)
