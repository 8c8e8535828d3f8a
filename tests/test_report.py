"""The run report and run comparison, built from ledgers written through the real claims API (no kernels).

Two smoke-sized run folders are made the way a run makes them: each notebook's claims, metrics and figures go
through `check_claim` / `record_metric` / `record_figure` into `metrics/<notebook>.json`, and the runner's
`merge_metrics` gathers them into `metrics.json`. They differ in one parameter (beta), which flips one verdict.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest
from matplotlib.figure import Figure

from aestudy.claims import check_claim, load_metrics, record_figure, record_metric
from aestudy.errors import ConfigError
from aestudy.runner import report
from aestudy.runner.cli import main
from aestudy.runner.compare_runs import compare_runs, write_comparison
from aestudy.runner.run import merge_metrics

matplotlib.use("Agg")

NB = "03_toy_table"


def _figure(value: float) -> Figure:
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().plot([0, 1], [0, value])
    return fig


def _executed_notebook(path: Path) -> None:
    """A small "executed" notebook whose cells hold the claim ids, with nbformat cell ids (as papermill keeps)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"),
                nbformat.v4.new_code_cell('check_claim("toy.ae-sharper", "the AE is sharper", m, h)'),
                nbformat.v4.new_code_cell("check_claim('toy.vae-smaller-kl', 'a smaller KL', m, h, kind='examined')"),
                nbformat.v4.new_code_cell("for k in ks:\n    check_claim(f'toy.k{k}', ...)")]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="[examined, recorded] toy.k1: holds\n")]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    nbformat.write(nb, str(path))


