"""The papermill runner: validation before execution, routing, metrics.json, report, failure + resume, Ctrl-C.

Executes the two toy notebooks in tests/fixtures/notebooks (no training; 01 does not even import torch), so
the cost is mostly kernel start-up: keep the number of executions small.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

from aestudy.errors import ConfigError, DeviceError
from aestudy.runner import report
from aestudy.runner.cli import main
from aestudy.runner.environment import kernel_python
from aestudy.runner.folders import LOCK_FILE, OWNER_FILE, claim_folder, load_state
from aestudy.runner.params import collect_params, discover_notebooks, parse_only, route_parameters
from aestudy.runner.run import notebook_parameters, plan_run, resume_study, run_study

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "tests" / "fixtures" / "notebooks"
ALPHA, BETA = "01_toy_alpha", "02_toy_beta"
CLAIM_KEYS = {"id", "statement", "kind", "measured", "holds", "enforced", "profile", "notebook", "time"}


def _injected(path: Path) -> str:
    """The source of the cell papermill injected into an executed notebook."""
    nb = nbformat.read(str(path), as_version=4)
    (cell,) = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return cell.source


def _assignments(source: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+) = (.+)$", source, flags=re.M))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _wait_for(condition, proc: subprocess.Popen, what: str, deadline_s: float = 90.0) -> None:
    """Poll `condition` until it holds; fail early if the process ended first."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc={proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ validation


def test_discovers_the_series_in_order_and_selects_by_prefix():
    assert [p.name for p in discover_notebooks(NOTEBOOKS)] == [f"{ALPHA}.ipynb", f"{BETA}.ipynb"]
    assert [p.name for p in discover_notebooks(NOTEBOOKS, ["02"])] == [f"{BETA}.ipynb"]
    with pytest.raises(ConfigError) as info:
        discover_notebooks(NOTEBOOKS, ["07", "01"])
    assert str(info.value) == "--only 07 selects no notebook; valid values: 01, 02."


def test_parameters_cell_is_read_with_defaults_and_types():
    params = notebook_parameters(NOTEBOOKS / f"{ALPHA}.ipynb")
    assert list(params) == ["profile", "dataset", "latent_dim", "epochs", "batch_size", "lr", "seed", "device"]
    assert params["lr"].default == 1e-3 and params["lr"].annotation.describe() == "a finite number"
    assert params["epochs"].annotation.describe() == "an integer or None"
    assert params["epochs"].declaration == "epochs: int | None = None"
    epochs, latent_dim = params["epochs"].annotation, params["latent_dim"].annotation
    assert epochs.convert(None)[0] and epochs.convert(3)[0] and not epochs.convert(2.5)[0]
    assert not latent_dim.convert(True)[0]  # a bool is not an int here


def test_p_values_are_read_as_papermill_reads_them():
    params = collect_params([["ood_dataset", "None"], ["lr", "1e-3"], ["beta", "3"], ["fail", "True"],
                             ["dataset", "mnist"], ["name", "none"]])
    assert params == {"ood_dataset": None, "lr": 0.001, "beta": 3, "fail": True, "dataset": "mnist", "name": "none"}
    with pytest.raises(ConfigError) as info:
        collect_params([["seed", "1"], ["seed", "2"]])
    assert str(info.value) == "-p seed is given twice ('1', then '2'); give it once."


def test_only_must_name_a_notebook():
    assert parse_only(None) is None and parse_only(" 01, 03 ,") == ["01", "03"]
    with pytest.raises(ConfigError) as info:
        parse_only(" , ")
    assert str(info.value) == ("--only ' , ' names no notebook; valid values: number prefixes such as 01,03 (or "
                               "leave --only out to run every notebook).")


