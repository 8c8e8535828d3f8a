"""Notebook 05 (the limits of the textbook picture): VAE samples against a GAN's, a ladder of data sets from simple to
complex, and semi-supervised learning with the M2 model against probes on codes (M1).

Each measurement returns a tidy DataFrame (one row per model, source and seed); the examined claims compare
per-seed values with `aestudy.stats.compare` (or per-image correctness with `compare_accuracy`), each with a
minimum effect fixed here, before measuring, with its reason. `limits_table` turns the claims' records into the
rows the AE-vs-VAE table lacked ("Output vs GANs", "Scaling to complex data", "Semi-supervised learning");
`series_recap` is the series' closing table: the seed's rows with this session's measured answers.

Cost of `standard`, estimated from one seed of each training on a busy 2-core machine (load ≈ 5) and extrapolated:
reference VAEs 140 s a seed (seeds 0 and 1 are notebooks 02/03's, cached in a series run; 3 more here), GANs 75 s
a seed × 5, the ladder ≈ 190 s (three rungs × 3 seeds + three FID-AE feature models), M2 ≈ 17 s a run × 6, scores
≈ 30 s: ≈ 17 min in a series run, ≈ 7 min on one idle thread. `smoke` runs in 20–45 s.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.proportion import proportion_confint
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from aestudy import blur
from aestudy.claims import load_metrics
from aestudy.data import Dataset, binarize_images, load_dataset, split_sizes
from aestudy.errors import ConfigError, DataError
from aestudy.evaluation import encode_means, reconstruct
from aestudy.gan import GANConfig, GANResult, fit_gan, num_halvings
from aestudy.generation import fit_code_density, generation_scores
from aestudy.metrics import evaluate_elbo, frechet_distance, reconstruction_metrics
from aestudy.models import ModelConfig
from aestudy.series import shared
from aestudy.study import Study
from aestudy.train import TrainConfig, TrainResult, train_or_load
from aestudy.validate import as_int, require

SIZES = {  # knob: (smoke, standard, full)
    "limit": shared.SIZES["limit"],  # training images of the reference AE/VAE (None = all 55,000), as notebook 03
    "val_size": (500, 5000, 5000),
    "epochs": shared.SIZES["vae_epochs"],  # the reference VAE's epochs (and the AE's beside it)
    "n_seeds": (1, 5, 10),  # seeds per arm of the GAN-vs-VAE claim (the `n_seeds` parameter overrides)
    "gan_limit": (500, None, None),  # the GAN's training images (stratified subset; None = all)
    # Epochs over the `limit` training images (20,000 in standard): 3 passes = 940 steps of 64, ~50 s a seed on one
    # idle thread. One pass over 55,000 (860 steps) gave recognisable garments; 310 steps (2 passes over 10,000)
    # gave speckled blobs, too undertrained to speak for GANs.
    "gan_epochs": (1, 3, 5),
    "n_gen": (300, 2000, 10000),  # samples per source for FID, precision/recall and blur
    "rungs": (("digits", "fashion-mnist", "photo-patches-32"), ("digits", "fashion-mnist", "photo-patches-32"),
              ("digits", "fashion-mnist", "photo-patches-32", "photo-patches-64")),
    "ladder_limit": (300, 2000, 10000),  # training images per rung (fewer where the rung holds fewer)
    "ladder_steps": (8, 100, 2000),  # optimiser steps (batch 128) per model and rung: one budget for every rung
    "ladder_seeds": (1, 5, 10),  # seeds per model and rung: the verdicts issue's 5 (standard) / 10 (full)
    "ladder_eval": (200, 1000, 2000),  # images per FID (capped by the rung's test split)
    "feature_epochs": (1, 2, 5),  # epochs of each rung's FID-AE feature autoencoder
    "label_counts": ((100,), (100, 1000), (100, 1000)),  # balanced labelled subsets for M2 and the probes
    "m2_limit": (600, 10000, None),  # M2's training images (labelled + unlabelled)
    "m2_seeds": (1, 5, 10),  # labelled subsets (and M2 seeds) at the smallest label count; larger counts: one
    "m2_epochs": (1, 3, 30),
    "m2_hidden": (100, 300, 500),  # units of M2's hidden layers (paper: 500)
}

LADDER_CHANNELS = (16, 32)  # the conv AE/VAE of every rung: two stride-2 convs and back (small: a CPU budget)
LADDER_GAN_WIDTH = 16  # the ladder's DCGAN width, matching the conv AE/VAE
LADDER_BATCH = 128
PCA_DIM = 50  # PCA features for the probes (a common choice for 784 pixels; the codes have latent_dim)

# Minimum effects, fixed before measuring, with their reasons (judgement calls, stated so they can be disputed).
BLUR_MIN_EFFECT = 0.1  # Laplacian variance relative to the data's
SLOPE_MIN_EFFECT = 0.1  # log relative FID per rung
M2_MIN_EFFECT = 0.02  # test accuracy
RECALL_MIN_EFFECT = 0.05  # recall
MIN_EFFECT_REASONS = {
    "blur": "a tenth of the data's own Laplacian variance; a smaller gap says little about blur when both sit far "
            "from the data",
    "slope": "0.1 in log relative FID per rung is about 10 % more degradation per step up the ladder; less would not "
             "change how either model is used",
    "m2": "a gain under two points of accuracy would not pay for training a classifier jointly with a VAE "
          "(Kingma et al. 2014 report M2 alone at 11.97 % error vs M1 + TSVM at 11.82 % on MNIST with 100 labels)",
    "recall": "5 % of the real images more or less inside the samples' manifold; k-NN manifold estimates move by "
              "about that much between sample draws at a few thousand images",
}


# --- 1. blur against a GAN ----------------------------------------------------------------------------------

def seeds(base_seed: int, n: int) -> tuple[int, ...]:
    """The training seeds base_seed, base_seed + 1, … (n of them)."""
    return tuple(base_seed + k for k in range(as_int(n, "n_seeds", low=1)))


def reference_models(study: Study, binary: Dataset, model_seeds: Sequence[int]) -> dict[tuple[str, int], TrainResult]:
    """The reference VAE of every seed (the first seed's is `shared.reference_vae`, cached once for the series) and
    the AE of the first seed (same MLP, Bernoulli decoder, epochs and data: notebook 03's AE), on the CPU.

    Other seeds retrain the reference configuration with seed s (notebook 03's second seed is shared with it).
    """
    first = model_seeds[0]
    train_cfg = study.train_config(epochs=shared.vae_epochs(study))
    out = {("VAE", s): (shared.reference_vae(study, binary) if s == study.seed else
                        train_or_load(shared.mlp_config(study, binary, "vae"), replace(train_cfg, seed=s), binary))
           for s in model_seeds}
    out[("AE", first)] = train_or_load(shared.mlp_config(study, binary, "ae"), replace(train_cfg, seed=first), binary)
    for res in out.values():
        res.model.cpu().eval()
    return out


def gan_config(seed: int, *, epochs: int, device: str = "auto", batch_size: int = 64, width: int = 32) -> GANConfig:
    """The series' DCGAN (gan.py's defaults: latent 64, width 32, Adam 2e-4 / 0.5) at `epochs` and `seed`."""
    return GANConfig(epochs=epochs, seed=seed, device=device, batch_size=batch_size, width=width)


def fit_gans(data: Dataset, model_seeds: Sequence[int], *, epochs: int, device: str = "auto",
             batch_size: int = 64) -> dict[int, GANResult]:
    """One GAN per seed on `data` (grey levels), loaded from the cache or trained; generators on the CPU."""
    out = {s: fit_gan(gan_config(s, epochs=epochs, device=device, batch_size=batch_size), data) for s in model_seeds}
    for res in out.values():
        res.generator.cpu().eval()
    return out


def blur_sources(vaes: Mapping[int, nn.Module], gans: Mapping[int, GANResult], ae: nn.Module, *, n: int,
                 fit_inputs: Tensor, seed: int = 0) -> dict[tuple[str, int], Tensor]:
    """Samples (n, C, H, W) in [0, 1] keyed by (source, seed): "VAE" (z ~ N(0, I)) and "GAN" for every seed;
    "VAE + GMM ex post" and "AE + GMM ex post" (a 10-component GMM fitted to the codes of `fit_inputs`, Ghosh et al.
    2020) for the first VAE seed and the AE."""
    out: dict[tuple[str, int], Tensor] = {}
    for s, vae in vaes.items():
        out[("VAE", s)] = vae.sample(n, generator=torch.Generator().manual_seed(seed + s)).cpu()
    for s, gan in gans.items():
        out[("GAN", s)] = gan.sample(n, generator=torch.Generator().manual_seed(seed + s))
    first = min(vaes)
    for name, model, s in (("VAE + GMM ex post", vaes[first], first), ("AE + GMM ex post", ae, first)):
        density = fit_code_density(encode_means(model, fit_inputs), kind="gmm", n_components=10, seed=seed)
        z = density.sample(n, generator=torch.Generator().manual_seed(seed + s))
        with torch.no_grad():
            out[(name, s)] = model.decode_mean(z).cpu()
    return out


def sample_table(sources: Mapping[tuple[str, int], Tensor], classifier: Any, real: Tensor) -> pd.DataFrame:
    """Per (source, seed): FID, precision, recall (in the classifier's feature space, against `real`) and the two
    blur ratios relative to `real` (Laplacian variance, high-frequency share; < 1 = blurrier than the data).

    Recall is the share of real images inside the samples' manifold (Kynkäänniemi et al. 2019): low recall with
    good precision is mode dropping. Every source is scored against the same `real` images at equal n.
    """
    rows = []
    for (name, s), images in sources.items():
        scores = generation_scores(classifier, real, images)
        rel = blur.relative_blur(images, real)
        rows.append({"source": name, "seed": s, "fid": scores["fid"], "precision": scores["precision"],
                     "recall": scores["recall"], "laplacian_ratio": rel["laplacian_ratio"],
                     "hf_ratio": rel["hf_ratio"]})
    return pd.DataFrame(rows)


def per_seed_values(table: pd.DataFrame, source: str, column: str) -> np.ndarray:
    """`column` of `source`'s rows in seed order, (n_seeds,)."""
    rows = table[table["source"] == source].sort_values("seed")
    if rows.empty:
        raise ConfigError(f"no rows for source {source!r}; sources measured: {sorted(table['source'].unique())}.")
    return rows[column].to_numpy(dtype=float)


# --- 2. the scaling ladder ----------------------------------------------------------------------------------

def rung_data(name: str, *, limit: int, seed: int, val_size: int = 500) -> tuple[Dataset, Dataset]:
    """(grey, dynamically binarized) splits of rung `name` at most `limit` training images, digits kept at 8×8."""
    sizes = split_sizes(name, limit=limit, val_size=val_size)
    extra = {"upscale": False} if name == "digits" else {}
    grey = load_dataset(name, seed=seed, **sizes, **extra)
    return grey, load_dataset(name, seed=seed, binarize="dynamic", **sizes, **extra)


def ladder_model_config(kind: str, shape: tuple[int, int, int], latent_dim: int) -> ModelConfig:
    """The ladder's conv AE/VAE for images of `shape` (C, H, W): channels LADDER_CHANNELS, Bernoulli decoder."""
    return ModelConfig(kind=kind, arch="conv", input_shape=tuple(shape), latent_dim=latent_dim,
                       likelihood="bernoulli", channels=LADDER_CHANNELS)


def epochs_for(steps: int, n_train: int, batch_size: int = LADDER_BATCH) -> int:
    """Epochs that give at least `steps` optimiser steps on `n_train` images (one budget per rung)."""
    steps, n_train = as_int(steps, "ladder_steps", low=1), as_int(n_train, "n_train", low=1)
    return max(1, math.ceil(steps / math.ceil(n_train / batch_size)))


def gan_fits(shape: tuple[int, ...]) -> bool:
    """Whether the DCGAN handles square images of this (C, H, W) (its side must halve to at most 8)."""
    try:
        num_halvings(int(shape[1]))
    except ConfigError:
        return False
    return shape[1] == shape[2]


def train_rung(binary: Dataset, grey: Dataset, model_seeds: Sequence[int], *, latent_dim: int, steps: int,
               device: str = "auto", with_gan: bool = True) -> dict[tuple[str, int], Any]:
    """AE and VAE (conv, Bernoulli, binarized data) and, where the shape allows, the GAN (grey levels) of one rung,
    per seed, each with the same number of optimiser steps of batch 128; models on the CPU."""
    epochs = epochs_for(steps, len(binary.train))
    out: dict[tuple[str, int], Any] = {}
    for s in model_seeds:
        cfg = TrainConfig(epochs=epochs, batch_size=LADDER_BATCH, seed=s, device=device)
        for name, kind in (("AE", "ae"), ("VAE", "vae")):
            out[(name, s)] = train_or_load(ladder_model_config(kind, binary.info.shape, latent_dim), cfg, binary).model
            out[(name, s)].cpu().eval()
        if with_gan and gan_fits(grey.info.shape):
            gan = fit_gan(gan_config(s, epochs=epochs, device=device, batch_size=LADDER_BATCH,
                                     width=LADDER_GAN_WIDTH), grey)
            out[("GAN", s)] = gan.generator.cpu().eval()
    return out


def run_ladder(rungs: Sequence[str], model_seeds: Sequence[int], *, limit: int, steps: int, n_eval: int,
               latent_dim: int, feature_epochs: int, seed: int = 0, device: str = "auto"
               ) -> tuple[pd.DataFrame, dict[str, dict[tuple[str, int], Any]], dict[str, tuple[Dataset, Dataset]]]:
    """Every rung: its data, its FID-AE feature autoencoder (`aestudy.ae_features`, no labels needed), its models
    (`train_rung`) and its scores (`rung_table`). Returns (the table of all rungs, models per rung, (grey,
    binary) data per rung)."""
    from aestudy.ae_features import feature_extractor_from_autoencoder

    tables, models, data = [], {}, {}
    for rung in rungs:
        grey, binary = rung_data(rung, limit=limit, seed=seed)
        # The rung's ruler trains with the series' one ruler seed, not the run's (see shared.RULER_SEED).
        features = feature_extractor_from_autoencoder(grey, epochs=feature_epochs, seed=shared.RULER_SEED,
                                                      device=device).cpu()
        models[rung] = train_rung(binary, grey, model_seeds, latent_dim=latent_dim, steps=steps, device=device)
        data[rung] = (grey, binary)
        tables.append(rung_table(rung, models[rung], grey, binary, features, n=n_eval, seed=seed))
    return pd.concat(tables, ignore_index=True), models, data


def ladder_rows(models: Mapping[tuple[str, int], Any], grey: Dataset, *, model_seed: int, n: int = 8,
                seed: int = 0) -> dict[str, Tensor]:
    """Image rows of one rung for the ladder widget: training images, AE and VAE reconstructions, VAE and GAN
    samples (the GAN's only where the rung has one), all (n, C, H, W) in [0, 1]."""
    images = grey.train.images[:n]
    inputs = binarize_images(images, torch.Generator().manual_seed(seed))
    rows = {"training images": images}
    for name in ("AE", "VAE"):
        rows[f"{name} reconstructions"] = reconstruct(models[(name, model_seed)], inputs).cpu()
    for name in ("VAE", "GAN"):
        if (name, model_seed) in models:
            rows[f"{name} samples"] = models[(name, model_seed)].sample(
                n, generator=torch.Generator().manual_seed(seed)).cpu()
    return rows


def rung_table(rung: str, models: Mapping[tuple[str, int], Any], grey: Dataset, binary: Dataset, features: Any, *,
               n: int, seed: int = 0) -> pd.DataFrame:
    """One rung's comparable quantities per (model, output, seed).

    Outputs: "samples" (AE: z ~ N(0, I) is meaningless, so none; VAE and GAN: prior samples) and "reconstructions"
    (of `n` training images, AE and VAE). Columns: rel_fid = FID(output, test) / FID(the training images, test)
    in the rung's FID-AE feature space (1 = as close to the test set as real images; higher is worse),
    laplacian_ratio and hf_ratio (blur relative to the test images), psnr (reconstructions, dB, against the grey
    images), bits_per_dim (VAE: −ELBO / (D ln 2) on the binarized test images, a bound on the NLL of binary
    images; NaN for the AE and the GAN, which define no likelihood).
    """
    n = min(n, len(grey.test), len(grey.train))
    test, train = grey.test.images[:n], grey.train.images[:n]
    train_inputs = binarize_images(train, torch.Generator().manual_seed(seed))
    test_feats, train_feats = features.embed(test), features.embed(train)
    fid_data = frechet_distance(train_feats, test_feats)
    rows = []
    for (name, s), model in models.items():
        outputs: dict[str, Tensor] = {}
        if name in ("VAE", "GAN"):
            outputs["samples"] = model.sample(n, generator=torch.Generator().manual_seed(seed + s)).cpu()
        if name in ("AE", "VAE"):
            outputs["reconstructions"] = reconstruct(model, train_inputs).cpu()
        for output, images in outputs.items():
            rel = blur.relative_blur(images, test)
            row = {"rung": rung, "model": name, "output": output, "seed": s,
                   "rel_fid": frechet_distance(features.embed(images), test_feats) / fid_data,
                   "laplacian_ratio": rel["laplacian_ratio"], "hf_ratio": rel["hf_ratio"], "fid_data": fid_data,
                   "psnr": math.nan, "bits_per_dim": math.nan}
            if output == "reconstructions":
                row["psnr"] = reconstruction_metrics(model, train_inputs, targets=train)["psnr"]
            if name == "VAE" and output == "samples":
                row["bits_per_dim"] = evaluate_elbo(model, binary.test.images[:n])["bits_per_dim"]
            rows.append(row)
    return pd.DataFrame(rows)


def degradation_slopes(ladder: pd.DataFrame, model: str, output: str, rungs: Sequence[str],
                       column: str = "rel_fid") -> pd.Series:
    """Per seed: the least-squares slope of log(`column`) against the rung's position among `rungs` (0, 1, …).

    A positive slope means the quality relative to the data worsens (relative FID grows) with complexity; slopes
    of two models compare how fast each degrades. Seeds missing a rung are left out.
    """
    require(len(rungs) >= 2, "rungs", list(rungs), "a slope needs at least two rungs")
    rows = ladder[(ladder["model"] == model) & (ladder["output"] == output) & ladder["rung"].isin(rungs)]
    position = {r: i for i, r in enumerate(rungs)}
    out = {}
    for s, group in rows.groupby("seed"):
        if len(group) == len(rungs):
            x = group["rung"].map(position).to_numpy(dtype=float)
            out[s] = float(np.polyfit(x, np.log(group[column].to_numpy(dtype=float)), 1)[0])
    return pd.Series(out, name=f"{model} {output}", dtype=float).sort_index()


def slopes_evidence(slopes: Mapping[str, pd.Series], rungs: Sequence[str], gan_rungs: Sequence[str]) -> str:
    """The "Scaling to complex data" row's slope evidence: each mean slope (`degradation_slopes`, log relative FID-AE
    per rung) with the rungs it is fitted over, the VAE's and the AE's over `rungs`, and the GAN's beside the VAE's
    over the GAN's own rungs (`gan_rungs`), so that no two slopes over different rung sets stand side by side.

    `slopes` holds per-seed Series under "VAE samples", "AE reconstructions", "VAE samples (GAN's rungs)" and
    "GAN samples" (05 cell-11). Raises ConfigError if one is missing.
    """
    keys = ("VAE samples", "AE reconstructions", "VAE samples (GAN's rungs)", "GAN samples")
    missing = [k for k in keys if k not in slopes]
    if missing:
        raise ConfigError(f"slopes_evidence needs the slopes {', '.join(missing)}; pass the slopes of 05 cell-11.")
    vae, ae, vae_gan, gan = (float(np.mean(slopes[k])) for k in keys)
    if list(gan_rungs) == list(rungs):
        return (f"slope per rung over {' → '.join(rungs)}: VAE samples {vae:+.2f} vs AE reconstructions {ae:+.2f} "
                f"vs GAN samples {gan:+.2f}")
    return (f"slope per rung over {' → '.join(rungs)}: VAE samples {vae:+.2f} vs AE reconstructions {ae:+.2f}; over "
            f"the GAN's rungs {' → '.join(gan_rungs)}: VAE samples {vae_gan:+.2f} vs GAN samples {gan:+.2f}")


# --- 3. semi-supervised learning: M2 against M1 probes --------------------------------------------------------

def probe_predictions(train_x: Any, train_y: Any, *eval_x: Any, seed: int = 0,
                      max_iter: int = 1000) -> list[np.ndarray]:
    """Logistic regression on standardised features of the labelled images (as `probes.linear_probe_accuracy`);
    its predicted labels for each array of `eval_x` ((M, F) each)."""
    as_np = [x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x) for x in (train_x, *eval_x)]
    y = train_y.numpy() if isinstance(train_y, Tensor) else np.asarray(train_y)
    with threadpool_limits(1):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
        probe.fit(as_np[0].reshape(len(y), -1), y)
        return [probe.predict(x.reshape(len(x), -1)) for x in as_np[1:]]


def error_rate(correct: Any, alpha: float = 0.05) -> dict[str, float]:
    """Error rate (share in [0, 1]) of per-image correctness (n,) with its Wilson (1 − alpha) interval."""
    c = np.asarray(correct, dtype=bool)
    require(c.ndim == 1 and c.size > 0, "correct", f"shape {c.shape}", "it must be a non-empty 1-D array")
    errors = int((~c).sum())
    low, high = proportion_confint(errors, c.size, alpha=alpha, method="wilson")
    return {"error": errors / c.size, "ci_low": float(low), "ci_high": float(high), "n": int(c.size)}


def m1_features(models: Mapping[str, nn.Module], grey: Dataset, binary: Dataset, *, seed: int = 0,
                pca_dim: int = PCA_DIM) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, val, test) features per representation: "VAE codes" / "AE codes" (posterior means of the binarized
    images), "PCA" (`pca_dim` components fitted on every training image, labelled or not) and "pixels" (grey)."""
    from sklearn.decomposition import PCA

    fixed = binarize_images(grey.train.images, torch.Generator().manual_seed(seed))
    out = {f"{name} codes": tuple(encode_means(m, x).numpy() for x in (fixed, binary.val.images, binary.test.images))
           for name, m in models.items()}
    flat = [s.images.flatten(1).numpy() for s in (grey.train, grey.val, grey.test)]
    pca = PCA(n_components=min(pca_dim, *flat[0].shape), random_state=seed).fit(flat[0])
    out["PCA"] = tuple(pca.transform(x) for x in flat)
    out["pixels"] = tuple(flat)
    return out


Features = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


Run = tuple[int, int]  # (number of labels, seed): one labelled subset and the M2 model trained with it


def semi_supervised_table(features: Features, m2_predictions: Mapping[Run, tuple[np.ndarray, np.ndarray]],
                          labelled: Mapping[Run, np.ndarray], train_y: Any, val_y: Any,
                          test_y: Any) -> tuple[pd.DataFrame, dict[tuple[str, int, int], np.ndarray]]:
    """Per (method, labels, seed): validation and test error, the test error's Wilson 95 % interval, and (second
    value) the per-image test correctness keyed by (method, labels, seed).

    `labelled[(k, s)]` are the indices of the k labelled training images drawn with seed s (the same for every
    method of that run), and `m2_predictions[(k, s)]` the (val, test) predictions of M2 trained with them; every
    M1 probe is a logistic regression on the features of exactly those images.
    """
    train_y, val_y, test_y = (np.asarray(v) for v in (train_y, val_y, test_y))
    rows, correct = [], {}
    for (k, s), idx in labelled.items():
        preds = {name: probe_predictions(tr[idx], train_y[idx], va, te, seed=s)
                 for name, (tr, va, te) in features.items()}
        preds["M2"] = list(m2_predictions[(k, s)])
        for name, (val_pred, test_pred) in preds.items():
            correct[(name, k, s)] = np.asarray(test_pred) == test_y
            test_err = error_rate(correct[(name, k, s)])
            rows.append({"method": name, "labels": k, "seed": s,
                         "val_error": float(np.mean(np.asarray(val_pred) != val_y)), "test_error": test_err["error"],
                         "ci_low": test_err["ci_low"], "ci_high": test_err["ci_high"], "n_test": test_err["n"]})
    return pd.DataFrame(rows), correct


def feasible_label_counts(labels: Any, counts: Sequence[int]) -> tuple[int, ...]:
    """The counts of `counts` that give a balanced labelled subset of `labels` and leave at least as many images
    unlabelled (a small profile's few images cannot hold 1,000 balanced labels and still be semi-supervised).

    Each count is first rounded down to a multiple of the number of classes K (your own data with 3 classes gets
    99 labels for 100); counts that round to the same value are kept once."""
    y = np.asarray(labels)
    classes, per_class = np.unique(y, return_counts=True)
    rounded = dict.fromkeys(int(k) - int(k) % len(classes) for k in counts)
    return tuple(k for k in rounded if k > 0 and k // len(classes) <= per_class.min() and 2 * k <= len(y))


def label_runs(labels: Any, counts: Sequence[int], run_seeds: Sequence[int]) -> list[Run]:
    """The (labels, seed) runs of the semi-supervised section: every seed at the smallest feasible count (the
    claim's paired values), the first seed at each larger one (`feasible_label_counts`).

    Raises ConfigError when no count is feasible for these labels (too few training images)."""
    feasible = feasible_label_counts(labels, counts)
    require(len(feasible) > 0, "label_counts", tuple(counts),
            f"none gives a balanced subset of the {len(np.asarray(labels))} training images with as many left "
            "unlabelled; use more training images (m2_limit) or smaller counts (multiples of the number of classes)")
    return [(feasible[0], s) for s in run_seeds] + [(k, run_seeds[0]) for k in feasible[1:]]


def best_m1(table: pd.DataFrame, labels: int, seed: int) -> str:
    """The M1 representation (every method but M2) with the lowest *validation* error in the run (labels, seed) —
    chosen on validation images, so the test comparison is not biased towards it."""
    rows = table[(table["labels"] == labels) & (table["seed"] == seed) & (table["method"] != "M2")]
    require(not rows.empty, "labels, seed", (labels, seed),
            f"measured runs: {sorted(set(zip(table['labels'], table['seed'], strict=True)))}")
    return str(rows.sort_values(["val_error", "method"]).iloc[0]["method"])


def m2_against_best_m1(table: pd.DataFrame, labels: int) -> pd.DataFrame:
    """Per seed of the runs with `labels` labels: M2's test accuracy, the best M1 probe (by validation error) and
    its test accuracy — the paired per-seed values behind "M2 beats the best M1 probe"."""
    seeds_ = sorted(table.loc[table["labels"] == labels, "seed"].unique())
    require(len(seeds_) > 0, "labels", labels, f"measured label counts: {sorted(table['labels'].unique())}")
    index = table.set_index(["method", "labels", "seed"])["test_error"]
    rows = []
    for s in seeds_:
        best = best_m1(table, labels, s)
        rows.append({"seed": int(s), "m2_accuracy": 1 - index[("M2", labels, s)], "best_m1": best,
                     "best_m1_accuracy": 1 - index[(best, labels, s)]})
    return pd.DataFrame(rows)


# --- 4. the rows for the AE-vs-VAE table -----------------------------------------------------------------------

LIMIT_ROWS: dict[str, tuple[str, str, str]] = {  # aspect: (textbook AE, textbook VAE, the claim id that tests it)
    "Output vs GANs": ("—", "blurry outputs compared to GANs", "05.vae-blurrier-than-gan"),
    "Scaling to complex data": ("—", "difficulties scaling to complex, high-dimensional data",
                                "05.vae-degrades-faster"),
    "Semi-supervised learning": ("codes for probes (M1)", "preferred for semi-supervised learning (M2)",
                                 "05.m2-beats-m1"),
}


def limits_table(evidence: Mapping[str, str], records: Mapping[str, Mapping[str, Any]],
                 caveats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The rows notebook 05 measures, in the AE-vs-VAE table's columns (Aspect, AE, VAE, Evidence, Verdict).

    `evidence[aspect]` is the measured sentence; each verdict is read from the claim's record in `records`
    (`study.records`), with its effect and interval. A claim the study skipped (`Study.skip`, e.g. M2 without
    labels) gives a "skipped" row without evidence. Raises ConfigError naming a missing evidence or record.

    `caveats[aspect]` (optional, e.g. `blur_caveat_note`) is a reading the notebook attaches to that verdict: it
    goes into the Verdict cell ("holds (caveat: …): claim …") and into the row's `Caveat` field (empty when none),
    which the runner's report and the series recap (`aestudy.runner.report.row_sentence`) show beside the verdict,
    so all three say the same. Columns: Aspect, AE, VAE, Evidence, Verdict, Caveat.
    """
    caveats = {} if caveats is None else caveats
    unknown = sorted(set(caveats) - set(LIMIT_ROWS))
    require(not unknown, "caveats", unknown, f"caveats name rows of the table: {list(LIMIT_ROWS)}")
    rows = []
    for aspect, (ae, vae, claim) in LIMIT_ROWS.items():
        skipped = (records.get(claim) or {}).get("skipped")
        if skipped:
            rows.append({"Aspect": aspect, "AE": ae, "VAE": vae, "Evidence": f"not measured ({skipped})",
                         "Verdict": f"skipped: {claim} ({skipped})", "Caveat": ""})
            continue
        require(aspect in evidence, "evidence", sorted(evidence), f"it needs a sentence for {aspect!r}")
        record = records.get(claim)
        if record is None:
            raise ConfigError(f"limits_table needs the record of claim {claim}; make that claim first (study.examine "
                              "returns the record, and the study keeps it in study.records).")
        verdict = record.get("verdict") or ("holds" if record.get("holds") else "does not hold")
        ci = ("no CI" if record.get("ci_low") is None else f"CI [{record['ci_low']:.3g}, {record['ci_high']:.3g}]")
        effect = record.get("effect")
        detail = "" if effect is None else f" (effect {effect:+.3g}, {ci})"
        caveat = str(caveats.get(aspect) or "").strip().rstrip(".")
        shown = f"{verdict} (caveat: {caveat})" if caveat else verdict
        rows.append({"Aspect": aspect, "AE": ae, "VAE": vae, "Evidence": evidence[aspect],
                     "Verdict": f"{shown}: {claim}{detail}", "Caveat": caveat})
    return pd.DataFrame(rows, columns=["Aspect", "AE", "VAE", "Evidence", "Verdict", "Caveat"])



# --- 6. the series recap: the seed's table with this run's answers ---------------------------------------------------

RUN_DIR_ENV = "AESTUDY_RUN_DIR"  # set by `aestudy run` for every kernel (aestudy.runner.kernel.RUN_DIR_ENV)
RECAP_COLUMNS: tuple[str, ...] = ("Aspect", "AE (textbook)", "VAE (textbook)", "This run")
NOT_RUN = "not run in this session (notebook {nb})"
NOT_ENDED = ("not measured yet: notebook {nb} had not ended when this recap was made (the run's `report.md`, written "
             "when every notebook has ended, has this row)")
PROVISIONAL = ("*provisional* — notebook {nb} had not ended when this recap was made, so its claims are not counted "
               "here (the run's `report.md`, written when every notebook has ended, counts them): ")
ENDED = ("done", "failed")  # a notebook's runner status once its ledger is final (aestudy.runner.run)


def run_ledgers(own: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ledgers of every notebook of this session merged into one `{"notebooks": {name: entry}, "unfinished":
    [name, ...]}`.

    Under `aestudy run`, `$AESTUDY_RUN_DIR/metrics/*.json` (one ledger per notebook of the run) of the notebooks
    that have ended; "unfinished" names the others still running or waiting (from the run's `state.json`: notebooks
    run in parallel, and 05 can end before 04), whose ledgers are partial and left out. By hand, the ledger `own`
    (the study's, which holds every notebook run by hand: `runs/interactive/metrics.json`). `own` is read last, so
    this notebook's newest records win. Raises DataError for a file that is not an aestudy ledger.
    """
    files: list[Path] = []
    unfinished: list[str] = []
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir and (Path(run_dir) / "metrics").is_dir():
        status = _run_status(Path(run_dir))
        own_name = None if own is None else Path(own).stem
        unfinished = sorted(Path(name).stem for name, word in status.items()
                            if word not in ENDED and Path(name).stem != own_name)
        files += [f for f in sorted((Path(run_dir) / "metrics").glob("*.json")) if f.stem not in unfinished]
    if own is not None:
        files.append(Path(own))
    merged: dict[str, Any] = {"notebooks": {}, "unfinished": unfinished}
    for file in files:
        if file.exists():
            merged["notebooks"].update(load_metrics(file)["notebooks"])
    return merged


def _run_status(run_dir: Path) -> dict[str, str]:
    """{notebook file: runner status} from the run's state.json; {} without one (a run folder made by hand)."""
    path = run_dir / "state.json"
    if not path.exists():
        return {}
    try:
        status = json.loads(path.read_text()).get("status", {})
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable aestudy run state ({err}); re-run the notebook under `aestudy "
                        "run`, or run it by hand without AESTUDY_RUN_DIR set") from err
    return {str(k): str(v) for k, v in status.items()} if isinstance(status, dict) else {}


def _row_notebooks(row: Mapping[str, Any]) -> set[str]:
    """The notebook numbers ("04") of the claim ids a table row names (ids are prefixed by their notebook's)."""
    text = " ".join(str(row.get(key) or "") for key in ("Verdict", "Evidence", "Claims"))
    return set(re.findall(r"(?<![\w.-])(\d\d)\.[a-z]", text))


def series_recap(ledgers: Mapping[str, Any]) -> pd.DataFrame:
    """The seed's AE-vs-VAE table (notebook 03's aspects, then this notebook's) with this run's answer per row.

    "This run" is the runner report's finding for the row (`aestudy.runner.report.row_sentence`: its verdict, the
    claims behind it with effect, interval and verdict, and the evidence it quotes), so the recap and `report.md`
    say the same once every notebook has ended. A row whose notebook did not run in this session says so; a row
    resting on a notebook that had not ended (`ledgers["unfinished"]`, see `run_ledgers`) is marked provisional.
    Columns: `RECAP_COLUMNS`.
    """
    from aestudy.runner.report import _all_claims, comparison_frame, row_sentence  # the report's own templates
    from aestudy.series.comparison import TABLE_ASPECTS, TEXTBOOK

    table = comparison_frame(ledgers)
    measured = {} if table is None else {str(r.get("Aspect")): r for r in table.to_dict("records")}
    claims = _all_claims(ledgers)
    waiting = {str(name)[:2]: str(name) for name in ledgers.get("unfinished", ())}
    textbook = {**TEXTBOOK, **{aspect: (ae, vae) for aspect, (ae, vae, _) in LIMIT_ROWS.items()}}
    rows = []
    for aspect in (*TABLE_ASPECTS, *LIMIT_ROWS):
        row = measured.get(aspect)
        home = "03" if aspect in TABLE_ASPECTS else "05"
        if row is None:
            answer = (NOT_ENDED if home in waiting else NOT_RUN).format(nb=home)
        else:
            answer = row_sentence(row, claims).removeprefix(f"**{aspect}** — ")
            pending = sorted(nb for nb in _row_notebooks(row) if nb in waiting)
            if pending:
                answer = PROVISIONAL.format(nb=" and ".join(pending)) + answer
        rows.append(dict(zip(RECAP_COLUMNS, (aspect, *textbook[aspect], answer), strict=True)))
    return pd.DataFrame(rows, columns=list(RECAP_COLUMNS))


def recap_markdown(ledgers: Mapping[str, Any]) -> str:
    """`series_recap` as a markdown table (the notebook renders it with IPython's Markdown), after a line naming
    the notebooks of the run that had not ended (`ledgers["unfinished"]`), when there are any."""
    from aestudy.runner.report import markdown_table

    waiting = [str(name) for name in ledgers.get("unfinished", ())]
    note = (f"*{', '.join(waiting)} had not ended when this recap was made: the rows resting on "
            f"{'it' if len(waiting) == 1 else 'them'} are marked provisional below.*\n\n" if waiting else "")
    return note + markdown_table(series_recap(ledgers))


# --- readings of surprising results (issue 19): one sentence each, its wording chosen from the measured values ---

# A reading calls one sampler better than the VAE only at a FID at least 10 % lower (the minimum effect of
# 03.vae-gmm-beats-ae-gmm); a smaller difference is reported as level.
CLEAR_FID_SHARE = 0.9


def sample_reading(samples: pd.DataFrame, *, fid_name: str = "FID") -> str:
    """Markdown interpreting the sample scores where they go against the textbook (VAE samples beat an AE's; sharp
    GAN samples are the better ones): the best non-data source by mean FID, and the GAN's sharpness against its FID.

    `samples`: `sample_table` rows (source, seed, fid, laplacian_ratio, …), sources "VAE", "GAN", "AE + GMM ex post",
    "data"; FID lower = better, Laplacian ratio 1 = the data's sharpness. Sources: Ghosh et al. (2020), Heusel et al.
    (2017).

    Raises:
        ConfigError: when a source other than the data is missing.
    """
    mean = samples.groupby("source")[["fid", "laplacian_ratio"]].mean()
    missing = [s for s in ("VAE", "GAN", "AE + GMM ex post") if s not in mean.index]
    if missing:
        raise ConfigError(f"sample_reading needs the sources {missing}; measured: {sorted(mean.index)}.")
    models = mean.drop(index="data", errors="ignore")["fid"].sort_values()
    best = str(models.index[0])
    lines = [f"**Reading:** the lowest {fid_name} of the generators is {best}'s ({models[best]:.1f}; the VAE's prior "
             f"samples {mean.loc['VAE', 'fid']:.1f})."]
    vae_fid = float(mean.loc["VAE", "fid"])
    if best != "VAE" and models[best] > CLEAR_FID_SHARE * vae_fid:
        lines[0] += (f" It is within {1 - CLEAR_FID_SHARE:.0%} of the VAE's: no clear winner between the two in this "
                     "run.")
    elif best.startswith("AE"):
        ae_sharp, vae_sharp = float(mean.loc[best, "laplacian_ratio"]), float(mean.loc["VAE", "laplacian_ratio"])
        sharpness = (f"its samples are also sharper than the VAE's (Laplacian ratio {ae_sharp:.2f} against "
                     f"{vae_sharp:.2f}; 1 = the data's)" if ae_sharp > vae_sharp else
                     f"its samples are not sharper than the VAE's (Laplacian ratio {ae_sharp:.2f} against "
                     f"{vae_sharp:.2f}; 1 = the data's), so its lead comes from where it samples, not from sharpness")
        lines[0] += (" A deterministic AE with a density fitted to its codes after training is the best sampler "
                     "here: the GMM puts samples where the codes are, while the VAE's prior also covers regions its "
                     f"codes leave empty; {sharpness}. Ghosh et al. (2020) report the same kind of result.")
    gan, vae = mean.loc["GAN"], mean.loc["VAE"]
    if abs(gan["laplacian_ratio"] - 1) < abs(vae["laplacian_ratio"] - 1) and gan["fid"] > vae["fid"]:
        lines.append(f"The GAN's samples are as sharp as the data (Laplacian ratio {gan['laplacian_ratio']:.2f}, the "
                     f"VAE's {vae['laplacian_ratio']:.2f}) and still score a worse {fid_name} ({gan['fid']:.1f} vs "
                     f"{vae['fid']:.1f}): sharpness counts any high frequency, speckle included, while FID compares "
                     "what a classifier sees in the images, so a short-trained GAN can be sharp and wrong.")
    return "\n\n".join(lines)


CLEAR_ERROR_GAP = 0.02  # two points of test error: the reading calls a method clearly worst only beyond this (the
# minimum effect of 05.m2-beats-m1; labelled subsets alone move these errors by about that much)


def m1_reading(ssl: pd.DataFrame) -> str:
    """Markdown interpreting the semi-supervised errors where they go against the textbook (VAE codes are good M1
    features; M2 beats raw pixels): the worst and best method at each label count.

    `ssl`: `semi_supervised_table` rows (labels, method, seed, test_error; error a share; optional ci_low / ci_high,
    the test error's 95 % interval). Where the bottom two are within CLEAR_ERROR_GAP, the reading says what the gap
    was set against: the spread over labelled subsets (sd over seeds) where more than one subset was drawn at that
    count, else the test-set intervals of the one subset (the spread over subsets was not measured there).
    Source: Kingma et al. (2014).

    Raises:
        ConfigError: when the table is empty.
    """
    if ssl.empty:
        raise ConfigError("m1_reading needs the semi-supervised table's rows; it is empty.")
    err = ssl.groupby(["labels", "method"])["test_error"].mean()
    lines = []
    for labels in sorted(set(err.index.get_level_values(0))):
        part = err.loc[labels].sort_values()
        best, worst = str(part.index[0]), str(part.index[-1])
        line = (f"With {labels:,} labels the lowest test error is that of {best} ({part[best]:.1%}), the highest "
                f"that of {worst} ({part[worst]:.1%}).")
        runner_up = float(part.iloc[-2]) if len(part) > 1 else float("nan")
        if (worst == "VAE codes" and part[worst] - runner_up >= CLEAR_ERROR_GAP
                and not any("worst M1 features" in earlier for earlier in lines)):
            line += (" The VAE's codes are the worst M1 features here: a KL term pulls codes towards the prior and "
                     "can switch units off, which a linear probe cannot undo; Kingma et al. (2014) used "
                     "longer-trained models and a transductive SVM on them.")
        elif worst == "VAE codes":
            line += _close_bottom_text(ssl, labels, worst, str(part.index[-2]), float(part[worst]) - runner_up)
        if best == "pixels" and "M2" in part.index and not any("beating M2" in earlier for earlier in lines):
            line += (f" Raw pixels beating M2 with {labels:,} labels means that at this training budget the unlabelled "
                     "images taught M2's classifier less than a linear model learns from those labelled pixels alone.")
        lines.append(line)
    return "**Reading:** " + " ".join(lines)


def _close_bottom_text(ssl: pd.DataFrame, labels: int, worst: str, next_: str, gap: float) -> str:
    """The m1_reading sentence for a bottom gap under CLEAR_ERROR_GAP, worded by how many labelled subsets were drawn
    at `labels` (the spread over subsets is measured only with more than one)."""
    rows = ssl[ssl["labels"] == labels]
    n_subsets = rows["seed"].nunique() if "seed" in rows else 1
    text = (f" The VAE's codes trail the next method ({next_}) by {gap * 100:.1f} percentage points of test error, "
            f"under the {CLEAR_ERROR_GAP * 100:.0f} points this reading asks before calling a method clearly worst")
    if n_subsets > 1:
        per = rows.pivot_table(index="seed", columns="method", values="test_error")
        gaps = (per[worst] - per[next_]).dropna()
        flips = int((gaps <= 0).sum())
        text += (f"; per labelled subset the gap runs from {gaps.min() * 100:+.1f} to {gaps.max() * 100:+.1f} points "
                 f"over the {len(gaps)} subsets drawn at {labels:,} labels")
        if flips:
            return text + (f", and in {flips} of them the VAE's codes are not the worse of the two: a different "
                           "labelled subset can change this order, so no clear ranking at the bottom.")
        return text + (": the VAE's codes are the worse of the two in every subset, by less than the reading's "
                       "threshold.")
    text += (f"; only one labelled subset was drawn at {labels:,} labels, so how much another subset would move this "
             "gap was not measured")
    if not {"ci_low", "ci_high"} <= set(rows.columns):
        return text + ": no clear ranking at the bottom from this run."
    ci = rows.groupby("method")[["ci_low", "ci_high"]].mean()
    overlap = ci.loc[worst, "ci_low"] <= ci.loc[next_, "ci_high"]
    low_w, high_w, low_n, high_n = (ci.loc[m, c] for m in (worst, next_) for c in ("ci_low", "ci_high"))
    return (text + f". On the test set alone their 95 % Wilson intervals ({worst} [{low_w:.1%}, {high_w:.1%}], {next_} "
            f"[{low_n:.1%}, {high_n:.1%}]) "
            + ("overlap: the test set does not separate them either, so no clear ranking at the bottom."
               if overlap else
               "do not overlap: on these test images the VAE's codes are worse, by less than the reading's threshold "
               "and with the labelled subset's own variation unmeasured."))


def gan_budget_text(*, gan_epochs: int, gan_images: int, vae_epochs: int, vae_images: int, batch_size: int = 64) -> str:
    """Markdown stating the GAN's training budget against the reference VAE's, from the profile's sizes (so it cannot
    go stale when the sizes change): passes, images and optimiser steps of each, and which saw more images.

    Counts: `gan_epochs` passes over `gan_images` images in batches of `batch_size`; `vae_epochs` over `vae_images`.

    Raises:
        ConfigError: when a count is not a positive integer.
    """
    for name, value in (("gan_epochs", gan_epochs), ("gan_images", gan_images), ("vae_epochs", vae_epochs),
                        ("vae_images", vae_images), ("batch_size", batch_size)):
        as_int(value, name, low=1)
    gan_seen, vae_seen = gan_epochs * gan_images, vae_epochs * vae_images
    steps = gan_epochs * math.ceil(gan_images / batch_size)
    passes = "one pass" if gan_epochs == 1 else f"{gan_epochs} passes"
    text = (f"**The GAN's budget** (this profile): {passes} over its {gan_images:,} training images in batches of "
            f"{batch_size} ({steps:,} steps, {gan_seen:,} images seen), against the VAE's {vae_epochs} "
            f"epoch{'s' if vae_epochs != 1 else ''} over "
            f"{vae_images:,} images ({vae_seen:,} seen)")
    if gan_seen < vae_seen:
        return text + (": *less* training than the VAE's, so any advantage in sharpness is not bought with more "
                       "training.")
    return text + (": at least as much training as the VAE's, so read a GAN advantage in sharpness with its budget in "
                   "mind.")


def _blur_caveat_parts(samples: pd.DataFrame, fid_name: str, caller: str
                       ) -> tuple[pd.Series, pd.Series, list[str]]:
    """(GAN means, VAE means, the ways the GAN's samples score worse than the VAE's: FID, precision)."""
    mean = samples.groupby("source")[["fid", "precision", "laplacian_ratio"]].mean()
    missing = [s for s in ("GAN", "VAE") if s not in mean.index]
    if missing:
        raise ConfigError(f"{caller} needs the sources {missing}; measured: {sorted(mean.index)}.")
    gan, vae = mean.loc["GAN"], mean.loc["VAE"]
    worse = []
    if gan["fid"] > vae["fid"]:
        worse.append(f"a worse {fid_name} ({gan['fid']:.1f} against {vae['fid']:.1f})")
    if gan["precision"] < vae["precision"]:
        worse.append(f"a lower precision ({gan['precision']:.2f} against {vae['precision']:.2f})")
    return gan, vae, worse


def blur_caveat(samples: pd.DataFrame, *, fid_name: str = "FID") -> str:
    """Markdown to read beside 05.vae-blurrier-than-gan: whether the GAN's extra sharpness comes with a worse FID or
    precision than the VAE's, in which case it may be speckle (high-frequency noise, which the blur measures count as
    sharpness) rather than detail.

    `samples`: `sample_table` rows (source, seed, fid, precision, laplacian_ratio) with sources "GAN" and "VAE".
    Sources: Heusel et al. (2017), FID; Kynkäänniemi et al. (2019), precision.

    Raises:
        ConfigError: when the GAN or VAE rows are missing.
    """
    gan, vae, worse = _blur_caveat_parts(samples, fid_name, "blur_caveat")
    if gan["laplacian_ratio"] <= vae["laplacian_ratio"]:
        return (f"**Beside the blur verdict:** the GAN's samples are not sharper than the VAE's here (Laplacian ratio "
                f"{gan['laplacian_ratio']:.2f} against {vae['laplacian_ratio']:.2f}).")
    if not worse:
        return (f"**Beside the blur verdict:** the GAN's sharper samples (Laplacian ratio {gan['laplacian_ratio']:.2f} "
                f"against {vae['laplacian_ratio']:.2f}) come with no worse {fid_name} and precision than the VAE's: "
                "here its sharpness goes with samples at least as close to the data.")
    return (f"**Beside the blur verdict:** the GAN's samples are sharper (Laplacian ratio {gan['laplacian_ratio']:.2f} "
            f"against {vae['laplacian_ratio']:.2f}) but have {' and '.join(worse)} than the VAE's: part of that "
            "sharpness may be speckle, high-frequency noise that the blur measures count as sharpness, rather than "
            "detail. Blurrier here means fewer high frequencies, not worse samples; look at the grids above.")


def blur_caveat_note(samples: pd.DataFrame, *, fid_name: str = "FID") -> str:
    """The caveat `blur_caveat` attaches to 05.vae-blurrier-than-gan, in one clause for the tables (`limits_table`'s
    `caveats`, hence the report and the series recap); "" when there is none (the GAN is not sharper, or its
    sharpness comes with no worse FID or precision).

    Same inputs, sources and errors as `blur_caveat`.
    """
    gan, vae, worse = _blur_caveat_parts(samples, fid_name, "blur_caveat_note")
    if gan["laplacian_ratio"] <= vae["laplacian_ratio"] or not worse:
        return ""
    return (f"the sharper GAN samples have {' and '.join(worse)} than the VAE's, so part of their sharpness may be "
            "speckle; blurrier here means fewer high frequencies, not worse samples")


def coverage_reading(samples: pd.DataFrame) -> str:
    """Markdown interpreting precision and recall where they go against the textbook: a GAN covering more of the
    real images than the VAE (no mode collapse), and a source whose precision exceeds the real images' own.

    `samples`: `sample_table` rows (source, seed, precision, recall, laplacian_ratio) with sources "GAN", "VAE" and
    "data" (held-out real images). Precision = share of generated images inside the k-NN balls of the real ones,
    recall = share of real images inside the generated images' balls (Kynkäänniemi et al. 2019), both in [0, 1].
    The mechanism sentences appear only when the numbers beside them show it.

    Raises:
        ConfigError: when the GAN, VAE or data rows are missing.
    """
    mean = samples.groupby("source")[["precision", "recall", "laplacian_ratio"]].mean()
    missing = [s for s in ("GAN", "VAE", "data") if s not in mean.index]
    if missing:
        raise ConfigError(f"coverage_reading needs the sources {missing}; measured: {sorted(mean.index)}.")
    gan, vae, data = mean.loc["GAN"], mean.loc["VAE"], mean.loc["data"]
    if round(gan["recall"], 2) == round(vae["recall"], 2):  # level at the precision shown
        text = (f"**Reading (diversity):** the GAN's and the VAE's samples cover the same share of the real images "
                f"(recall GAN {gan['recall']:.2f}, VAE {vae['recall']:.2f}; held-out real images "
                f"{data['recall']:.2f}): no sign here that either drops more of the data.")
    elif gan["recall"] > vae["recall"]:
        text = (f"**Reading (diversity):** the GAN's samples cover more of the real images than the VAE's prior "
                f"samples (recall GAN {gan['recall']:.2f} against VAE {vae['recall']:.2f}; held-out real images "
                f"{data['recall']:.2f}). Mode collapse, the textbook's reason to expect the opposite, is a way a GAN "
                "*can* fail, not a rule, and this GAN's recall does not show it.")
        lower = [f"the {name} {p:.2f}" for name, p in (("VAE's", vae["precision"]), ("held-out real images'",
                                                                                    data["precision"]))
                 if round(gan["precision"], 2) < round(p, 2)]
        if lower:
            text += (f" Read that recall beside the GAN's precision, {gan['precision']:.2f} against "
                     f"{' and '.join(lower)}: fewer of its samples land near real images, and a broad, noisy cloud of "
                     "samples reaches many real images' neighbourhoods without resembling them (notebook 01's "
                     "samples drawn uniformly from the code box show this), so part of this recall may come from "
                     "samples off the data's manifold rather than from covering more of the data.")
        if vae["laplacian_ratio"] < 1 and vae["precision"] < data["precision"] and vae["recall"] < data["recall"]:
            text += (f" The VAE's prior samples are decoder means, blurrier than the data (Laplacian ratio "
                     f"{vae['laplacian_ratio']:.2f}), and they fall short of real images on both counts: fewer of "
                     f"them land near real images (precision {vae['precision']:.2f} against the data's "
                     f"{data['precision']:.2f}) and they reach fewer real images (recall). That is what blurred "
                     "averages sitting between the real images' clusters in the classifier's feature space, rather "
                     "than on them, look like to these two measures.")
    else:
        text = (f"**Reading (diversity):** the GAN's samples cover no more of the real images than the VAE's (recall "
                f"GAN {gan['recall']:.2f} against VAE {vae['recall']:.2f}; held-out real images "
                f"{data['recall']:.2f}): the direction of the textbook's mode dropping; the verdict above says "
                "whether the gap reaches the minimum effect.")
    for source in mean.index:
        row = mean.loc[source]
        if source == "data" or not row["precision"] > data["precision"]:
            continue
        text += (f"\n\n{source}'s precision ({row['precision']:.2f}) is above the held-out real images' own "
                 f"({data['precision']:.2f}): precision counts generated images inside the k-nearest-neighbour balls "
                 "of real images, and samples concentrated on typical images land in the dense regions where those "
                 "balls overlap, while real images include atypical ones that fall outside.")
        if row["recall"] < data["recall"]:
            text += (f" Its recall ({row['recall']:.2f} against the data's {data['recall']:.2f}) is the other side "
                     "of that concentration: a precision above the data's does not mean better-than-real samples.")
    return text


# What a DCGAN's "width" counts (aestudy.gan: Generator / Discriminator `width`), said where a reading first uses it.
GAN_WIDTH_MEANS = ("width = the number of feature maps of the generator's last hidden layer and of the "
                   "discriminator's first layer, doubled at each coarser layer")


def gan_sharpness_reading(section_ratio: float, ladder: pd.DataFrame, *, rung: str,
                          section_budget: Mapping[str, int], ladder_budget: Mapping[str, int]) -> str:
    """Markdown reconciling the GAN's sharpness in section 1 with the ladder's GAN on the same data: one measure
    (mean Laplacian variance of the samples / that of held-out real images), two different GANs and budgets.

    `section_ratio`: section 1's GAN Laplacian ratio (mean over seeds); `ladder`: `rung_table` rows; `rung`: the
    ladder rung holding section 1's data. Each budget maps "steps", "batch", "width" and "images" to integers.
    Returns "" when the ladder has no GAN on `rung`.

    Raises:
        ConfigError: when a budget lacks one of those keys or a value is not a positive integer.
    """
    for name, budget in (("section_budget", section_budget), ("ladder_budget", ladder_budget)):
        for key in ("steps", "batch", "width", "images"):
            require(key in budget, name, sorted(budget), f"it needs the key {key!r}")
            as_int(budget[key], f"{name}[{key!r}]", low=1)
    rows = ladder[(ladder["rung"] == rung) & (ladder["model"] == "GAN") & (ladder["output"] == "samples")]
    if rows.empty:
        return ""
    ladder_ratio = float(rows["laplacian_ratio"].mean())

    def budget_text(b: Mapping[str, int], *, define: bool = False) -> str:
        width = f"width {b['width']}" + (f" ({GAN_WIDTH_MEANS})" if define else "")
        return f"{b['steps']:,} steps of batch {b['batch']} at {width} on {b['images']:,} images"

    higher = "the ladder's" if ladder_ratio > section_ratio else "section 1's"
    text = (f"**Two GAN sharpness numbers.** Section 1's GAN has a Laplacian variance {section_ratio:.2f}× the real "
            f"images', the ladder's GAN on {rung} {ladder_ratio:.2f}×: one measure (mean Laplacian variance of the "
            "samples over that of held-out real images of the same data), two different GANs. Section 1's trains "
            f"{budget_text(section_budget, define=True)}; the ladder's {budget_text(ladder_budget)} (one budget for "
            "every rung). "
            f"{higher[0].upper()}{higher[1:]} GAN has the higher ratio.")
    noisy = [name for name, value in (("section 1's", section_ratio), ("the ladder's", ladder_ratio)) if value > 1]
    if noisy:
        text += (f" A ratio above 1 ({' and '.join(noisy)}) means more high-frequency content than the real images "
                 "have: noise such as speckle, not extra detail.")
    return text


def blur_measures_reading(table: pd.DataFrame, by: Sequence[str] = ("rung", "model", "output")) -> str:
    """Markdown naming the rows where the two blur measures point opposite ways around the data's 1 (one ratio
    below, the other above, at the two decimals shown), what each measures, and which one the claims use; "" when
    they agree on every row.

    `table`: rows with the `by` columns, laplacian_ratio and hf_ratio (each the outputs' mean over the data's,
    `aestudy.blur.relative_blur`), averaged over seeds here. States no cause for a disagreement: none is tested.

    Raises:
        ConfigError: when a column is missing.
    """
    need = [*by, "laplacian_ratio", "hf_ratio"]
    missing = [c for c in need if c not in table.columns]
    require(not missing, "table", sorted(table.columns), f"it needs the columns {missing}")
    mean = table.groupby(list(by), sort=False)[["laplacian_ratio", "hf_ratio"]].mean()
    rows = []
    for key, row in mean.iterrows():
        lap, hf = round(float(row["laplacian_ratio"]), 2), round(float(row["hf_ratio"]), 2)
        if (lap < 1 < hf) or (hf < 1 < lap):
            name = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            rows.append(f"{name} (Laplacian variance {lap:.2f}× the data's, high-frequency share {hf:.2f}×)")
    if not rows:
        return ""
    return (f"**Reading (two blur measures):** the two blur measures point opposite ways on {len(rows)} "
            f"row{'s' if len(rows) != 1 else ''}, one below the data's 1 and the other above: {'; '.join(rows)}. "
            "They measure different things: the Laplacian variance is the variance of a 3×3 second-difference "
            "filter's response, which grows with edge contrast and with pixel-to-pixel noise; the high-frequency "
            "share is the share of the spectral power above half the Nyquist frequency, a proportion of the image's "
            "own power, so it also rises when the power at low frequencies falls. Which of the two follows blur on "
            "these rows was not tested here. The claims use neither the high-frequency share nor these rows' "
            "disagreement: 05.vae-blurrier-than-gan rests on the Laplacian ratio (section 1), the ladder's claims on "
            "the relative FID-AE, and the ladder's sharpness panel plots the Laplacian ratio.")


def mean_image_psnr(train: Tensor, targets: Tensor) -> float:
    """PSNR (dB, data range 1) of predicting every image of `targets` (N, C, H, W) by the mean image of `train`
    (M, C, H, W): a baseline that ignores its input, mean over images (`aestudy.metrics.psnr`)."""
    from aestudy.metrics import psnr

    require(train.shape[1:] == targets.shape[1:], "targets", tuple(targets.shape), f"images of the training "
            f"images' shape {tuple(train.shape[1:])}")
    mean_image = train.mean(0, keepdim=True).expand_as(targets)
    return float(psnr(targets, mean_image).mean())


def psnr_reading(ladder: pd.DataFrame, baselines: Mapping[str, float]) -> str:
    """Markdown explaining the rung with the AE's lowest reconstruction PSNR: each rung's PSNR against the baseline
    of predicting the rung's mean training image (`mean_image_psnr`), i.e. what the models learned beyond it.

    `ladder`: `rung_table` rows (rung, model, output, psnr in dB); `baselines[rung]`: the mean-image PSNR (dB) on
    the same training images the reconstructions are scored on.

    Raises:
        ConfigError: when the ladder has no AE reconstructions or a rung lacks its baseline.
    """
    recon = ladder[ladder["output"] == "reconstructions"].groupby(["model", "rung"], sort=False)["psnr"].mean()
    if "AE" not in recon.index.get_level_values(0):
        raise ConfigError("psnr_reading needs the ladder's AE reconstructions; none measured.")
    ae = recon.loc["AE"]
    missing = [r for r in ae.index if r not in baselines]
    require(not missing, "baselines", sorted(baselines), f"it needs the rungs {missing}")
    gain = {r: float(ae[r]) - float(baselines[r]) for r in ae.index}
    low = str(ae.idxmin())
    others = ", ".join(f"{r} {ae[r]:.1f} dB" for r in ae.index if r != low)
    gains = ", ".join(f"{r} {gain[r]:+.1f} dB" for r in ae.index)
    text = (f"**Reading (PSNR):** the AE's reconstructions score their lowest PSNR on {low} ({ae[low]:.1f} dB; "
            f"{others}). A baseline that ignores the input, every pixel predicted by the rung's mean training image, "
            f"scores {baselines[low]:.1f} dB on {low}; the AE's gain over it per rung: {gains}.")
    if len(gain) > 1 and min(gain, key=gain.get) == low:
        # What the baselines say about the rung's difficulty, ranked among the rungs (never assumed).
        rank = sorted(ae.index, key=lambda r: baselines[r])
        hardness = ("not that its images are harder to predict from their average (its baseline is the highest of "
                    "the rungs)" if rank[-1] == low
                    else "partly that its images are the hardest to predict from their average (its baseline is the "
                    "lowest of the rungs), and partly" if rank[0] == low
                    else "not mainly its baseline, which lies between the other rungs'")
        joint = " that" if rank[0] == low else ":"
        text += (f" So the {low} rung's low PSNR is {hardness}{joint} within the one budget of optimiser steps the AE "
                 "learned least beyond the average image there.")
    elif len(gain) > 1:
        text += (f" The gains rank the rungs differently from the raw PSNR: the {low} rung's low value comes largely "
                 "from images that are harder to predict from their average.")
    if "VAE" in recon.index.get_level_values(0):
        # below at the precision shown, so the sentence never prints "10.0 against 10.0 dB"
        below = [r for r in recon.loc["VAE"].index
                 if r in baselines and round(recon.loc["VAE"][r], 1) < round(baselines[r], 1)]
        if below:
            text += (" The VAE's reconstructions score below the mean-image baseline on "
                     + ", ".join(f"{r} ({recon.loc['VAE'][r]:.1f} against {baselines[r]:.1f} dB)" for r in below)
                     + ".")
    return text


def gan_budget(*, epochs: int, images: int, batch_size: int, width: int) -> dict[str, int]:
    """A GAN's training budget as `gan_sharpness_reading` takes it: optimiser steps (epochs × ⌈images / batch⌉, as
    `gan_budget_text` counts them), batch, width and training images. Raises ConfigError for a non-positive count."""
    values = {name: as_int(v, name, low=1) for name, v in (("epochs", epochs), ("images", images),
                                                             ("batch_size", batch_size), ("width", width))}
    return {"steps": values["epochs"] * math.ceil(values["images"] / values["batch_size"]),
            "batch": values["batch_size"], "width": values["width"], "images": values["images"]}


def ladder_gan_budget(n_train: int, steps: int) -> dict[str, int]:
    """The budget of the ladder's GAN on a rung of `n_train` training images (`train_rung`: `epochs_for(steps)`
    epochs of batch LADDER_BATCH at width LADDER_GAN_WIDTH)."""
    return gan_budget(epochs=epochs_for(steps, n_train), images=n_train, batch_size=LADDER_BATCH,
                      width=LADDER_GAN_WIDTH)


def ladder_baselines(data: Mapping[str, tuple[Dataset, Dataset]], n_eval: int) -> dict[str, float]:
    """Per rung, `mean_image_psnr` on the training images `rung_table` scores reconstructions on (the first
    min(n_eval, test, train) of them); `data[rung]` = (grey, binary) as `run_ladder` returns it."""
    n_eval = as_int(n_eval, "ladder_eval", low=1)
    out = {}
    for rung, (grey, _) in data.items():
        n = min(n_eval, len(grey.test), len(grey.train))
        out[rung] = mean_image_psnr(grey.train.images, grey.train.images[:n])
    return out
