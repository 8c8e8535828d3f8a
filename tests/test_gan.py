"""The DCGAN: shapes and range, architecture sizes, determinism, the cache, learning a toy distribution, bad input."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch

from aestudy import data
from aestudy.errors import ConfigError, TrainingDivergedError
from aestudy.gan import Discriminator, GANConfig, Generator, fit_gan, num_halvings

FAST = {"latent_dim": 8, "width": 8, "batch_size": 32, "progress": False, "device": "cpu"}


def _dataset(images: torch.Tensor) -> data.Dataset:
    info = data.DatasetInfo("toy", tuple(images.shape[1:]), 2, ("a", "b"), "memory", "none", "n/a")
    split = data.Split(images, torch.zeros(len(images), dtype=torch.int64))
    return data.Dataset(split, split, split, info, None)


def _half_bright(n: int = 256, side: int = 16, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Toy data: the left half near 0.9, the right half near 0.1 (small uniform noise), (n, C, side, side)."""
    noise = torch.rand((n, channels, side, side), generator=torch.Generator().manual_seed(seed)) * 0.1
    x = torch.full((n, channels, side, side), 0.05)
    x[..., : side // 2] = 0.85
    return x + noise


@pytest.mark.parametrize(("shape", "halvings"), [((1, 28, 28), 2), ((3, 32, 32), 2), ((3, 64, 64), 3),
                                                  ((1, 16, 16), 1)])
def test_shapes_and_range(shape, halvings):
    assert num_halvings(shape[1]) == halvings
    gen, disc = Generator(shape, 8, 8), Discriminator(shape, 8)
    images = gen.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, *shape) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert disc(images * 2 - 1).shape == (5,)
    assert gen.sample(0).shape == (0, *shape)


@pytest.mark.parametrize("side", [8, 30, 7])
def test_unsupported_sides_are_refused(side):
    with pytest.raises(ConfigError, match=rf"^image side={side} is invalid; the GAN needs a square image whose side"):
        num_halvings(side)


def test_determinism_and_cache(tmp_path):
    toy = _dataset(_half_bright(64))
    cfg = GANConfig(epochs=2, seed=3, **FAST)
    first = fit_gan(cfg, toy, cache_dir=tmp_path / "a")
    second = fit_gan(cfg, toy, cache_dir=tmp_path / "b")  # trained again from scratch, elsewhere
    assert not first.from_cache and not second.from_cache
    draw = lambda result: result.sample(6, generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert torch.equal(draw(first), draw(second))
    pd.testing.assert_frame_equal(first.history.drop(columns=["seconds", "samples_per_s"]),
                                  second.history.drop(columns=["seconds", "samples_per_s"]))
    assert list(first.history.columns) == ["epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds",
                                           "samples_per_s"]
    assert first.history["epoch"].tolist() == [1, 2]
    hit = fit_gan(GANConfig(epochs=2, seed=3, **{**FAST, "progress": True}), toy, cache_dir=tmp_path / "a")
    assert hit.from_cache and hit.key == first.key and torch.equal(draw(hit), draw(first))
    pd.testing.assert_frame_equal(hit.history, first.history)
    other = fit_gan(GANConfig(epochs=2, seed=4, **FAST), toy, cache_dir=tmp_path / "a")
    assert other.key != first.key and not torch.equal(draw(other), draw(first))


def test_corrupted_checkpoint_is_retrained(tmp_path):
    toy = _dataset(_half_bright(32))
    cfg = GANConfig(epochs=1, **FAST)
    first = fit_gan(cfg, toy, cache_dir=tmp_path)
    path = tmp_path / f"{first.key}.pt"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="Deleting .* and retraining"):
        again = fit_gan(cfg, toy, cache_dir=tmp_path)
    assert not again.from_cache and torch.equal(again.sample(3, generator=torch.Generator().manual_seed(1)),
                                                first.sample(3, generator=torch.Generator().manual_seed(1)))


def test_training_moves_samples_toward_the_data(tmp_path):
    images = _half_bright(256)
    toy = _dataset(images)
    target = images.mean(dim=0)  # (1, 16, 16): bright left, dark right

    def distance(result) -> float:
        samples = result.sample(256, generator=torch.Generator().manual_seed(0))
        return float((samples.mean(dim=0) - target).abs().mean())

    before = distance(fit_gan(GANConfig(epochs=0, **FAST), toy, cache_dir=tmp_path))
    after = fit_gan(GANConfig(epochs=15, lr=1e-3, **FAST), toy, cache_dir=tmp_path)
    assert distance(after) < before / 3
    samples = after.sample(256, generator=torch.Generator().manual_seed(0))
    assert samples[..., :8].mean() > samples[..., 8:].mean() + 0.4  # the structure, not only the mean grey level


def test_colour_images_train(tmp_path):
    result = fit_gan(GANConfig(epochs=1, **FAST), _dataset(_half_bright(32, side=32, channels=3)), cache_dir=tmp_path)
    assert result.sample(4).shape == (4, 3, 32, 32)


def test_divergence_is_an_error_and_not_cached(tmp_path):
    data = _dataset(_half_bright(32))
    data.train.images[0, 0, 0, 0] = float("nan")  # after construction: a NaN pixel at the door is refused earlier
    with pytest.raises(TrainingDivergedError, match=r"^GAN training diverged at epoch 1, step 1 of 1: d_loss = nan"):
        fit_gan(GANConfig(epochs=1, **{**FAST, "batch_size": 64}), data, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.pt"))


def test_config_validation():
    with pytest.raises(ConfigError, match=r"^epochs=-1 is invalid; it must be an integer >= 0\.$"):
        GANConfig(epochs=-1)
    with pytest.raises(ConfigError, match=r"^beta1=1\.0 is invalid; it must be a finite number in \[0, 1\)\.$"):
        GANConfig(beta1=1.0)
    with pytest.raises(ConfigError, match=r"^lr=0\.0 is invalid; it must be a finite number > 0\.$"):
        GANConfig(lr=0.0)
    with pytest.raises(ConfigError, match=r"^device='tpu' is invalid; valid values: "):
        GANConfig(device="tpu")
    with pytest.raises(ConfigError, match=r"^image shape=\(1, 28, 32\) is invalid; the GAN needs square"):
        fit_gan(GANConfig(**FAST), _dataset(torch.rand(4, 1, 28, 32)))
    assert GANConfig(latent_dim=__import__("numpy").int64(4)).latent_dim.__class__ is int
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GANConfig().lr == 2e-4 and GANConfig().beta1 == 0.5  # DCGAN's Adam settings
