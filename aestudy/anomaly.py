"""Anomaly and out-of-distribution scores: reconstruction error, −ELBO, IS-NLL, the likelihood ratio
(Ren et al. 2019), the input-complexity correction (Serrà et al. 2020), held-out-class models and ROC tables.

Every score is per image, higher = more anomalous. Taught in notebook 04 section 3.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor, nn

from aestudy.data import (
    IDX_SPECS,
    Dataset,
    DatasetInfo,
    Split,
    binarize_images,
    default_val_size,
    list_datasets,
    load_dataset,
    require_labels,
    resolve_data_dir,
)
from aestudy.denoising import corrupted
from aestudy.errors import ConfigError
from aestudy.evaluation import EVAL_BATCH, batched, evaluating, generator_on, model_device
from aestudy.metrics import elbo_per_image, mse_per_image
from aestudy.models import ModelConfig
from aestudy.noise import NoiseConfig
from aestudy.objectives import is_nll
from aestudy.progress import progress as progress_bar
from aestudy.stats import Verdict, compare_auroc
from aestudy.train import TrainConfig, TrainResult, train_or_load

ArrayLike = Tensor | np.ndarray

ANOMALY_SCORES: tuple[str, ...] = ("recon", "neg_elbo", "is_nll")


LN2 = math.log(2.0)


OOD_LAYOUTS: tuple[str, ...] = ("as loaded", "mnist")


Scorer = Callable[[Tensor, Tensor], Tensor]  # (grey images, their binarization) -> per-image scores (N,)
ImagePair = tuple[Tensor, Tensor]  # (grey levels (N, C, H, W), the same images binarized once (N, C, H, W))


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


def anomaly_scores(model: nn.Module, images: Tensor, *, score: str = "recon", batch_size: int = EVAL_BATCH,
                   k: int = 100, generator: torch.Generator | None = None,
                   labels: Tensor | None = None) -> Tensor:
    """Per-image anomaly scores (N,), higher = more anomalous.

    score="recon": reconstruction MSE (intensity², any model); "neg_elbo": −ELBO in nats (a VAE);
    "is_nll": importance-sampled NLL −L_k in nats with `k` samples (a VAE).
    """
    if score == "recon":
        return batched(model, lambda x, y: mse_per_image(x, model.reconstruct(x, y)), images, labels,
                       batch_size=batch_size)
    if score == "neg_elbo":
        return -elbo_per_image(model, images, batch_size=batch_size, generator=generator, labels=labels)["elbo"]
    if score == "is_nll":
        with evaluating(model):
            return is_nll(model, images, k=k, batch_size=min(batch_size, 100), generator=generator,
                          labels=labels)
    raise ConfigError(f"score={score!r} is invalid; valid values: {', '.join(ANOMALY_SCORES)}.")


def _derived_fingerprint(data: Dataset, what: str) -> str:
    """A fingerprint for data derived from `data` by the recipe `what` (a cache-key part)."""
    return hashlib.sha256(f"{data.fingerprint}|{what}".encode()).hexdigest()[:16]


def _as_numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def check_class(anomaly_class: object, info: DatasetInfo) -> int:
    """`anomaly_class` as an int, or a ConfigError naming the valid classes of `info` (or saying that unlabelled
    data has no class to hold out)."""
    if not info.labelled:
        raise ConfigError(f"anomaly.check_class needs class labels, but {info.name} has none: a held-out class cannot "
                          "be defined on unlabelled data (score it against another dataset instead).")
    valid = isinstance(anomaly_class, int) and not isinstance(anomaly_class, bool)
    if not (valid and 0 <= anomaly_class < info.num_classes):
        names = ", ".join(f"{i} = {n}" for i, n in enumerate(info.class_names))
        raise ConfigError(f"anomaly_class={anomaly_class!r} is invalid for {info.name}; valid values: "
                          f"0..{info.num_classes - 1} ({names}).")
    return int(anomaly_class)


def _keep(split: Split, mask: Tensor) -> Split:
    return Split(split.images[mask], split.labels[mask])


def without_class(data: Dataset, anomaly_class: int) -> Dataset:
    """`data` with `anomaly_class` removed from the training and validation splits (the test split is kept whole)."""
    c = check_class(anomaly_class, data.info)
    return Dataset(_keep(data.train, data.train.labels != c), _keep(data.val, data.val.labels != c), data.test,
                   data.info, data.binarize, _derived_fingerprint(data, f"without-class-{c}"))


def split_by_class(split: Split, anomaly_class: int) -> tuple[Tensor, Tensor]:
    """(normal images, anomalous images) of a split: the anomalous ones are those of `anomaly_class`.

    Raises:
        ConfigError: an unlabelled split (every label UNLABELLED: no class to hold out).
    """
    require_labels(split, "anomaly.split_by_class")
    anomalous = split.labels == anomaly_class
    return split.images[~anomalous], split.images[anomalous]


def perturbed_dataset(data: Dataset, rate: float, *, seed: int = 0) -> Dataset:
    """Background-model training data (Ren et al. 2019): each pixel replaced by a random 0 or 1 with prob. `rate`.

    The perturbation is salt-and-pepper noise drawn once (train and validation); with dynamic binarization
    a pixel set to 0 or 1 stays so, i.e. it becomes a uniformly random bit. The test split is unchanged.
    """
    if not (isinstance(rate, (int, float)) and 0 < rate < 1):
        raise ConfigError(f"rate={rate!r} is invalid; it must be a probability in (0, 1).")
    noise = NoiseConfig("salt_pepper", float(rate))
    train = Split(corrupted(data.train.images, noise, seed=seed), data.train.labels)
    val = Split(corrupted(data.val.images, noise, seed=seed + 1), data.val.labels)
    return Dataset(train, val, data.test, data.info, data.binarize,
                   _derived_fingerprint(data, f"salt-pepper-{rate}-seed-{seed}"))


def neg_elbo(model: nn.Module, images: Tensor, *, n_samples: int = 1, seed: int = 0) -> Tensor:
    """−ELBO per image (N,) in nats, averaging the reconstruction term over `n_samples` seeded draws of z."""
    generator = generator_on(seed, model_device(model))
    return -elbo_per_image(model, images, n_samples=n_samples, generator=generator)["elbo"]


def recon_error(model: nn.Module, inputs: Tensor, targets: Tensor, *, batch_size: int = EVAL_BATCH) -> Tensor:
    """Reconstruction error ‖targets − model(inputs)‖² / D per image (N,), intensity².

    For a model trained on dynamically binarized images, `inputs` are the binarized images it sees and `targets`
    their grey levels: the decoder's output estimates the grey level (the Bernoulli mean), so scoring it against
    the binarized pixels would add each pixel's Bernoulli noise p(1 − p) — which tracks how much grey an image
    has, not how unusual it is (issue 14 (4): Spearman 0.94 with Σ p(1 − p)).

    Raises:
        ConfigError: when inputs and targets differ in shape.
    """
    if inputs.shape != targets.shape:
        raise ConfigError(f"recon_error: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must be the "
                          "same images (grey targets of the binarized inputs), so the same shape.")
    return batched(model, lambda x, t: mse_per_image(t, model.reconstruct(x)), inputs, targets,
                   batch_size=batch_size)


def likelihood_ratio(model: nn.Module, background: nn.Module, images: Tensor, *, k: int = 100,
                     seed: int = 0) -> Tensor:
    """The likelihood-ratio anomaly score (Ren et al. 2019): NLL_model(x) − NLL_background(x), nats (N,).

    Both NLLs are importance-sampled with `k` samples (−L_k, Burda et al. 2016). Higher = more anomalous: the
    model explains x no better than a model of perturbed data does, so what it explains is background
    statistics (e.g. how many pixels are on), not the semantics of the class. Single-sample ELBOs would leave
    each model's own bound gap KL(q ‖ p(z|x)) in the difference, and the two gaps do not cancel (issue 14 (5));
    −L_k's gap shrinks as k grows. Both estimates use the same seeded draws, so identical models score exactly 0.
    """
    def nll(m: nn.Module) -> Tensor:
        return anomaly_scores(m, images, score="is_nll", k=k, generator=generator_on(seed, model_device(m)))

    return nll(model).cpu() - nll(background).cpu()


def _raw_deflate_bytes(payload: bytes, level: int) -> int:
    """Length in bytes of `payload` compressed by raw DEFLATE (zlib without its 6-byte header and checksum)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    return len(packer.compress(payload) + packer.flush())


