"""benchmarks/gpu_check.sh: its CPU dry run end to end (the GPU check's every step, at smoke sizes), and the summary,
budget and option rules it relies on, on synthetic records. No timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO))
from benchmarks import gpu_check  # noqa: E402

PINS = [line for line in (REPO / "benchmarks" / "gpu_requirements.txt").read_text().splitlines() if "==" in line]
SETUP_STEPS = ["device", "wheels", "install into a temporary prefix", "aestudy imports", "kernel", "data",
               "rows (process)", "series (process)"]


def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One dry run for the module: smoke notebook 02 on the CPU, tiny rows, wheels fetched for this Python."""
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    done = _script("--dry-run", "--python", sys.executable, "--out", str(out), "--pack", str(out.parent / "pack"),
                   timeout=600)
    return done, out


@pytest.fixture(scope="module")
def record(dry_run: tuple[subprocess.CompletedProcess, Path]) -> dict:
    return json.loads((dry_run[1] / "gpu_check.json").read_text())


@pytest.mark.slow
def test_dry_run_passes_and_prints_the_summary_table(dry_run: tuple[subprocess.CompletedProcess, Path],
                                                       record: dict) -> None:
    done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("gpu_check summary: mode dry-run, device cpu")
    assert done.stdout.rstrip().endswith("result: OK")
    for step in SETUP_STEPS:
        assert f"setup: {step}" in done.stdout
    assert (out / "summary.txt").read_text() == done.stdout
    assert record["mode"] == "dry-run" and record["ok"] and record["failures"] == []
    assert {t["verdict"] for t in record["targets"]} == {"not judged (dry run)"}


@pytest.mark.slow
def test_dry_run_installs_the_pinned_wheels_into_a_prefix_and_registers_its_kernel(record: dict) -> None:
    steps = {s["step"]: s for s in record["setup"]}
    assert list(steps) == SETUP_STEPS
    assert all(s["status"] == "ok" for s in steps.values())
    assert steps["wheels"]["note"].startswith(f"{len(PINS)} wheels for Python {sys.version.split()[0]}")
    assert steps["install into a temporary prefix"]["note"].startswith("8 Jupyter modules import from the prefix")
    modules = [p for p in (REPO / "aestudy").rglob("*.py") if p.name != "__init__.py" or p.parent != REPO / "aestudy"]
    assert steps["aestudy imports"]["note"] == f"{len(modules)} aestudy modules import"
    assert steps["kernel"]["note"] == f"kernel 'aestudy' -> {sys.executable}"
    assert steps["data"]["note"].endswith("decoded and verified")


@pytest.mark.slow
def test_dry_run_executes_the_smoke_notebook_with_metrics_and_report(dry_run: tuple[subprocess.CompletedProcess,
                                                                                     Path], record: dict) -> None:
    out = dry_run[1]
    [phase] = record["series"]
    assert (phase["profile"], phase["device"]) == ("smoke", "cpu")
    [notebook] = phase["notebooks"]
    assert notebook["notebook"] == "02_vae_maths_elbo.ipynb" and notebook["status"] == "done"
    assert notebook["wall_s"] > 0 and notebook["claims"]
    executed = json.loads((out / "series-smoke" / "runs" / "02" / "02_vae_maths_elbo.ipynb").read_text())
    assert any(cell.get("outputs") for cell in executed["cells"] if cell["cell_type"] == "code")
    merged = json.loads((out / "series-smoke" / "metrics.json").read_text())
    assert merged["notebooks"]["02_vae_maths_elbo"]["status"] == "done"
    assert len(merged["notebooks"]["02_vae_maths_elbo"]["claims"]) == len(notebook["claims"])
    assert "02_vae_maths_elbo" in (out / "series-smoke" / "report.md").read_text()


