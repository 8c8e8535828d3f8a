"""The per-dataset domain classifier whose features score generated images ("FID-FMNIST" and friends).

Inception weights cannot be downloaded here, so sample quality is measured in the 128-d penultimate
features of a small CNN trained on the same dataset: the Fréchet distance in that space is "FID-FMNIST"
on Fashion-MNIST (not comparable with Inception FIDs from papers). One classifier is trained per
`Dataset.fingerprint` and cached as a checksummed checkpoint next to the models (`aestudy.cache`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import aestudy
from aestudy import cache
from aestudy.config import resolve_device
from aestudy.data import Dataset, require_labels
from aestudy.errors import TrainingDivergedError
from aestudy.progress import progress as progress_bar
from aestudy.validate import as_bool, as_int, is_int, require

# Bump when the architecture or the training recipe changes, so old cached classifiers are not reused.
ARCH_VERSION = 1
DEFAULT_EPOCHS = 3
BATCH_SIZE = 128
LR = 1e-3
FEATURE_DIM = 128


class DomainClassifier(nn.Module):
    """A small CNN: conv32/2 → conv64/2 → (adaptive pool to 7×7) → fc128 → fc num_classes (ReLUs between).

    Adaptive pooling makes any input size work (28×28 is the design size, where it is the identity; 8×8
    digits reach it as a 2×2 grid that is repeated to 7×7). `test_accuracy` is set after training.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        channels = input_shape[0]
        require(is_int(num_classes) and num_classes >= 2, "num_classes", num_classes,
                "a classifier needs an integer number of classes >= 2")
        num_classes = int(num_classes)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.test_accuracy: float | None = None
        self.trunk = nn.Sequential(
            # Strided convs rather than conv + max-pool: 4x cheaper on a CPU, about as accurate here.
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),  # 28x28 -> 14x14
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 14x14 -> 7x7
            nn.AdaptiveAvgPool2d(7), nn.Flatten(),  # any side -> 7x7, (N, 64 * 7 * 7)
            nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def _device(self) -> torch.device:
        return self.head.weight.device

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (N, 128), the space FID-FMNIST and precision/recall use."""
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, images: Tensor, *, batch_size: int = 500) -> Tensor:
        """Features of many images, batched without gradients, (N, 128) on the CPU."""
        self.eval()
        return torch.cat([self.features(images[s:s + batch_size].to(self._device())).cpu()
                          for s in range(0, images.shape[0], batch_size)])

    @torch.no_grad()
    def predict_proba(self, images: Tensor, *, batch_size: int = 500) -> Tensor:
        """Class probabilities (N, num_classes) on the CPU."""
        self.eval()
        return torch.cat([F.softmax(self(images[s:s + batch_size].to(self._device())), dim=1).cpu()
                          for s in range(0, images.shape[0], batch_size)])

    @torch.no_grad()
    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Share of images whose most probable class is the label."""
        return float((self.predict_proba(images).argmax(dim=1) == labels.cpu()).double().mean())


def _train(data: Any, epochs: int, seed: int, device: torch.device, progress: bool
           ) -> tuple[DomainClassifier, pd.DataFrame]:
    """Adam on the training split (shuffled index slices); returns the model and a per-epoch history."""
    images, labels = data.train.images, data.train.labels
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = DomainClassifier(tuple(images.shape[1:]), int(data.info.num_classes)).to(device)
    x_all, y_all = images.to(device), labels.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    shuffler = torch.Generator().manual_seed(seed)
    n, rows = x_all.shape[0], []
    bar = progress_bar(range(epochs), desc="domain classifier", enabled=progress, unit="epoch")
    for epoch in bar:
        model.train()
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(n, generator=shuffler).to(device).split(BATCH_SIZE):
            logits = model(x_all[idx])
            loss = F.cross_entropy(logits, y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(dim=1) == y_all[idx]).sum())
        rows.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "train_accuracy": correct / n,
                     "seconds": time.perf_counter() - start})
        if not math.isfinite(rows[-1]["train_loss"]):
            bar.close()
            raise TrainingDivergedError(f"The domain classifier diverged in epoch {epoch + 1} (loss not finite); "
                                        "nothing was cached. Check the training images (finite, in [0, 1]).")
        bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", acc=f"{rows[-1]['train_accuracy']:.3f}")
    bar.close()
    model.eval()
    return model, pd.DataFrame(rows)


def classifier_key(data: Any, *, epochs: int, seed: int) -> str:
    """Cache key of the classifier for this data, recipe and aestudy version."""
    payload = {"what": "domain-classifier", "arch_version": ARCH_VERSION, "fingerprint": data.fingerprint,
               "epochs": epochs, "seed": seed, "batch_size": BATCH_SIZE, "lr": LR,
               "version": aestudy.__version__}
    return "classifier-" + cache.hash_key(payload)


def _from_record(record: dict[str, Any], device: torch.device) -> DomainClassifier:
    config = record["config"]
    model = DomainClassifier(tuple(config["input_shape"]), int(config["num_classes"]))
    model.load_state_dict(record["state_dict"])
    model.test_accuracy = config["test_accuracy"]
    return model.to(device).eval()


def get_classifier(data: Any, *, epochs: int | None = None, seed: int = 0,
                   cache_dir: str | None = None, device: str = "auto",
                   progress: bool = True) -> DomainClassifier:
    """The domain classifier for `data` (an aestudy.data.Dataset): loaded from the cache, else trained.

    Training: `epochs` (default 3) of Adam (lr 1e-3, batch 128) on the training split; accuracy on the test
    split is stored in `test_accuracy`. A corrupted cached file is reported (warning), deleted and retrained;
    an intact one refused by `torch.load(weights_only=True)` is moved aside (`cache.discard`) and retrained.
    It learns the splits as stored: grey training images unless binarize="static", and with any
    binarization a binarized test split (so `test_accuracy` is then measured on binary images); the
    fingerprint keeps classifiers for differently prepared data apart.

    Raises:
        ConfigError: `data` without labels (use `aestudy.ae_features`, FID-AE, for unlabelled data), bad options.
    """
    require(isinstance(data, Dataset), "data", type(data).__name__, "it must be an aestudy.data.Dataset")
    require_labels(data, "classifier.get_classifier (the domain classifier behind FID-FMNIST)")
    epochs = as_int(epochs, "epochs", low=1, allow_none=True, none_means=f"default {DEFAULT_EPOCHS}")
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    seed = as_int(seed, "seed", low=0)
    progress = as_bool(progress, "progress")
    target = resolve_device(device)
    key = classifier_key(data, epochs=epochs, seed=seed)

    def build() -> tuple[DomainClassifier, cache.Checkpoint]:
        model, history = _train(data, epochs, seed, target, progress)
        model.test_accuracy = model.accuracy(data.test.images, data.test.labels)
        config = {"input_shape": list(model.input_shape), "num_classes": model.num_classes, "epochs": epochs,
                  "seed": seed, "fingerprint": data.fingerprint, "test_accuracy": model.test_accuracy}
        return model, cache.Checkpoint(model.state_dict(), config, history)

    model, _ = cache.load_or_build(key, load=lambda record, _path: _from_record(record, target), build=build,
                                   what="the domain classifier", cache_dir=cache_dir)
    return model


