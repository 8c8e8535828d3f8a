"""The models several notebooks share, defined once so that one edit changes them everywhere.

Notebook 02's main VAE is notebook 03's VAE (first seed) and notebook 04's likelihood model; notebooks 01, 03
and 04 score samples with one domain classifier. Each is trained through the checkpoint cache, so the first
notebook that needs it trains it and the others load it — as long as they ask for the same configuration,
which is what this module guarantees (the `epochs` parameter, when given, applies to the reference VAE in
every notebook alike).
"""

from __future__ import annotations

from aestudy.classifier import DomainClassifier, get_classifier
from aestudy.data import Dataset
from aestudy.models import ModelConfig
from aestudy.study import Study, sized
from aestudy.train import TrainResult, train_or_load

SIZES = {
    "vae_epochs": (1, 10, 50),  # the reference VAE's training epochs
    "classifier_epochs": (1, 3, 5),  # the domain classifier whose features give FID-FMNIST
}


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
    """
    epochs = sized(study.profile, SIZES)["classifier_epochs"]
    return get_classifier(grey, epochs=epochs, seed=study.seed, device=study.config.device, progress=progress).cpu()
