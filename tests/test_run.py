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

import nbformat
import pytest
import torch

from aestudy import report
from aestudy.cli import main
from aestudy.errors import ConfigError, DeviceError
from aestudy.run import (
    collect_params,
    discover_notebooks,
    kernel_python,
    load_state,
    notebook_parameters,
    parse_value,
    plan_run,
    resume_study,
    route_parameters,
    run_study,
)

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
    assert params["lr"].default == 1e-3 and params["lr"].type_name() == "float"
    assert params["epochs"].type_name() == "int or None"
    assert params["epochs"].accepts(None) and params["epochs"].accepts(3) and not params["epochs"].accepts(2.5)
    assert not params["latent_dim"].accepts(True)  # a bool is not an int here


def test_values_are_parsed_as_yaml():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("0.5") == 0.5
    assert parse_value("null") is None and parse_value("mnist") == "mnist" and parse_value("[1, 2]") == [1, 2]


def test_params_file_is_merged_with_p_pairs_which_win(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("latent_dim: 4\nbeta: 2.0\nlr: 1e-4\n")
    assert collect_params([["latent_dim", "3"]], file) == {"latent_dim": 3, "beta": 2.0, "lr": 1e-4}
    file.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping of parameter names to values"):
        collect_params(None, file)


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
    assert str(info.value) == ("parameter 'beta' of notebook 02_toy_beta must be float (declared "
                               "`beta: float = 1.0`), got 'big' (str).")
    with pytest.raises(ConfigError) as info:
        route_parameters(discover_notebooks(NOTEBOOKS), collect_params([["latent_dim", "3.5"]]))
    assert str(info.value) == ("parameter 'latent_dim' of notebook 01_toy_alpha must be int (declared "
                               "`latent_dim: int = 16`), got 3.5 (float).")


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
    assert capsys.readouterr().err == ("aestudy: error: --resume continues with the run's saved parameters; "
                                       "drop --only, -p.\n")


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
    assert "3 claims recorded: 2 hold, 1 do not (0 of those enforced)." in md
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


@pytest.mark.slow
def test_sigint_mid_run_leaves_a_resumable_run(tmp_path):
    run_dir = tmp_path / "runs" / "interrupted"
    reached = tmp_path / "reached"
    env = {**os.environ, "TOY_GATE": str(tmp_path / "never"), "TOY_GATE_REACHED": str(reached)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aestudy.cli", "run", "--notebooks-dir", str(NOTEBOOKS), "--only", "01",
         "--profile", "smoke", "--out", str(run_dir), "--quiet"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )
    state_file = run_dir / "state.json"

    def running() -> bool:
        return state_file.exists() and load_state(run_dir)["status"][f"{ALPHA}.ipynb"] == "running"

    _wait_for(running, proc, "state.json to say 01 is running")
    _wait_for(reached.exists, proc, "the notebook to reach its gate cell")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted during {ALPHA}.ipynb" in err
    state = load_state(run_dir)
    assert state["status"] == {f"{ALPHA}.ipynb": "pending"} and state["run_status"] == "interrupted"

    # Resumed through runs/latest, in this process (no TOY_GATE: the notebook runs through).
    resumed = resume_study(run_dir.parent / "latest", progress=False)
    assert resumed.status == "complete" and resumed.run_dir == run_dir
    metrics = _metrics(run_dir)
    assert metrics["run"] == "interrupted" and metrics["status"] == "complete"
    assert [c["id"] for c in metrics["notebooks"][ALPHA]["claims"]] == ["toy-triangle"]


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
    text = log.out + log.err  # the kernel writes to the inherited file descriptors, which capfd captures
    assert TCP_WARNING not in text and UNPARSABLE not in text
    assert "KeyboardInterrupt caught in kernel" not in text  # no SIGINT to an idle kernel before its shutdown
    assert re.search(rf"^\[1/1\] {BETA}\.ipynb done in \d+\.\d s: 2 claims: 2 hold, 0 do not hold$", log.err,
                     flags=re.M), log.err


def test_papermill_really_warns_about_that_line_without_the_filter(caplog, monkeypatch):
    """The filter drops exactly papermill's message (not every papermill warning)."""
    import logging

    from papermill.translators import PythonTranslator

    from aestudy.run import _quiet_papermill_parameter_warnings

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

    from aestudy.run import kernel_manager_class

    if not zmq.has("ipc"):
        pytest.skip("this ZeroMQ has no IPC transport (Windows): kernels use TCP")
    first, second = kernel_manager_class()(), kernel_manager_class()()
    assert first.transport == "ipc" and second.transport == "ipc"
    # absolute (papermill changes the working directory) and distinct (parallel sweep points share a folder)
    assert Path(first.ip).parent == Path(tempfile.gettempdir()) and first.ip != second.ip
