"""Generation: samplers (the prior, ex-post code densities), decoding codes to images, and scoring samples.

An ex-post density (Ghosh et al. 2020) is a *sampler* fitted to any autoencoder's codes after training, kept
apart from models and trainers (as pythae's `samplers/`). Samples are scored in the feature space of the domain
classifier (FID-FMNIST, precision/recall, confidence) and by training a classifier on them (TSTR).
Taught in notebook 01 section 3 (decoding N(0, I) with an AE), notebook 03 section 2 and notebook 04 section 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from aestudy.data import Dataset, DatasetInfo, Split, require_labels
from aestudy.errors import ConfigError
from aestudy.evaluation import encode_means, evaluating, generator_on, model_device
from aestudy.metrics import frechet_distance, precision_recall
from aestudy.validate import as_choice, as_int

if TYPE_CHECKING:
    from aestudy.classifier import DomainClassifier
    from aestudy.train import TrainResult

PRIOR = "prior N(0, I)"  # the source label of samples decoded from z ~ N(0, I)


DENSITY_KINDS: tuple[str, ...] = ("gaussian", "gmm")


DecodeFn = Callable[[Tensor], Tensor]


def decoder_fn(model: nn.Module) -> DecodeFn:
    """z (M, D) -> decoder-mean images (M, C, H, W) in [0, 1] on the CPU (for samplers, plots and widgets).

    Each call runs in eval mode without gradients and restores the model's mode afterwards.
    """
    def decode(z: Tensor) -> Tensor:
        with evaluating(model):
            return model.decode_mean(z.to(device=model_device(model), dtype=torch.float32)).cpu()

    return decode


def code_box_uniform(codes: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
    """n points uniform over the bounding box of `codes` (N, D)."""
    lo, hi = codes.min(dim=0).values, codes.max(dim=0).values
    return lo + (hi - lo) * torch.rand((n, codes.shape[1]), generator=generator)


@dataclass(frozen=True, eq=False)
class CodeDensity:
    """A Gaussian mixture over codes (ex-post density, Ghosh et al. 2020): weights (K,), means (K, D), Σ (K, D, D)."""

    weights: Tensor
    means: Tensor
    covariances: Tensor

    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """n codes (n, D) float32: a component by weight, then its mean + temperature · chol(Σ) ε."""
        n = as_int(n, "n", low=1)
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        chol = torch.linalg.cholesky(self.covariances)  # (K, D, D)
        eps = torch.randn((n, self.means.shape[1], 1), generator=generator, dtype=chol.dtype)
        return (self.means[component] + temperature * (chol[component] @ eps).squeeze(-1)).float()


def fit_code_density(codes: Tensor, *, kind: str = "gmm", n_components: int = 10, seed: int = 0,
                     max_points: int = 20000) -> CodeDensity:
    """A full-covariance Gaussian ("gaussian") or an `n_components` GMM ("gmm", scikit-learn EM) of codes (N, D)."""
    as_choice(kind, "kind", DENSITY_KINDS)
    x = codes[:max_points].detach().cpu().double().numpy()
    if kind == "gaussian":
        cov = np.atleast_2d(np.cov(x, rowvar=False))
        return CodeDensity(torch.ones(1, dtype=torch.float64), torch.from_numpy(x.mean(axis=0))[None],
                           torch.from_numpy(cov)[None])
    n_components = as_int(n_components, "n_components", low=1, high=len(x), meaning="the number of codes")
    gmm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed).fit(x)
    return CodeDensity(torch.from_numpy(gmm.weights_), torch.from_numpy(gmm.means_),
                       torch.from_numpy(gmm.covariances_))


def generation_scores(classifier: DomainClassifier, real: Tensor, fake: Tensor, *, batch_size: int = 500,
                      k: int = 3) -> dict[str, float]:
    """Sample-quality scores of `fake` images against `real` ones in the classifier's feature space.

    fid: Fréchet distance of the 128-d penultimate features ("FID-FMNIST" on Fashion-MNIST: a
    domain-classifier feature space, not Inception, so not comparable with published FIDs; biased at small
    n, so compare at equal n); precision, recall: Kynkäänniemi et al. 2019 with k-NN radii (k = 3);
    confidence: mean top-class probability the classifier gives the fake images, in [0, 1]; NaN for a feature
    extractor without classes (`aestudy.ae_features.AEFeatureExtractor`, "FID-AE" for unlabelled data).
    """
    real_features = classifier.embed(real, batch_size=batch_size)
    fake_features = classifier.embed(fake, batch_size=batch_size)
    precision, recall = precision_recall(real_features, fake_features, k=k)
    confidence = (classifier.predict_proba(fake, batch_size=batch_size).max(dim=1).values.double().mean()
                  if hasattr(classifier, "predict_proba") else math.nan)
    return {"fid": frechet_distance(real_features, fake_features), "precision": precision, "recall": recall,
            "confidence": float(confidence)}


def decoded_sources(model: nn.Module, images: Tensor, n: int, *, seed: int = 0) -> dict[str, Tensor]:
    """Images decoded from: encodings of real images, z ~ N(0, I), and z uniform over the codes' box."""
    gen = torch.Generator().manual_seed(seed)
    real = images[:n]
    codes = encode_means(model, images)
    decode = decoder_fn(model)
    return {
        "encoded real images": decode(codes[:n]),
        "z ~ N(0, I)": decode(torch.randn((n, codes.shape[1]), generator=gen)),
        "z ~ U(code box)": decode(code_box_uniform(codes, n, generator=gen)),
        "real images": real,
    }


