"""benchmarks/: GEMM-floor accounting against torch's FLOP counter, peers' objectives against aestudy's, settings
errors, report helpers, and the --quick run end to end (tiny subset; no timing is asserted anywhere)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aestudy import objectives, precision
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, build_model

# `benchmarks` is a folder of the checkout, not an installed package: `python -m pytest` finds it, the `pytest`
# script does not (drop these lines once pyproject's pytest options say pythonpath = ["."]).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import report  # noqa: E402
from benchmarks.gemm_floor import GemmFloor, epoch_batches, epoch_flops, linear_layers, step_gemms  # noqa: E402
from benchmarks.loops import LOOPS, examples_loss, pythae_vae  # noqa: E402
from benchmarks.train_speed import Settings, resolve_threads, run  # noqa: E402


def _vae(seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**kwargs))


def _step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs torch counts for one real forward + backward of aestudy's loss."""
    with FlopCounterMode(display=False) as counter:
        loss, _ = objectives.loss_terms(model, x)
        loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("batch", [1, 8, 128])
def test_step_gemms_match_torch_flop_count_of_a_real_step(batch: int) -> None:
    model = _vae()
    gemms = step_gemms(model, batch)
    assert sum(g.flops for g in gemms) == _step_flops(model, torch.rand(batch, 1, 28, 28))


def test_step_gemms_cover_every_linear_layer_with_three_gemms_but_the_first_input_gradient() -> None:
    model = _vae()
    layers = linear_layers(model)
    gemms = step_gemms(model, 128)
    assert [name for name, _ in layers] == ["encoder.trunk.0", "encoder.trunk.2", "encoder.head", "decoder.trunk.0.0",
                                            "decoder.trunk.0.2", "decoder.trunk.1"]
    assert len(gemms) == 3 * len(layers) - 1
    assert not [g for g in gemms if g.layer == "encoder.trunk.0" and g.role == "input_grad"]
    forward = {g.layer: (g.m, g.k, g.n) for g in gemms if g.role == "forward"}
    assert forward == {name: (128, lin.in_features, lin.out_features) for name, lin in layers}
    # 784-512-256-(2·16) encoder, 16-256-512-784 decoder
    per_image = 2 * 3 * (784 * 512 + 512 * 256 + 256 * 32 + 16 * 256 + 256 * 512 + 512 * 784) - 2 * 784 * 512
    assert sum(g.flops for g in gemms) == 128 * per_image


def test_floor_runs_exactly_the_counted_gemms() -> None:
    model = _vae()
    floor = GemmFloor(model, [8])
    with FlopCounterMode(display=False) as counter:
        floor.run_step(8)
    assert counter.get_total_flops() == sum(g.flops for g in step_gemms(model, 8))


def test_epoch_batches_and_flops_include_the_ragged_last_batch() -> None:
    assert epoch_batches(60_000, 128) == [128] * 468 + [96]
    assert epoch_batches(256, 128) == [128, 128]
    model = _vae()
    assert epoch_flops(model, 300, 128) == 2 * sum(g.flops for g in step_gemms(model, 128)) + sum(
        g.flops for g in step_gemms(model, 44))


def test_floor_refuses_models_with_other_weighted_layers() -> None:
    with pytest.raises(ConfigError, match=r"nn.Linear layers only; 'encoder.features.0' is a Conv2d: use arch='mlp'"):
        linear_layers(_vae(arch="conv"))


def test_dataloader_loop_objective_is_aestudys_loss_summed_over_the_batch() -> None:
    model, x = _vae(), torch.rand(16, 1, 28, 28)
    torch.manual_seed(1)
    ours, _ = objectives.loss_terms(model, x)
    torch.manual_seed(1)  # the same ε for the reparameterised draw
    theirs = examples_loss(model, x)
    assert theirs.item() == pytest.approx(16 * ours.item(), rel=1e-5)


