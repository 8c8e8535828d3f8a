"""End to end: `aestudy run --profile smoke` executes real notebooks of the series and reports every claim.

Two notebooks (02 and 05, the quickest in smoke) keep `make test` within its budget: every notebook is also
executed by nbval, by tests/test_notebooks.py (papermill with parameters) and in JupyterLab (tests/e2e), and
the runner's own behaviour is covered on toy notebooks in tests/test_run.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aestudy.runner.cli import main

REPO = Path(__file__).resolve().parents[1]
ONLY = ("02", "05")
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb") if p.name[:2] in ONLY)


@pytest.mark.slow
def test_smoke_run_of_the_whole_series(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "smoke"
    assert len(NOTEBOOKS) == len(ONLY)
    assert main(["run", "--profile", "smoke", "--only", ",".join(ONLY), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema"] == 1
    for nb in NOTEBOOKS:
        assert (out / nb.name).exists(), f"{nb.name} was not executed into the run folder"
        entry = metrics["notebooks"][nb.stem]
        assert entry["claims"], f"{nb.stem} recorded no claims"
        for claim in entry["claims"]:
            assert claim["statement"] and claim["measured"], f"{claim['id']} lacks a statement or evidence"
            assert claim["kind"] in {"asserted", "examined"} and isinstance(claim["holds"], bool)
        assert entry["metrics"]["watermark"]["profile"] == "smoke"
    report = (out / "report.md").read_text()
    for nb in NOTEBOOKS:
        for claim in metrics["notebooks"][nb.stem]["claims"]:
            assert claim["id"] in report, f"claim {claim['id']} is missing from report.md"
    assert "<table" in (out / "report.html").read_text()
    assert (tmp_path / "runs" / "latest").resolve() == out.resolve()