def source_table(classifier: DomainClassifier, reference: Tensor, sources: Mapping[str, Tensor]) -> pd.DataFrame:
    """`generation_scores` of each named image source against `reference` images, one row per source."""
    rows = [{"source": name, **generation_scores(classifier, reference, images)} for name, images in sources.items()]
    return pd.DataFrame(rows).set_index("source")


def generation_sources(model: nn.Module, n: int, *, seed: int = 0, fit_inputs: Tensor | None = None,
                       n_components: int = 10, temperature: float = 1.0) -> dict[str, Tensor]:
    """Decoded samples (n, C, H, W) from N(0, I), and, given `fit_inputs`, from densities fitted to their codes."""
    gen = torch.Generator().manual_seed(seed)
    sources = {PRIOR: model.sample(n, generator=gen, temperature=temperature).cpu()}
    if fit_inputs is not None:
        codes = encode_means(model, fit_inputs)
        decode = decoder_fn(model)
        for label, kind in (("Gaussian ex post", "gaussian"), ("GMM ex post", "gmm")):
            density = fit_code_density(codes, kind=kind, n_components=n_components, seed=seed)
            sources[label] = decode(density.sample(n, generator=gen, temperature=temperature))
    return sources


def generation_table(results: Mapping[tuple[str, int], TrainResult], classifier: DomainClassifier, reference: Tensor,
                     *, n: int, seed: int = 0,
                     ex_post: Sequence[str] = ("AE",), fit_inputs: Tensor | None = None,
                     n_components: int = 10) -> pd.DataFrame:
    """FID-FMNIST, precision, recall and classifier confidence of each model's samples (per model, seed, source)."""
    rows = []
    for (name, model_seed), res in results.items():
        fit = fit_inputs if name in ex_post else None
        sources = generation_sources(res.model, n, seed=seed + model_seed, fit_inputs=fit, n_components=n_components)
        table = source_table(classifier, reference, sources).reset_index()
        rows += [{"model": name, "seed": model_seed, **row} for row in table.to_dict("records")]
    return pd.DataFrame(rows)


def gap_closed(fid_baseline: float, fid_fixed: float, fid_target: float) -> float:
    """Share of the FID gap baseline → target that a fix closes: (baseline − fixed) / (baseline − target)."""
    gap = fid_baseline - fid_target
    if gap == 0:
        raise ConfigError("gap_closed is undefined when the baseline and the target have the same FID.")
    return (fid_baseline - fid_fixed) / gap


def sample_grids(models: Mapping[str, nn.Module], densities: Mapping[str, tuple[nn.Module, CodeDensity]],
                 n: int, temperature: float, *, seed: int = 0) -> dict[str, Tensor]:
    """n samples at `temperature` per prior model (z ~ N(0, t²I)) and per (model, ex-post density) pair."""
    grids = {name: model.sample(n, generator=torch.Generator().manual_seed(seed), temperature=temperature).cpu()
             for name, model in models.items()}
    for name, (model, density) in densities.items():
        z = density.sample(n, generator=torch.Generator().manual_seed(seed), temperature=temperature)
        grids[name] = decoder_fn(model)(z)
    return grids