@pytest.mark.slow
def test_dry_run_packs_what_the_device_tool_brings_back(dry_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    pack = dry_run[1].parent / "pack"
    assert sorted(p.name for p in pack.iterdir()) == ["gpu-check.tgz", "gpu-notebooks.tgz", "gpu_check.json",
                                                      "summary.txt"]
    with tarfile.open(pack / "gpu-notebooks.tgz") as archive:
        assert archive.getnames() == ["out/series-smoke/runs/02/02_vae_maths_elbo.ipynb"]
    with tarfile.open(pack / "gpu-check.tgz") as archive:
        names = archive.getnames()
    assert {"out/gpu_check.json", "out/rows.json", "out/setup.tsv", "out/series-smoke/report.md"} <= set(names)
    assert not [name for name in names if name.endswith(".ipynb")]


@pytest.mark.slow
def test_dry_run_rows_are_consistent(record: dict) -> None:
    rows = {row["row"]: row for row in record["rows"]}
    epochs = [row for row in rows.values() if "s_per_60k" in row]
    assert len(epochs) == len(gpu_check.FIT_VARIANTS) + 1  # one batch size in the dry run, plus the graph step
    for row in epochs:
        assert row["status"] == "ok" and math.isfinite(row["train_loss"])
        assert row["samples_per_s"] * row["s_per_epoch"] == pytest.approx(row["images"])
        assert row["s_per_60k"] == pytest.approx(row["s_per_epoch"] * 60000 / row["images"])
    graph = rows["VAE epoch, CUDA graph step (tf32)"]
    assert graph["images"] == 1024 // 128 * 128 and "not captured" in graph["note"]
    nll = next(row for row in rows.values() if row["row"].startswith("IS-NLL"))
    assert nll["status"] == "ok" and nll["is_nll"] == pytest.approx(nll["neg_elbo"] + nll["nll_minus_neg_elbo"])
    batched = next(row for row in rows.values() if row["row"].endswith("batched fit_many"))
    try:
        import aestudy.ensemble  # noqa: F401
    except ImportError:
        assert batched["status"] == "not available"
    else:
        sequential = next(row for row in rows.values() if row["row"].endswith("sequential fit"))
        assert batched["speedup"] == pytest.approx(sequential["seconds"] / batched["seconds"])


# ------------------------------------------------------------------------------------------ synthetic records


def _write_check(out: Path, rows: list[dict], notebooks: list[dict] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "setup.tsv").write_text("device\tok\t1.0\tcpu\nwheels\tok\t2.0\t39 wheels\n")
    gpu_check.write_json(out / "rows.json", {"rows": rows})
    if notebooks is not None:
        gpu_check.write_json(out / "series-full" / "series.json",
                             {"profile": "full", "device": "cuda", "notebooks": notebooks})


def test_summary_fails_on_a_failed_row_and_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_check(tmp_path, [{"row": "IS-NLL", "status": "failed", "error": "CUDA error: out of memory"},
                            {"row": "seeds", "status": "skipped", "note": "the time budget was spent"}])
    assert gpu_check.summarize(tmp_path) == 1
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["failures"] == ["row: IS-NLL"]
    assert "CUDA error: out of memory" in capsys.readouterr().out


def test_summary_counts_skipped_and_unavailable_as_no_failure(tmp_path: Path) -> None:
    _write_check(tmp_path, [{"row": "seeds", "status": "skipped"}, {"row": "fit_many", "status": "not available"}],
                 [{"notebook": "04_applications.ipynb", "status": "skipped", "wall_s": None, "claims": []}])
    assert gpu_check.summarize(tmp_path) == 0


def test_summary_fails_on_a_failed_notebook_but_not_on_one_stopped_for_time(tmp_path: Path) -> None:
    stopped = {"notebook": "02_vae_maths_elbo.ipynb", "status": "stopped", "wall_s": 300.0, "claims": []}
    failed = {"notebook": "01_autoencoder_basics.ipynb", "status": "failed", "wall_s": 3.0, "claims": [],
              "error": "Expected a 'cuda' device type for generator but found 'cpu'"}
    _write_check(tmp_path / "a", [], [stopped])
    assert gpu_check.summarize(tmp_path / "a") == 0
    _write_check(tmp_path / "b", [], [failed, stopped])
    assert gpu_check.summarize(tmp_path / "b") == 1
    record = json.loads((tmp_path / "b" / "gpu_check.json").read_text())
    assert record["failures"] == ["notebook full/01_autoencoder_basics.ipynb: failed"]


def test_targets_compare_the_best_epoch_the_speedup_and_the_complete_full_series() -> None:
    rows = [{"row": "a", "status": "ok", "s_per_60k": 0.08, "batch": 128},
            {"row": "b", "status": "ok", "s_per_60k": 0.04, "batch": 1024},
            {"row": "c", "status": "failed", "s_per_60k": 0.01, "batch": 1024},
            {"row": "seeds", "status": "ok", "speedup": 2.5}]
    full = {"profile": "full", "notebooks": [{"status": "done", "wall_s": 100.0}, {"status": "done", "wall_s": 150.0}]}
    verdicts = [t["verdict"] for t in gpu_check.targets(rows, [full])]
    assert verdicts == ["met", "missed", "met"]
    assert gpu_check.targets(rows, [full])[0]["measured"].startswith("40.0 ms (b, batch 1024)")
    full["notebooks"].append({"status": "skipped", "wall_s": None})
    assert gpu_check.targets([], [full])[2]["verdict"] == "not measured"


def test_series_skips_every_notebook_when_the_budget_is_spent(tmp_path: Path) -> None:
    record = gpu_check.run_series(tmp_path, profile="full", device="cuda", kernel="aestudy", only=["01", "03"],
                                  deadline=time.time() + gpu_check.NOTEBOOK_MIN_S - 1)
    assert [(n["notebook"][:2], n["status"]) for n in record["notebooks"]] == [("01", "skipped"), ("03", "skipped")]
    assert json.loads((tmp_path / "series.json").read_text())["notebooks"] == record["notebooks"]


def test_row_plan_puts_the_cheap_rows_first_and_the_cold_compiles_last() -> None:
    plan = gpu_check.row_plan(gpu_check.RowSizes(batch_sizes=(128, 1024), compile_batch_sizes=(128,)))
    kinds = [(kind, batch, variant and variant[0]) for kind, batch, variant in plan]
    assert kinds == [("fit", 128, "fp32"), ("fit", 128, "tf32"), ("fit", 128, "bf16 autocast"), ("graph", 128, None),
                     ("seeds", 128, None), ("nll", 128, None), ("fit", 1024, "fp32"), ("fit", 1024, "tf32"),
                     ("fit", 1024, "bf16 autocast"), ("graph", 1024, None), ("fit", 128, "torch.compile"),
                     ("fit", 128, "torch.compile + bf16")]


def test_steady_epoch_leaves_out_the_first_epoch() -> None:
    assert gpu_check.steady_epoch([9.0, 1.0, 3.0, 2.0]) == 2.0
    assert gpu_check.steady_epoch([9.0]) == 9.0


def test_pin_kernel_env_adds_variables_and_keeps_the_spec(tmp_path: Path) -> None:
    (tmp_path / "kernel.json").write_text(json.dumps({"argv": ["/py", "-m", "ipykernel_launcher"], "env": {"A": "1"}}))
    spec = gpu_check.pin_kernel_env(tmp_path, {"PYTHONPATH": "/site:/repo"})
    assert spec == json.loads((tmp_path / "kernel.json").read_text())
    assert spec["argv"] == ["/py", "-m", "ipykernel_launcher"]
    assert spec["env"] == {"A": "1", "PYTHONPATH": "/site:/repo"}


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unknown option '--bogus'; valid options: --dry-run"),
    (["--dry-run", "--budget", "10"], "--budget 10 is invalid; give whole seconds >= 60"),
    (["--dry-run", "--only", "1;3"], "--only 1;3 is invalid; give notebook numbers such as 01,03"),
    (["--out"], "--out needs a value"),
    (["--carry", "/nonexistent"], "no wheels in /nonexistent/wheels; run 'make gpu-wheels'"),
])
def test_bad_options_stop_before_any_work_with_the_fix(args: list[str], message: str) -> None:
    done = _script(*args, "--python", sys.executable) if args != ["--out"] else _script(*args)
    assert done.returncode == 2
    assert f"gpu_check: error: {message}" in done.stderr
    assert "==> device" not in done.stderr


def test_an_earlier_check_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "setup.tsv").write_text("device\tok\t1.0\tcpu\n")
    done = _script("--dry-run", "--python", sys.executable, "--out", str(tmp_path))
    assert done.returncode == 2 and f"--out {tmp_path} already holds a check" in done.stderr
    assert (tmp_path / "setup.tsv").read_text() == "device\tok\t1.0\tcpu\n"
