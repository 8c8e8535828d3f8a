"""The series recap at the end of notebook 05: the seed's table with this session's answers (issue 19, item 7)."""

from __future__ import annotations

import pytest

from aestudy.claims import check_claim, record_metric
from aestudy.errors import DataError
from aestudy.runner import report
from aestudy.series import limits as s05
from aestudy.series.comparison import TABLE_ASPECTS, TEXTBOOK


def _ledger03(path):
    check_claim("03.ae-reconstructs-better", "The AE reconstructs better", {"mse_ae": 0.024, "mse_vae": 0.028},
                True, profile="smoke", notebook="03_ae_vs_vae_comparison", path=path)
    rows = [{"Aspect": a, "AE": TEXTBOOK[a][0], "VAE": TEXTBOOK[a][1], "Evidence": f"evidence of {a}",
             "Verdict": ("holds: 03.ae-reconstructs-better holds" if a == "Purpose"
                         else "by construction (one backbone)")}
            for a in TABLE_ASPECTS]
    record_metric("comparison_table", rows, notebook="03_ae_vs_vae_comparison", path=path)


def _ledger05(path):
    check_claim("05.vae-blurrier-than-gan", "VAE samples are blurrier", {"ratio": 0.2}, False,
                profile="smoke", notebook="05_limits_and_scale", path=path)
    rows = [{"Aspect": a, "AE": ae, "VAE": vae, "Evidence": f"evidence of {a}", "Verdict": f"does not hold: {claim}"}
            for a, (ae, vae, claim) in s05.LIMIT_ROWS.items() if claim == "05.vae-blurrier-than-gan"]
    record_metric("limits_table", rows, notebook="05_limits_and_scale", path=path)