def make_run(root: Path, name: str, *, beta: float, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished one-notebook run folder written through the claims API and the runner's merge."""
    run_dir = root / name
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(run_dir / "metrics" / f"{NB}.json"))
    check_claim("toy.ae-sharper", "the AE is sharper", {"ae": 0.08, "vae": 0.05}, True, profile="smoke",
                kind="examined", notebook=NB)
    check_claim("toy.vae-smaller-kl", "the VAE's KL is below 5 nats", {"kl": 4 * beta}, 4 * beta < 5,
                profile="smoke", kind="examined", notebook=NB)
    check_claim("toy.k1", "k = 1 is fine", {"k": 1}, True, profile="smoke", notebook=NB)
    record_metric("kl", 4 * beta, notebook=NB)
    record_metric("config", {"beta": beta, "seed": 0}, notebook=NB)
    record_metric("gen", [{"model": "AE", "fid": 120.0}, {"model": "VAE", "fid": 40.0 * beta}], notebook=NB)
    record_metric("comparison_table", [
        {"Aspect": "Output", "AE": "sharp", "VAE": "blurrier", "Evidence": "sharpness AE 0.08 vs VAE 0.05",
         "Verdict": "holds: toy.ae-sharper holds"},
        {"Aspect": "Loss function", "AE": "reconstruction", "VAE": "−ELBO",
         "Evidence": f"KL {4 * beta:.1f} nats",
         "Verdict": f"partly: toy.ae-sharper holds; toy.vae-smaller-kl {'holds' if 4 * beta < 5 else 'does not'}"
                    " (against the row)"},
        {"Aspect": "Architecture", "AE": "encoder → z → decoder", "VAE": "encoder → (μ, σ) → z",
         "Evidence": "1,000 vs 1,010 parameters", "Verdict": "by construction (one backbone)"},
    ])
    record_figure("prior_samples", _figure(beta), caption="prior samples", notebook=NB)
    record_figure("roc_curves", _figure(1.0), notebook=NB)
    _executed_notebook(run_dir / f"{NB}.ipynb")
    state = {"name": name, "run_status": "complete", "started": "2026-11-30T08:00:00+00:00",
             "finished": "2026-11-30T08:01:00+00:00", "profile": "smoke", "notebooks": [f"{NB}.ipynb"],
             "status": {f"{NB}.ipynb": "done"}, "wall_s": {f"{NB}.ipynb": 3.25 if beta < 1 else 4.0},
             "errors": {}, "parameters": {f"{NB}.ipynb": {"beta": beta}},
             "environment": {"profile": "smoke", "device": {"requested": "cpu", "resolved": "cpu", "name": "CPU"},
                             "git": {"commit": "abc123", "dirty": False}, "packages": {"torch": "2.13"},
                             "parameters": {NB: {"beta": beta, "seed": 0}}}}
    merge_metrics(run_dir, state)
    return run_dir


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Two runs differing in beta (0.5: the KL claim holds; 2: it does not)."""
    return (make_run(tmp_path, "small-beta", beta=0.5, monkeypatch=monkeypatch),
            make_run(tmp_path, "big-beta", beta=2.0, monkeypatch=monkeypatch))


# ----------------------------------------------------------------------------------------- record_figure


def test_record_figure_saves_a_png_beside_the_ledger_and_lists_it(tmp_path):
    ledger = tmp_path / "m" / "ledger.json"
    path = record_figure("samples", _figure(2.0), notebook="nb", path=ledger, caption="prior samples")
    assert path == tmp_path / "m" / "figures" / "nb" / "samples.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert load_metrics(ledger)["notebooks"]["nb"]["figures"] == [
        {"name": "samples", "path": "figures/nb/samples.png", "caption": "prior samples"}]
    # an Axes is accepted (its figure is saved); the same name replaces its entry in place, the file too
    record_figure("roc", _figure(1.0).axes[0], notebook="nb", path=ledger)
    before = path.read_bytes()
    record_figure("samples", _figure(5.0), notebook="nb", path=ledger)
    assert [f["name"] for f in load_metrics(ledger)["notebooks"]["nb"]["figures"]] == ["samples", "roc"]
    assert load_metrics(ledger)["notebooks"]["nb"]["figures"][0]["caption"] == "samples"
    assert path.read_bytes() != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["roc.png", "samples.png"]  # no temp files left


def test_record_figure_keeps_the_notebooks_claims(tmp_path):
    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps({"schema": 1, "notebooks": {"nb": {"claims": [{"id": "c"}], "metrics": {"m": 1}}}}))
    record_figure("f", _figure(1.0), notebook="nb", path=ledger)
    entry = load_metrics(ledger)["notebooks"]["nb"]
    assert entry["claims"] == [{"id": "c"}] and entry["metrics"] == {"m": 1} and len(entry["figures"]) == 1


def test_record_figure_rejects_bad_names_and_non_figures(tmp_path):
    ledger = tmp_path / "ledger.json"
    with pytest.raises(ConfigError) as info:
        record_figure("../escape", _figure(1.0), notebook="nb", path=ledger)
    assert str(info.value) == ("figure name='../escape' is invalid; use letters, digits, '.', '_' and '-' (at most "
                               "80 characters, starting with a letter or digit), e.g. 'prior_samples'.")
    with pytest.raises(ConfigError) as info:
        record_figure("ok", [1, 2], notebook="nb", path=ledger)
    assert str(info.value) == ("fig=list cannot be saved as a figure; pass a matplotlib Figure or Axes (or an "
                               "object with savefig, e.g. a seaborn FacetGrid).")
    assert not ledger.exists() and not (tmp_path / "figures").exists()


# ----------------------------------------------------------------------------------------- verdicts


def test_three_way_verdict_records_are_read_wherever_they_sit():
    record = {"effect": 0.12, "ci_low": 0.05, "ci_high": 0.19, "p_value": 0.003, "n_seeds": 5,
              "test": "Welch t-test", "verdict": "holds"}
    for claim in ({"holds": True, **record}, {"holds": True, "stats": record}, {"holds": True, "measured": record}):
        assert report.claim_stats(claim) == record
        assert report.claim_verdict(claim) == "holds"
    assert report.stats_phrase(record) == "effect +0.12 (95% CI +0.05 to +0.19), p = 0.003, 5 seeds, Welch t-test"
    inconclusive = {"holds": False, "stats": {**record, "verdict": "inconclusive", "ci_low": -0.02}}
    assert report.claim_sentence(inconclusive) == (
        "Inconclusive: effect +0.12 (95% CI -0.02 to +0.19), p = 0.003, 5 seeds, Welch t-test.")
    assert report.claim_stats({"holds": True, "measured": {"verdict": "maybe"}}) == {}  # not a three-way verdict
    assert report.stats_phrase({"effect": -1.5, "ci_low": -2, "ci_high": -1, "alpha": 0.1}) == (
        "effect -1.5 (90% CI -2 to -1)")
    assert report.verdict({"holds": False, "sanity": ["x = nan is not finite"], **record}) == (
        "does not hold (x = nan is not finite)")
    assert report.claim_counts([{"holds": True}, {"holds": False}, inconclusive]) == {
        "holds": 1, "does not hold": 1, "inconclusive": 1}


def test_row_verdict_combines_supporting_and_contradicting_claims():
    claims = {"a": {"holds": True}, "b": {"holds": False}, "c": {"holds": True, "verdict": "inconclusive"}}
    assert report.row_claims({"Verdict": "partly: a holds; b does not hold (against the row)"}, claims) == [
        ("a", 1), ("b", -1)]
    assert report.row_verdict([("a", 1), ("b", -1)], claims) == "holds"  # b failing supports the row
    assert report.row_verdict([("a", -1), ("b", 1)], claims) == "does not hold"
    assert report.row_verdict([("c", 1)], claims) == "inconclusive"
    assert report.row_verdict([("a", 1), ("b", 1)], claims) == "mixed"
    assert report.row_verdict([("a", 1), ("c", 1)], claims) == "mixed"
    # an explicit Claims entry wins over the text; ids that are prefixes of others are told apart
    assert report.row_claims({"Claims": [{"id": "b", "sign": -1}, "a", "zz"], "Verdict": "c"}, claims) == [
        ("b", -1), ("a", 1)]
    assert report.row_claims({"Verdict": "x.ab holds"}, {"x.a": {}, "x.ab": {}}) == [("x.ab", 1)]


# ----------------------------------------------------------------------------------------- the report


def test_claim_cells_by_literal_then_by_output(tmp_path):
    _executed_notebook(tmp_path / "n.ipynb")
    nb = nbformat.read(str(tmp_path / "n.ipynb"), as_version=4)
    assert report.claim_cells(nb, ["toy.ae-sharper", "toy.vae-smaller-kl", "toy.k1", "nowhere"]) == {
        "toy.ae-sharper": "c1", "toy.vae-smaller-kl": "c2", "toy.k1": "c3"}


def test_claim_cells_prefer_the_cell_showing_the_verdict_line():
    """An id named first in a skip list links to the later cell whose output shows its verdict line (issue 19)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('skip_without_labels(["toy.a", "toy.b"])'),
        nbformat.v4.new_code_cell('check_claim("toy.a", ...)\ncheck_claim("toy.b", ...)'),
        nbformat.v4.new_code_cell('check_claim("toy.c", ...)'),
        nbformat.v4.new_code_cell("for k in ks:\n    check_claim(f'toy.k{k}', ...)"),
    ]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="labels present: toy.a and toy.b are checked\n")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="✓ toy.a: holds — effect +0.1\n"),
                           nbformat.v4.new_output("display_data", data={
                               "text/markdown": "? toy.b: inconclusive — effect -0.08"})]
    nb.cells[2].outputs = []  # a notebook run before verdict lines: the source literal decides
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="x\n✗ toy.k2: DOES NOT HOLD — measured k=2\n")]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    assert report.claim_cells(nb, ["toy.a", "toy.b", "toy.c", "toy.k2", "nowhere"]) == {
        "toy.a": "c1", "toy.b": "c1", "toy.c": "c2", "toy.k2": "c3"}


