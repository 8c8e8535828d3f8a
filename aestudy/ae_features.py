"""A label-free feature space for FID-style scores: the codes of an autoencoder trained on the data ("FID-AE").

FID-FMNIST and friends (`aestudy.classifier`) measure sample quality in the penultimate features of a domain
classifier, which needs class labels. For unlabelled data (`DatasetInfo.labelled` False, e.g. a folder of your
own images without class sub-folders) the features come instead from the encoder of a small convolutional
autoencoder trained on the same training split without labels: the 128-d code z = enc(x). Fréchet distances and
precision/recall in that space ("FID-AE") rank generators on the same data, but they are NOT comparable with
FID-FMNIST (another feature space) nor with published Inception FIDs. There is no classifier confidence: the
`confidence` score of `generation.generation_scores` is NaN for this extractor.

The autoencoder is trained through `aestudy.train.train_or_load`, so it is cached by the data fingerprint like
every model, and it uses its own seed stream (`seed + SEED_OFFSET`) so that it is never the very network whose
samples it scores. Sources: Heusel et al. 2017 (FID); Kynkäänniemi et al. 2019 (precision/recall).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aestudy.data import Dataset
from aestudy.models import AE, ModelConfig
from aestudy.train import TrainConfig, train_or_load
from aestudy.validate import as_int

FEATURE_DIM = 128  # as the domain classifier's features
CHANNELS = (32, 64)  # conv channels: 32x32 -> 16x16 -> 8x8 (28x28 -> 14x14 -> 7x7)
DEFAULT_EPOCHS = 5
SEED_OFFSET = 7919  # a seed stream of its own, apart from the study's model seeds
METRIC_NAME = "FID-AE"
DESCRIPTION = (f"Fréchet distance in the {FEATURE_DIM}-d codes of a conv autoencoder trained on this data without "
               "labels; not comparable with FID-FMNIST (domain-classifier features) nor with Inception FIDs")


class AEFeatureExtractor(nn.Module):
    """The encoder of a trained AE as a feature map: `features(x)` / `embed(images)` -> (N, FEATURE_DIM) codes.

    Same interface as `aestudy.classifier.DomainClassifier` for `metrics.frechet_distance`,
    `metrics.precision_recall` and `generation.generation_scores` (`embed`), without `predict_proba`
    (there are no classes). `val_loss` is the autoencoder's validation loss (nats per image; NaN without a
    validation split), a check that it learned the data.
    """

    metric_name = METRIC_NAME
    description = DESCRIPTION

    def __init__(self, autoencoder: AE, *, val_loss: float = float("nan")) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval()
        self.input_shape = tuple(autoencoder.config.input_shape)
        self.feature_dim = autoencoder.config.latent_dim
        self.val_loss = val_loss

    def _device(self) -> torch.device:
        return self.autoencoder.encoder.head.weight.device

    def features(self, x: Tensor) -> Tensor:
        """Codes z = enc(x), (N, feature_dim), for images (N, C, H, W) in [0, 1] on the model's device."""
        return self.autoencoder.encode(x).mu

    @torch.no_grad()
    def embed(self, images: Tensor, *, batch_size: int = 500) -> Tensor:
        """Features of many images, batched without gradients, (N, feature_dim) float32 on the CPU."""
        self.eval()
        if images.shape[0] == 0:
            return torch.zeros((0, self.feature_dim))
        return torch.cat([self.features(images[s:s + batch_size].to(self._device())).float().cpu()
                          for s in range(0, images.shape[0], batch_size)])


def feature_model_config(data: Dataset) -> ModelConfig:
    """The autoencoder behind FID-AE for `data`: conv, Bernoulli decoder, FEATURE_DIM-d code."""
    return ModelConfig(kind="ae", arch="conv", input_shape=tuple(data.info.shape), latent_dim=FEATURE_DIM,
                       likelihood="bernoulli", channels=CHANNELS)


def feature_extractor_from_autoencoder(data: Dataset, *, epochs: int | None = None, seed: int = 0,
                                       device: str = "auto", cache_dir: str | None = None,
                                       progress: bool = True) -> AEFeatureExtractor:
    """Train (or load from the model cache) the FID-AE autoencoder on `data.train`, without labels.

    Args:
        data: any Dataset (labelled or not; labels are never read), images (N, C, H, W) in [0, 1].
        epochs: Adam epochs (lr 1e-3, batch 128); None = DEFAULT_EPOCHS (5).
        seed: the study seed; the autoencoder trains with `seed + SEED_OFFSET`.

    Returns:
        An `AEFeatureExtractor` on `device` (eval mode).

    Raises:
        ConfigError: a bad `epochs`, `seed` or `device`; DataError: an empty training split.
    """
    epochs = as_int(epochs, "epochs", low=1, allow_none=True, none_means=f"default {DEFAULT_EPOCHS}")
    seed = as_int(seed, "seed", low=0)
    train_cfg = TrainConfig(epochs=DEFAULT_EPOCHS if epochs is None else epochs, seed=seed + SEED_OFFSET,
                            device=device, progress=progress)
    result = train_or_load(feature_model_config(data), train_cfg, data, cache_dir=cache_dir)
    val_loss = float(result.history["val_loss"].iloc[-1]) if len(result.history) else float("nan")
    return AEFeatureExtractor(result.model, val_loss=val_loss)
