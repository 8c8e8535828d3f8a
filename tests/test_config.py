"""Profiles, devices and StudyConfig validation: every bad value names the parameter and the valid values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aestudy.config import StudyConfig, by_profile, resolve_device, resolve_profile
from aestudy.errors import ConfigError, DeviceError


def test_profile_falls_back_to_env_then_standard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AESTUDY_PROFILE", raising=False)
    assert resolve_profile(None) == "standard"
    monkeypatch.setenv("AESTUDY_PROFILE", "smoke")
    assert resolve_profile(None) == "smoke"
    assert resolve_profile("full") == "full"


def test_unknown_profile_names_source_and_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"profile='fast' is not a profile; valid values: smoke, standard, full\."):
        resolve_profile("fast")
    monkeypatch.setenv("AESTUDY_PROFILE", "quick")
    with pytest.raises(ConfigError, match=r"\$AESTUDY_PROFILE='quick' is not a profile"):
        resolve_profile(None)


def test_by_profile_picks_the_matching_size() -> None:
    assert by_profile("smoke", smoke=1, standard=2, full=3) == 1
    assert by_profile("full", smoke=1, standard=2, full=3) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match=r"device='cuda' was requested but no CUDA GPU is available.*device='cpu'"):
        resolve_device("cuda")


def test_auto_and_cpu_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match=r"device='tpu' is not a device; valid values: auto, cpu, cuda, mps\."):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "cifar", "dataset='cifar' is invalid; valid values: 'fashion-mnist', 'mnist', 'digits', "
                             "'photo-patches-32', 'photo-patches-64', 'cifar-10', or a path to a folder of images or "
                             "an .npz/.npy file."),
        ("latent_dim", 0, "latent_dim=0 is invalid; it must be an integer >= 1."),
        ("epochs", 0, "epochs=0 is invalid; it must be None (the profile's default) or an integer >= 1."),
        ("batch_size", 0, "batch_size=0 is invalid; it must be an integer >= 1."),
        ("lr", 0.0, "lr=0.0 is invalid; it must be a finite number in (0, 10)."),
        ("lr", float("nan"), "lr=nan is invalid; it must be a finite number in (0, 10)."),
        ("seed", -3, "seed=-3 is invalid; it must be an integer >= 0."),
        ("seed", 2**32, "seed=4294967296 is invalid; it must be an integer >= 0 and < 2**32."),
        ("device", "gpu", "device='gpu' is invalid; valid values: 'auto', 'cpu', 'cuda', 'mps' or 'cuda:N' "
                          "(a GPU index)."),
        ("profile", "fast", "profile='fast' is invalid; valid values: None, 'smoke', 'standard', 'full'."),
    ],
)
def test_study_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        StudyConfig(**{"profile": "smoke", field: value})
    assert str(info.value) == message


def test_study_config_holds_plain_python_values() -> None:
    # A numpy grid point is converted at construction, so it hashes and pickles like the plain value.
    cfg = StudyConfig(profile="smoke", lr=np.float64(1e-3), latent_dim=np.int64(4), seed=np.int32(2))
    assert (type(cfg.lr), type(cfg.latent_dim), type(cfg.seed)) == (float, int, int)
    assert cfg == StudyConfig(profile="smoke", lr=1e-3, latent_dim=4, seed=2)
    assert StudyConfig(profile="smoke", lr=1).lr == 1.0 and type(StudyConfig(profile="smoke", lr=1).lr) is float


def test_study_config_resolves_profile_and_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AESTUDY_PROFILE", "smoke")
    cfg = StudyConfig()
    assert cfg.profile == "smoke"
    assert cfg.epochs_or(7) == 7
    assert StudyConfig(epochs=1).epochs_or(7) == 1
    assert cfg.to_dict()["dataset"] == "fashion-mnist"
