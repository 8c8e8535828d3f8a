"""Notebook 04's experiments: denoising, codes for few labels, anomaly and OOD scores, synthesis, uncertainty.

Each function returns a tidy DataFrame, tensors or a small Dataset; notebooks plot them and check claims.
Every training goes through `train_or_load`, so re-runs (and notebooks sharing a configuration) load cached
models. Scores follow metrics' convention: higher = more anomalous; likelihoods are nats per image.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
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
    resolve_data_dir,
)
from aestudy.errors import ConfigError
from aestudy.metrics import (
    anomaly_auroc,
    anomaly_scores,
    elbo_per_image,
    knn_accuracy,
    linear_probe_accuracy,
    mse_per_image,
    psnr,
    roc_curve_points,
    ssim,
)
from aestudy.models import ModelConfig
from aestudy.noise import NoiseConfig, corrupt
from aestudy.progress import progress as progress_bar
from aestudy.stats import spearman_table  # noqa: F401  (re-exported until the layout move)
from aestudy.train import TrainConfig, TrainResult, train_or_load

ArrayLike = Tensor | np.ndarray
DENOISING_NOISES: tuple[str, ...] = ("gaussian", "salt_pepper")
EMBEDDING_METHODS: tuple[str, ...] = ("tsne", "pca")
LN2 = math.log(2.0)


# --- plumbing ---------------------------------------------------------------------------------------------

def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _reconstruct(model: nn.Module, images: Tensor, *, batch_size: int = 1000) -> Tensor:
    """model.reconstruct in batches on the model's device, (N, C, H, W) on the CPU."""
    model.eval()
    device = _device(model)
    return torch.cat([model.reconstruct(images[s:s + batch_size].to(device)).cpu()
                      for s in range(0, images.shape[0], batch_size)])