def test_pythae_vae_shares_the_layers_and_its_bce_loss_is_aestudys() -> None:
    model, x = _vae(), torch.rand(16, 1, 28, 28)
    theirs = pythae_vae(model)
    assert {id(p) for p in theirs.parameters()} == {id(p) for p in model.parameters()}
    torch.manual_seed(2)
    ours, _ = objectives.loss_terms(model, x)
    torch.manual_seed(2)
    assert theirs({"data": x}).loss.item() == pytest.approx(ours.item(), rel=1e-5)


def test_settings_errors_name_the_parameter_and_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"rows='speed' is invalid; valid rows \(comma-separated\): throughput, "
                                          r"quality, batched, fit_profile, evaluation, scaling, series, gpu\."):
        Settings(rows=("speed",))
    with pytest.raises(ConfigError, match=r"rounds=0 is invalid; it must be an integer >= 1\."):
        Settings(rounds=0)
    with pytest.raises(ConfigError, match=r"variants=\(.fast.,\) is invalid; valid values: any of aestudy, "):
        Settings(variants=("fast",))
    with pytest.raises(ConfigError, match=r"threads='two' is invalid; valid values: 'auto' or an integer >= 1\."):
        resolve_threads("two")


def test_auto_threads_use_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setattr("os.getloadavg", lambda: (2.6, 0.0, 0.0))
    assert resolve_threads("auto")[0] == 1
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 0.0, 0.0))
    assert resolve_threads("auto")[0] == 1
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))
    assert resolve_threads("auto") == (4, "auto: 4 cores, load average 0.20 at start")
    assert resolve_threads("3") == (3, "given")


def test_readme_section_is_replaced_between_the_markers(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nintro\n{report.README_START}\nold\n{report.README_END}\ntail\n")
    report.update_readme(readme, "new table\n")
    assert readme.read_text() == f"# B\n\nintro\n{report.README_START}\nnew table\n{report.README_END}\ntail\n"


def test_md_table_formats_numbers_and_blanks() -> None:
    table = report.md_table([{"a": "x", "b": 1234.5}, {"a": "y", "b": None}],
                            [("a", "A", report.text), ("b", "B", report.fmt(1))])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| x | 1,234.5 |", "| y |  |"]


def test_loops_use_public_options_of_fit_not_patched_private_functions() -> None:
    source = (Path(__file__).resolve().parents[1] / "benchmarks" / "loops.py").read_text()
    assert "mock.patch" not in source and "aestudy.train._" not in source
    assert LOOPS["aestudy"].floor == ("fp32_onednn" if precision.matmul_backend()["precision"] == "medium"
                                      else "fp32")


@pytest.mark.slow
def test_quick_run_writes_every_selected_row_as_valid_json(tmp_path) -> None:
    rows = ("throughput", "quality", "batched", "scaling", "gpu")
    settings = Settings.quick_settings(rows=rows, out=tmp_path)
    run(settings, ["--quick"])
    results = json.loads((tmp_path / "train_speed.json").read_text())
    assert (tmp_path / "train_speed.png").stat().st_size > 0
    assert set(results["rows"]) == set(rows)
    batched = results["rows"]["batched"]
    assert batched["max_weight_diff"] < 1e-4  # the batched and sequential sides trained the same models
    assert batched["speedup_wall"] > 0 and set(batched["summary"]) == {"batched", "sequential"}
    throughput = results["rows"]["throughput"]
    assert {r["loop"] for r in throughput["loops"]} >= {"aestudy", "dataloader", "pythae"}
    assert all(len(r["rounds"]) == settings.rounds for r in throughput["loops"])
    model = build_model(ModelConfig())
    assert throughput["floor"]["gflop_per_epoch"] == pytest.approx(epoch_flops(model, 512, 128) / 1e9)
    assert len(throughput["floor"]["timings"]) >= 3 * settings.rounds  # a floor timing after every run
    quality = results["rows"]["quality"]
    for loop in quality["loops"]:
        assert len(loop["neg_elbo"]["values"]) == settings.rounds
        assert all(math.isfinite(v) and v > 0 for v in loop["neg_elbo"]["values"] + loop["is_nll"]["values"])
    assert results["rows"]["scaling"]["size_fit"]["slope_s_per_10k"] > 0
    assert results["meta"]["threads"] == settings.threads
