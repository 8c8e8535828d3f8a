"""The models several notebooks share, defined once so that one edit changes them everywhere.

Notebook 02's main VAE is notebook 03's VAE (first seed) and notebook 04's likelihood model; notebooks 01, 03
and 04 score samples with one domain classifier. Each is trained through the checkpoint cache, so the first
notebook that needs it trains it and the others load it — as long as they ask for the same configuration,
which is what this module guarantees (the `epochs` parameter, when given, applies to the reference VAE in
every notebook alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aestudy import ae_features, imagefiles
from aestudy.classifier import DomainClassifier, get_classifier
from aestudy.data import Dataset
from aestudy.models import ModelConfig
from aestudy.study import Study, sized
from aestudy.train import TrainResult, train_or_load

SIZES = {
    # Training images of every notebook's shown models, the reference VAE among them (the same in every notebook, so
    # the cache shares them). `standard` uses 20,000 of the 55,000 (issue 13: the series in 20 minutes on a 2-core
    # CPU; the shown models were 40 % of its cost). No claim rests on them: every examined claim rests on seed
    # replicates with their own sizes. `full` uses all.
    "limit": (2000, 20000, None),
    # The reference VAE's training epochs (and those of every shown model beside it in 03 and 05). 8 in `standard`
    # (10 until issue 13's cold series ran 20 min 53 s with them; 8 saves ~90 s on the series' critical path).
    "vae_epochs": (1, 8, 50),
    "classifier_epochs": (1, 3, 5),  # the domain classifier whose features give FID-FMNIST
    "feature_epochs": (1, 5, 10),  # the FID-AE autoencoder (unlabelled data: no domain classifier)
}
NO_LABELS = "this dataset has no labels"
SKIP_NOTE = f"skipped: {NO_LABELS}"  # the one visible note of a section that needs labels
CLASSIFIER_ONLY = ("confidence", "holes", "path_realism")  # measured values that need a classifier's probabilities
# The seed of the rulers (the domain classifier behind FID-FMNIST, the autoencoder behind FID-AE), whatever the run's
# `seed`: a ruler is part of the measurement, not of the models measured. Trained with the run seed, every FID moved
# by about 15 between `-p seed 0` and `-p seed 1`, and `aestudy compare` mixed that change with the models' own.
RULER_SEED = 0


def mlp_config(study: Study, data: Dataset, kind: str, **extra: object) -> ModelConfig:
    """The series' MLP AE/VAE (784 → 512 → 256 → d and back) with a Bernoulli decoder (notebooks 02–04)."""
    return ModelConfig(kind=kind, arch="mlp", latent_dim=study.config.latent_dim, likelihood="bernoulli",
                       input_shape=data.info.shape, **extra)


def vae_epochs(study: Study) -> int:
    """The reference VAE's epochs: the `epochs` parameter when given, else the profile's default."""
    return study.config.epochs_or(sized(study.profile, SIZES)["vae_epochs"])


def reference_vae(study: Study, binary: Dataset, *, beta: float = 1.0) -> TrainResult:
    """The reference VAE (notebook 02, section 6): MLP, Bernoulli decoder, dynamically binarized data.

    `beta` is notebook 02's parameter (1 = the ELBO): the VAE that notebooks 03 and 04 reuse is the β = 1 one.
    """
    cfg = study.train_config(epochs=vae_epochs(study), beta=beta)
    return train_or_load(mlp_config(study, binary, "vae"), cfg, binary)


def domain_classifier(study: Study, grey: Dataset, *, progress: bool = True) -> DomainClassifier:
    """The domain classifier of `grey` (its penultimate features give FID-FMNIST), on the CPU.

    Also the classifier that "train on synthetic, test on real" trains on each synthetic set (notebook 04).
    Trained with `RULER_SEED`, not the run's seed, so runs under different seeds measure with one ruler.
    """
    epochs = sized(study.profile, SIZES)["classifier_epochs"]
    return get_classifier(grey, epochs=epochs, seed=RULER_SEED, device=study.config.device, progress=progress).cpu()


def has_labels(data: Dataset) -> bool:
    """Whether the notebook's data has class labels: the one test deciding which sections run (your own images
    without class sub-folders have none; every section that needs labels is then skipped with `SKIP_NOTE`)."""
    return data.info.labelled


def skip_without_labels(study: Study, data: Dataset, what: str, claim_ids: tuple[str, ...] = ()) -> bool:
    """True when `data` has labels (run the section). Otherwise print "skipped: this dataset has no labels — `what`",
    record `claim_ids` as skipped (`Study.skip`, shown by the report) and return False."""
    return run_unless(study, not has_labels(data), NO_LABELS, what, claim_ids)


def run_unless(study: Study, skip: bool, reason: str, what: str, claim_ids: tuple[str, ...] = ()) -> bool:
    """False (and a printed "skipped: `reason` — `what`" note, `claim_ids` recorded as skipped) when `skip`, else
    True: the one way a notebook section says it did not run."""
    if not skip:
        return True
    claims = f" (claims not recorded: {', '.join(claim_ids)})" if claim_ids else ""
    print(f"skipped: {reason} — {what}{claims}")
    if claim_ids:
        study.skip(claim_ids, reason)
    return False


def feature_space(study: Study, grey: Dataset, *, progress: bool = True) -> Any:
    """The feature map behind the FID-style scores: the domain classifier (FID-FMNIST) for labelled data, else the
    encoder of a conv AE trained on the data without labels (`aestudy.ae_features`, FID-AE — not comparable with
    FID-FMNIST). Records metric `fid_features` (name, description) for the report."""
    name = fid_label(grey)
    if has_labels(grey):
        extractor: Any = domain_classifier(study, grey, progress=progress)
        description = "Fréchet distance in the penultimate features of a domain classifier trained on the labels"
    else:
        extractor = ae_features.feature_extractor_from_autoencoder(
            grey, epochs=sized(study.profile, SIZES)["feature_epochs"], seed=RULER_SEED, device=study.config.device,
            progress=progress).cpu()
        description = ae_features.DESCRIPTION  # says: not comparable with FID-FMNIST
        for prefix in CLASSIFIER_ONLY:  # scores that need class probabilities are NaN in FID-AE's feature space
            study.unavailable[prefix] = f"{NO_LABELS}: no classifier"
    study.metric("fid_features", {"name": name, "description": description})
    return extractor


def fid_label(grey: Dataset) -> str:
    """The name of the run's FID scores: FID-FMNIST, "FID (<dataset> classifier)", or FID-AE without labels."""
    if not has_labels(grey):
        return ae_features.METRIC_NAME
    name = grey.info.name
    short = Path(name).name or name if imagefiles.is_path(name) else name  # a folder: its own name, not the path
    return "FID-FMNIST" if name == "fashion-mnist" else f"FID ({short} classifier)"


def feature_note(extractor: Any) -> str:
    """One line saying what the sample scores are measured in (and the classifier's accuracy when it has one)."""
    if isinstance(extractor, DomainClassifier):
        return f"domain classifier test accuracy: {extractor.test_accuracy:.3f}"
    return (f"no labels: sample scores use {ae_features.METRIC_NAME} (a conv AE's codes, validation loss "
            f"{extractor.val_loss:.1f} nats / image) — not comparable with FID-FMNIST")