def _derived_fingerprint(data: Dataset, what: str) -> str:
    """A fingerprint for data derived from `data` by the recipe `what` (a cache-key part)."""
    return hashlib.sha256(f"{data.fingerprint}|{what}".encode()).hexdigest()[:16]


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` (draws for a model happen on the model's device)."""
    return torch.Generator(device=device).manual_seed(seed)


# --- 1. denoising -----------------------------------------------------------------------------------------

def denoising_noise(kind: str, level: float) -> NoiseConfig:
    """The noise a denoising model is trained on, validated with the notebook's parameter names."""
    if kind not in DENOISING_NOISES:
        raise ConfigError(f"train_noise={kind!r} is invalid; valid values: {', '.join(DENOISING_NOISES)}.")
    number = isinstance(level, (int, float)) and not isinstance(level, bool)
    if not (number and 0 < level <= 1):
        raise ConfigError(f"train_noise_level={level!r} is invalid; it must be a number in (0, 1] (σ for "
                          "'gaussian', the corrupted share p for 'salt_pepper').")
    return NoiseConfig(kind, float(level))


def noise_grid(levels: Mapping[str, Sequence[float]], train_noise: NoiseConfig) -> list[NoiseConfig]:
    """Evaluation noises: each kind at each level, plus the training noise itself (sorted, no duplicates)."""
    pairs = {(kind, float(level)) for kind, kinds_levels in levels.items() for level in kinds_levels}
    pairs.add((train_noise.kind, train_noise.level))
    return [NoiseConfig(kind, level) for kind, level in sorted(pairs)]


def corrupted(images: Tensor, noise: NoiseConfig, *, seed: int = 0) -> Tensor:
    """A seeded corrupted copy of `images`, so every model sees the very same noisy inputs."""
    return corrupt(images, noise, generator=_generator(seed))


def denoising_table(models: Mapping[str, nn.Module], clean: Tensor, noises: Sequence[NoiseConfig], *,
                    seed: int = 0, batch_size: int = 1000) -> pd.DataFrame:
    """PSNR (dB) and SSIM of each model's output for corrupted `clean` images, scored against the clean ones.

    One row per (model, noise kind, level); the model "noisy input" scores the corrupted images themselves.
    Columns: model, noise, level, psnr (mean dB), psnr_sem, ssim (mean).
    """
    rows = []
    for noise in noises:
        noisy = corrupted(clean, noise, seed=seed)
        outputs = {"noisy input": noisy} | {name: _reconstruct(m, noisy, batch_size=batch_size)
                                            for name, m in models.items()}
        for name, out in outputs.items():
            p = psnr(clean, out).double()
            rows.append({"model": name, "noise": noise.kind, "level": noise.level, "psnr": float(p.mean()),
                         "psnr_sem": float(p.std() / math.sqrt(p.numel())) if p.numel() > 1 else 0.0,
                         "ssim": float(ssim(clean, out).mean())})
    return pd.DataFrame(rows)


def denoising_rows(models: Mapping[str, nn.Module], clean: Tensor, noise: NoiseConfig, *,
                   seed: int = 0) -> dict[str, Tensor]:
    """Image rows for a viewer: clean, noisy, then each model's output for the noisy images."""
    noisy = corrupted(clean, noise, seed=seed)
    return {"clean": clean, "noisy": noisy} | {name: _reconstruct(m, noisy) for name, m in models.items()}


# --- 2. representations for few labels --------------------------------------------------------------------

def pca_features(train_images: Tensor, test_images: Tensor, dim: int, *,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA codes with `dim` components fitted on the training images: (train (N, dim), test (M, dim))."""
    train, test = train_images.flatten(1).numpy(), test_images.flatten(1).numpy()
    pca = PCA(n_components=dim, random_state=seed).fit(train)
    return pca.transform(train), pca.transform(test)


def probe_table(features: Mapping[str, tuple[ArrayLike, ArrayLike]], train_labels: ArrayLike,
                test_labels: ArrayLike, *, label_counts: Sequence[int | None], repeats: int = 1, k: int = 5,
                seed: int = 0, max_iter: int = 1000) -> pd.DataFrame:
    """Linear-probe and k-NN test accuracy of each representation, trained on few or all labels.

    `features` maps a name to (train features, test features); a count of None uses every training label.
    Subsets smaller than the training set are drawn `repeats` times (seeds seed, seed + 1, …); `max_iter` caps
    the probe's lbfgs iterations. Columns: representation, labels (the count used), probe, repeat, accuracy
    (share in [0, 1]).
    """
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"repeats={repeats!r} is invalid; it must be an integer >= 1.")
    rows = []
    n_train = len(train_labels)
    # Multi-threaded BLAS next to torch's OpenMP threads on a busy CPU runs 10-70x slower; `max_iter` is the
    # caller's budget, so an lbfgs fit stopped by it is expected rather than worth a warning per fit.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, (train_x, test_x) in features.items():
            rows += _probe_rows(name, train_x, test_x, train_labels, test_labels, n_train=n_train,
                                label_counts=label_counts, repeats=repeats, k=k, seed=seed, max_iter=max_iter)
    return pd.DataFrame(rows)


def _probe_rows(name: str, train_x: ArrayLike, test_x: ArrayLike, train_labels: ArrayLike, test_labels: ArrayLike, *,
                n_train: int, label_counts: Sequence[int | None], repeats: int, k: int, seed: int,
                max_iter: int) -> list[dict[str, object]]:
    """probe_table's rows for one representation."""
    rows = []
    for count in label_counts:
        used = n_train if count is None or count >= n_train else count
        for r in range(repeats if used < n_train else 1):
            common = dict(n_labels=None if used == n_train else used, seed=seed + r)
            linear = linear_probe_accuracy(train_x, train_labels, test_x, test_labels, max_iter=max_iter,
                                           **common)
            knn = knn_accuracy(train_x, train_labels, test_x, test_labels, k=k, **common)
            rows += [{"representation": name, "labels": used, "probe": "linear probe", "repeat": r,
                      "accuracy": linear},
                     {"representation": name, "labels": used, "probe": f"{k}-NN", "repeat": r,
                      "accuracy": knn}]
    return rows


def embedding_2d(features: ArrayLike, *, method: str = "tsne", seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """A 2-D embedding (N, 2) of features (N, D): t-SNE (perplexity 30, PCA init, `max_iter` steps) or a 2-D PCA."""
    x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    x = x.reshape(len(x), -1).astype(np.float64)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = min(30.0, (len(x) - 1) / 3)
        # One thread: scikit-learn's OpenMP pool next to torch's (two libgomp copies) spins for seconds per call.
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter,
                    n_jobs=1).fit_transform(x)
    raise ConfigError(f"method={method!r} is invalid; valid values: {', '.join(EMBEDDING_METHODS)}.")


# --- 3. anomaly detection and out-of-distribution inputs --------------------------------------------------

def check_class(anomaly_class: object, info: DatasetInfo) -> int:
    """`anomaly_class` as an int, or a ConfigError naming the valid classes of `info`."""
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
    """(normal images, anomalous images) of a split: the anomalous ones are those of `anomaly_class`."""
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
    return -elbo_per_image(model, images, n_samples=n_samples, generator=_generator(seed, _device(model)))["elbo"]


def likelihood_ratio(model: nn.Module, background: nn.Module, images: Tensor, *, n_samples: int = 1,
                     seed: int = 0) -> Tensor:
    """The likelihood-ratio anomaly score (Ren et al. 2019) with ELBOs: −ELBO_model(x) − (−ELBO_background(x)).

    Higher = more anomalous: the model explains x no better than a model of perturbed data does, so what
    it explains is background statistics (e.g. how many pixels are on), not the semantics of the class.
    Both bounds use the same seeded draws, so identical models score exactly 0.
    """
    return (neg_elbo(model, images, n_samples=n_samples, seed=seed)
            - neg_elbo(background, images, n_samples=n_samples, seed=seed))


def compressed_bits(images: Tensor, *, level: int = 9) -> Tensor:
    """Length in bits of each image's 8-bit pixels compressed by zlib (Python's stdlib DEFLATE, as in PNG), (N,)."""
    pixels = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).flatten(1).numpy()
    return torch.tensor([8.0 * len(zlib.compress(row.tobytes(), level)) for row in pixels], dtype=torch.float64)


def complexity_corrected(nll_nats: Tensor, images: Tensor) -> Tensor:
    """Serrà et al. (2020)'s score S(x) = NLL(x) in bits − L(x), L = zlib-compressed size in bits, (N,).

    Higher = more anomalous: the model needs more bits than a generic compressor, which corrects for
    simple images (few strokes, flat background) getting a high likelihood under any model.
    """
    return nll_nats.detach().cpu().double() / LN2 - compressed_bits(images)


def grey_level_summary(sets: Mapping[str, Tensor]) -> pd.DataFrame:
    """Grey-level statistics per image set: min, max, mean, share of background (< 0.05) and bright (> 0.5) pixels."""
    rows = []
    for name, x in sets.items():
        x = x.detach().cpu().float()
        rows.append({"set": name, "images": x.shape[0], "shape": "×".join(map(str, x.shape[1:])),
                     "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
                     "background_share": float((x < 0.05).float().mean()),
                     "bright_share": float((x > 0.5).float().mean())})
    return pd.DataFrame(rows).set_index("set")


def unavailable_reason(name: str) -> str | None:
    """None when dataset `name` is on this machine, else why not and the command that fetches it."""
    if any(row.name == name and row.available for row in list_datasets()):
        return None
    fix = IDX_SPECS[name].fix.format(folder=resolve_data_dir() / name) if name in IDX_SPECS else ""
    return f"{name} is not on this machine; {fix}".rstrip("; ")


OOD_LAYOUTS: tuple[str, ...] = ("as loaded", "mnist")


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
    return grey, binarize_images(grey, _generator(seed))


Scorer = Callable[[Tensor], Tensor]


def model_scorers(ae: nn.Module, vae: nn.Module, *, k: int | None = 100, seed: int = 0) -> dict[str, Scorer]:
    """The anomaly scores of section 3: AE reconstruction error, VAE −ELBO and (when k) VAE IS-NLL with k samples."""
    scorers: dict[str, Scorer] = {
        "AE recon error": lambda x: anomaly_scores(ae, x, score="recon"),
        "VAE −ELBO": lambda x: neg_elbo(vae, x, seed=seed),
    }
    if k is not None:
        scorers["VAE IS-NLL"] = lambda x: anomaly_scores(vae, x, score="is_nll", k=k,
                                                         generator=_generator(seed, _device(vae)))
    return scorers


def score_sets(scorers: Mapping[str, Scorer], normal: Tensor, anomalous: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Each scorer applied to the normal and the anomalous images: name -> (scores (N,), scores (M,))."""
    return {name: (score(normal).detach().cpu(), score(anomalous).detach().cpu()) for name, score in scorers.items()}


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


def ood_score_sets(*, vae: nn.Module, background: nn.Module, ae: nn.Module, inside: tuple[Tensor, Tensor],
                   outside: tuple[Tensor, Tensor], k: int = 100, seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Scores of in-distribution and OOD images, name -> (inside (N,), outside (M,)); higher = more anomalous.

    `inside` and `outside` are (grey, binarized) image pairs. The AE (a grey-level model) scores grey images
    by reconstruction error; the binarized-data VAE scores binarized ones by −ELBO and IS-NLL (k samples),
    the likelihood ratio against `background` (Ren et al. 2019) and the complexity-corrected IS-NLL
    (Serrà et al. 2020).
    """
    scores = {"AE recon error": (anomaly_scores(ae, inside[0], score="recon"),
                                 anomaly_scores(ae, outside[0], score="recon"))}
    nll = {part: anomaly_scores(vae, x[1], score="is_nll", k=k, generator=_generator(seed, _device(vae)))
           for part, x in (("in", inside), ("out", outside))}
    scores["VAE −ELBO"] = (neg_elbo(vae, inside[1], seed=seed), neg_elbo(vae, outside[1], seed=seed))
    scores["VAE IS-NLL"] = (nll["in"], nll["out"])
    scores["likelihood ratio"] = (likelihood_ratio(vae, background, inside[1], seed=seed),
                                  likelihood_ratio(vae, background, outside[1], seed=seed))
    scores["complexity-corrected IS-NLL"] = (complexity_corrected(nll["in"], inside[1]),
                                             complexity_corrected(nll["out"], outside[1]))
    return {name: (a.detach().cpu(), b.detach().cpu()) for name, (a, b) in scores.items()}


@dataclass
class HoldoutModels:
    """The AE and VAE trained without one class, and that class."""

    anomaly_class: int
    ae: TrainResult
    vae: TrainResult


def holdout_models(data: Dataset, anomaly_class: int, ae_cfg: ModelConfig, vae_cfg: ModelConfig,
                   train_cfg: TrainConfig) -> HoldoutModels:
    """Train (or load) an AE and a VAE on every class of `data` but `anomaly_class`."""
    held = without_class(data, anomaly_class)
    return HoldoutModels(anomaly_class, train_or_load(ae_cfg, train_cfg, held), train_or_load(vae_cfg, train_cfg, held))


def holdout_sweep(data: Dataset, classes: Sequence[int], ae_cfg: ModelConfig, vae_cfg: ModelConfig,
                  train_cfg: TrainConfig, *, k: int | None = None, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """AUROC of each score with each class held out in turn (models trained per class, on `data`'s test split).

    Columns: anomaly_class, class_name, score, auroc.
    """
    rows = []
    for c in progress_bar(classes, desc="held-out classes", enabled=progress):
        held = holdout_models(data, c, ae_cfg, vae_cfg, train_cfg)
        normal, anomalous = split_by_class(data.test, c)
        scores = score_sets(model_scorers(held.ae.model, held.vae.model, k=k, seed=seed), normal, anomalous)
        rows += [{"anomaly_class": c, "class_name": data.info.class_names[c], "score": name, "auroc": row.auroc}
                 for name, row in auroc_table(scores).iterrows()]
    return pd.DataFrame(rows)


# --- 4. data synthesis ------------------------------------------------------------------------------------

def synthetic_dataset(images: Tensor, labels: Tensor, test: Split, info: DatasetInfo, *, name: str) -> Dataset:
    """Generated (images, labels) as the training split of a Dataset whose test split holds real images.

    The fingerprint hashes the tensors, so a classifier trained on it (aestudy.classifier) is cached per sample set.
    """
    train = Split(images.detach().cpu().float().clamp(0, 1), labels.detach().cpu().long())
    empty = Split(train.images[:0], train.labels[:0])
    synthetic_info = DatasetInfo(f"{info.name}:{name}", info.shape, info.num_classes, info.class_names,
                                 source=f"generated ({name})", checksum=info.checksum, licence=info.licence,
                                 note=f"synthetic training images ({name}); real test images")
    return Dataset(train, empty, test, synthetic_info, None)


@torch.no_grad()
def conditional_samples(model: nn.Module, n_per_class: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Prior samples of a class-conditional model, `n_per_class` of each class: (images, labels), class-major."""
    num_classes = model.config.num_classes
    if num_classes < 1:
        raise ConfigError("conditional_samples needs a class-conditional model (ModelConfig num_classes > 0).")
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    device = _device(model)
    images = model.sample(len(labels), y=labels.to(device), generator=_generator(seed, device))
    return images.cpu(), labels


@torch.no_grad()
def classifier_labelled_samples(model: nn.Module, classifier: nn.Module, n: int, *,
                                seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` prior samples of an unconditional model, labelled by the domain classifier's most probable class."""
    images = model.sample(n, generator=_generator(seed, _device(model))).cpu()
    return images, classifier.predict_proba(images).argmax(dim=1)


