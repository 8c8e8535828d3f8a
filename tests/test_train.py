"""The trainer: config validation, determinism, history identities, schedules, early stopping, divergence,
dynamic binarization, denoising targets, class labels, devices. Tiny models on tiny hand-built data."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from aestudy import objectives, train
from aestudy.data import Dataset, DatasetInfo, Split
from aestudy.errors import ConfigError, DeviceError, TrainingDivergedError
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig
from aestudy.train import HISTORY_COLUMNS, TrainConfig, fit

TINY = ModelConfig(input_shape=(1, 8, 8), hidden=(32,), latent_dim=2)
FAST = TrainConfig(epochs=3, batch_size=32, progress=False)
NON_TIMING = [c for c in HISTORY_COLUMNS if c not in ("seconds", "samples_per_s")]


def toy_dataset(n: int = 256, n_val: int = 64, side: int = 8, *, binarize: str | None = None, seed: int = 0,
                images: torch.Tensor | None = None, fingerprint: str = "") -> Dataset:
    """Random grey images (or the given ones) with labels 0..2, built by hand instead of loading a dataset."""
    g = torch.Generator().manual_seed(seed)
    train_x = torch.rand(n, 1, side, side, generator=g) if images is None else images
    val_x = torch.rand(n_val, 1, side, side, generator=g)
    labels = torch.arange(len(train_x)) % 3
    info = DatasetInfo("toy", (1, side, side), 3, ("a", "b", "c"), "random tensors", "", "none")
    val = Split(val_x, torch.arange(n_val) % 3)
    return Dataset(Split(train_x, labels), val, val, info, binarize, fingerprint)


def numbered_images(n: int, side: int = 8) -> torch.Tensor:
    """Image i is the constant (i + 1) / (n + 1): any batch row tells which training image it came from."""
    return ((torch.arange(n, dtype=torch.float32) + 1) / (n + 1)).view(n, 1, 1, 1).expand(n, 1, side, side).clone()


def fresh(cfg: ModelConfig = TINY, seed: int = 0) -> torch.nn.Module:
    """A model initialised from `seed`."""
    torch.manual_seed(seed)
    return build_model(cfg)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def spy_training_batches(monkeypatch) -> list[dict]:
    """Record (x, y, target, beta) of every training-mode call of the loss."""
    calls: list[dict] = []
    real = objectives.loss_terms

    def spy(model, x, y=None, *, beta=1.0, target=None, generator=None):
        if model.training:
            calls.append({"x": x.clone(), "y": None if y is None else y.clone(), "target": target.clone(),
                          "beta": float(beta)})
        return real(model, x, y, beta=beta, target=target, generator=generator)

    monkeypatch.setattr(objectives, "loss_terms", spy)
    return calls


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", -1, "epochs=-1 is invalid; it must be an integer >= 0."),
    ("epochs", 2.5, "epochs=2.5 is invalid; it must be an integer >= 0."),
    ("epochs", "3", "epochs='3' is invalid; it must be an integer >= 0."),
    ("batch_size", 0, "batch_size=0 is invalid; it must be an integer >= 1."),
    ("lr", 0.0, "lr=0.0 is invalid; it must be a finite number > 0."),
    ("lr", math.nan, "lr=nan is invalid; it must be a finite number > 0."),
    ("lr", True, "lr=True is invalid; it must be a finite number > 0."),
    ("seed", -1, "seed=-1 is invalid; it must be an integer >= 0."),
    ("device", "tpu", "device='tpu' is invalid; valid values: auto, cpu, cuda, mps or 'cuda:N'."),
    ("beta", -0.1, "beta=-0.1 is invalid; it must be a finite number >= 0."),
    ("beta", np.float64(math.inf), "beta=np.float64(inf) is invalid; it must be a finite number >= 0."),
    ("warmup_epochs", -1, "warmup_epochs=-1 is invalid; it must be a finite number >= 0."),
    ("grad_clip", 0.0, "grad_clip=0.0 is invalid; it must be None (no clipping) or a finite number > 0."),
    ("lr_schedule", "step", "lr_schedule='step' is invalid; valid values: None, 'cosine'."),
    ("early_stopping_patience", 0,
     "early_stopping_patience=0 is invalid; it must be None (never stop early) or an integer >= 1."),
    ("noise", "gaussian", "noise='gaussian' is invalid; it must be None or an aestudy.noise.NoiseConfig."),
    ("compile", "yes", "compile='yes' is invalid; valid values: 'auto' (CUDA only), True, False."),
    ("bf16", 1, "bf16=1 is invalid; it must be True or False."),
    ("progress", None, "progress=None is invalid; it must be True or False."),
])
def test_invalid_train_config_names_parameter_and_valid_values(field, value, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    assert str(err.value) == message


def test_numpy_values_from_a_grid_are_stored_as_plain_python_values():
    """A point of a numpy grid must not reach the cache key or the checkpoint as a numpy scalar (issue 12, item 1)."""
    grid = np.linspace(1e-3, 2e-3, 3)
    cfg = TrainConfig(epochs=np.int64(2), batch_size=np.int32(16), lr=grid[0], seed=np.uint8(1),
                      beta=np.float32(0.5), warmup_epochs=np.float64(1.5), grad_clip=np.float64(1.0),
                      early_stopping_patience=np.int64(3), lr_schedule=np.str_("cosine"), bf16=np.bool_(False),
                      progress=np.bool_(False), compile=np.bool_(False), device=np.str_("cpu"),
                      fp32_matmul=np.str_("default"))
    plain = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "noise"}
    assert {name: type(v) for name, v in plain.items()} == {
        "epochs": int, "batch_size": int, "lr": float, "seed": int, "device": str, "beta": float,
        "warmup_epochs": float, "grad_clip": float, "lr_schedule": str, "early_stopping_patience": int,
        "compile": bool, "bf16": bool, "progress": bool, "fp32_matmul": str}
    assert cfg == TrainConfig(epochs=2, batch_size=16, lr=0.001, seed=1, beta=0.5, warmup_epochs=1.5, grad_clip=1.0,
                              early_stopping_patience=3, lr_schedule="cosine", progress=False, compile=False,
                              device="cpu", fp32_matmul="default")
    model = ModelConfig(input_shape=np.array([1, 8, 8]).tolist() and tuple(np.array([1, 8, 8])),
                        hidden=[np.int64(32)], latent_dim=np.int16(2), likelihood=np.str_("gaussian"),
                        sigma=np.float32(0.25), num_classes=np.int64(3))
    assert [type(v) for v in (*model.input_shape, *model.hidden, model.latent_dim, model.sigma, model.num_classes)] \
        == [int] * 5 + [float, int]
    assert type(model.likelihood) is str and model.sigma == 0.25
    noise = NoiseConfig(np.str_("mask"), np.float64(0.5))
    assert (type(noise.kind), type(noise.level)) == (str, float)


def test_key_fields_are_what_changes_the_weights():
    cfg = TrainConfig(noise=NoiseConfig("mask", 0.25), device="cpu", compile=False, progress=False)
    keys = cfg.key_fields()
    how_it_runs = {"device", "compile", "progress", "fp32_matmul"}
    assert set(keys) == {f.name for f in dataclasses.fields(TrainConfig)} - how_it_runs
    assert keys["noise"] == {"kind": "mask", "level": 0.25}
    assert keys == dataclasses.replace(cfg, device="auto", compile=True, progress=True,
                                       fp32_matmul="default").key_fields()
    assert keys != dataclasses.replace(cfg, bf16=True).key_fields()


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_history_and_weights_and_callers_rng_untouched():
    data = toy_dataset()
    model = fresh()
    rng_before = torch.get_rng_state()
    a = fit(model, data, FAST)
    assert torch.equal(torch.get_rng_state(), rng_before)
    b = fit(fresh(), data, FAST)
    assert a.history[NON_TIMING].equals(b.history[NON_TIMING])
    assert states_equal(a.model.state_dict(), b.model.state_dict())
    c = fit(fresh(), data, dataclasses.replace(FAST, seed=1))
    assert not c.history["train_loss"].equals(a.history["train_loss"])


def test_history_rows_and_loss_identities():
    data = toy_dataset(n=100)
    cfg = dataclasses.replace(FAST, beta=0.5, batch_size=32)  # ragged last batch of 4
    result = fit(fresh(), data, cfg)
    h = result.history
    assert list(h.columns) == list(HISTORY_COLUMNS) and list(h["epoch"]) == [1, 2, 3]
    # per-image means over the epoch: loss = recon + β·KL holds after weighting by batch size
    assert h["train_loss"].tolist() == pytest.approx((h["train_recon"] + 0.5 * h["train_kl"]).tolist(), rel=1e-6)
    assert h["val_loss"].tolist() == pytest.approx((h["val_recon"] + 0.5 * h["val_kl"]).tolist(), rel=1e-6)
    assert (h["train_kl"] > 0).all() and (h["samples_per_s"] > 0).all() and (h["seconds"] > 0).all()
    assert result.key == train.train_key(TINY, cfg, data) != train.train_key(TINY, FAST, data)
    assert not result.model.training and not result.from_cache


def test_autoencoder_has_zero_kl_and_val_loss_is_recon():
    result = fit(fresh(dataclasses.replace(TINY, kind="ae")), toy_dataset(), FAST)
    assert (result.history[["train_kl", "val_kl"]] == 0).all().all()
    assert result.history["val_loss"].equals(result.history["val_recon"])


def test_zero_epochs_returns_empty_history_and_untouched_weights():
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, toy_dataset(), dataclasses.replace(FAST, epochs=0))
    assert result.history.empty and list(result.history.columns) == list(HISTORY_COLUMNS)
    assert states_equal(before, model.state_dict())


# ------------------------------------------------------------------------------------------- schedules


def test_kl_warmup_ramps_beta_per_step_to_its_target(monkeypatch):
    calls = spy_training_batches(monkeypatch)
    data = toy_dataset(n=128)  # 4 steps per epoch
    h = fit(fresh(), data, dataclasses.replace(FAST, epochs=4, warmup_epochs=3, beta=2.0)).history
    assert h["beta"].tolist() == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0])
    betas = [c["beta"] for c in calls]
    assert betas[:4] == pytest.approx([2 * s / 12 for s in (1, 2, 3, 4)])  # fractional epochs: per step
    assert betas == sorted(betas) and betas[-1] == 2.0


def test_cosine_schedule_anneals_lr_per_step():
    h = fit(fresh(), toy_dataset(n=128), dataclasses.replace(FAST, epochs=4, lr=1e-2, lr_schedule="cosine")).history
    total = 4 * 4
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * 4 * (e - 1) / total)) for e in (1, 2, 3, 4)]
    assert h["lr"].tolist() == pytest.approx(expected)
    flat = fit(fresh(), toy_dataset(n=128), dataclasses.replace(FAST, epochs=4, lr=1e-2)).history
    assert flat["lr"].tolist() == [1e-2] * 4


def test_grad_clip_bounds_the_gradient_norm_at_every_step(monkeypatch):
    norms: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        out = real(params, max_norm, *args, **kwargs)
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))))
        return out

    monkeypatch.setattr(train.nn.utils, "clip_grad_norm_", spy)
    fit(fresh(), toy_dataset(n=128), dataclasses.replace(FAST, grad_clip=0.5))
    assert len(norms) == 3 * 4 and max(norms) <= 0.5 * (1 + 1e-5)


# ------------------------------------------------------------------------------------------- early stopping


def test_early_stopping_stops_after_patience_and_restores_best_weights(monkeypatch):
    scripted = iter([5.0, 3.0, 4.0, 4.5, 6.0, 1.0])
    seen: list[dict] = []

    def fake_evaluate(model, *args):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        loss = next(scripted)
        return loss, loss, 0.0

    monkeypatch.setattr(train, "_evaluate", fake_evaluate)
    result = fit(fresh(), toy_dataset(), dataclasses.replace(FAST, epochs=6, early_stopping_patience=2))
    assert result.history["epoch"].tolist() == [1, 2, 3, 4]  # best at 2, no better in 3 and 4
    assert states_equal(result.model.state_dict(), seen[1])
    assert not states_equal(result.model.state_dict(), seen[3])


def test_early_stopping_needs_a_validation_split():
    data = toy_dataset(n_val=0)
    with pytest.raises(ConfigError, match="early_stopping_patience needs a validation split"):
        fit(fresh(), data, dataclasses.replace(FAST, early_stopping_patience=2))
    assert fit(fresh(), data, FAST).history["val_loss"].isna().all()


# ---------------------------------------------------------------------------------------------- divergence


def test_injected_nan_names_epoch_and_step_and_keeps_last_good_weights(monkeypatch):
    data = toy_dataset(n=128)  # 4 steps per epoch
    after_one_epoch = fit(fresh(), data, dataclasses.replace(FAST, epochs=1)).model.state_dict()
    real = objectives.loss_terms
    count = {"train_steps": 0}

    def poisoned(model, x, y=None, **kwargs):
        loss, terms = real(model, x, y, **kwargs)
        if model.training:
            count["train_steps"] += 1
            if count["train_steps"] == 4 + 3:  # epoch 2, step 3
                loss = loss * math.nan
        return loss, terms

    monkeypatch.setattr(objectives, "loss_terms", poisoned)
    model = fresh()
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 3 of 4: loss = nan\..*try lr=0\.0001.*grad_clip"):
        fit(model, data, FAST)
    assert states_equal(model.state_dict(), after_one_epoch)


def _scaled_loss_at(monkeypatch, train_step: int, factor: float) -> list[float]:
    """Multiply the loss of the `train_step`-th training step (1-based, over all epochs) by `factor`; record losses."""
    real = objectives.loss_terms
    seen: list[float] = []

    def scaled(model, x, y=None, **kwargs):
        loss, terms = real(model, x, y, **kwargs)
        if model.training:
            seen.append(float(loss.detach()))
            if len(seen) == train_step:
                loss = loss * factor
        return loss, terms

    monkeypatch.setattr(objectives, "loss_terms", scaled)
    return seen


def test_finite_loss_explosion_is_divergence_by_the_documented_bound(monkeypatch):
    """Issue 12, item 8: a loss 1000 x above the first step's is divergence even while it stays finite."""
    data = toy_dataset(n=128)  # 4 steps per epoch
    seen = _scaled_loss_at(monkeypatch, 4 + 3, 2000.0)  # epoch 2, step 3
    with pytest.raises(TrainingDivergedError) as err:
        fit(fresh(), data, FAST)
    first, value = seen[0], seen[6] * 2000.0
    assert 2000 * seen[6] > train.DIVERGENCE_FACTOR * first > 500 * seen[6]  # the rule decides, not luck
    assert str(err.value) == (
        f"Training diverged at epoch 2, step 3 of 4: loss = {value:.4g} nats per image, more than 1000 x max(1, "
        f"|{first:.4g}|) = {1000 * first:.4g}, {first:.4g} being the first step's loss (at the initial weights). "
        "The model keeps the last good weights (those at the start of epoch 2). The batch's inputs are finite and "
        "in [0, 1], so the optimiser is at fault: try a lower learning rate (try lr=0.0001, now lr=0.001) or set "
        "grad_clip=1.0.")
    _scaled_loss_at(monkeypatch, 4 + 3, 500.0)  # below the bound: a spike, not divergence
    assert len(fit(fresh(), data, FAST).history) == 3


