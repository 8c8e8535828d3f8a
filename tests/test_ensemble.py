"""fit_many: the same weights and histories as separate train_or_load calls (float tolerance), one cache entry per
model, partial cache hits, a NaN in one model stops only that one, and the fallback for configs that do not stack."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from aestudy import ensemble
from aestudy.ensemble import fit_many, stack_plan
from aestudy.errors import ConfigError, TrainingDivergedError
from aestudy.models import ModelConfig
from aestudy.noise import NoiseConfig
from aestudy.train import TrainConfig, train_or_load
from tests.test_train import toy_dataset

MLP = ModelConfig(input_shape=(1, 8, 8), hidden=(32, 16), latent_dim=3)
BASE = TrainConfig(epochs=2, batch_size=32, progress=False)
COMPARED = ["beta", "lr", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"]


def three(**overrides) -> list[TrainConfig]:
    """Three seeds with different β and lr (what a seeds protocol, a β sweep and an lr grid vary)."""
    cfg = replace(BASE, **overrides)
    return [replace(cfg, seed=0), replace(cfg, seed=1, beta=0.5, lr=3e-3), replace(cfg, seed=2, beta=2.0)]


def assert_same(batched, sequential, *, atol: float = 1e-5) -> None:
    assert batched.key == sequential.key
    state, expected = batched.model.state_dict(), sequential.model.state_dict()
    assert state.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=1e-4, atol=atol)
    assert list(batched.history.columns) == list(sequential.history.columns)
    torch.testing.assert_close(torch.tensor(batched.history[COMPARED].values),
                               torch.tensor(sequential.history[COMPARED].values), rtol=1e-5, atol=1e-4)
    assert batched.history["epoch"].tolist() == sequential.history["epoch"].tolist()


@pytest.mark.parametrize(("model_cfg", "overrides", "binarize"), [
    (MLP, {}, "dynamic"),  # seeds × β × lr, Bernoulli decoder on binarized images
    (MLP, {"lr_schedule": "cosine", "grad_clip": 0.5, "warmup_epochs": 1.0}, None),  # per-model clipping, ramps
    (replace(MLP, kind="ae"), {"noise": NoiseConfig("gaussian", 0.2)}, None),  # a denoising AE
    (replace(MLP, num_classes=3, likelihood="cbernoulli"), {}, None),  # class-conditional, continuous Bernoulli
    (replace(MLP, arch="linear", likelihood="gaussian", sigma=0.3), {}, None),
])
def test_fit_many_equals_sequential_training_within_float_tolerance(tmp_path, model_cfg, overrides, binarize):
    data = toy_dataset(200, 48, side=8, binarize=binarize)
    cfgs = three(**overrides)
    assert stack_plan(model_cfg, cfgs) is None
    batched = fit_many(model_cfg, cfgs, data, cache_dir=tmp_path / "batched", batched=True)
    sequential = [train_or_load(model_cfg, c, data, cache_dir=tmp_path / "sequential") for c in cfgs]
    assert [r.from_cache for r in batched] == [False] * 3
    for b, s in zip(batched, sequential, strict=True):
        assert_same(b, s)
        assert not b.model.training
    # the models really differ (seeds, β, lr): the test would not notice a model trained three times
    assert not torch.equal(batched[0].model.encoder.head.weight, batched[1].model.encoder.head.weight)


def test_each_model_is_cached_under_its_own_key_and_a_partial_hit_trains_only_the_missing(tmp_path, monkeypatch):
    data = toy_dataset(128, 32, side=8)
    cfgs = three()
    first = train_or_load(MLP, cfgs[1], data, cache_dir=tmp_path)  # one of the three is cached already
    trained: list[list[int]] = []
    real = ensemble._train_stacked

    def spy(model_cfg, stacked_cfgs, data, device):
        trained.append([c.seed for c in stacked_cfgs])
        return real(model_cfg, stacked_cfgs, data, device)

    monkeypatch.setattr(ensemble, "_train_stacked", spy)
    results = fit_many(MLP, cfgs, data, cache_dir=tmp_path, batched=True)
    assert trained == [[0, 2]]
    assert [r.from_cache for r in results] == [False, True, False]
    assert torch.equal(results[1].model.encoder.head.weight, first.model.encoder.head.weight)
    # every model now loads on its own, with the weights fit_many returned
    for cfg, result in zip(cfgs, results, strict=True):
        loaded = train_or_load(MLP, cfg, data, cache_dir=tmp_path)
        assert loaded.from_cache and loaded.key == result.key
        assert torch.equal(loaded.model.decoder.trunk[-1].weight, result.model.decoder.trunk[-1].weight)
    again = fit_many(MLP, cfgs, data, cache_dir=tmp_path, batched=True)
    assert trained == [[0, 2]] and all(r.from_cache for r in again)


def test_a_nan_in_one_model_stops_only_that_model_with_fits_message(tmp_path, monkeypatch):
    data = toy_dataset(128, 32, side=8)
    cfgs = three()
    steps = 128 // 32
    calls = {"n": 0}
    real = ensemble._Stacked.loss_rows

    def poisoned(self, x, y, target, eps, beta):
        loss, rows = real(self, x, y, target, eps, beta)
        calls["n"] += torch.is_grad_enabled()  # training steps only (validation runs without gradients)
        if torch.is_grad_enabled() and calls["n"] == steps + 3:  # epoch 2, step 3
            with torch.no_grad():
                self.params["encoder.head.weight"][1].fill_(float("nan"))  # model 1 only
            loss, rows = real(self, x, y, target, eps, beta)
        return loss, rows

    monkeypatch.setattr(ensemble._Stacked, "loss_rows", poisoned)
    with pytest.raises(TrainingDivergedError) as err:
        fit_many(MLP, cfgs, data, cache_dir=tmp_path / "batched", batched=True)
    message = str(err.value)
    assert message.startswith("1 of 3 models diverged (the others are trained and cached):\n"
                              "train_cfgs[1] (seed=1, beta=0.5, lr=0.003): Training diverged at epoch 2, step 3 of 4: "
                              "loss = nan. The model keeps the last good weights (those at the start of epoch 2).")
    results = err.value.results
    assert results[1] is None
    monkeypatch.undo()
    # the other two are exactly what separate training gives, and they are cached; the failed one is not
    for i in (0, 2):
        assert_same(results[i], train_or_load(MLP, cfgs[i], data, cache_dir=tmp_path / "sequential"))
        assert train_or_load(MLP, cfgs[i], data, cache_dir=tmp_path / "batched").from_cache
    assert not train_or_load(MLP, cfgs[1], data, cache_dir=tmp_path / "batched").from_cache


@pytest.mark.parametrize(("model_cfg", "cfgs", "reason"), [
    (MLP, [BASE, replace(BASE, epochs=3)], "train_cfgs[1] differs from train_cfgs[0] in epochs; only seed, beta, lr "
                                           "may differ between batched models"),
    (MLP, [replace(BASE, early_stopping_patience=1), replace(BASE, seed=1, early_stopping_patience=1)],
     "early stopping stops models at different epochs"),
    (replace(MLP, arch="conv", channels=(4,)), [BASE, replace(BASE, seed=1)],
     "arch='conv': only MLP and linear models are stacked (their layers are nn.Linear)"),
    (replace(MLP, likelihood="gaussian"), [BASE, replace(BASE, seed=1)],
     "a Gaussian decoder with a learned sigma (a per-model scalar parameter) is not stacked"),
])
def test_configs_that_do_not_stack_train_one_after_the_other_with_the_reason(tmp_path, model_cfg, cfgs, reason):
    assert stack_plan(model_cfg, cfgs) == reason
    data = toy_dataset(96, 32, side=8)
    with pytest.warns(UserWarning, match=re.escape(f"fit_many trains these models one after the other: {reason}.")):
        results = fit_many(model_cfg, cfgs, data, cache_dir=tmp_path / "a", batched=True)
    for cfg, result in zip(cfgs, results, strict=True):
        expected = train_or_load(model_cfg, cfg, data, cache_dir=tmp_path / "b")
        assert result.key == expected.key and not result.from_cache
        for name, value in expected.model.state_dict().items():
            assert torch.equal(result.model.state_dict()[name], value)  # the very same code path: bitwise


def test_progress_may_differ_and_duplicates_train_once(tmp_path, monkeypatch):
    data = toy_dataset(96, 32, side=8)
    cfgs = [BASE, replace(BASE, seed=1), BASE]
    assert stack_plan(MLP, [BASE, replace(BASE, seed=1, progress=True)]) is None
    trained: list[int] = []
    real = ensemble._train_stacked
    monkeypatch.setattr(ensemble, "_train_stacked", lambda m, c, d, dev: trained.append(len(c)) or real(m, c, d, dev))
    results = fit_many(MLP, cfgs, data, cache_dir=tmp_path, batched=True)
    assert trained == [2] and [r.from_cache for r in results] == [False, False, True]
    assert torch.equal(results[0].model.encoder.head.weight, results[2].model.encoder.head.weight)


def test_bad_arguments_are_named() -> None:
    data = toy_dataset(32, 8, side=8)
    with pytest.raises(ConfigError) as err:
        fit_many(MLP, [], data)
    assert str(err.value) == "train_cfgs=[] is invalid; it must be a non-empty sequence of TrainConfig."
    with pytest.raises(ConfigError) as err:
        fit_many(MLP, [BASE], data, batched="yes")
    assert str(err.value) == "batched='yes' is invalid; valid values: 'auto', True, False."


def test_the_beta_sweep_trains_its_betas_as_one_batched_computation(tmp_path, monkeypatch):
    from aestudy.series import elbo
    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path))
    data = toy_dataset(96, 32, side=8, binarize="dynamic")
    calls: list[list[float]] = []
    real = ensemble._train_stacked
    monkeypatch.setattr(ensemble, "_train_stacked",
                        lambda m, c, d, dev: calls.append([x.beta for x in c]) or real(m, c, d, dev))
    table, results = elbo.beta_sweep(data, [0.5, 1.0, 4.0], MLP, BASE)
    assert calls == [[0.5, 1.0, 4.0]] and table["beta"].tolist() == [0.5, 1.0, 4.0]
    for beta, result in results.items():  # each β's model is the one train_or_load finds in the cache
        loaded = train_or_load(MLP, replace(BASE, beta=beta), data)
        assert loaded.from_cache and torch.equal(loaded.model.encoder.head.weight, result.model.encoder.head.weight)
