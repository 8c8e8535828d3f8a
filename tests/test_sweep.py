"""`aestudy sweep`: grid parsing and validation, the tidy table, and a real sweep on a Dask LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aestudy.errors import ConfigError
from aestudy.runner.cli import main
from aestudy.runner.sweep import (
    PointResult,
    PointTask,
    _run_local,
    grid_points,
    parse_grid,
    plan_sweep,
    run_sweep,
    tidy_results,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "tests" / "fixtures" / "notebooks"


def test_grid_values_are_read_as_p_reads_them_and_multiplied_out():
    grid = parse_grid(["latent_dim=2,8,32", "beta=0.5,1,4", "seed=0,1,2"])
    assert grid == {"latent_dim": [2, 8, 32], "beta": [0.5, 1, 4], "seed": [0, 1, 2]}
    assert parse_grid(["ood_dataset=None,mnist", "lr=1e-3,3e-3", "fail=True,False"]) == {
        "ood_dataset": [None, "mnist"], "lr": [0.001, 0.003], "fail": [True, False]}
    points = grid_points(grid)
    assert len(points) == 27 and len({tuple(p.items()) for p in points}) == 27
    assert points[0] == {"latent_dim": 2, "beta": 0.5, "seed": 0}
    assert points[1] == {"latent_dim": 2, "beta": 0.5, "seed": 1}


@pytest.mark.parametrize(("specs", "message"), [
    (["latent_dim"], "grid item 'latent_dim' is invalid; it must look like NAME=V1,V2,... (e.g. latent_dim=2,8,32)."),
    (["beta=1", "beta=2"], "grid parameter 'beta' is given twice; give all its values once: beta=V1,V2."),
    (["profile=smoke,full"], "grid parameter 'profile' cannot be swept; valid values: a notebook parameter "
                             "(run one sweep per --profile)."),
    (["seed=0,,1"], "grid item 'seed=0,,1' has an empty value; valid values: NAME=V1,V2,... with no empty item "
                    "(write None for None)."),
    (["seed=0,1,0"], "grid item 'seed=0,1,0' repeats 0; give each value once (a repeated value runs the same point "
                     "twice)."),
])
def test_bad_grid_items_are_rejected(specs, message):
    with pytest.raises(ConfigError) as info:
        parse_grid(specs)
    assert str(info.value) == message


def test_sweep_parameters_are_validated_like_run(tmp_path):
    with pytest.raises(ConfigError) as info:
        plan_sweep({"bta": [1.0, 2.0]}, NOTEBOOKS, only=["02"], profile="smoke", out_dir=tmp_path)
    assert str(info.value) == ("unknown parameter 'bta': not in the parameters cell of any selected notebook "
                               "(02_toy_beta); valid names: beta, fail, latent_dim, profile, seed.")
    with pytest.raises(ConfigError) as info:
        plan_sweep({"beta": [1.0, "x"]}, NOTEBOOKS, only=["02"], profile="smoke", out_dir=tmp_path)
    assert str(info.value) == "notebook 02_toy_beta: beta='x' is invalid; it must be a finite number >= 0."
    with pytest.raises(ConfigError, match=r"^parameter\(s\) beta are both swept and fixed"):
        plan_sweep({"beta": [1.0]}, NOTEBOOKS, only=["02"], params={"beta": 2.0}, profile="smoke", out_dir=tmp_path)


def test_plan_routes_each_point_to_the_notebooks_that_declare_it(tmp_path):
    tasks = plan_sweep({"beta": [0.5, 4]}, NOTEBOOKS, profile="smoke", params={"dataset": "mnist"},
                       out_dir=tmp_path)
    assert [t.point_id for t in tasks] == ["p000", "p001"]
    (alpha, a_params), (beta, b_params) = tasks[1].notebooks
    assert Path(alpha).name == "01_toy_alpha.ipynb" and "beta" not in a_params and a_params["dataset"] == "mnist"
    assert Path(beta).name == "02_toy_beta.ipynb" and b_params == {"profile": "smoke", "beta": 4.0}
    assert tasks[1].point_dir == str(tmp_path / "points" / "p001")


def test_cli_reports_an_unknown_sweep_parameter(tmp_path, capsys):
    code = main(["sweep", "bta=1,2", "--only", "02", "--notebooks-dir", str(NOTEBOOKS), "--out", str(tmp_path / "s")])
    assert code == 2
    assert capsys.readouterr().err.startswith("aestudy: error: unknown parameter 'bta': ")
    assert not (tmp_path / "s").exists()


def test_every_point_is_validated_before_anything_runs(tmp_path, capsys):
    """Issue 12, item 6: the point latent_dim=0 stops the sweep up front, not inside a kernel."""
    out = tmp_path / "s"
    code = main(["sweep", "latent_dim=3,0", "--only", "02", "--notebooks-dir", str(NOTEBOOKS), "--out", str(out),
                 "--profile", "smoke"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == ("aestudy: error: notebook 02_toy_beta: latent_dim=0 is invalid; it must be "
                                       "an integer >= 1.\n")
    assert main(["sweep", "seed=0,1", "--workers", "0", "--notebooks-dir", str(NOTEBOOKS)]) == 2
    assert capsys.readouterr().err.endswith("aestudy sweep: error: argument --workers: '0' is invalid; it must be "
                                            "an integer >= 1\n")


def test_a_sweep_folder_is_claimed_and_must_be_new(tmp_path, capsys):
    from aestudy.runner.folders import claim_folder

    out = tmp_path / "s"
    with claim_folder(out, option="--out"):  # as if a sweep were running there (this process holds it)
        (out / "sweep.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        run_sweep({"beta": [0.5]}, NOTEBOOKS, only=["02"], profile="smoke", out=out, progress=False)
    assert str(info.value) == f"--out {out} already holds a sweep; valid values: a new folder."


def test_tidy_table_has_one_row_per_point_and_metric():
    ledger = {"schema": 1, "notebooks": {"02_toy_beta": {
        "claims": [{"id": "kl-scale", "holds": True}, {"id": "beta-small", "holds": False}],
        "metrics": {"kl": 12.0, "comparison_table": [{"Aspect": "x"}], "watermark": {"seed": 0}},
    }}}
    results = [PointResult("p000", {"beta": 4.0}, "done", 1.0, ledger),
               PointResult("p001", {"beta": 0.5}, "failed", 1.0, {}, "02_toy_beta.ipynb", {"ename": "E"})]
    frame = tidy_results(results, ["beta"])
    assert frame.to_dict("records") == [
        {"point": "p000", "beta": 4.0, "notebook": "02_toy_beta", "metric": "kl", "value": 12.0},
        {"point": "p000", "beta": 4.0, "notebook": "02_toy_beta", "metric": "claim:kl-scale", "value": 1.0},
        {"point": "p000", "beta": 4.0, "notebook": "02_toy_beta", "metric": "claim:beta-small", "value": 0.0},
    ]


@pytest.mark.slow
def test_local_pool_reports_a_failing_point_instead_of_raising(tmp_path):
    task = PointTask("p000", {"beta": 1.0}, ((str(NOTEBOOKS / "02_toy_beta.ipynb"), {"beta": 1.0}),),
                     str(tmp_path / "p000"), "no-such-kernel", "smoke")
    (result,) = list(_run_local([task], workers=1))
    assert result.status == "failed" and result.failed_notebook == "02_toy_beta.ipynb"
    assert result.error["ename"] == "NoSuchKernel"
    assert json.loads((tmp_path / "p000" / "point.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_sweep_on_a_dask_local_cluster_keeps_going_past_a_failed_point(tmp_path):
    from dask.distributed import LocalCluster

    out = tmp_path / "sweep"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # fail=True makes the toy notebook raise: a deliberately failing point (a valid value that fails).
        result = run_sweep({"fail": [False, True]}, NOTEBOOKS, only=["02"], profile="smoke", out=out,
                           params={"latent_dim": 3}, scheduler=cluster.scheduler_address, progress=False)
    assert result.exit_code == 1
    done, failed = result.results
    assert (done.point_id, done.status, failed.point_id, failed.status) == ("p000", "done", "p001", "failed")
    assert failed.failed_notebook == "02_toy_beta.ipynb" and failed.error["ename"] == "RuntimeError"
    assert failed.error["evalue"] == "injected failure (fail=True)"

    frame = pd.read_csv(out / "sweep.csv")
    assert list(frame.columns) == ["point", "fail", "notebook", "metric", "value"]
    assert set(frame["point"]) == {"p000"} and set(frame["fail"]) == {False}
    values = dict(zip(frame["metric"], frame["value"], strict=True))
    assert values["kl"] == 3.0  # beta (default 1.0) * latent_dim
    assert values["claim:toy-kl-scale"] == 1.0 and values["claim:toy-beta-small"] == 1.0
    assert (out / "sweep_kl.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in summary["points"]] == ["done", "failed"]
    assert summary["grid"] == {"fail": [False, True]}
    assert (out / "points" / "p000" / "logs" / "02_toy_beta.kernel.log").exists()  # the kernel's own output
    point_ledger = json.loads((out / "points" / "p000" / "metrics.json").read_text())
    assert point_ledger["notebooks"]["02_toy_beta"]["metrics"]["kl"] == 3.0