def test_nan_pixel_is_refused_before_training_naming_split_and_image(monkeypatch):
    """Issue 12, item 3: a NaN pixel used to be blamed on the learning rate."""
    calls = spy_training_batches(monkeypatch)
    data = toy_dataset()
    data.train.images[7, 0, 2, 3] = math.nan  # changed in place after the Dataset checked it
    with pytest.raises(ConfigError) as err:
        fit(fresh(), data, FAST)
    assert str(err.value) == ("the train split has a non-finite pixel (nan) in image 7 (1 of 256 images hold NaN or "
                              "±inf); drop or repair those images.")
    data = toy_dataset()
    data.val.images.fill_(0.25)[5, 0, 0, 0] = 3.0
    with pytest.raises(ConfigError) as err:
        fit(fresh(), data, FAST)
    assert str(err.value) == ("the val split has pixel values in [0.25, 3] (first outside [0, 1]: image 5); they must "
                              "lie in [0, 1] (images in 0..255: divide by 255).")
    assert calls == []  # refused before the first step


def test_divergence_message_checks_the_failing_batch_before_blaming_the_optimiser(monkeypatch):
    monkeypatch.setattr(train, "_check_splits", lambda *args: None)  # as if the data changed after the check
    data = toy_dataset()
    data.train.images[77, 0, 1, 1] = math.inf
    with pytest.raises(TrainingDivergedError) as err:
        fit(fresh(), data, FAST)
    message = str(err.value)
    assert re.fullmatch(
        r"Training diverged at epoch 1, step [1-8] of 8: loss = (nan|inf)\. The model keeps the last good weights "
        r"\(those at the start of epoch 1\)\. The inputs are at fault, not the optimiser: the train split has a "
        r"non-finite pixel \(inf\) in image 77 \(1 of 32 images hold NaN or ±inf\); drop or repair those images\.",
        message), message
    assert "learning rate" not in message


