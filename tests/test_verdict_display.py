"""Every verdict is visible in the cell that checks it (issue 19, item 3).

`Study.claim` / `Study.examine` display each record's verdict line in a kernel (and nothing outside one); the
record they return shows nothing more, so a cell ending with the call shows its verdict once. The checker in
`verdict_check` finds the claims whose verdict line is missing from the outputs of the cell that records them.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from aestudy.claims import ClaimRecord, check_claim, examine, verdict_line
from aestudy.stats import compare
from aestudy.study import Study
from tests.verdict_check import hidden_verdicts, output_text

SETUP = """
import numpy as np
from IPython.display import display
from aestudy.stats import compare
from aestudy.study import Study
study = Study("verdicts_smoke", {"epochs": (1, 1, 1)}, profile="smoke", dataset="digits", seed=0)
a, b = np.array([1.0, 1.2, 1.1, 1.3, 1.25]), np.array([0.1, 0.2, 0.15, 0.12, 0.18])
"""
# Cells as notebooks write them: several checks in one cell, checks inside `for`/`if`, a cell ending with the
# call, and `display(study.examine(...))`.
CELLS = {
    "several": 'study.claim("t.first", "x", {"v": 1.0}, holds=True)\n'
               'study.claim("t.second", "y", {"v": 2.0}, holds=False, kind="examined")\n'
               'study.examine("t.third", "a > b", compare(a, b, higher_is_better=True, min_effect=0.5))',
    "loop": 'for k in range(3):\n'
            '    if k != 1:\n'
            '        study.claim(f"t.loop{k}", "k is small", {"k": k}, holds=k < 3)',
    "displayed": 'display(study.examine("t.shown", "b > a", compare(b, a, higher_is_better=True, min_effect=0.5)))',
    "silent": 'record = study.claim("t.silent", "z", {"v": 0.5}, holds=True)',
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A small notebook of claim cells, executed in-process in the aestudy kernel; (cells, ledger records)."""
    folder = tmp_path_factory.mktemp("verdicts")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)] + [nbformat.v4.new_code_cell(src) for src in CELLS.values()]
    metrics = folder / "metrics.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AESTUDY_METRICS_FILE", str(metrics))
        NotebookClient(nb, kernel_name="aestudy", timeout=120, resources={"metadata": {"path": str(folder)}}).execute()
    records = json.loads(metrics.read_text())["notebooks"]["verdicts_smoke"]["claims"]
    return [dict(c) for c in nb.cells], records


def test_every_checked_claim_shows_its_verdict_in_its_cell(executed):
    cells, records = executed
    assert sorted(r["id"] for r in records) == sorted(
        ["t.first", "t.second", "t.third", "t.loop0", "t.loop2", "t.shown", "t.silent"])
    assert hidden_verdicts(cells, records) == []


def test_each_verdict_line_appears_once(executed):
    cells, records = executed
    text = "\n".join(output_text(c) for c in cells)
    for record in records:
        assert text.count(verdict_line(record)) == 1, record["id"]
    assert "DOES NOT HOLD" in output_text(cells[1])  # t.second: a two-way examined claim that failed
    assert "[examined" not in text  # the multi-line record repr is not shown on top of the line


def test_a_cell_that_hides_a_verdict_is_caught(executed):
    cells, records = executed
    stripped = [dict(c, outputs=[]) if "t.loop" in "".join(c["source"]) else c for c in cells]
    assert sorted(hidden_verdicts(stripped, records)) == ["t.loop0", "t.loop2"]


def test_nothing_is_displayed_outside_a_kernel(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "m.json"))
    study = Study("outside", {"epochs": (1, 1, 1)}, profile="smoke", dataset="digits", seed=0)
    record = study.claim("o.x", "s", {"v": 1.0}, holds=True)
    assert type(record) is ClaimRecord and capsys.readouterr().out == ""


def test_verdict_lines(tmp_path):
    path = tmp_path / "m.json"
    asserted = check_claim("i.a", "s", {"v": 1.0}, True, profile="smoke", path=path)
    assert verdict_line(asserted) == "✓ i.a: asserted: holds"
    failed = check_claim("i.b", "s", {"v": 1.0}, False, profile="smoke", path=path)
    assert verdict_line(failed) == "✗ i.b: asserted: DOES NOT HOLD — measured v=1"
    v = compare([1.0, 1.2, 1.1, 1.3, 1.25], [0.1, 0.2, 0.15, 0.12, 0.18], higher_is_better=True, min_effect=0.5)
    line = verdict_line(examine("i.c", "s", v, path=path))
    assert line == f"✓ i.c: holds — {v.evidence()}" and "5 vs 5 seeds" in line and v.ci_text() in line


def test_claims_tables_show_in_full_width(tmp_path, monkeypatch):
    """A long statement or measured list is not cut to "..." in a notebook's claims table (issue 19)."""
    import pandas as pd

    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "m.json"))
    with pd.option_context("display.max_colwidth", 50, "display.max_columns", 5):
        study = Study("wide", {"epochs": (1, 1, 1)}, profile="smoke", dataset="digits", seed=0)
        long = "a statement long enough to be cut by pandas' default column width, " * 3
        study.claim("w.long", long, {f"m{k}": float(k) for k in range(12)}, holds=True)
        html = study.claims_table()._repr_html_()  # what a notebook shows
        assert long.strip() in html and "..." not in html
