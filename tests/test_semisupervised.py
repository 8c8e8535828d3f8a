"""M2 (Kingma et al. 2014): its losses against explicit references, the labelled subset, learning from 10 labels,
the cache, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from aestudy import data
from aestudy.errors import ConfigError, DataError
from aestudy.semisupervised import (
    M2,
    M2Config,
    balanced_labelled_subset,
    default_alpha,
    fit_m2,
    labelled_loss,
    unlabelled_loss,
)

FAST = {"latent_dim": 4, "hidden": 32, "batch_size": 20, "labelled_batch_size": 10, "progress": False,
        "device": "cpu"}


def _tiny(k: int = 3, seed: int = 0) -> tuple[M2, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = M2((1, 4, 4), k, latent_dim=3, hidden=8).double()
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4, dtype=torch.float64))
    eps = torch.randn(5, 3, dtype=torch.float64)
    return model, x, eps


def _reference_elbo(model: M2, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ELBO(x, y) from its definition, with torch.distributions: log p(x|y,z) + log p(y) − KL(q(z|x,y) ‖ N(0, I))."""
    k = model.num_classes
    onehot = F.one_hot(y, k).double()
    h = F.relu(x.flatten(1) @ model.enc_x.weight.T + model.enc_x.bias + onehot @ model.enc_y.weight.T)
    mu, logvar = model.enc_head(h).chunk(2, dim=1)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + q.scale * eps
    logits = model.decoder(torch.cat([z, onehot], dim=1))
    log_px = Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(dim=1)
    kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(dim=1)
    return log_px + math.log(1 / k) - kl


def test_labelled_loss_is_minus_elbo_plus_alpha_cross_entropy():
    model, x, eps = _tiny()
    y = torch.tensor([0, 1, 2, 1, 0])
    ce = -torch.log_softmax(model.class_logits(x), dim=1)[torch.arange(5), y]
    for alpha in (0.0, 0.1, 55.0):
        expected = -_reference_elbo(model, x, y, eps) + alpha * ce
        torch.testing.assert_close(labelled_loss(model, x, y, alpha, eps), expected)


def test_unlabelled_loss_is_the_explicit_marginalisation():
    model, x, eps = _tiny(k=4, seed=1)
    q = torch.softmax(model.class_logits(x), dim=1)  # (5, 4)
    elbos = torch.stack([_reference_elbo(model, x, torch.full((5,), c), eps) for c in range(4)], dim=1)
    entropy = -(q * q.log()).sum(dim=1)
    explicit = sum(q[:, c] * -elbos[:, c] for c in range(4)) - entropy
    torch.testing.assert_close(unlabelled_loss(model, x, eps), explicit)
    torch.testing.assert_close(model.elbo_all(x, eps), elbos)  # the vectorised path is the per-label one
    # U(x) >= −log p(x) >= 0 for binary images, and the bound: −U = E_q ELBO + H <= log Σ_y exp ELBO(x, y)
    assert (-unlabelled_loss(model, x, eps) <= torch.logsumexp(elbos, dim=1) + 1e-9).all()


def test_default_alpha_is_the_papers_weight():
    # α' = 0.1·N on E_labelled[−log q], i.e. 0.1·N / N_l per labelled image
    assert default_alpha(55000, 100) == pytest.approx(55.0)
    assert default_alpha(55000, 1000) == pytest.approx(5.5)


def test_balanced_labelled_subset():
    labels = np.repeat(np.arange(10), 50)
    idx = balanced_labelled_subset(labels, 100, seed=3)
    assert len(idx) == 100 and len(np.unique(idx)) == 100 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [10] * 10
    assert np.array_equal(idx, balanced_labelled_subset(torch.from_numpy(labels), 100, seed=3))
    assert not np.array_equal(idx, balanced_labelled_subset(labels, 100, seed=4))
    with pytest.raises(ConfigError, match=r"^n_labels=105 is invalid; it must be a multiple of the number of classes "
                                          r"\(10\) for a balanced subset\.$"):
        balanced_labelled_subset(labels, 105)
    with pytest.raises(ConfigError, match=r"^n_labels=1000 is invalid; class 0 has only 50 items, fewer than the 100"):
        balanced_labelled_subset(labels, 1000)