def test_report_states_findings_in_words_with_linked_claims(runs):
    run_dir = runs[1]  # beta = 2: the KL claim does not hold, which supports the "Loss function" row
    md_path, html_path = report.write_report(run_dir)
    md = md_path.read_text()
    link = f"{NB}.html#cell-id=c1"
    findings = md[md.index("## What this run found"):md.index("## Key figures")]
    assert findings.splitlines()[2:5] == [
        f"- **Output** — **holds**: “the AE is sharper” holds ([toy.ae-sharper]({link}): measured "
        "ae=0.08, vae=0.05; no interval recorded); this run measured sharpness AE 0.08 vs VAE "
        "0.05.",
        f"- **Loss function** — **holds**: “the AE is sharper” holds ([toy.ae-sharper]({link}): measured "
        "ae=0.08, vae=0.05; no interval recorded) and “the VAE's KL is below 5 nats” (a claim against the row) "
        f"does not hold ([toy.vae-smaller-kl]({NB}.html#cell-id=c2): measured kl=8; no interval recorded); this "
        "run measured KL 8.0 nats.",
        "- **Architecture** — true by construction (one backbone); this run measured 1,000 vs 1,010 "
        "parameters.",
    ]
    assert md.index("## What this run found") < md.index("## Key figures") < md.index("## AE vs VAE")
    assert f"[toy.k1]({NB}.html#cell-id=c3)" in md  # an id built at run time, found by the cell's output
    # the link target exists and carries the anchor
    assert 'id="cell-id=c1"' in (run_dir / f"{NB}.html").read_text()
    # PNGs linked from the markdown, relative to the run folder
    for name in ("prior_samples", "roc_curves"):
        assert f"](metrics/figures/{NB}/{name}.png)" in md
        assert (run_dir / "metrics" / "figures" / NB / f"{name}.png").is_file()
    # config and environment: one folded section, at the end; config metrics are not in the per-notebook part
    assert md.count("<summary>Configuration and environment</summary>") == 1
    assert md.rstrip().endswith("</details>") and md.index("*03_toy_table: config*") > md.index("## Timings")
    assert "| beta | 2.0 |" in md  # the parameters table (one column per notebook)
    page = html_path.read_text()
    assert page.count("<details") == 2 and '<details id="environment"><summary>Configuration and environment' in page
    assert f'<a href="{link}">toy.ae-sharper</a>' in page and '<ul id="findings">' in page
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]) == (run_dir / "metrics/figures" / NB / "prior_samples.png"
                                                            ).read_bytes()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page  # opens offline