def test_the_recap_answers_each_row_with_the_reports_finding(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    _ledger03(run / "metrics" / "03_ae_vs_vae_comparison.json")
    own = run / "metrics" / "05_limits_and_scale.json"
    _ledger05(own)
    monkeypatch.setenv(s05.RUN_DIR_ENV, str(run))
    ledgers = s05.run_ledgers(own)
    assert sorted(ledgers["notebooks"]) == ["03_ae_vs_vae_comparison", "05_limits_and_scale"]
    recap = s05.series_recap(ledgers)
    assert list(recap.columns) == list(s05.RECAP_COLUMNS)
    assert recap["Aspect"].tolist() == [*TABLE_ASPECTS, *s05.LIMIT_ROWS]
    answers = dict(zip(recap["Aspect"], recap["This run"], strict=True))
    claims = report._all_claims(ledgers)
    table = report.comparison_frame(ledgers).set_index("Aspect")
    purpose = report.row_sentence(table.loc["Purpose"].to_dict() | {"Aspect": "Purpose"}, claims)
    assert answers["Purpose"] == purpose.removeprefix("**Purpose** — ")
    assert answers["Purpose"].startswith("**holds**: “The AE reconstructs better” holds")
    assert answers["Purpose"].endswith("this run measured evidence of Purpose.")
    assert answers["Architecture"] == "true by construction (one backbone); this run measured evidence of Architecture."
    assert answers["Output vs GANs"].startswith("**does not hold**: “VAE samples are blurrier” does not hold")
    # a row that no notebook of this session measured says so, never a number
    assert answers["Scaling to complex data"] == "not run in this session (notebook 05)"
    assert recap.set_index("Aspect").loc["Purpose", "AE (textbook)"] == TEXTBOOK["Purpose"][0]


def test_rows_of_a_notebook_that_did_not_run_say_so(tmp_path, monkeypatch):
    monkeypatch.delenv(s05.RUN_DIR_ENV, raising=False)
    own = tmp_path / "interactive.json"
    _ledger05(own)
    recap = s05.series_recap(s05.run_ledgers(own)).set_index("Aspect")["This run"]
    assert all(recap[a] == "not run in this session (notebook 03)" for a in TABLE_ASPECTS)
    markdown = s05.recap_markdown(s05.run_ledgers(own))
    assert markdown.splitlines()[0] == "| Aspect | AE (textbook) | VAE (textbook) | This run |"
    assert len(markdown.splitlines()) == 2 + len(TABLE_ASPECTS) + len(s05.LIMIT_ROWS)


def test_the_own_ledger_wins_and_bad_ledgers_are_named(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    record_metric("x", 1, notebook="05_limits_and_scale", path=run / "metrics" / "05_limits_and_scale.json")
    own = tmp_path / "own.json"
    record_metric("x", 2, notebook="05_limits_and_scale", path=own)
    monkeypatch.setenv(s05.RUN_DIR_ENV, str(run))
    assert s05.run_ledgers(own)["notebooks"]["05_limits_and_scale"]["metrics"]["x"] == 2
    assert s05.run_ledgers(None)["notebooks"]["05_limits_and_scale"]["metrics"]["x"] == 1
    (run / "metrics" / "bad.json").write_text('{"schema": 0}')
    with pytest.raises(DataError, match="not an aestudy ledger"):
        s05.run_ledgers(own)


def test_a_notebook_still_running_is_left_out_and_its_rows_marked_provisional(tmp_path, monkeypatch):
    """Reader 6: 05 ended before 04, and the recap counted 04's partial ledger while report.md counted all of it."""
    import json

    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    _ledger03(run / "metrics" / "03_ae_vs_vae_comparison.json")
    check_claim("04.partial", "half-way claim", {"x": 1.0}, True, profile="smoke", notebook="04_applications",
                path=run / "metrics" / "04_applications.json")
    own = run / "metrics" / "05_limits_and_scale.json"
    _ledger05(own)
    status = {"03_ae_vs_vae_comparison.ipynb": "done", "04_applications.ipynb": "running",
              "05_limits_and_scale.ipynb": "running"}
    (run / "state.json").write_text(json.dumps({"status": status}))
    monkeypatch.setenv(s05.RUN_DIR_ENV, str(run))
    # the row "Purpose" rests on a claim of 04 too: give it one
    table = json.loads((run / "metrics" / "03_ae_vs_vae_comparison.json").read_text())
    rows = table["notebooks"]["03_ae_vs_vae_comparison"]["metrics"]["comparison_table"]
    rows[0]["Verdict"] += "; 04.partial holds"
    (run / "metrics" / "03_ae_vs_vae_comparison.json").write_text(json.dumps(table))
    ledgers = s05.run_ledgers(own)
    assert ledgers["unfinished"] == ["04_applications"]  # its own notebook (05) is running too, and is read
    assert sorted(ledgers["notebooks"]) == ["03_ae_vs_vae_comparison", "05_limits_and_scale"]
    answers = dict(zip(*s05.series_recap(ledgers)[["Aspect", "This run"]].T.values, strict=True))
    assert answers["Purpose"].startswith(s05.PROVISIONAL.format(nb="04") + "**holds**: “The AE reconstructs better”")
    assert not answers["Architecture"].startswith("*provisional*")
    text = s05.recap_markdown(ledgers)
    assert text.startswith("*04_applications had not ended when this recap was made: the rows resting on it are "
                           "marked provisional below.*\n\n|")
    # once 04 has ended, its ledger counts and nothing is provisional
    (run / "state.json").write_text(json.dumps({"status": {**status, "04_applications.ipynb": "done"}}))
    ended = s05.run_ledgers(own)
    assert ended["unfinished"] == [] and "04_applications" in ended["notebooks"]
    assert not any(a.startswith("*provisional*") for a in s05.series_recap(ended)["This run"])
    assert s05.recap_markdown(ended).startswith("|")
    (run / "state.json").write_text("{not json")
    with pytest.raises(DataError, match="state.json is not a readable aestudy run state"):
        s05.run_ledgers(own)