def _two_class(n: int = 400, seed: int = 0) -> data.Dataset:
    """Two easy classes of 8x8 images: bright left half (0) or bright right half (1); binary test/val."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    p = torch.full((n, 1, 8, 8), 0.1)
    p[labels == 0, :, :, :4] = 0.9
    p[labels == 1, :, :, 4:] = 0.9
    info = data.DatasetInfo("halves", (1, 8, 8), 2, ("left", "right"), "memory", "none", "n/a")

    def split(lo: int, hi: int, binary: bool) -> data.Split:
        images = torch.bernoulli(p[lo:hi], generator=g) if binary else p[lo:hi]
        return data.Split(images, labels[lo:hi])

    return data.Dataset(split(0, n - 200, False), split(n - 200, n - 100, True), split(n - 100, n, True), info,
                        "dynamic")


def test_ten_labels_beat_chance_and_cache(tmp_path):
    ds = _two_class()
    idx = balanced_labelled_subset(ds.train.labels, 10, seed=0)
    cfg = M2Config(epochs=15, lr=3e-3, **FAST)
    result = fit_m2(cfg, ds, idx, cache_dir=tmp_path)
    error = float((result.classify(ds.test.images) != ds.test.labels).double().mean())
    assert error < 0.1  # chance is 0.5; 100 test images
    assert result.alpha == pytest.approx(0.1 * 200 / 10)
    assert list(result.history.columns) == ["epoch", "loss", "labelled_loss", "unlabelled_loss", "cross_entropy",
                                            "val_error", "seconds"]
    samples = result.sample(0, 50, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (50, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert samples[..., :4].mean() > samples[..., 4:].mean() + 0.3  # class "left" draws bright left halves
    assert result.sample(torch.tensor([1, 1, 0])).shape == (3, 1, 8, 8)
    hit = fit_m2(cfg, ds, idx, cache_dir=tmp_path)
    assert hit.from_cache and hit.key == result.key
    pd.testing.assert_frame_equal(hit.history, result.history)
    assert torch.equal(hit.classify(ds.test.images), result.classify(ds.test.images))
    again = fit_m2(cfg, ds, idx, cache_dir=tmp_path / "other")  # same seed, trained afresh: the same model
    assert torch.equal(again.sample(1, 4, generator=torch.Generator().manual_seed(2)),
                       result.sample(1, 4, generator=torch.Generator().manual_seed(2)))
    other_labels = fit_m2(M2Config(epochs=0, **FAST), ds, idx[:4], cache_dir=tmp_path)
    assert other_labels.key != result.key


def test_bad_input_is_named(tmp_path):
    ds = _two_class(240)
    grey = data.Dataset(ds.train, ds.val, ds.test, ds.info, None)
    with pytest.raises(ConfigError, match=r"^M2 has a Bernoulli decoder, a likelihood for binary images only; load"):
        fit_m2(M2Config(**FAST), grey, [0, 1], cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^labelled_idx='2 indices in \[0, 0\]' is invalid; they must be distinct"):
        fit_m2(M2Config(**FAST), ds, [0, 0], cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"it must be a non-empty 1-D array of integer indices"):
        fit_m2(M2Config(**FAST), ds, [], cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"^every training image is labelled"):
        fit_m2(M2Config(**FAST), ds, np.arange(len(ds.train)), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^alpha=-1\.0 is invalid; it must be None \(0\.1·N / N_labelled"):
        M2Config(alpha=-1.0)
    with pytest.raises(ConfigError, match=r"^y=5 is invalid; it must be a class in \[0, 2\)"):
        fit_m2(M2Config(epochs=0, **FAST), ds, [0, 1], cache_dir=tmp_path).sample(5, 3)
    assert not list(tmp_path.glob("*.lock.tmp"))