def real_subset(split: Split, n: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` real (images, labels) drawn at random without replacement."""
    order = torch.randperm(len(split), generator=_generator(seed))[:n]
    return split.images[order], split.labels[order]


def tstr_table(sources: Mapping[str, tuple[Tensor, Tensor]], test: Split, info: DatasetInfo, *,
               classifier_fn: Callable[[Dataset], nn.Module]) -> pd.DataFrame:
    """"Train on synthetic, test on real": accuracy on the real `test` split of a classifier trained on each source.

    `classifier_fn(dataset)` returns a classifier trained on `dataset.train` with `test_accuracy` measured
    on `dataset.test` (e.g. aestudy.classifier.get_classifier). Columns: source, train_images,
    label_entropy_bits (log2 10 ≈ 3.32 = balanced classes), test_accuracy.
    """
    rows = []
    for name, (images, labels) in sources.items():
        classifier = classifier_fn(synthetic_dataset(images, labels, test, info, name=name))
        share = torch.bincount(labels.long(), minlength=info.num_classes).double() / len(labels)
        entropy = float(-(share[share > 0] * share[share > 0].log2()).sum())
        rows.append({"source": name, "train_images": len(labels), "label_entropy_bits": entropy,
                     "test_accuracy": float(classifier.test_accuracy)})
    return pd.DataFrame(rows).set_index("source")


# --- 5. uncertainty ---------------------------------------------------------------------------------------

@torch.no_grad()
def posterior_variance(model: nn.Module, images: Tensor, *, dims: Tensor | None = None,
                       batch_size: int = 1000) -> Tensor:
    """Mean posterior variance σ²_d(x) over latent dimensions `dims` (all when None), latent units², (N,)."""
    if not getattr(model, "is_variational", False):
        raise ConfigError("posterior_variance needs a variational model (kind='vae'); an AE has no q(z|x) variance.")
    model.eval()
    device = _device(model)
    parts = []
    for s in range(0, images.shape[0], batch_size):
        var = model.encode(images[s:s + batch_size].to(device)).logvar.exp().cpu()  # (B, D)
        parts.append((var if dims is None else var[:, dims]).mean(dim=1))
    return torch.cat(parts)


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
            "recon_mse": mse_per_image(x, _reconstruct(model, x)).numpy(),
        }))
    return pd.concat(frames, ignore_index=True)
