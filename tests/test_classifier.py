"""The domain classifier: learns Fashion-MNIST from a small slice, is cached per data fingerprint, and
scores generated images in its feature space."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from aestudy import classifier as clf
from aestudy import generation
from aestudy.data import Dataset, DatasetInfo, Split
from aestudy.errors import ConfigError

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs Fashion-MNIST in /usr/share/datasets")


def _read(prefix: str, n: int) -> Split:
    """The first n images and labels of an IDX pair, read directly (fast: only n records are decoded)."""
    with gzip.open(FMNIST / f"{prefix}-images-idx3-ubyte.gz") as f:
        f.read(16)
        images = np.frombuffer(f.read(n * 784), np.uint8).reshape(n, 1, 28, 28)
    with gzip.open(FMNIST / f"{prefix}-labels-idx1-ubyte.gz") as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), np.uint8)
    return Split(torch.from_numpy(images.astype(np.float32) / 255), torch.from_numpy(labels.astype(np.int64)))


def _dataset(n_train: int, n_test: int) -> Dataset:
    train, test = _read("train", n_train), _read("t10k", n_test)
    info = DatasetInfo("fashion-mnist", (1, 28, 28), 10, tuple(map(str, range(10))), str(FMNIST), "slice", "MIT")
    return Dataset(train, Split(train.images[:10], train.labels[:10]), test, info, None)  # fingerprint = content


@pytest.fixture(scope="module")
def data():
    return _dataset(2000, 1000)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def trained(data, cache_dir):
    return clf.get_classifier(data, epochs=1, cache_dir=cache_dir, device="cpu", progress=False)


def test_one_epoch_on_2000_images_beats_chance_clearly(trained, data):
    assert trained.test_accuracy == trained.accuracy(data.test.images, data.test.labels)
    assert trained.test_accuracy > 0.5  # chance is 0.1


def test_second_call_is_a_cache_hit(trained, data, cache_dir, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a valid checkpoint exists")

    monkeypatch.setattr(clf, "_train", no_training)
    again = clf.get_classifier(data, epochs=1, cache_dir=cache_dir, device="cpu", progress=False)
    assert again.test_accuracy == trained.test_accuracy
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0)
    assert clf.classifier_key(data, epochs=1, seed=0) != clf.classifier_key(data, epochs=2, seed=0)
    assert clf.classifier_key(data, epochs=1, seed=0) != clf.classifier_key(_dataset(2001, 1000), epochs=1, seed=0)


def test_corrupted_checkpoint_is_reported_and_retrained(tmp_path):
    small = _dataset(200, 100)
    first = clf.get_classifier(small, epochs=1, cache_dir=tmp_path, device="cpu", progress=False)
    path = next(tmp_path.glob("classifier-*.pt"))
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.warns(UserWarning, match=r"unreadable .* Deleting .* and retraining the domain classifier\.$"):
        second = clf.get_classifier(small, epochs=1, cache_dir=tmp_path, device="cpu", progress=False)
    # same seed, same data -> the retrained classifier is the same one
    assert second.test_accuracy == first.test_accuracy
    assert clf.get_classifier(small, epochs=1, cache_dir=tmp_path, device="cpu", progress=False).test_accuracy == (
        first.test_accuracy)


def test_features_probabilities_and_small_inputs(trained, data):
    x = data.test.images[:7]
    assert trained.features(x).shape == trained.embed(x, batch_size=3).shape == (7, clf.FEATURE_DIM)
    probs = trained.predict_proba(x, batch_size=3)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(7))
    digits = clf.DomainClassifier((1, 8, 8), 10)  # adaptive pooling takes 8x8 inputs too
    assert digits.embed(torch.rand(5, 1, 8, 8)).shape == (5, clf.FEATURE_DIM)


def test_generation_scores_rank_real_above_noise(trained, data):
    real, held_out = data.test.images[:500], data.test.images[500:]
    same = generation.generation_scores(trained, real, real.clone(), batch_size=128)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert (same["precision"], same["recall"]) == (1.0, 1.0)
    top = trained.predict_proba(real).max(dim=1).values.double().mean().item()
    assert same["confidence"] == pytest.approx(top)
    fresh = generation.generation_scores(trained, real, held_out)
    noise_images = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise = generation.generation_scores(trained, real, noise_images)
    assert 0 < fresh["fid"] < noise["fid"] / 10
    assert fresh["precision"] > 0.5 > noise["precision"]


def test_invalid_arguments_name_the_parameter(data):
    with pytest.raises(ConfigError, match="epochs=0 is invalid"):
        clf.get_classifier(data, epochs=0, progress=False)
    with pytest.raises(ConfigError, match="num_classes=1 is invalid"):
        clf.DomainClassifier((1, 28, 28), 1)