def test_findings_show_three_way_verdicts_when_recorded(runs):
    run_dir = runs[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    claim = metrics["notebooks"][NB]["claims"][0]
    claim.update({"effect": 0.03, "ci_low": -0.01, "ci_high": 0.07, "p_value": 0.2, "n_seeds": 5,
                  "test": "permutation test", "verdict": "inconclusive"})
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    md = report.write_report(run_dir)[0].read_text()
    assert ("- **Output** — **inconclusive**: “the AE is sharper” inconclusive ([toy.ae-sharper]"
            f"({NB}.html#cell-id=c1): effect +0.03 (95% CI -0.01 to +0.07), p = 0.2, 5 seeds, permutation test)"
            in md)
    assert ("3 claims recorded: 2 hold, 0 do not, 1 inconclusive. Of these: 2 examined statements (reported "
            "whichever way they fall); 1 asserted invariant (none failed).") in md


def test_without_a_table_findings_list_the_examined_claims(tmp_path):
    metrics = {"notebooks": {"nb": {"claims": [
        {"id": "x", "statement": "x holds", "kind": "asserted", "holds": True},
        {"id": "y", "statement": "y is smaller", "kind": "examined", "holds": False, "measured": {"y": 2}}]}}}
    assert report.findings(metrics) == [
        "“y is smaller” **does not hold** (`y`: measured y=2; no interval recorded)."]


def test_legacy_figures_metric_is_still_shown(tmp_path):
    (tmp_path / "figures").mkdir()
    png = tmp_path / "figures" / "old.png"
    _figure(1.0).savefig(png)
    metrics = {"notebooks": {"nb": {"claims": [], "metrics": {"figures": ["figures/old.png", "missing.png"]}}}}
    assert report.figure_items(metrics, tmp_path) == [report.FigureItem("nb", "old", png, "old")]


def test_key_figures_come_first_in_their_order_and_the_rest_is_folded():
    items = [report.FigureItem("nb", name, Path(f"{name}.png"), name)
             for name in ("extra", "roc_curves", "prior_samples")]
    key, more = report.split_key_figures(items)
    assert [f.name for f in key] == ["prior_samples", "roc_curves"] and [f.name for f in more] == ["extra"]
    assert report.split_key_figures(items[:1]) == (items[:1], [])


def test_inline_markup_escapes_text_and_renders_links():
    assert report._inline_markdown("**a** `<b>` [c|d](x.html#cell-id=1) e < f") == (
        '<strong>a</strong> <code>&lt;b&gt;</code> <a href="x.html#cell-id=1">c|d</a> e &lt; f')


# ----------------------------------------------------------------------------------------- compare / CLI


def test_compare_lists_differing_parameters_flipped_verdicts_and_changed_metrics(runs):
    small, big = runs
    comparison = compare_runs(small, big)
    assert comparison.parameters.to_dict("records") == [
        {"notebook": NB, "parameter": "beta", "A": "0.5", "B": "2.0"}]
    assert comparison.verdicts.to_dict("records") == [
        {"notebook": NB, "claim": "toy.vae-smaller-kl", "statement": "the VAE's KL is below 5 nats",
         "verdict in A": "holds", "verdict in B": "does not hold"}]
    rows = {row["metric"]: row for row in comparison.metrics.to_dict("records")}
    assert set(rows) == {"wall time (s)", "kl", "gen[VAE].fid"}
    assert rows["kl"] == {"notebook": NB, "metric": "kl", "A": 2.0, "B": 8.0, "change": 6.0,
                          "relative change": "+300.0%"}
    assert rows["gen[VAE].fid"]["change"] == 60.0 and rows["wall time (s)"]["change"] == 0.75
    assert comparison.unchanged_metrics == 1  # gen[AE].fid


def test_compare_and_report_commands(runs, tmp_path, capsys):
    small, big = runs
    out = tmp_path / "cmp"
    assert main(["compare", str(small), str(big), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "compare.md"), str(out / "compare.html")]
    md = (out / "compare.md").read_text()
    assert "| 03_toy_table | beta | 0.5 | 2.0 |" in md
    assert "| 03_toy_table | toy.vae-smaller-kl | the VAE's KL is below 5 nats | holds | does not hold |" in md
    assert "| 03_toy_table | kl | 2 | 8 | 6 | +300.0% |" in md
    page = (out / "compare.html").read_text()
    assert '<td class="holds">holds</td><td class="fails">does not hold</td>' in page
    assert "<h2>Verdicts that flipped</h2>" in page and "<td>+300.0%</td>" in page
    assert main(["compare", str(small), str(small)]) == 0
    printed = capsys.readouterr().out
    assert "0 parameter(s) differ, 0 verdict(s) flipped, 0 number(s) changed (4 unchanged)" in printed
    assert "None: every claim has the same verdict in both runs." in printed

    (small / "report.md").unlink(missing_ok=True)
    assert main(["report", str(small)]) == 0
    assert capsys.readouterr().out.split() == [str(small / "report.md"), str(small / "report.html")]
    assert "## What this run found" in (small / "report.md").read_text()

    assert main(["compare", str(small), str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == (f"aestudy: error: {tmp_path / 'nothing'}: no metrics.json there; valid "
                                       "values: a run folder written by `aestudy run` (e.g. runs/latest).\n")


def test_write_comparison_makes_one_offline_page(runs, tmp_path):
    md, page = write_comparison(compare_runs(*runs), tmp_path / "out")
    text = page.read_text()
    assert md.is_file() and text.startswith("<!DOCTYPE html>") and "<script" not in text


def test_the_table_gains_the_rows_other_notebooks_measure():
    """Notebook 05 records the seed's remaining rows (GANs, scaling, semi-supervised) as `limits_table`."""
    row = {"Aspect": "Output", "AE": "sharp", "VAE": "blurrier", "Evidence": "e", "Verdict": "holds: 03.x holds"}
    extra = {"Aspect": "Output vs GANs", "AE": "", "VAE": "blurrier than a GAN", "Evidence": "blur ratio",
             "Verdict": "inconclusive: 05.vae-blurrier-than-gan inconclusive"}
    metrics = {"notebooks": {"03_c": {"metrics": {"comparison_table": [row]}},
                             "05_l": {"metrics": {"limits_table": [extra]}}}}
    table = report.comparison_frame(metrics)
    assert table["Aspect"].tolist() == ["Output", "Output vs GANs"]
    only_extra = report.comparison_frame({"notebooks": {"05_l": {"metrics": {"limits_table": [extra]}}}})
    assert only_extra["Aspect"].tolist() == ["Output vs GANs"]
    assert report.comparison_frame({"notebooks": {}}) is None


def test_a_verdict_without_an_interval_says_why_instead_of_printing_none():
    one_seed = {"effect": 0.08, "ci_low": None, "ci_high": None, "p_value": None, "n_seeds": [1, 1], "test": "none",
                "verdict": "inconclusive", "alpha": 0.05}
    assert report.stats_phrase(one_seed) == "effect +0.08 (no interval: too few seeds), 1 vs 1 seeds"
    five = {"effect": 0.3, "ci_low": 0.1, "ci_high": 0.5, "p_value": 0.004, "n_seeds": [5, 5], "test": "Welch t",
            "alpha": 0.05}
    assert report.stats_phrase(five) == "effect +0.3 (95% CI +0.1 to +0.5), p = 0.004, 5 vs 5 seeds, Welch t"


def _examined(claim_id: str, verdict: str, effect: float) -> dict:
    return {"id": claim_id, "statement": claim_id, "kind": "examined", "holds": verdict == "holds",
            "verdict": verdict, "effect": effect, "ci_low": effect - 0.1, "ci_high": effect + 0.1, "p_value": 0.01,
            "n_seeds": [5, 5], "test": "Welch t", "alpha": 0.05}


def test_for_this_data_answers_ae_or_vae_per_goal_from_the_ledger(tmp_path):
    """A synthetic ledger: reconstruction decided for the AE, samples mixed, anomaly scores undecided, the probes
    skipped (no labels); every goal of GOAL_CLAIMS gets one row, generated from the claims alone."""
    metrics = {"profile": "standard", "notebooks": {
        "03_ae_vs_vae_comparison": {
            "claims": [_examined("03.ae-reconstructs-better", "holds", -0.4),
                       _examined("03.vae-outputs-blurrier", "does not hold", 0.01),
                       _examined("03.vae-samples-beat-ae-prior", "holds", -0.5),
                       _examined("03.vae-gmm-beats-ae-gmm", "inconclusive", -0.05),
                       _examined("03.ex-post-density-closes-gap", "holds", -0.2)],
            "metrics": {"config": {"data": "scans"},
                        "fid_features": {"name": "FID-AE", "description": "codes of a conv AE"}}},
        "04_applications": {
            "claims": [_examined("04.likelihood-beats-recon-error", "inconclusive", 0.01)],
            "metrics": {"skipped_claims": [{"id": "04.vae-beats-ae-few-labels", "reason": "this dataset has no labels"},
                                           {"id": "04.vae-elbo-beats-recon-across-classes",
                                            "reason": "this dataset has no labels"}]}}}}
    table = report.for_this_data(metrics)
    assert table["Goal"].tolist() == [goal for goal, _ in report.GOAL_CLAIMS] == [
        "exact reconstruction", "new samples", "anomaly scores", "features for few labels"]
    answers = dict(zip(table["Goal"], table["Answer"], strict=True))
    assert answers == {"exact reconstruction": "AE, on 1 of 2 claims (1 does not hold)",
                       "new samples": "mixed (VAE and AE + GMM ex post)",
                       "anomaly scores": "undecided", "features for few labels": "skipped: this dataset has no labels"}
    evidence = dict(zip(table["Goal"], table["Evidence"], strict=True))
    assert evidence["exact reconstruction"].startswith(
        "`03.ae-reconstructs-better` (favours AE when it holds): **holds**, effect -0.4 (95% CI -0.5 to -0.3), "
        "p = 0.01, 5 vs 5 seeds, Welch t; `03.vae-outputs-blurrier`")
    assert evidence["anomaly scores"].endswith(
        "`04.vae-elbo-beats-recon-across-classes`: skipped (this dataset has no labels); "
        "`04.ood-likelihood-failure`: not run")
    assert evidence["features for few labels"] == "`04.vae-beats-ae-few-labels`: skipped (this dataset has no labels)"
    blocks = report.for_this_data_blocks(metrics)
    assert [b.kind for b in blocks][:3] == ["h2", "p", "table"] and blocks[0].content == "For this data"
    assert blocks[1].content == ("AE or VAE for `scans`, goal by goal, from this run's examined claims (the model a "
                                 "holding claim favours; its effect and 95% interval).")  # standard: no smoke caveat
    smoke = report.for_this_data_blocks({**metrics, "profile": "smoke"})[1].content
    assert smoke.endswith(" A smoke run checks that everything runs: with the smoke profile's 2 seeds per arm (a "
                          "decisive verdict needs 3, `aestudy.stats.MIN_DECISIVE_REPLICATES`) its answers are "
                          "inconclusive.")
    text = report.render_markdown(report.report_blocks(metrics, tmp_path), tmp_path)
    assert "## For this data" in text and text.index("## For this data") < text.index("## Claims")
    assert ("Claims not recorded in this run: `04.vae-beats-ae-few-labels` (this dataset has no labels); "
            "`04.vae-elbo-beats-recon-across-classes` (this dataset has no labels).") in text
    assert "Sample scores use **FID-AE**: codes of a conv AE." in text


def test_for_this_data_is_shown_for_every_run_even_without_its_claims(tmp_path):
    """A run of notebook 01 only: the section is still there, and each goal says what is missing."""
    metrics = {"notebooks": {"01_autoencoder_basics": {"claims": [], "metrics": {}}}}
    table = report.for_this_data(metrics)
    assert set(table["Answer"]) == {"not measured"}
    assert table["Evidence"].iloc[3] == "`04.vae-beats-ae-few-labels`: not run"
    assert report.goal_answer([("does not hold", "AE"), ("inconclusive", "VAE")]) == "no clear difference"
    assert report.goal_answer([("holds", "VAE"), ("inconclusive", "VAE")]) == "VAE, on 1 of 2 claims (1 inconclusive)"
    assert report.goal_answer([("holds", "VAE"), ("holds", "VAE")]) == "VAE"
    assert report.goal_answer([("holds", "VAE", "VAE"), ("inconclusive", "VAE", "VAE")]) == (
        "VAE, on 1 of 2 claims (1 inconclusive)")  # the inconclusive claim leans the same way
    assert "## For this data" in report.render_markdown(report.report_blocks(metrics, tmp_path), tmp_path)


def test_goal_answer_never_says_vae_against_the_anomaly_evidence():
    """Standard run 20261130-132526: the hold-out claim favours the VAE, the across-class effect favours the AE
    (inconclusive) and the OOD likelihood failure (against the VAE) holds: the answer is mixed, not "VAE"."""
    claims = [_examined("04.likelihood-beats-recon-error", "holds", 0.05),
              _examined("04.vae-elbo-beats-recon-across-classes", "inconclusive", -0.084),
              _examined("04.ood-likelihood-failure", "holds", 0.13)]
    metrics = {"notebooks": {"04_applications": {"claims": claims, "metrics": {}}}}
    answers = dict(zip(*report.for_this_data(metrics)[["Goal", "Answer"]].T.values, strict=True))
    assert answers["anomaly scores"] == "mixed (VAE and AE)"
    # without the OOD claim, the across-class effect alone still keeps the answer from reading "VAE"
    metrics["notebooks"]["04_applications"]["claims"] = claims[:2]
    answers = dict(zip(*report.for_this_data(metrics)[["Goal", "Answer"]].T.values, strict=True))
    assert answers["anomaly scores"] == (
        "mixed (VAE on 1 holding claim; 1 claim not holding whose effect favours AE)")
    assert report.effect_leaning(claims[1], "VAE", "AE") == "AE"
    assert report.effect_leaning({"holds": True}, "VAE", "AE") is None


def test_timings_say_the_series_wall_time_and_how_many_notebooks_ran_at_once(tmp_path):
    def texts(metrics):
        blocks = report.report_blocks(metrics, tmp_path)
        start = next(i for i, b in enumerate(blocks) if b.kind == "h2" and b.content == "Timings")
        return [b.content for b in blocks[start + 1:start + 3] if b.kind == "p"]

    base = {"run": "r", "status": "complete", "profile": "smoke", "notebooks": {
        "01_a": {"claims": [], "metrics": {}, "wall_s": 70.0}, "02_b": {"claims": [], "metrics": {}, "wall_s": 60.0}}}
    assert texts({**base, "series_wall_s": 80.4, "jobs": 2}) == [
        "The series took 80 s of wall time, 2 notebooks at a time (each notebook's wall time below overlaps others', "
        "so they add up to more)."]
    assert texts({**base, "series_wall_s": 130.0, "jobs": 1}) == ["The series took 130 s of wall time, one notebook "
                                                                  "at a time."]
    assert texts(base) == []  # a run from before the runner recorded it


def test_the_use_cases_row_of_the_report_weighs_notebook_04s_claims():
    """Notebook 03 builds its table before 04 runs; the row it records names 04's claims too (`table_records`), and
    the report weighs those the ledger holds: here they lean against the row, so the 03-only "holds" becomes mixed."""
    from aestudy.series import comparison as s03

    row = {"Aspect": "Use cases", "AE": "denoising", "VAE": "generation", "Evidence": s03.LATER_NOTE,
           "Verdict": "holds: 03.vae-samples-beat-ae-prior holds", "Claims": s03.row_claims("Use cases")}
    own = {"id": "03.vae-samples-beat-ae-prior", "sign": 1}
    assert row["Claims"][0] == own and {"id": "04.ood-likelihood-failure", "sign": -1} in row["Claims"]
    notebook_03 = {"claims": [_examined("03.vae-samples-beat-ae-prior", "holds", 0.4)],
                   "metrics": {"comparison_table": [row]}}
    only_03 = {"notebooks": {"03_ae_vs_vae_comparison": notebook_03}}
    claims = report._all_claims(only_03)
    assert report.row_claims(row, claims) == [("03.vae-samples-beat-ae-prior", 1)]  # 04 not run: 03's claim alone
    assert report.findings(only_03)[0].startswith("**Use cases** — **holds**: ")

    with_04 = {"notebooks": {"03_ae_vs_vae_comparison": notebook_03, "04_applications": {"claims": [
        _examined("04.dae-beats-vae-denoising", "holds", 3.0),
        _examined("04.likelihood-beats-recon-error", "inconclusive", 0.01),
        _examined("04.ood-likelihood-failure", "holds", 0.14),
        _examined("04.vae-beats-ae-few-labels", "does not hold", -0.01)]}}}  # across-classes claim: not recorded
    claims = report._all_claims(with_04)
    assert report.row_claims(row, claims) == [
        ("03.vae-samples-beat-ae-prior", 1), ("04.dae-beats-vae-denoising", 1), ("04.likelihood-beats-recon-error", 1),
        ("04.ood-likelihood-failure", -1), ("04.vae-beats-ae-few-labels", 1)]
    sentence = report.findings(with_04)[0]
    assert sentence.startswith("**Use cases** — **mixed**: ")
    assert "“04.ood-likelihood-failure” (a claim against the row) holds" in sentence
    assert "04.vae-elbo-beats-recon-across-classes" not in sentence
    table = report.comparison_with_sentences(report.comparison_frame(with_04), claims)
    assert "Claims" not in table.columns
    assert table.loc[0, "Verdict"].startswith("Mixed: ")
    assert "“04.ood-likelihood-failure” holds (`04.ood-likelihood-failure`, against the row)" in table.loc[0, "Verdict"]


def test_the_recorded_table_rows_name_every_claim_their_row_rests_on():
    from aestudy.series import comparison as s03

    table = pd.DataFrame([{"Aspect": aspect, "Verdict": "v"} for aspect in ("Purpose", "Architecture", "Use cases")])
    records = s03.table_records(table)
    assert records[0]["Claims"] == [{"id": "03.ae-reconstructs-better", "sign": 1},
                                    {"id": "03.vae-samples-beat-ae-prior", "sign": 1}]
    assert records[1]["Claims"] == []
    assert [c["id"] for c in records[2]["Claims"]] == ["03.vae-samples-beat-ae-prior", *(
        cid for cid, _ in s03.LATER_ROW_CLAIMS["Use cases"])]
    with pytest.raises(ConfigError, match="'Uses' is not a row of the AE-vs-VAE table"):
        s03.row_claims("Uses")


def test_device_phrase_says_when_a_notebook_got_more_threads():
    """The header names the per-notebook threads in correct grammar and every tail change (issue 19)."""
    device = {"resolved": "cpu", "name": "AMD EPYC (1 torch threads per notebook, 2 at a time)"}
    metrics = {"environment": {"device": device}}
    assert report.device_phrase(metrics) == "AMD EPYC (1 torch thread per notebook, 2 at a time)"
    metrics["thread_changes"] = [{"elapsed_s": 1008.7, "notebook": "05_limits_and_scale.ipynb", "threads": 2,
                                  "after": "04_applications.ipynb"}]
    assert report.device_phrase(metrics) == (
        "AMD EPYC (1 torch thread per notebook, 2 at a time; 05_limits_and_scale got 2 torch threads from "
        "16 min 49 s, when 04_applications had ended)")
    assert report.device_phrase({"environment": {"device": {"name": "NVIDIA H200"}}}) == "NVIDIA H200"
    assert report._duration(42) == "42 s" and report._duration(3725) == "1 h 02 min 05 s"


def test_compare_names_table_rows_by_short_text_cells_only():
    """A ledger stores NaN cells as "nan": they are values, not names; an evidence sentence is no name either."""
    from aestudy.runner.compare_runs import numbers

    row = {"rung": "digits", "model": "AE", "output": "reconstructions", "psnr_mean": 11.7, "bits_per_dim": "nan",
           "note": "x" * 41, "sd": "-inf"}
    metrics = {"notebooks": {"05_x": {"metrics": {"05.ladder": [row, {"psnr_mean": 3.0}]}}}}
    assert list(numbers(metrics)) == [("05_x", "05.ladder[digits/AE/reconstructions].psnr_mean", 11.7),
                                      ("05_x", "05.ladder[1].psnr_mean", 3.0)]