def test_huge_learning_rate_diverges_with_finite_weights_kept():
    model = fresh()
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step \d+ of 8: loss = (nan|inf).*lower learning rate"):
        fit(model, toy_dataset(), dataclasses.replace(FAST, lr=1e30))
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------- batches


def test_dynamic_binarization_resamples_every_batch(monkeypatch):
    calls = spy_training_batches(monkeypatch)
    data = toy_dataset(n=64, images=torch.full((64, 1, 8, 8), 0.5), binarize="dynamic")
    fit(fresh(), data, dataclasses.replace(FAST, batch_size=64, epochs=2))
    first, second = calls[0]["x"], calls[1]["x"]
    assert set(first.unique().tolist()) == {0.0, 1.0} and abs(first.mean().item() - 0.5) < 0.05
    assert not torch.equal(first, second)  # same images, new Bernoulli draws each pass
    assert torch.equal(calls[0]["target"], first)
    grey = spy_training_batches(monkeypatch)
    fit(fresh(), dataclasses.replace(data, binarize=None), dataclasses.replace(FAST, batch_size=64, epochs=1))
    assert (grey[0]["x"] == 0.5).all()


def test_each_epoch_is_a_permutation_of_the_training_set(monkeypatch):
    calls = spy_training_batches(monkeypatch)
    images = numbered_images(100)
    fit(fresh(), toy_dataset(images=images), dataclasses.replace(FAST, epochs=2))
    per_epoch = [torch.cat([c["x"][:, 0, 0, 0] for c in calls[i * 4:(i + 1) * 4]]) for i in range(2)]
    for seen in per_epoch:
        assert torch.equal(seen.sort().values, images[:, 0, 0, 0])
    assert not torch.equal(per_epoch[0], per_epoch[1])


