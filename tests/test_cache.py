"""Checkpoint cache: location, keys, atomic checksummed files, corruption detection, load-or-train."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import TINY, toy_dataset  # tests/ is on sys.path (pytest's rootdir-less test layout)

import aestudy
from aestudy import cache, train
from aestudy.errors import CheckpointError, CheckpointRefusedError, ConfigError
from aestudy.noise import NoiseConfig
from aestudy.train import TrainConfig, train_or_load

CFG = TrainConfig(epochs=2, batch_size=32, progress=False)
# the global a pickled numpy scalar refers to (numpy 2 renamed numpy.core to numpy._core)
NUMPY_SCALAR = f"numpy.{'_core' if int(np.__version__.split('.')[0]) >= 2 else 'core'}.multiarray.scalar"

# ---------------------------------------------------------------------------------------------- file format


def _save(path: Path, **overrides) -> dict:
    """Write a small checkpoint and return what was written."""
    args = {
        "state_dict": {"w": torch.arange(64, dtype=torch.float32) + 0.5, "b": torch.tensor(2.0),
                       "h": torch.linspace(0, 1, 5).bfloat16()},
        "config": {"model": {"hidden": (32, 16), "kind": "vae"}, "seed": 0},
        "history": pd.DataFrame({"epoch": [1, 2], "val_loss": [3.5, float("nan")]}),
        "version": "0.1.0",
        "key": "k1",
    }
    args.update(overrides)
    cache.save_checkpoint(path, **args)
    return args


def test_cache_dir_precedence_argument_then_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path / "env"))
    assert cache.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("AESTUDY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "aestudy" / "models"
    assert cache.checkpoint_path("abc", tmp_path) == tmp_path / "abc.pt"


def test_hash_key_ignores_key_order_and_tuple_spelling_but_not_values():
    a = cache.hash_key({"model": {"hidden": (32, 16), "latent": 2}, "seed": 0})
    assert a == cache.hash_key({"seed": 0, "model": {"latent": 2, "hidden": [32, 16]}})
    assert a != cache.hash_key({"seed": 1, "model": {"latent": 2, "hidden": [32, 16]}})
    assert len(a) == 64 and int(a, 16) >= 0


def test_round_trip_keeps_tensors_config_and_history(tmp_path):
    path = tmp_path / "k1.pt"
    written = _save(path)
    record = cache.load_checkpoint(path, version="0.1.0", key="k1")
    assert set(record["state_dict"]) == set(written["state_dict"])
    for name, tensor in written["state_dict"].items():
        assert record["state_dict"][name].dtype == tensor.dtype
        assert torch.equal(record["state_dict"][name], tensor)
    assert record["config"] == written["config"]
    pd.testing.assert_frame_equal(record["history"], written["history"])
    assert record["version"] == "0.1.0" and record["key"] == "k1"
    assert [p.name for p in tmp_path.iterdir()] == ["k1.pt"]  # no temp file left behind


def test_checkpoint_holds_only_plain_types_loadable_with_weights_only(tmp_path):
    path = tmp_path / "k1.pt"
    _save(path)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["history"], dict) and raw["history"]["epoch"] == [1, 2]


def _save_with_numpy_config(path: Path) -> None:
    """A checkpoint as an older aestudy wrote it: intact (valid checksum) but with a numpy scalar in its config."""
    record = {"format": cache.FORMAT, "version": "0.1.0", "key": "k1",
              "config": {"train": {"lr": np.linspace(1e-3, 2e-3, 3)[0]}},
              "history": {"epoch": [1]}, "state_dict": {"w": torch.ones(3)}}
    record["sha256"] = cache._content_digest(record)
    torch.save(record, path)


def test_numpy_values_are_stored_as_plain_python_values(tmp_path):
    path = tmp_path / "k1.pt"
    _save(path, config={"lr": np.float64(1e-3), "shape": (np.int64(1), 8), "grid": [np.float32(0.5)]})
    record = torch.load(path, weights_only=True)  # would raise for a numpy scalar
    assert record["config"] == {"lr": 0.001, "shape": (1, 8), "grid": [0.5]}
    assert type(record["config"]["lr"]) is float and type(record["config"]["shape"][0]) is int


def test_unstorable_config_value_is_refused_before_writing(tmp_path):
    path = tmp_path / "k1.pt"
    with pytest.raises(TypeError) as err:
        _save(path, config={"train": {"out": tmp_path}})
    assert str(err.value) == ("checkpoint config.train.out is a pathlib.PosixPath; only plain Python values (str, int, "
                              "float, bool, None, lists and dicts of them) can be stored.")
    assert list(tmp_path.iterdir()) == []


def test_file_refused_by_the_weights_only_unpickler_is_named_as_refused_not_damaged(tmp_path):
    path = tmp_path / "k1.pt"
    _save_with_numpy_config(path)
    with pytest.raises(CheckpointRefusedError) as err:
        cache.load_checkpoint(path)
    assert str(err.value) == (
        f"checkpoint {path} was refused by torch.load(weights_only=True): it contains type "
        f"{NUMPY_SCALAR}, numpy.dtype, which the weights-only unpickler does not load (the file is not "
        "damaged; an older aestudy stored such values in its config). Delete it to retrain, or load it yourself with "
        "torch.load(..., weights_only=False) only if you trust where it came from.")
    assert err.value.types == (NUMPY_SCALAR, "numpy.dtype")  # sorted: the message is reproducible
    assert isinstance(err.value, CheckpointError)


def test_refused_file_is_named_from_the_error_text_on_torch_without_the_scanner(tmp_path, monkeypatch):
    path = tmp_path / "k1.pt"
    _save_with_numpy_config(path)
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint")  # torch < 2.5
    with pytest.raises(CheckpointRefusedError) as err:
        cache.load_checkpoint(path)
    assert err.value.types == (NUMPY_SCALAR,)
    assert str(err.value).startswith(f"checkpoint {path} was refused by torch.load(weights_only=True): it contains "
                                     f"type {NUMPY_SCALAR}, which")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_tensor_byte", "edit_version"])
def test_damaged_file_raises_checkpoint_error_naming_it(tmp_path, damage):
    path = tmp_path / "k1.pt"
    written = _save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a checkpoint at all" * 50)
    elif damage == "empty":
        data = bytearray()
    elif damage == "flip_tensor_byte":  # torch does not check the zip CRC: only our checksum sees this
        at = data.find(written["state_dict"]["w"].numpy().tobytes())
        assert at > 0
        data[at + 10] ^= 0xFF
    else:  # same length, so the pickle still loads: the checksum must catch it
        at = data.find(b"0.1.0")
        data[at:at + 5] = b"0.1.7"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} (is unreadable|fails its SHA-256|is not an)"):
        cache.load_checkpoint(path)


def test_version_and_key_mismatch_are_errors(tmp_path):
    path = tmp_path / "k1.pt"
    _save(path)
    with pytest.raises(CheckpointError, match=r"written by aestudy 0\.1\.0, this is aestudy 9\.9"):
        cache.load_checkpoint(path, version="9.9")
    with pytest.raises(CheckpointError, match="holds key k1, expected other"):
        cache.load_checkpoint(path, key="other")


def test_foreign_and_missing_files_are_errors(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not an aestudy checkpoint"):
        cache.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        cache.load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "k1.pt"
    _save(path)
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(cache.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, key="k2")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["k1.pt"]


# ---------------------------------------------------------------------------------------------- load-or-train


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_miss_trains_and_stores_then_hit_loads_identical_model(tmp_path, monkeypatch):
    data = toy_dataset()
    first = train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    path = cache.checkpoint_path(first.key, tmp_path)
    assert not first.from_cache and path.is_file() and len(first.history) == 2
    record = cache.load_checkpoint(path, version=aestudy.__version__, key=first.key)
    assert record["config"]["train"]["epochs"] == 2 and record["config"]["model"]["hidden"] == (32,)

    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("fit called on a cache hit"))
    second = train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    assert second.from_cache and second.key == first.key
    assert states_equal(first.model.state_dict(), second.model.state_dict())
    pd.testing.assert_frame_equal(first.history, second.history)
    assert not second.model.training


def test_training_through_the_cache_is_seeded(tmp_path):
    data = toy_dataset()
    a = train_or_load(TINY, CFG, data, cache_dir=tmp_path / "a")
    b = train_or_load(TINY, CFG, data, cache_dir=tmp_path / "b")
    assert not b.from_cache and states_equal(a.model.state_dict(), b.model.state_dict())


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path / "env"))
    result = train_or_load(TINY, CFG, toy_dataset())
    assert (tmp_path / "env" / f"{result.key}.pt").is_file()


@pytest.mark.parametrize("change", [
    lambda m, t, d: (dataclasses.replace(m, latent_dim=3), t, d),
    lambda m, t, d: (dataclasses.replace(m, kind="ae"), t, d),
    lambda m, t, d: (m, dataclasses.replace(t, lr=2e-3), d),
    lambda m, t, d: (m, dataclasses.replace(t, epochs=3), d),
    lambda m, t, d: (m, dataclasses.replace(t, noise=NoiseConfig("gaussian", 0.1)), d),
    lambda m, t, d: (m, dataclasses.replace(t, bf16=True), d),
    lambda m, t, d: (m, t, dataclasses.replace(d, fingerprint="other-data")),
], ids=["latent_dim", "kind", "lr", "epochs", "noise", "bf16", "fingerprint"])
def test_key_changes_with_model_training_and_data(change):
    base = (TINY, CFG, toy_dataset(fingerprint="fmnist-abc"))
    assert train.train_key(*change(*base)) != train.train_key(*base)


def test_key_changes_with_version_and_hand_built_data_content(monkeypatch):
    data = toy_dataset()
    key = train.train_key(TINY, CFG, data)
    assert train.train_key(TINY, CFG, toy_dataset(seed=1)) != key  # no fingerprint: the tensors' hash decides
    assert train.train_key(TINY, CFG, toy_dataset(binarize="dynamic")) != key
    assert train.train_key(TINY, CFG, toy_dataset()) == key
    monkeypatch.setattr(aestudy, "__version__", "99.0")
    assert train.train_key(TINY, CFG, data) != key


def test_device_compile_and_progress_do_not_change_the_key():
    data = toy_dataset()
    key = train.train_key(TINY, CFG, data)
    same = dataclasses.replace(CFG, device="cpu", compile=True, progress=True)
    assert train.train_key(TINY, same, data) == key


def test_device_and_progress_reuse_the_cached_model(tmp_path, monkeypatch):
    data = toy_dataset()
    train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("fit called on a cache hit"))
    again = train_or_load(TINY, dataclasses.replace(CFG, device="cpu"), data, cache_dir=tmp_path, progress=True)
    assert again.from_cache


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key"])
def test_bad_checkpoint_is_reported_deleted_and_retrained(tmp_path, damage):
    data = toy_dataset()
    first = train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    path = cache.checkpoint_path(first.key, tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    else:  # a valid checkpoint of another configuration under this name
        other = train_or_load(TINY, dataclasses.replace(CFG, lr=2e-3), data, cache_dir=tmp_path)
        shutil.copy(cache.checkpoint_path(other.key, tmp_path), path)
    with pytest.warns(UserWarning, match=rf"checkpoint {path} .*Deleting .* and retraining"):
        again = train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    assert not again.from_cache
    assert states_equal(again.model.state_dict(), first.model.state_dict())  # seeded: the same model again
    assert cache.load_checkpoint(path, version=aestudy.__version__, key=first.key)["key"] == first.key


def test_numpy_grid_lr_trains_once_then_loads_and_shares_the_plain_lr_file(tmp_path):
    """Issue 12, item 1: lr from a numpy grid used to be refused on load, deleted and retrained on every call."""
    data = toy_dataset()
    grid_lr = np.linspace(1e-3, 2e-3, 3)[0]
    first = train_or_load(TINY, dataclasses.replace(CFG, lr=grid_lr), data, cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unreadable ... retraining" warning
        second = train_or_load(TINY, dataclasses.replace(CFG, lr=grid_lr), data, cache_dir=tmp_path)
        plain = train_or_load(TINY, dataclasses.replace(CFG, lr=0.001), data, cache_dir=tmp_path)
    assert (first.from_cache, second.from_cache, plain.from_cache) == (False, True, True)
    assert first.key == second.key == plain.key
    assert [p.name for p in tmp_path.glob("*.pt")] == [f"{first.key}.pt"]
    assert states_equal(second.model.state_dict(), first.model.state_dict())


def test_refused_checkpoint_is_moved_aside_not_deleted_and_retrained(tmp_path):
    data = toy_dataset()
    key = train.train_key(TINY, CFG, data)
    path = cache.checkpoint_path(key, tmp_path)
    _save_with_numpy_config(path)
    old_bytes = path.read_bytes()
    aside = path.with_name(path.name + ".refused")
    with pytest.warns(UserWarning) as caught:
        result = train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    (warning,) = [w for w in caught if "refused" in str(w.message)]
    assert str(warning.message).startswith(f"checkpoint {path} was refused by torch.load(weights_only=True): it "
                                           f"contains type {NUMPY_SCALAR}, numpy.dtype, ")
    assert str(warning.message).endswith(f" Moved it to {aside} (kept: it is not damaged) and retraining.")
    assert not result.from_cache and aside.read_bytes() == old_bytes  # the refused file is kept byte for byte
    assert cache.load_checkpoint(path, version=aestudy.__version__, key=key)["key"] == key
    _save_with_numpy_config(path)  # refused again: the first copy aside is not overwritten
    with pytest.warns(UserWarning, match=r"Moved it to .*\.pt\.refused-2 "):
        train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    assert aside.read_bytes() == old_bytes


def _leftovers(folder: Path) -> list[str]:
    """Files in the cache folder other than the (empty, reusable) lock files."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


