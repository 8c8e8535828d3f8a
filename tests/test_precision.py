"""The fp32 GEMM backend choice: the decision from a probe result, the context that restores the caller's
setting, nothing changed at import, and `fit` on the chosen backend equal to the MKL path within float tolerance."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from aestudy import precision
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, build_model
from aestudy.train import TrainConfig, fit
from tests.test_train import toy_dataset

TINY = ModelConfig(input_shape=(1, 8, 8), hidden=(64, 32), latent_dim=4)


@pytest.mark.parametrize(("device_type", "error", "onednn", "precision_", "exact"), [
    ("cpu", 6.8e-7, True, "medium", True),  # AVX-512 without AMX: oneDNN keeps fp32
    ("cpu", 9.9e-6, True, "medium", True),  # just under the tolerance
    ("cpu", 1e-5, True, "highest", False),  # at the tolerance: not exact
    ("cpu", 2.1e-3, True, "highest", False),  # AMX: bf16 inputs
    ("cpu", 6.8e-7, False, "highest", True),  # a torch build without oneDNN
    ("cuda", 4.9e-4, True, "highest", False),  # TF32
    ("cuda", 1e-7, True, "highest", True),  # even a GPU that stayed fp32: "medium" may mean TF32 elsewhere
])
def test_decision_from_a_faked_probe_result(device_type, error, onednn, precision_, exact) -> None:
    decision = precision.decide(device_type, error, onednn_available=onednn)
    assert decision["precision"] == precision_
    assert decision["exact"] is exact
    assert decision["probe_relative_error"] == error and decision["device_type"] == device_type


def test_decision_reasons_name_the_cause() -> None:
    assert "bf16 inputs, an AMX CPU" in precision.decide("cpu", 2e-3)["reason"]
    assert precision.decide("cpu", 1e-7, onednn_available=False)["reason"] == \
        "oneDNN is not available in this torch build"
    assert "TF32/bf16" in precision.decide("cuda", 5e-4)["reason"]


def test_probe_measures_fp32_accuracy_on_this_machine() -> None:
    decision = precision.matmul_backend("cpu")
    # the same seeded product gives the same error, and the decision follows the tolerance
    assert precision.probe_error("cpu") == decision["probe_relative_error"]
    assert decision["exact"] is (decision["probe_relative_error"] < precision.EXACT_TOLERANCE)
    # torch's default fp32 path is accurate to fp32 rounding on the same operands
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(128, 784, generator=generator), torch.randn(784, 512, generator=generator)
    exact = a.double() @ b.double()
    assert float(((a @ b).double() - exact).abs().max() / exact.abs().max()) < precision.EXACT_TOLERANCE
    # the returned dict is a copy: editing it leaves the cached decision alone
    decision["precision"] = "edited"
    assert precision.matmul_backend("cpu")["precision"] != "edited"


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch):
    """Make the probe's decision say oneDNN fp32 (or not), whatever this CPU is."""
    def fake(fast: bool) -> None:
        decision = precision.decide("cpu", 1e-7 if fast else 1e-3)
        monkeypatch.setattr(precision, "_decision", lambda device_type: decision)
    return fake


@pytest.mark.parametrize("fast", [True, False])
def test_context_applies_the_decision_and_restores_the_callers_setting(faked, fast: bool) -> None:
    faked(fast)
    assert torch.get_float32_matmul_precision() == "highest"
    with precision.fp32_matmul("cpu") as decision:
        assert torch.get_float32_matmul_precision() == ("medium" if fast else "highest")
        assert decision["precision"] == torch.get_float32_matmul_precision()
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(RuntimeError, match="inside"), precision.fp32_matmul("cpu"):
        raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == "highest"


def test_context_leaves_a_callers_own_setting_and_mode_default_alone(faked) -> None:
    faked(True)
    torch.set_float32_matmul_precision("high")
    try:
        with precision.fp32_matmul("cpu"):
            assert torch.get_float32_matmul_precision() == "high"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision("highest")
    with precision.fp32_matmul("cpu", mode="default") as decision:
        assert decision is None and torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(ConfigError) as err, precision.fp32_matmul("cpu", mode="fast"):
        pass
    assert str(err.value) == "fp32_matmul='fast' is invalid; valid values: 'auto', 'default'."


def test_importing_aestudy_changes_no_global_setting() -> None:
    code = ("import torch; before = torch.get_float32_matmul_precision(); "
            "import aestudy.train, aestudy.objectives, aestudy.precision, aestudy.metrics; "
            "print(before, torch.get_float32_matmul_precision())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["highest", "highest"]


def test_train_config_rejects_an_unknown_backend_and_keeps_it_out_of_the_cache_key() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(fp32_matmul="bf16")
    assert str(err.value).startswith("fp32_matmul='bf16' is invalid; valid values: 'auto'")
    assert TrainConfig(fp32_matmul="default").key_fields() == TrainConfig().key_fields()


def test_fit_on_the_chosen_backend_equals_the_mkl_path_within_float_tolerance(faked) -> None:
    faked(True)  # exercise the oneDNN path even where the probe would keep MKL
    data = toy_dataset(256, 64, side=8)
    seen: dict[str, set[str]] = {"auto": set(), "default": set()}
    results = {}
    for mode in ("auto", "default"):
        torch.manual_seed(3)
        model = build_model(TINY)
        model.encoder.register_forward_hook(lambda *_, mode=mode: seen[mode].add(torch.get_float32_matmul_precision()))
        cfg = TrainConfig(epochs=2, batch_size=32, progress=False, seed=3, fp32_matmul=mode)
        results[mode] = fit(model, data, cfg)
        assert torch.get_float32_matmul_precision() == "highest"  # restored after fit
    assert seen == {"auto": {"medium"}, "default": {"highest"}}
    a, b = results["auto"], results["default"]
    for name, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[name], rtol=1e-4, atol=1e-5)
    cols = ["train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"]
    torch.testing.assert_close(torch.tensor(a.history[cols].values), torch.tensor(b.history[cols].values),
                               rtol=1e-5, atol=1e-4)


def test_evaluations_run_on_the_chosen_backend_and_restore_the_callers_setting(faked) -> None:
    from aestudy.evaluation import batched
    faked(True)
    model = build_model(TINY)
    seen: list[str] = []
    out = batched(model, lambda x, y: seen.append(torch.get_float32_matmul_precision()) or model.reconstruct(x),
                  torch.rand(5, 1, 8, 8), None)
    assert out.shape == (5, 1, 8, 8) and seen == ["medium"]
    assert torch.get_float32_matmul_precision() == "highest"