def test_denoising_corrupts_inputs_and_targets_the_clean_images(monkeypatch):
    calls = spy_training_batches(monkeypatch)
    images = numbered_images(96)
    fit(fresh(), toy_dataset(images=images), dataclasses.replace(FAST, epochs=1, noise=NoiseConfig("mask", 0.5)))
    for c in calls:
        row_values = c["target"][:, 0, 0, 0]
        index = torch.round(row_values * 97).long() - 1
        assert torch.equal(c["target"], images[index])  # the clean images themselves
        masked = c["x"] != c["target"]
        assert (c["x"][masked] == 0).all()
    share = torch.cat([(c["x"] == 0).flatten() for c in calls]).float().mean().item()
    assert 0.45 < share < 0.55


def test_class_conditional_models_get_the_labels_of_their_images(monkeypatch):
    calls = spy_training_batches(monkeypatch)
    images = numbered_images(96)
    conditional = fresh(dataclasses.replace(TINY, num_classes=3))
    fit(conditional, toy_dataset(images=images), dataclasses.replace(FAST, epochs=1))
    for c in calls:
        index = torch.round(c["x"][:, 0, 0, 0] * 97).long() - 1
        assert torch.equal(c["y"], index % 3)
    unconditional = spy_training_batches(monkeypatch)
    fit(fresh(), toy_dataset(images=images), dataclasses.replace(FAST, epochs=1))
    assert all(c["y"] is None for c in unconditional)