@torch.no_grad()
def conditional_samples(model: nn.Module, n_per_class: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Prior samples of a class-conditional model, `n_per_class` of each class: (images, labels), class-major."""
    num_classes = model.config.num_classes
    if num_classes < 1:
        raise ConfigError("conditional_samples needs a class-conditional model (ModelConfig num_classes > 0).")
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    device = model_device(model)
    images = model.sample(len(labels), y=labels.to(device), generator=generator_on(seed, device))
    return images.cpu(), labels


@torch.no_grad()
def classifier_labelled_samples(model: nn.Module, classifier: nn.Module, n: int, *, seed: int = 0,
                                density: CodeDensity | None = None) -> tuple[Tensor, Tensor]:
    """`n` samples of an unconditional model, labelled by the domain classifier's most probable class.

    Codes come from the model's prior N(0, I) (a VAE) or from `density` (an ex-post density of the model's codes,
    `fit_code_density`; Ghosh et al. 2020), then pass through the decoder mean. An AE has no prior: its codes
    have an arbitrary scale, so decoding N(0, I) draws would test the wrong sampler (issue 14 (8)); it needs
    `density`.

    Raises:
        ConfigError: for a deterministic model without `density`.
    """
    n = as_int(n, "n", low=1)
    generator = generator_on(seed)
    if density is not None:
        images = decoder_fn(model)(density.sample(n, generator=generator))
    elif getattr(model, "is_variational", False):
        images = model.sample(n, generator=generator_on(seed, model_device(model))).cpu()
    else:
        raise ConfigError("classifier_labelled_samples: a deterministic AE has no prior to sample; pass "
                          "density=fit_code_density(encode_means(ae, train_images)) (the fair AE + GMM sampler).")
    return images, classifier.predict_proba(images).argmax(dim=1)


def real_subset(split: Split, n: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` real (images, labels) drawn at random without replacement."""
    order = torch.randperm(len(split), generator=generator_on(seed))[:n]
    return split.images[order], split.labels[order]


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


def tstr_results(sources: Mapping[str, tuple[Tensor, Tensor]], test: Split, info: DatasetInfo, *,
                 classifier_fn: Callable[[Dataset], nn.Module]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """"Train on synthetic, test on real": `tstr_table` plus each classifier's per-image correctness on `test`.

    Returns (table, {source: (M,) bool array, image i of `test` classified correctly}) — the per-image values
    `aestudy.stats.compare_accuracy` pairs across sources (same test images, same order).

    Raises:
        ConfigError: an unlabelled test split (accuracy on real images needs their labels).
    """
    require_labels(test, "generation.tstr_results")
    rows, correct = [], {}
    for name, (images, labels) in sources.items():
        classifier = classifier_fn(synthetic_dataset(images, labels, test, info, name=name))
        share = torch.bincount(labels.long(), minlength=info.num_classes).double() / len(labels)
        entropy = float(-(share[share > 0] * share[share > 0].log2()).sum())
        rows.append({"source": name, "train_images": len(labels), "label_entropy_bits": entropy,
                     "test_accuracy": float(classifier.test_accuracy)})
        correct[name] = (classifier.predict_proba(test.images).argmax(dim=1) == test.labels).numpy()
    return pd.DataFrame(rows).set_index("source"), correct


def tstr_table(sources: Mapping[str, tuple[Tensor, Tensor]], test: Split, info: DatasetInfo, *,
               classifier_fn: Callable[[Dataset], nn.Module]) -> pd.DataFrame:
    """"Train on synthetic, test on real": accuracy on the real `test` split of a classifier trained on each source.

    `classifier_fn(dataset)` returns a classifier trained on `dataset.train` with `test_accuracy` measured
    on `dataset.test` (e.g. aestudy.classifier.get_classifier). Columns: source, train_images,
    label_entropy_bits (log2 10 ≈ 3.32 = balanced classes), test_accuracy.
    """
    return tstr_results(sources, test, info, classifier_fn=classifier_fn)[0]