def compressed_bits(images: Tensor, *, level: int = 9) -> Tensor:
    """A lossless code length L(x) in bits of each image (N,), the complexity of Serrà et al. (2020).

    Binary images (every pixel 0 or 1: what the Bernoulli models score) are bit-packed (8 pixels a byte,
    numpy.packbits) and compressed by raw DEFLATE (zlib, PNG's compressor); other images are quantised to 8 bits
    a pixel first. The code is two-part: 1 flag bit, then the smaller of the DEFLATE stream and the raw pixels
    (D bits for a binary image, 8·D for a grey one), so L(x) ≤ D + 1 for a binary image — a code length for the
    very object the model assigns a probability to. (Compressing a binary image stored as D bytes of 0/255 costs
    more than D bits even for pure noise, issue 14 (11), so the old L was loose by a varying amount.)
    """
    flat = images.detach().cpu().flatten(1)
    binary = bool(((flat == 0) | (flat == 1)).all())
    if binary:
        rows = np.packbits(flat.numpy().astype(np.uint8), axis=1)
        raw_bits = flat.shape[1]
    else:
        rows = (flat.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        raw_bits = 8 * flat.shape[1]
    return torch.tensor([1.0 + min(8.0 * _raw_deflate_bytes(row.tobytes(), level), raw_bits) for row in rows],
                        dtype=torch.float64)


def complexity_corrected(nll_nats: Tensor, images: Tensor) -> Tensor:
    """Serrà et al. (2020)'s score S(x) = NLL(x) in bits − L(x), L = `compressed_bits` of the same images, (N,).

    Higher = more anomalous: the model needs more bits than a generic compressor, which corrects for
    simple images (few strokes, flat background) getting a high likelihood under any model.
    """
    return nll_nats.detach().cpu().double() / LN2 - compressed_bits(images)


# Grey levels (intensity in [0, 1]) that `grey_level_summary` counts as background (below) and bright (above): a
# pixel below 5 % of full intensity is the black frame, one above half-way is part of a stroke or garment.
BACKGROUND_BELOW, BRIGHT_ABOVE = 0.05, 0.5


def grey_level_summary(sets: Mapping[str, Tensor]) -> pd.DataFrame:
    """Grey-level statistics per image set: min, max, mean, background_share (share of pixels below
    `BACKGROUND_BELOW`) and bright_share (share of pixels above `BRIGHT_ABOVE`)."""
    rows = []
    for name, x in sets.items():
        x = x.detach().cpu().float()
        rows.append({"set": name, "images": x.shape[0], "shape": "×".join(map(str, x.shape[1:])),
                     "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
                     "background_share": float((x < BACKGROUND_BELOW).float().mean()),
                     "bright_share": float((x > BRIGHT_ABOVE).float().mean())})
    return pd.DataFrame(rows).set_index("set")


def unavailable_reason(name: str) -> str | None:
    """None when dataset `name` is on this machine, else why not and the command that fetches it."""
    if any(row.name == name and row.available for row in list_datasets()):
        return None
    fix = IDX_SPECS[name].fix.format(folder=resolve_data_dir() / name) if name in IDX_SPECS else ""
    return f"{name} is not on this machine; {fix}".rstrip("; ")


def mnist_layout(images: Tensor, *, box: int = 20, side: int = 28) -> Tensor:
    """Images resized (bilinear) into a `box`×`box` square centred on a black `side`×`side` canvas (MNIST's layout)."""
    if not (isinstance(box, int) and isinstance(side, int) and 1 <= box <= side and (side - box) % 2 == 0):
        raise ConfigError(f"box={box!r}, side={side!r} are invalid; they must be integers with 1 <= box <= side and "
                          "side - box even (equal margins).")
    inner = torch.nn.functional.interpolate(images, size=(box, box), mode="bilinear", align_corners=False)
    margin = (side - box) // 2
    return torch.nn.functional.pad(inner.clamp(0.0, 1.0), (margin, margin, margin, margin))


def ood_images(name: str, *, n: int, seed: int = 0, layout: str = "as loaded") -> tuple[Tensor, Tensor]:
    """Up to `n` grey images of dataset `name` (its test split first, then train and val) and a seeded binarization.

    layout="mnist" (digits only) places the original 8×8 digits in a 20×20 box centred in 28×28, MNIST's layout;
    "as loaded" keeps load_dataset's images (digits: upscaled to fill the 28×28 frame).
    """
    if layout not in OOD_LAYOUTS or (layout == "mnist" and name != "digits"):
        raise ConfigError(f"layout={layout!r} is invalid for {name!r}; valid values: 'as loaded', and 'mnist' for "
                          "digits only (the other datasets are 28×28 already).")
    data = load_dataset(name, val_size=default_val_size(name), seed=seed, progress=False,
                        upscale=layout != "mnist")
    grey = torch.cat([data.test.images, data.train.images, data.val.images])[:n]
    if layout == "mnist":
        grey = mnist_layout(grey)
    return grey, binarize_images(grey, generator_on(seed))


def model_scorers(ae: nn.Module, vae: nn.Module, *, k: int | None = 100, seed: int = 0) -> dict[str, Scorer]:
    """The anomaly scores of section 3, each taking (grey, binarized) images of models trained on binarized data.

    AE reconstruction error of the binarized input against the grey levels (`recon_error`), VAE −ELBO and
    (when k) VAE IS-NLL with k samples, both of the binarized images.
    """
    scorers: dict[str, Scorer] = {
        "AE recon error": lambda grey, binary: recon_error(ae, binary, grey),
        "VAE −ELBO": lambda grey, binary: neg_elbo(vae, binary, seed=seed),
    }
    if k is not None:
        scorers["VAE IS-NLL"] = lambda grey, binary: anomaly_scores(
            vae, binary, score="is_nll", k=k, generator=generator_on(seed, model_device(vae)))
    return scorers


def score_sets(scorers: Mapping[str, Scorer], normal: ImagePair, anomalous: ImagePair
               ) -> dict[str, tuple[Tensor, Tensor]]:
    """Each scorer applied to the normal and the anomalous (grey, binarized) images: name -> (scores (N,), (M,))."""
    for name, pair in (("normal", normal), ("anomalous", anomalous)):
        if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0].shape == pair[1].shape):
            raise ConfigError(f"score_sets: {name} must be a (grey images, binarized images) pair of equal shapes.")
    return {name: (score(*normal).detach().cpu(), score(*anomalous).detach().cpu()) for name, score in scorers.items()}