def test_params_file_is_merged_with_p_pairs_which_win(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("latent_dim: 4\nbeta: 2.0\nlr: 1e-4\n")
    assert collect_params([["latent_dim", "3"]], file) == {"latent_dim": 3, "beta": 2.0, "lr": 1e-4}
    file.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping of parameter names to values"):
        collect_params(None, file)
    file.write_text("lr: 1e-3\nlr: 1e-2\n")
    with pytest.raises(ConfigError) as info:
        collect_params(None, file)
    assert str(info.value) == (f"--params {file} is not valid YAML (key 'lr' is given twice (first on line 1) in "
                               '"<unicode string>", line 2, column 1: lr: 1e-2 ^).')


def test_params_file_values_are_read_as_users_expect(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("lr: 1e-3\nood_dataset: None\nepochs: null\nseed: 010\ndataset: mnist\n")
    params = collect_params(None, file)
    assert params == {"lr": 0.001, "ood_dataset": None, "epochs": None, "seed": 10, "dataset": "mnist"}
    assert type(params["lr"]) is float


def test_unknown_parameter_is_rejected_with_the_valid_names():
    with pytest.raises(ConfigError) as info:
        route_parameters(discover_notebooks(NOTEBOOKS), {"latnt_dim": 3})
    assert str(info.value) == (
        "unknown parameter 'latnt_dim': not in the parameters cell of any selected notebook "
        "(01_toy_alpha, 02_toy_beta); valid names: batch_size, beta, dataset, device, epochs, fail, latent_dim, "
        "lr, profile, seed."
    )


def test_parameter_of_an_unselected_notebook_is_unknown():
    with pytest.raises(ConfigError, match=r"^unknown parameter 'beta': .*\(01_toy_alpha\); valid names: batch_size,"):
        route_parameters(discover_notebooks(NOTEBOOKS, ["01"]), {"beta": 2.0})


def test_wrong_type_is_rejected_naming_notebook_and_parameter():
    with pytest.raises(ConfigError) as info:
        route_parameters(discover_notebooks(NOTEBOOKS), {"beta": "big"})
    assert str(info.value) == "notebook 02_toy_beta: beta='big' is invalid; it must be a finite number >= 0."
    with pytest.raises(ConfigError) as info:
        route_parameters(discover_notebooks(NOTEBOOKS), collect_params([["latent_dim", "3.5"]]))
    assert str(info.value) == "notebook 01_toy_alpha: latent_dim=3.5 is invalid; it must be an integer >= 1."
    with pytest.raises(ConfigError) as info:  # a parameter without a rule is checked by its annotation
        route_parameters(discover_notebooks(NOTEBOOKS), collect_params([["fail", "yes"]]))
    assert str(info.value) == ("notebook 02_toy_beta: fail='yes' is invalid; the notebook declares `fail: bool`, "
                               "so it must be True or False.")


def test_routing_gives_each_notebook_only_its_parameters():
    routed = route_parameters(discover_notebooks(NOTEBOOKS), {"latent_dim": 3, "beta": 4, "dataset": "mnist"},
                              run_level={"profile": "smoke", "device": "cpu"})
    assert routed == {
        ALPHA: {"profile": "smoke", "device": "cpu", "latent_dim": 3, "dataset": "mnist"},
        BETA: {"profile": "smoke", "latent_dim": 3, "beta": 4.0},
    }
    assert isinstance(routed[BETA]["beta"], float)


def test_invalid_run_is_rejected_before_anything_is_written(tmp_path):
    out = tmp_path / "runs" / "bad"
    with pytest.raises(ConfigError, match="unknown parameter 'nope'"):
        run_study(NOTEBOOKS, out=out, profile="smoke", params={"nope": 1}, progress=False)
    with pytest.raises(ConfigError, match="profile given twice|is given twice"):
        plan_run(NOTEBOOKS, profile="smoke", params={"profile": "full"})
    with pytest.raises(ConfigError, match=r"^--kernel 'no-such-kernel' is not an installed Jupyter kernel; valid "
                                          r"values: .*aestudy"):
        kernel_python("no-such-kernel")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ a full run


def test_cli_rejects_bad_options_before_running(tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    code = main(["run", "--notebooks-dir", str(NOTEBOOKS), "--out", str(out), "-p", "latnt_dim", "3"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.startswith("aestudy: error: unknown parameter 'latnt_dim': not in the parameters")
    assert main(["run", "--resume", str(out), "-p", "seed", "1", "--only", "01"]) == 2
    assert capsys.readouterr().err == ("aestudy: error: --resume continues with the run's saved settings; drop "
                                       "--only (-p/--params may change parameters of the notebooks not yet "
                                       "done).\n")


SERIES = REPO / "notebooks"


@pytest.mark.parametrize(("argv", "message"), [
    # Issue 12, item 6: values the notebooks' own rules refuse stop here, not inside notebook 01's kernel.
    (["-p", "latent_dim", "0"], "notebook 01_autoencoder_basics: latent_dim=0 is invalid; it must be an integer "
                                ">= 1."),
    (["-p", "lr", "-1"], "notebook 01_autoencoder_basics: lr=-1 is invalid; it must be a finite number in "
                         "(0, 10)."),
    (["-p", "lr", "nan"], "notebook 01_autoencoder_basics: lr=nan is invalid; it must be a finite number in "
                          "(0, 10)."),
    # Item 7: epochs=0 would crash 03's convergence measurement; the rule admits only what every notebook handles.
    (["-p", "epochs", "0"], "notebook 01_autoencoder_basics: epochs=0 is invalid; it must be None (the "
                            "profile's default) or an integer >= 1."),
    (["--only", "04", "-p", "anomaly_class", "10"], "notebook 04_applications: anomaly_class=10 is invalid; it "
                                                     "must be an integer in [0, 9]."),
    (["--only", "04", "-p", "ood_dataset", "fashion-mnist"],
     "notebook 04_applications: ood_dataset='fashion-mnist' is invalid; valid values: None (digits, or "
     "fashion-mnist when training on digits) or one of 'mnist', 'digits' (a dataset other than the training "
     "dataset 'fashion-mnist', with its image shape 1x28x28)."),
    (["--only", "03", "-p", "n_seeds", "0"], "notebook 03_ae_vs_vae_comparison: n_seeds=0 is invalid; it must be "
                                              "None (the profile's default) or an integer >= 1."),
    (["--only", "02", "-p", "beta", "none"], "notebook 02_vae_maths_elbo: beta='none' is invalid; it must be a "
                                              "finite number >= 0."),
])
def test_every_value_is_checked_by_the_notebooks_rules_before_anything_exists(tmp_path, capsys, argv, message):
    out = tmp_path / "runs" / "x"
    code = main(["run", "--profile", "smoke", "--out", str(out), *argv])
    assert code == 2 and not out.exists() and not (tmp_path / "runs").exists()
    assert capsys.readouterr().err == f"aestudy: error: {message}\n"


def test_p_none_reaches_the_notebook_as_none():
    """Issue 12, item 4: `-p ood_dataset None` is None (as with papermill's -p), accepted by 04's rule."""
    notebooks, routed, profile, _ = plan_run(SERIES, profile="smoke", only=["03", "04"],
                                             params=collect_params([["ood_dataset", "None"], ["lr", "1e-3"],
                                                                    ["beta_vae", "3"]]))
    assert routed["04_applications"]["ood_dataset"] is None
    assert routed["03_ae_vs_vae_comparison"]["beta_vae"] == 3.0  # an int given for a float parameter
    assert type(routed["03_ae_vs_vae_comparison"]["beta_vae"]) is float
    assert routed["03_ae_vs_vae_comparison"]["lr"] == routed["04_applications"]["lr"] == 0.001


def test_out_must_be_a_new_or_empty_folder(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError) as info:
        run_study(NOTEBOOKS, out=notes, profile="smoke", progress=False)
    assert str(info.value) == (f"--out {notes} already holds other files (mine.txt); valid values: a new or empty "
                               "folder (a run writes executed notebooks under their own names).")
    assert sorted(p.name for p in notes.iterdir()) == ["mine.txt"]  # not even a lock file written into it
    with pytest.raises(ConfigError, match=r"already holds other files \(01_toy_alpha.ipynb, 02_toy_beta.ipynb\)"):
        run_study(NOTEBOOKS, out=NOTEBOOKS, profile="smoke", progress=False)  # would overwrite the sources
    assert not (NOTEBOOKS / LOCK_FILE).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_rejected_before_running():
    with pytest.raises(DeviceError, match=r"^device='cuda' was requested but no CUDA GPU is available"):
        plan_run(NOTEBOOKS, profile="smoke", device="cuda")


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    """The whole toy series under `-p latent_dim 3 -p beta 4 -p dataset mnist` (executed once per module)."""
    run_dir = tmp_path_factory.mktemp("runs") / "e2e"
    params = collect_params([["latent_dim", "3"], ["beta", "4"], ["dataset", "mnist"]])
    result = run_study(NOTEBOOKS, out=run_dir, profile="smoke", device="cpu", params=params, progress=False)
    return result


@pytest.mark.slow
def test_run_completes_with_every_claim_and_its_evidence(series_run):
    assert series_run.status == "complete" and series_run.exit_code == 0
    metrics = _metrics(series_run.run_dir)
    assert metrics["schema"] == 1 and metrics["status"] == "complete" and metrics["profile"] == "smoke"
    assert list(metrics["notebooks"]) == [ALPHA, BETA]
    for name, entry in metrics["notebooks"].items():
        assert entry["status"] == "done" and entry["wall_s"] > 0 and entry["error"] is None
        for claim in entry["claims"]:
            assert set(claim) >= CLAIM_KEYS and claim["notebook"] == name and claim["measured"]
    claims = {c["id"]: c for entry in metrics["notebooks"].values() for c in entry["claims"]}
    assert set(claims) == {"toy-triangle", "toy-kl-scale", "toy-beta-small"}
    assert claims["toy-triangle"]["measured"] == {"n": 3, "sum": 6} and claims["toy-triangle"]["holds"] is True
    assert claims["toy-kl-scale"]["measured"] == {"beta": 4.0, "kl": 12.0}
    assert claims["toy-beta-small"]["holds"] is False and claims["toy-beta-small"]["kind"] == "examined"
    assert metrics["notebooks"][BETA]["parameters"] == {"profile": "smoke", "latent_dim": 3, "beta": 4.0}


@pytest.mark.slow
def test_run_records_the_environment(series_run):
    env = _metrics(series_run.run_dir)["environment"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert env["git"]["commit"] == head.strip()
    assert env["profile"] == "smoke" and env["seeds"] == {ALPHA: 0, BETA: 0}
    assert env["device"]["requested"] == "cpu" and env["device"]["resolved"] == "cpu" and env["device"]["name"]
    assert env["packages"]["papermill"] and env["packages"]["torch"]
    assert env["kernel"] == {"name": "aestudy", "python": kernel_python("aestudy")}
    assert env["parameters"][ALPHA]["lr"] == 1e-3  # defaults of the parameters cell are recorded too


@pytest.mark.slow
def test_parameters_are_injected_only_where_declared(series_run):
    alpha = _assignments(_injected(series_run.run_dir / f"{ALPHA}.ipynb"))
    beta = _assignments(_injected(series_run.run_dir / f"{BETA}.ipynb"))
    assert alpha == {"profile": '"smoke"', "dataset": '"mnist"', "latent_dim": "3", "device": '"cpu"'}
    assert beta == {"profile": '"smoke"', "latent_dim": "3", "beta": "4.0"}


@pytest.mark.slow
def test_state_and_latest_link(series_run):
    run_dir = series_run.run_dir
    state = load_state(run_dir)
    assert state["run_status"] == "complete"
    assert state["status"] == {f"{ALPHA}.ipynb": "done", f"{BETA}.ipynb": "done"}
    latest = run_dir.parent / "latest"
    assert latest.is_symlink() and os.readlink(latest) == "e2e" and latest.resolve() == run_dir.resolve()


@pytest.mark.slow
def test_report_shows_findings_claims_comparison_timings_and_figures(series_run):
    run_dir = series_run.run_dir
    md = (run_dir / "report.md").read_text()
    assert "Status: **complete** · profile `smoke`" in md
    assert ("3 claims recorded: 2 hold, 1 do not. Of these: 1 examined statement (reported whichever way they "
            "fall); 2 asserted invariants (none failed).") in md
    # the findings: one sentence per table row, from the ledger, each claim linked to its cell
    assert ("- **toy KL** — **holds**: “the toy KL grows linearly with beta” holds "
            "([toy-kl-scale](02_toy_beta.html#cell-id=cell-4): measured beta=4, kl=12; no interval recorded); "
            "this run measured toy-kl-scale.") in md
    assert "- **toy | pipes** — **does not hold**: “beta at most 1 (examined)” does not hold" in md
    assert "| id | statement | kind | verdict |" in md
    assert ("| [toy-kl-scale](02_toy_beta.html#cell-id=cell-4) | the toy KL grows linearly with beta | asserted | "
            "Holds: measured beta=4, kl=12; no interval recorded. |") in md
    assert ("| [toy-beta-small](02_toy_beta.html#cell-id=cell-4) | beta at most 1 (examined) | examined | "
            "Does not hold: measured beta=4; no interval recorded. |") in md
    assert "| [toy-triangle](01_toy_alpha.html#cell-id=cell-4) |" in md
    assert "| Aspect | AE | VAE | Evidence | Verdict |\n| --- | --- | --- | --- | --- |\n" in md
    assert ("| toy KL | 0 | 12 | toy-kl-scale | Holds: “the toy KL grows linearly with beta” holds "
            "([toy-kl-scale](02_toy_beta.html#cell-id=cell-4)). |") in md
    assert re.search(r"\| 02_toy_beta \| done \| \d+\.\d \| 2 \| 1 \| 0 \|", md)
    figure = "metrics/figures/02_toy_beta/toy_beta.png"
    assert f"![02_toy_beta: toy KL against beta]({figure})" in md and (run_dir / figure).is_file()
    assert md.count("<details>") == 3  # two notebooks' measurements, one configuration + environment section
    assert md.index("<summary>Configuration and environment</summary>") > md.index("## Timings")
    # the claim links resolve: the executed notebook rendered beside the report has the cell's anchor
    assert 'id="cell-id=cell-4"' in (run_dir / "02_toy_beta.html").read_text()
    page = (run_dir / "report.html").read_text()
    assert '<ul id="findings">' in page and "<th>Verdict</th>" in page
    assert ('<td class="fails">Does not hold: measured beta=4; no interval recorded.</td>'
            in page)
    assert '<a href="02_toy_beta.html#cell-id=cell-4">toy-kl-scale</a>' in page
    (png,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(png) == (run_dir / figure).read_bytes()


# ------------------------------------------------------------------------------------------ report unit


def test_markdown_table_escapes_pipes_and_newlines():
    import pandas as pd

    frame = pd.DataFrame([{"a": "x|y", "b": "two\nlines", "c": None}])
    assert report.markdown_table(frame) == "| a | b | c |\n| --- | --- | --- |\n| x\\|y | two lines |  |"


def test_structured_metrics_become_tables():
    entry = {"metrics": {"gen": [{"source": "prior", "fid": 120.8213}, {"source": "real", "fid": 0.4}],
                         "watermark": {"seed": 0, "torch": "2.13"}, "kl": 1.5, "comparison_table": [{"A": 1}]}}
    (gen_name, gen), (wm_name, wm) = report.table_metrics(entry)
    assert gen_name == "gen" and report.markdown_table(gen) == (
        "| source | fid |\n| --- | --- |\n| prior | 120.8 |\n| real | 0.4 |")
    assert wm_name == "watermark" and wm.to_dict("records") == [{"key": "seed", "value": 0},
                                                               {"key": "torch", "value": "2.13"}]


def test_verdict_names_enforcement_and_sanity():
    assert report.verdict({"holds": True}) == "holds"
    assert report.verdict({"holds": False, "verdict": "inconclusive", "effect": 0.1}) == "inconclusive"
    assert report.verdict({"holds": False, "kind": "examined"}) == "does not hold"
    assert report.verdict({"holds": False, "enforced": True, "sanity": ["kl = nan is not finite"]}) == (
        "does not hold (enforced; kl = nan is not finite)")


# ------------------------------------------------------------------------------------------ failure, resume


@pytest.mark.slow
def test_failure_stops_the_run_and_resume_finishes_it(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "broken"
    monkeypatch.delenv("TOY_FIXED", raising=False)
    result = run_study(NOTEBOOKS, out=run_dir, profile="smoke", params={"fail": True}, progress=False)
    assert result.status == "failed" and result.failed == f"{BETA}.ipynb" and result.exit_code == 1
    err = capsys.readouterr().err
    assert f"notebook {BETA}.ipynb failed in cell [3] (index 3):\n    import os\n" in err
    assert '    raise RuntimeError(f"injected failure (fail={fail})")' in err
    assert "RuntimeError: injected failure (fail=True)" in err
    assert f"continue with: aestudy run --resume {run_dir}" in err

    state = load_state(run_dir)
    assert state["run_status"] == "failed"
    assert state["status"] == {f"{ALPHA}.ipynb": "done", f"{BETA}.ipynb": "failed"}
    metrics = _metrics(run_dir)
    assert metrics["status"] == "failed" and metrics["notebooks"][ALPHA]["claims"][0]["id"] == "toy-triangle"
    assert metrics["notebooks"][BETA]["error"]["ename"] == "RuntimeError"
    assert "Status: **failed** (incomplete run)" in (run_dir / "report.md").read_text()
    first_alpha = (run_dir / f"{ALPHA}.ipynb").stat().st_mtime_ns
    first_started = metrics["notebooks"][ALPHA]["metrics"]["started_ns"]

    monkeypatch.setenv("TOY_FIXED", "1")  # the notebook's own escape hatch: the saved fail=True stays
    resumed = resume_study(run_dir, progress=False)
    assert resumed.status == "complete"
    metrics = _metrics(run_dir)
    assert metrics["status"] == "complete" and metrics["notebooks"][BETA]["status"] == "done"
    assert metrics["notebooks"][ALPHA]["metrics"]["started_ns"] == first_started  # 01 was not re-executed
    assert (run_dir / f"{ALPHA}.ipynb").stat().st_mtime_ns == first_alpha
    assert _assignments(_injected(run_dir / f"{BETA}.ipynb"))["fail"] == "True"  # same parameters
    assert [c["id"] for c in metrics["notebooks"][BETA]["claims"]] == ["toy-kl-scale", "toy-beta-small"]


def test_resume_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(ConfigError, match=r"no state.json there; valid values: a run folder"):
        resume_study(tmp_path, progress=False)


def _default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored; a terminal's Ctrl-C does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gated_cli_run(tmp_path: Path, run_dir: Path, *options: str, **popen: Any) -> tuple[subprocess.Popen, Path]:
    """`aestudy run` of the toy series in a subprocess, notebook 01 held at its gate (a file that never appears);
    returns the process and the file 01 touches when it reaches the gate."""
    reached = tmp_path / "reached"
    env = {**os.environ, "TOY_GATE": str(tmp_path / "never"), "TOY_GATE_REACHED": str(reached)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aestudy.runner.cli", "run", "--notebooks-dir", str(NOTEBOOKS), *options,
         "--profile", "smoke", "--out", str(run_dir), "--quiet"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    return proc, reached


@pytest.mark.slow
def test_sigint_mid_run_leaves_a_resumable_run(tmp_path):
    run_dir = tmp_path / "runs" / "interrupted"
    proc, reached = _gated_cli_run(tmp_path, run_dir, "--only", "01", preexec_fn=_default_sigint)
    state_file = run_dir / "state.json"

    def running() -> bool:
        return state_file.exists() and load_state(run_dir)["status"][f"{ALPHA}.ipynb"] == "running"

    _wait_for(running, proc, "state.json to say 01 is running")
    _wait_for(reached.exists, proc, "the notebook to reach its gate cell")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # Only the runner's message (issue 12, item 10): the kernel's own logging (its TCP warning, the ZMQError
    # traceback as its sockets close) goes to the run's kernel log, not to the user's terminal.
    assert err == (f"\ninterrupted during {ALPHA}.ipynb; completed notebooks are kept. Continue with: aestudy run "
                   f"--resume {run_dir}\n")
    assert (run_dir / "logs" / f"{ALPHA}.kernel.log").exists()
    # The partial executed notebook says what it is (papermill's clean-up had marked unstarted cells completed).
    partial = nbformat.read(str(run_dir / f"{ALPHA}.ipynb"), as_version=4)
    assert partial.metadata["aestudy"]["status"] == "interrupted"
    assert partial.cells[0].metadata["tags"] == ["aestudy-interrupted"]
    assert partial.cells[0].source.startswith("**Interrupted** (Ctrl-C) at ")
    assert all(c.metadata["papermill"]["status"] == "pending" for c in partial.cells[1:]
               if c.metadata["papermill"]["end_time"] is None)
    assert partial.cells[-1].metadata["papermill"]["status"] == "pending"  # the claim cell never ran
    state = load_state(run_dir)
    assert state["status"] == {f"{ALPHA}.ipynb": "pending"} and state["run_status"] == "interrupted"

    # Resumed through runs/latest, in this process (no TOY_GATE: the notebook runs through).
    resumed = resume_study(run_dir.parent / "latest", progress=False)
    assert resumed.status == "complete" and resumed.run_dir == run_dir
    metrics = _metrics(run_dir)
    assert metrics["run"] == "interrupted" and metrics["status"] == "complete"
    assert [c["id"] for c in metrics["notebooks"][ALPHA]["claims"]] == ["toy-triangle"]


@pytest.mark.slow
def test_jobs_run_notebooks_at_once(tmp_path, monkeypatch):
    """With --jobs 2, 02 runs to the end while 01 is held at its gate: the two kernels run at the same time."""
    import threading

    run_dir = tmp_path / "runs" / "parallel"
    gate, reached = tmp_path / "gate", tmp_path / "reached"
    monkeypatch.setenv("TOY_GATE", str(gate))
    monkeypatch.setenv("TOY_GATE_REACHED", str(reached))
    # A relative --out, as `aestudy run --out runs/x` gives it: papermill's cwd= used to chdir the whole runner into
    # the notebooks' folder while a notebook ran, and with two at once the run wrote half its files there.
    monkeypatch.chdir(tmp_path)
    results: list = []
    worker = threading.Thread(target=lambda: results.append(
        run_study(NOTEBOOKS, out=Path("runs/parallel"), profile="smoke", device="cpu", progress=False, jobs=2)))
    worker.start()
    beta_ledger = run_dir / "metrics" / f"{BETA}.json"
    beta_done = lambda: load_state(run_dir)["status"][f"{BETA}.ipynb"] == "done"  # noqa: E731
    deadline = time.monotonic() + 45
    while not (reached.exists() and beta_ledger.exists() and beta_done()) and time.monotonic() < deadline:
        time.sleep(0.05)
    beta_done_while_alpha_held = reached.exists() and beta_ledger.exists() and beta_done()
    cwd_while_running = os.getcwd()
    gate.touch()
    worker.join(timeout=60)
    assert beta_done_while_alpha_held, "02 did not run while 01 was held at its gate"
    assert cwd_while_running == str(tmp_path), "a notebook's execution moved the runner's working directory"
    assert not (NOTEBOOKS / "runs").exists(), "the run wrote files into the notebooks' folder"
    assert results and results[0].status == "complete"
    state = load_state(run_dir)
    assert state["jobs"] == 2 and state["status"] == {f"{ALPHA}.ipynb": "done", f"{BETA}.ipynb": "done"}
    # The report's device line names the kernels' threads, not the runner's own.
    per_kernel = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    noun = "thread" if per_kernel == "1" else "threads"
    assert state["environment"]["device"]["name"].endswith(f"({per_kernel} torch {noun} per notebook, 2 at a time)")
    assert state["series_wall_s"] < state["wall_s"][f"{ALPHA}.ipynb"] + state["wall_s"][f"{BETA}.ipynb"]


def test_kernel_threads_split_the_cores_and_keep_the_users_setting(monkeypatch):
    from aestudy.runner.kernel import kernel_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert kernel_threads(1) == {}
    assert kernel_threads(2) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert kernel_threads(16) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert kernel_threads(2) == {"MKL_NUM_THREADS": "4"}


def test_jobs_must_be_a_positive_integer():
    from aestudy.runner.run import default_jobs, resolve_jobs

    assert resolve_jobs(3, "cpu") == 3 and resolve_jobs(None, "cuda") == 1
    assert resolve_jobs(None, "cpu") == default_jobs("cpu") == max(1, min(2, os.cpu_count() or 1))
    with pytest.raises(ConfigError, match=r"--jobs=0 is invalid; it must be an integer >= 1"):
        resolve_jobs(0, "cpu")


@pytest.mark.slow
def test_sigterm_during_concurrent_notebooks_leaves_a_resumable_run(tmp_path):
    """SIGTERM (a kill, a scheduler's limit) reaches only the runner: it stops like Ctrl-C, passes the interrupt on to
    the kernel still running (01, held at its gate) and leaves the run resumable; 02, already done, is kept."""
    run_dir = tmp_path / "runs" / "terminated"
    proc, reached = _gated_cli_run(tmp_path, run_dir, "--jobs", "2", start_new_session=True)

    def beta_done() -> bool:
        return (run_dir / "state.json").exists() and load_state(run_dir)["status"][f"{BETA}.ipynb"] == "done"

    _wait_for(reached.exists, proc, "01 to reach its gate cell")
    _wait_for(beta_done, proc, "02 to finish while 01 waits")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=50)
    assert proc.returncode == 130, err
    assert time.monotonic() - began < 40  # the gate would hold 01 for 60 s: the kernel was interrupted
    assert err.endswith(f"interrupted during {ALPHA}.ipynb; completed notebooks are kept. Continue with: aestudy "
                        f"run --resume {run_dir}\n")
    state = load_state(run_dir)
    assert state["run_status"] == "interrupted"
    assert state["status"] == {f"{ALPHA}.ipynb": "pending", f"{BETA}.ipynb": "done"}
    partial = nbformat.read(str(run_dir / f"{ALPHA}.ipynb"), as_version=4)
    assert partial.metadata["aestudy"]["status"] == "interrupted"


# ------------------------------------------------------------------------------------------ run-folder integrity
# These drive the runner with papermill's execution replaced by a stand-in (no kernel): what they test is the
# runner's bookkeeping around it: claims, state, resume and the advice it prints.


def _fake_execution(monkeypatch, *, fail: str | None = None, ename: str = "RuntimeError", evalue: str = "boom"):
    """Replace notebook execution; `fail` names a notebook that fails with `ename: evalue`. Returns the calls."""
    from papermill.exceptions import PapermillExecutionError

    from aestudy.runner import run as run_module

    calls: list[tuple[str, dict]] = []

    def execute(notebook, output, parameters, *, kernel, env, progress=True, kernel_log=None):
        calls.append((notebook.name, dict(parameters)))
        if notebook.name == fail:
            raise PapermillExecutionError(3, 3, "cfg = StudyConfig(...)", ename, evalue, [])
        output.write_text("{}")
        return 0.01

    monkeypatch.setattr(run_module, "execute_notebook", execute)
    return calls


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_of_a_complete_run_changes_nothing(tmp_path, monkeypatch, capsys):
    """Issue 12, item 10: no rewritten finish time, no touched file."""
    _fake_execution(monkeypatch)
    run_dir = tmp_path / "runs" / "done"
    assert run_study(NOTEBOOKS, out=run_dir, profile="smoke", progress=False).status == "complete"
    before = _snapshot(run_dir)
    capsys.readouterr()
    time.sleep(0.01)
    result = resume_study(run_dir, progress=False)
    assert (result.status, result.exit_code) == ("complete", 0)
    assert capsys.readouterr().err == (f"nothing to resume: the run is complete ({run_dir}; report: "
                                       f"{run_dir / 'report.md'}).\n")
    assert _snapshot(run_dir) == before
    assert main(["run", "--resume", str(run_dir)]) == 0 and _snapshot(run_dir) == before
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "-p", "lr", "0.01"]) == 2 and _snapshot(run_dir) == before
    assert capsys.readouterr().err == (f"aestudy: error: nothing to resume: the run is complete ({run_dir}), so "
                                       "-p/--params (lr) cannot change it; start a new run with them (aestudy run "
                                       "... --out NEW_FOLDER).\n")


@pytest.mark.parametrize(("content", "why"), [
    ("{\"schema\": 1, \"notebooks\": [", "not valid JSON: Expecting value: line 1 column 29 (char 28)"),
    ("[1, 2]", "not a JSON object"),
    ("{\"schema\": 1, \"name\": \"x\"}", "'started' is missing or not a JSON str"),
])
def test_a_damaged_state_file_is_named_with_what_can_be_done(tmp_path, capsys, content, why):
    run_dir = tmp_path / "runs" / "damaged"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text(content)
    before = _snapshot(run_dir)
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert capsys.readouterr().err == (
        f"aestudy: error: --resume {run_dir}: {run_dir / 'state.json'} is damaged ({why}), so this run cannot be "
        "resumed. aestudy writes it atomically, so something else changed it: put back a copy if you have one, "
        f"or start a new run (aestudy run ... --out NEW_FOLDER); the executed notebooks in {run_dir} are kept, "
        "and trained models load from the model cache.\n")
    assert _snapshot(run_dir) == before


def test_a_saved_value_that_cannot_succeed_is_changed_on_resume(tmp_path, monkeypatch, capsys):
    """Issue 12, item 4: a plain --resume would fail the same way; the error says how to change the value."""
    _fake_execution(monkeypatch, fail=f"{BETA}.ipynb")
    run_dir = tmp_path / "runs" / "r"
    assert run_study(NOTEBOOKS, out=run_dir, profile="smoke", progress=False).status == "failed"
    state = json.loads((run_dir / "state.json").read_text())
    state["parameters"][f"{BETA}.ipynb"]["beta"] = "None"  # as saved by a runner that read -p beta None as text
    (run_dir / "state.json").write_text(json.dumps(state))
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError) as info:
        resume_study(run_dir, progress=False)
    assert str(info.value) == (
        f"--resume {run_dir} cannot succeed: notebook {BETA}: beta='None' is invalid; it must be a finite number "
        f">= 0. A plain --resume keeps the saved value; change it as you resume: aestudy run --resume {run_dir} "
        "-p beta VALUE")
    assert _snapshot(run_dir) == before  # refused before anything was written
    # A parameter that a finished notebook used cannot change within the run: a new run is the way.
    with pytest.raises(ConfigError) as info:
        resume_study(run_dir, params={"latent_dim": 5}, progress=False)
    assert str(info.value) == (
        f"--resume {run_dir} -p latent_dim: cannot change 'latent_dim' within this run: {ALPHA} already ran with "
        f"it, so start a new run with it changed: aestudy run --profile smoke --notebooks-dir {NOTEBOOKS} "
        "-p latent_dim VALUE")

    calls = _fake_execution(monkeypatch)
    result = resume_study(run_dir, params=collect_params([["beta", "2"]]), progress=False)
    assert result.status == "complete"
    assert calls == [(f"{BETA}.ipynb", {"profile": "smoke", "beta": 2.0})]  # 01 kept, 02 with the new value
    state = load_state(run_dir)
    assert state["changed_on_resume"][0]["parameters"] == {"beta": 2}
    assert state["environment"]["parameters"][BETA]["beta"] == 2.0


def test_a_parameter_the_notebook_rejected_gets_advice_not_a_bare_resume(tmp_path, monkeypatch, capsys):
    _fake_execution(monkeypatch, fail=f"{BETA}.ipynb", ename="ConfigError",
                    evalue="beta=3.0 is too large for this toy; use beta <= 2")
    run_dir = tmp_path / "runs" / "advice"
    assert run_study(NOTEBOOKS, out=run_dir, profile="smoke", progress=False).status == "failed"
    err = capsys.readouterr().err
    assert err.endswith(
        f"Completed notebooks and their metrics are kept; the notebook rejected its parameter 'beta', and a plain "
        f"--resume keeps the saved value; change it as you resume: aestudy run --resume {run_dir} -p beta VALUE\n")


_HOLDER = """
import sys
from pathlib import Path
from aestudy.runner.folders import claim_folder
with claim_folder(Path(sys.argv[1]), option="--out"):
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
"""


def test_a_claimed_run_folder_refuses_a_second_process(tmp_path, capsys):
    """Issue 12, item 9: the loser exits non-zero before any work, naming the holder and what to do."""
    out = tmp_path / "runs" / "shared"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline() == "held\n"
        before = _snapshot(out)
        code = main(["run", "--notebooks-dir", str(NOTEBOOKS), "--profile", "smoke", "--out", str(out)])
        err = capsys.readouterr().err
        owner = json.loads((out / OWNER_FILE).read_text())
        assert owner["pid"] == holder.pid
        assert code == 2 and err == (
            f"aestudy: error: --out {out} is in use by another aestudy process (pid {holder.pid} on "
            f"{owner['host']}, since {owner['since']}: {owner['command']}). Wait for it to finish (or stop it), "
            "or choose another folder.\n")
        assert _snapshot(out) == before  # nothing written by the loser
        with (pytest.raises(ConfigError, match=r"^--resume .* is in use by another aestudy process"),
              claim_folder(out, option="--resume")):
            pass
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0 and not (out / OWNER_FILE).exists()
    with claim_folder(out, option="--out"):  # released: free again
        assert json.loads((out / OWNER_FILE).read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_two_runs_into_one_out_one_wins_and_the_other_says_so(tmp_path):
    out = tmp_path / "runs" / "x"
    gate, reached = tmp_path / "gate", tmp_path / "reached"
    env = {**os.environ, "TOY_GATE": str(gate), "TOY_GATE_REACHED": str(reached)}
    command = [sys.executable, "-m", "aestudy.runner.cli", "run", "--notebooks-dir", str(NOTEBOOKS), "--only", "01",
               "--profile", "smoke", "--out", str(out), "--quiet"]
    first = subprocess.Popen([*command, "-p", "seed", "1"], env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                             text=True)
    _wait_for(reached.exists, first, "the first run to reach its gate cell")
    second = subprocess.run([*command, "-p", "seed", "2"], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    gate.touch()
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    assert second.stderr.startswith(f"aestudy: error: --out {out} is in use by another aestudy process (pid "
                                    f"{first.pid} on ")
    assert load_state(out)["parameters"][f"{ALPHA}.ipynb"]["seed"] == 1 and load_state(out)["run_status"] == (
        "complete")


def test_list_and_literal_parameters_reach_papermill_as_values(tmp_path):
    """A list parameter (like 03's tune_lrs, were it a parameter) and a Literal one, end to end up to injection."""
    from papermill.translators import PythonTranslator

    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('lrs: tuple[float, ...] = (1e-3,)  # learning rates\n'
                                     'mode: Literal["fast", "exact"] = "fast"  # how\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    nbformat.write(nb, str(folder / "01_lists.ipynb"))
    params = collect_params([["lrs", "[1e-3, 3e-3]"], ["mode", "exact"]])
    routed = route_parameters(discover_notebooks(folder), params)
    assert routed == {"01_lists": {"lrs": [0.001, 0.003], "mode": "exact"}}
    # papermill writes a tuple as a string ("(0.001, 0.003)"); the runner hands it a list, written as a list.
    assert "lrs = [0.001, 0.003]" in PythonTranslator.codify(routed["01_lists"])
    assert routed == route_parameters(discover_notebooks(folder), {"lrs": (0.001, 0.003), "mode": "exact"})
    with pytest.raises(ConfigError) as info:
        route_parameters(discover_notebooks(folder), collect_params([["mode", "slow"]]))
    assert str(info.value) == ("notebook 01_lists: mode='slow' is invalid; the notebook declares `mode: "
                               "Literal['fast', 'exact']`, so it must be one of 'fast', 'exact'.")
    with pytest.raises(ConfigError, match=r"lrs=\['a'\] is invalid; .* must be a list \(each item a finite "):
        route_parameters(discover_notebooks(folder), {"lrs": ["a"]})


def test_a_start_stopped_before_the_first_file_leaves_no_folder(tmp_path, monkeypatch):
    from aestudy.runner import run as run_module

    def interrupted(**_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "environment", interrupted)  # Ctrl-C while the run records its environment
    out = tmp_path / "runs" / "new"
    with pytest.raises(KeyboardInterrupt):
        run_study(NOTEBOOKS, out=out, profile="smoke", progress=False)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ the run log


TCP_WARNING = "Kernel is running over TCP without encryption"
UNPARSABLE = "Unable to parse line"


@pytest.mark.slow
def test_run_log_is_clean_and_names_wall_time_and_claim_counts(tmp_path, capfd):
    """No kernel TCP warning, no papermill complaint about a typed parameter whose comment holds a second `=`."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(str(NOTEBOOKS / f"{BETA}.ipynb"), as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = params.source.replace("# weight of the KL term", "# KL weight (1 = the ELBO)")
    assert "beta: float = 1.0  # KL weight (1 = the ELBO)" in params.source  # what made papermill warn
    nbformat.write(nb, str(notebooks / f"{BETA}.ipynb"))
    result = run_study(notebooks, out=tmp_path / "runs" / "log", profile="smoke", device="cpu", progress=True)
    assert result.status == "complete"
    log = capfd.readouterr()
    # The kernel's own stdout/stderr go to the run's kernel log (kept off the terminal); check both.
    text = log.out + log.err + (tmp_path / "runs" / "log" / "logs" / f"{BETA}.kernel.log").read_text()
    assert TCP_WARNING not in text and UNPARSABLE not in text
    assert "KeyboardInterrupt caught in kernel" not in text  # no SIGINT to an idle kernel before its shutdown
    assert re.search(rf"^\[1/1\] {BETA}\.ipynb done in \d+\.\d s: 2 claims: 2 hold, 0 do not hold$", log.err,
                     flags=re.M), log.err


def test_papermill_really_warns_about_that_line_without_the_filter(caplog, monkeypatch):
    """The filter drops exactly papermill's message (not every papermill warning)."""
    import logging

    from papermill.translators import PythonTranslator

    from aestudy.runner.kernel import _quiet_papermill_parameter_warnings

    monkeypatch.setattr(logging.getLogger("papermill.translators"), "filters", [])  # as before any run
    cell = nbformat.v4.new_code_cell("beta: float = 1.0  # KL weight (1 = the ELBO)\nseed: int = 0\n")
    with caplog.at_level(logging.WARNING, logger="papermill.translators"):
        PythonTranslator.inspect(cell)
    assert [r.getMessage() for r in caplog.records] == [
        "Unable to parse line 1 'beta: float = 1.0  # KL weight (1 = the ELBO)'."]
    caplog.clear()
    _quiet_papermill_parameter_warnings()
    with caplog.at_level(logging.WARNING, logger="papermill.translators"):
        PythonTranslator.inspect(cell)
        logging.getLogger("papermill.translators").warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


def test_kernels_talk_over_private_unix_sockets_with_absolute_unique_paths():
    import zmq

    from aestudy.runner.kernel import kernel_manager_class

    if not zmq.has("ipc"):
        pytest.skip("this ZeroMQ has no IPC transport (Windows): kernels use TCP")
    first, second = kernel_manager_class()(), kernel_manager_class()()
    assert first.transport == "ipc" and second.transport == "ipc"
    # absolute (papermill changes the working directory) and distinct (parallel sweep points share a folder)
    assert Path(first.ip).parent == Path(tempfile.gettempdir()) and first.ip != second.ip


def test_a_kernel_starts_in_its_notebooks_folder_and_the_runner_stays_where_it_was(tmp_path, monkeypatch):
    """Relative paths in a notebook are relative to it (as in JupyterLab); the runner's own never move."""
    from aestudy.runner.kernel import DEFAULT_KERNEL, execute_notebook

    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")])
    nbformat.write(nb, str(folder / "where.ipynb"))
    monkeypatch.chdir(tmp_path)
    execute_notebook(Path("nbs/where.ipynb"), Path("where.out.ipynb"), {}, kernel=DEFAULT_KERNEL, env={},
                     progress=False)
    printed = nbformat.read(str(tmp_path / "where.out.ipynb"), as_version=4).cells[0].outputs[0]["text"].strip()
    assert printed == str(folder.resolve()) and os.getcwd() == str(tmp_path)