def test_diverged_training_stores_nothing(tmp_path):
    data = toy_dataset()
    with pytest.raises(aestudy.errors.TrainingDivergedError):
        train_or_load(TINY, dataclasses.replace(CFG, lr=1e30), data, cache_dir=tmp_path)
    assert _leftovers(tmp_path) == []


def test_refused_inputs_leave_nothing_in_the_cache(tmp_path):
    data = toy_dataset()
    data.train.images[3, 0, 0, 0] = math.nan  # changed in place after the Dataset checked it
    with pytest.raises(ConfigError, match=r"^the train split has a non-finite pixel \(nan\) in image 3 "):
        train_or_load(TINY, CFG, data, cache_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        train_or_load(dataclasses.replace(TINY, input_shape=(1, 28, 28)), CFG, toy_dataset(), cache_dir=tmp_path)
    assert str(err.value) == ("input_shape=(1, 28, 28) of the model does not match the images of 'toy', (1, 8, 8); "
                              "use ModelConfig(input_shape=(1, 8, 8)).")
    assert _leftovers(tmp_path) == []


def test_gaussian_vae_exploding_but_finite_is_divergence_and_never_cached(tmp_path):
    """Issue 12, item 8: a Gaussian VAE at lr=1e6 used to reach ~3e30 nats per image, raise nothing and be cached."""
    data = toy_dataset()
    gaussian = dataclasses.replace(TINY, likelihood="gaussian")
    with pytest.raises(aestudy.errors.TrainingDivergedError) as err:
        train_or_load(gaussian, dataclasses.replace(CFG, lr=1e6), data, cache_dir=tmp_path)
    assert re.fullmatch(
        r"Training diverged at epoch 1, step \d of 8: loss = \S+ nats per image, more than 1000 x max\(1, \|(\S+)\|\) "
        r"= \S+, \1 being the first step's loss \(at the initial weights\)\. The model keeps the last good weights "
        r"\(those at the start of epoch 1\)\. The batch's inputs are finite and in \[0, 1\], so the optimiser is at "
        r"fault: try a lower learning rate \(try lr=100000, now lr=1e\+06\) or set grad_clip=1\.0\.", str(err.value))
    assert _leftovers(tmp_path) == []  # no checkpoint, no temp file
    sane = train_or_load(gaussian, CFG, data, cache_dir=tmp_path)  # the same model at lr=1e-3 trains and is cached
    assert not sane.from_cache and _leftovers(tmp_path) == [f"{sane.key}.pt"]


# ------------------------------------------------------------------------------------------- two processes


def _train_in_process(cache_dir: str, barrier, results) -> None:
    """Child process: wait for the sibling, then train_or_load the same key; report weights and from_cache."""
    data = toy_dataset(n=500)
    barrier.wait()
    result = train_or_load(TINY, TrainConfig(epochs=3, batch_size=32, progress=False), data, cache_dir=cache_dir)
    results.put((result.from_cache, {k: v.numpy() for k, v in result.model.state_dict().items()}))


def test_two_processes_training_the_same_key_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_train_in_process, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    # the lock makes the second wait for the first and load its checkpoint instead of training again
    assert sorted(from_cache for from_cache, _ in outcomes) == [False, True]
    (_, a), (_, b) = outcomes
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    (checkpoint,) = tmp_path.glob("*.pt")
    record = cache.load_checkpoint(checkpoint, version=aestudy.__version__)
    assert all((record["state_dict"][k].numpy() == a[k]).all() for k in a)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_load_or_build_is_the_one_load_or_build(tmp_path):
    """Built once and stored; loaded the second time; a failing build stores nothing; a checkpoint that does not
    fit what loads it is reported, deleted and rebuilt."""
    calls = []

    def build():
        calls.append("build")
        return "artefact", cache.Checkpoint({"w": torch.ones(2)}, {"n": 1}, pd.DataFrame({"epoch": [1]}))

    assert cache.load_or_build("k", load=lambda r, p: r["config"]["n"], build=build, cache_dir=tmp_path) == (
        "artefact", False)
    assert cache.load_or_build("k", load=lambda r, p: r["config"]["n"], build=build, cache_dir=tmp_path) == (1, True)
    assert calls == ["build"]

    def diverges():
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cache.load_or_build("other", load=lambda r, p: r, build=diverges, cache_dir=tmp_path)
    assert not (tmp_path / "other.pt").exists()

    def misfit(record, path):
        raise RuntimeError("size mismatch for w")

    with pytest.warns(UserWarning, match=r"does not match what it was loaded for: size mismatch for w\. Deleting .* "
                                         r"and retraining the thing\.$"):
        assert cache.load_or_build("k", load=misfit, build=build, what="the thing", cache_dir=tmp_path) == (
            "artefact", False)
    assert calls == ["build", "build"]