def auroc_table(scores: Mapping[str, tuple[Tensor, Tensor]]) -> pd.DataFrame:
    """AUROC (higher score = anomalous; 0.5 = chance) and mean scores of normal and anomalous images, per score."""
    rows = [{"score": name, "auroc": anomaly_auroc(normal, anomalous), "mean_normal": float(normal.double().mean()),
             "mean_anomalous": float(anomalous.double().mean())} for name, (normal, anomalous) in scores.items()]
    return pd.DataFrame(rows).set_index("score")


def roc_curves(scores: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """ROC curves (fpr, tpr, AUROC) per score, the input of `plots.roc_curves`."""
    curves = {}
    for name, (normal, anomalous) in scores.items():
        fpr, tpr, _ = roc_curve_points(normal, anomalous)
        curves[name] = (fpr, tpr, anomaly_auroc(normal, anomalous))
    return curves


def ood_score_sets(*, vae: nn.Module, background: nn.Module, ae: nn.Module, inside: ImagePair,
                   outside: ImagePair, k: int = 100, seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Scores of in-distribution and OOD images, name -> (inside (N,), outside (M,)); higher = more anomalous.

    `inside` and `outside` are (grey, binarized) image pairs. The AE (a grey-level model) scores grey images
    by reconstruction error; the binarized-data VAE scores binarized ones by −ELBO and IS-NLL (k samples),
    the likelihood ratio against `background` (Ren et al. 2019, both NLLs importance-sampled with k) and the
    complexity-corrected IS-NLL (Serrà et al. 2020, L(x) of the binarized image).
    """
    scores = {"AE recon error": (recon_error(ae, inside[0], inside[0]), recon_error(ae, outside[0], outside[0]))}
    nll = {part: anomaly_scores(vae, x[1], score="is_nll", k=k, generator=generator_on(seed, model_device(vae)))
           for part, x in (("in", inside), ("out", outside))}
    background_nll = {part: anomaly_scores(background, x[1], score="is_nll", k=k,
                                           generator=generator_on(seed, model_device(background)))
                      for part, x in (("in", inside), ("out", outside))}
    scores["VAE −ELBO"] = (neg_elbo(vae, inside[1], seed=seed), neg_elbo(vae, outside[1], seed=seed))
    scores["VAE IS-NLL"] = (nll["in"], nll["out"])
    scores["likelihood ratio"] = (nll["in"].cpu() - background_nll["in"].cpu(),
                                  nll["out"].cpu() - background_nll["out"].cpu())
    scores["complexity-corrected IS-NLL"] = (complexity_corrected(nll["in"], inside[1]),
                                             complexity_corrected(nll["out"], outside[1]))
    return {name: (a.detach().cpu(), b.detach().cpu()) for name, (a, b) in scores.items()}


OOD_FIXES: tuple[str, ...] = ("likelihood ratio", "complexity-corrected IS-NLL")


def ood_fix_table(scores_by_set: Mapping[str, Mapping[str, tuple[Tensor, Tensor]]], *, deciding: str,
                  min_effect: float, baseline: str = "VAE IS-NLL", fixes: Sequence[str] = OOD_FIXES,
                  alpha: float = 0.05) -> tuple[pd.DataFrame, dict[tuple[str, str], Verdict]]:
    """Every OOD fix against the raw likelihood on every OOD set, the deciding set named in advance (issue 14 (6)).

    Args:
        scores_by_set: OOD set name -> `ood_score_sets` output (in-distribution vs that set).
        deciding: the OOD set whose verdict the notebook's claim reports — named before the scores are seen; the
            other sets are reported beside it, so a fix that helps on one set and hurts on another shows.
        min_effect: smallest AUROC gain (AUROC units) that counts, fixed before measuring.
        baseline, fixes: the score every fix is compared with, and the fixes (keys of each set's scores).
        alpha: level of DeLong's test (`aestudy.stats.compare_auroc`).

    Returns:
        (table, verdicts): one row per (OOD set, fix) with columns ood_set, fix, deciding (bool), auroc_fix,
        auroc_baseline, effect (= AUROC gain), ci_low, ci_high, p_value, verdict; and {(set, fix): Verdict}.

    Raises:
        ConfigError: when `deciding` is not one of the sets, or a set lacks the baseline or a fix.
    """
    if deciding not in scores_by_set:
        raise ConfigError(f"deciding={deciding!r} is not one of the OOD sets scored; valid values: "
                          f"{', '.join(map(repr, scores_by_set))}.")
    rows, verdicts = [], {}
    for set_name, scores in scores_by_set.items():
        missing = [n for n in (baseline, *fixes) if n not in scores]
        if missing:
            raise ConfigError(f"the scores of OOD set {set_name!r} lack {missing}; they must hold the baseline and "
                              f"every fix (keys: {', '.join(scores)}).")
        inside, outside = scores[baseline]
        labels = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
        base = np.concatenate([_as_numpy(inside), _as_numpy(outside)])
        for fix in fixes:
            fix_in, fix_out = scores[fix]
            verdict = compare_auroc(labels, np.concatenate([_as_numpy(fix_in), _as_numpy(fix_out)]), base,
                                    min_effect=min_effect, alpha=alpha)
            verdicts[(set_name, fix)] = verdict
            rows.append({"ood_set": set_name, "fix": fix, "deciding": set_name == deciding,
                         "auroc_fix": verdict.mean_a, "auroc_baseline": verdict.mean_b, "effect": verdict.effect,
                         "ci_low": verdict.ci_low, "ci_high": verdict.ci_high, "p_value": verdict.p_value,
                         "verdict": verdict.verdict})
    return pd.DataFrame(rows), verdicts


@dataclass
class HoldoutModels:
    """The AE and VAE trained without one class, and that class."""

    anomaly_class: int
    ae: TrainResult
    vae: TrainResult


def holdout_models(data: Dataset, anomaly_class: int, ae_cfg: ModelConfig, vae_cfg: ModelConfig,
                   train_cfg: TrainConfig) -> HoldoutModels:
    """Train (or load) an AE and a VAE on every class of `data` but `anomaly_class`.

    Raises:
        ConfigError: unlabelled `data` (no class to hold out), before any training.
    """
    require_labels(data, "anomaly.holdout_models")
    held = without_class(data, anomaly_class)
    return HoldoutModels(anomaly_class, train_or_load(ae_cfg, train_cfg, held), train_or_load(vae_cfg, train_cfg, held))


def holdout_sweep(data: Dataset, classes: Sequence[int], ae_cfg: ModelConfig, vae_cfg: ModelConfig,
                  train_cfg: TrainConfig, *, grey_test: Split | None = None, k: int | None = None, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """AUROC of each score with each class held out in turn (models trained per class, on `data`'s test split).

    `grey_test` holds the grey levels of `data.test` (same images, same order) when `data` is binarized: the
    reconstruction error is scored against them (see `recon_error`). Columns: anomaly_class, class_name,
    score, auroc.

    Raises:
        ConfigError: when `data` is binarized and `grey_test` is missing or does not match its test split.
    """
    require_labels(data, "anomaly.holdout_sweep")
    if grey_test is None:
        if data.binarize is not None:
            raise ConfigError("holdout_sweep on binarized data needs grey_test= the grey-level test split "
                              "(load_dataset(..., binarize=None).test), to score reconstructions against grey levels.")
        grey_test = data.test
    if grey_test.images.shape != data.test.images.shape or not torch.equal(grey_test.labels, data.test.labels):
        raise ConfigError("grey_test must hold the same test images as data.test (same shape, labels and order).")
    rows = []
    for c in progress_bar(classes, desc="held-out classes", enabled=progress):
        held = holdout_models(data, c, ae_cfg, vae_cfg, train_cfg)
        (grey_normal, grey_anomalous), (normal, anomalous) = (split_by_class(grey_test, c),
                                                              split_by_class(data.test, c))
        scores = score_sets(model_scorers(held.ae.model, held.vae.model, k=k, seed=seed),
                            (grey_normal, normal), (grey_anomalous, anomalous))
        rows += [{"anomaly_class": c, "class_name": data.info.class_names[c], "score": name, "auroc": row.auroc}
                 for name, row in auroc_table(scores).iterrows()]
    return pd.DataFrame(rows)