# ----------------------------------------------------------------------------------- devices and output


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"device='cuda' was requested but no CUDA GPU is available.*'cpu'"):
        fit(fresh(), toy_dataset(), dataclasses.replace(FAST, device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is used on CUDA")
def test_bf16_off_cuda_warns_instead_of_silently_ignoring():
    with pytest.warns(UserWarning, match="bf16=True has no effect on device 'cpu'"):
        fit(fresh(), toy_dataset(), dataclasses.replace(FAST, device="cpu", bf16=True, epochs=1))


def test_progress_bar_shows_loss_kl_and_speed_and_can_be_disabled(capsys):
    fit(fresh(), toy_dataset(), dataclasses.replace(FAST, progress=True))
    err = capsys.readouterr().err
    assert "train: 100%" in err and "3/3" in err and "loss=" in err and "kl=" in err and "samples_per_s=" in err
    fit(fresh(), toy_dataset(), FAST)
    assert capsys.readouterr().err == ""


def test_seeds_are_32_bit_everywhere():
    """A seed of 2**70 crashed inside torch with a raw overflow; every entry point now takes [0, 2**32)."""
    from aestudy.data import load_dataset

    with pytest.raises(ConfigError, match=r"^seed=1180591620717411303424 is invalid; it must be an integer >= 0 and "
                                          r"< 2\*\*32\.$"):
        TrainConfig(seed=2**70)
    with pytest.raises(ConfigError, match=r"seed=4294967296 is invalid"):
        load_dataset("digits", seed=2**32)
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
