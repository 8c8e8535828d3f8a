"""The claims ledger: raising per profile and kind, sanity guards, replacement, file location, concurrency."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import re
import subprocess

import numpy as np
import pytest
import torch

from aestudy import claims
from aestudy.errors import ClaimFailed, ConfigError, DataError
from aestudy.stats import Verdict, compare, compare_to_value


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """A fresh ledger file selected through the environment, as the runner does."""
    path = tmp_path / "runs" / "metrics.json"
    monkeypatch.setenv(claims.METRICS_FILE_ENV, str(path))
    monkeypatch.delenv("AESTUDY_PROFILE", raising=False)
    return path


def _claims(path, notebook="notebook"):
    return json.loads(path.read_text())["notebooks"][notebook]["claims"]


@pytest.mark.parametrize("profile", ["standard", "full"])
def test_failed_asserted_claim_raises_after_recording(ledger, profile):
    with pytest.raises(ClaimFailed) as info:
        claims.check_claim("elbo-bound", "ELBO <= log p(x)", {"elbo": -90.5, "log_px": -91.0}, False,
                           profile=profile)
    assert str(info.value) == (f"Claim 'elbo-bound' does not hold in profile '{profile}': ELBO <= log p(x) — "
                               "measured elbo=-90.5, log_px=-91.")
    (record,) = _claims(ledger)
    assert record["holds"] is False and record["enforced"] is True and record["profile"] == profile
    assert record["measured"] == {"elbo": -90.5, "log_px": -91.0}


def test_failed_asserted_claim_is_only_recorded_in_smoke(ledger):
    record = claims.check_claim("c1", "x > y", {"x": 1.0, "y": 2.0}, False, profile="smoke")
    assert record["holds"] is False and record["enforced"] is False
    assert _claims(ledger)[0]["id"] == "c1"


@pytest.mark.parametrize("profile", ["smoke", "standard", "full"])
def test_examined_claim_never_raises_and_records_verdict(ledger, profile):
    record = claims.check_claim("vae-generalises", "the VAE generalises better", {"gap": -0.3}, False,
                                profile=profile, kind="examined")
    assert record["kind"] == "examined" and record["holds"] is False and record["enforced"] is False


def test_profile_comes_from_environment(ledger, monkeypatch):
    monkeypatch.setenv("AESTUDY_PROFILE", "smoke")
    assert claims.check_claim("c", "s", {"v": 1}, False)["profile"] == "smoke"
    monkeypatch.setenv("AESTUDY_PROFILE", "full")
    with pytest.raises(ClaimFailed):
        claims.check_claim("c", "s", {"v": 1}, False)


@pytest.mark.parametrize("kind", ["asserted", "examined"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor([0.5, float("nan")])])
def test_non_finite_values_raise_in_every_profile(ledger, kind, bad):
    with pytest.raises(ClaimFailed, match="failed its sanity checks .*is not finite"):
        claims.check_claim("nan", "finite", {"ok": 1.0, "value": bad}, True, profile="smoke", kind=kind)
    (record,) = _claims(ledger)
    assert record["holds"] is False and "not finite" in record["sanity"][0]


def test_bounds_are_checked_in_smoke(ledger):
    claims.check_claim("in", "share in [0,1]", {"share": 0.4}, True, profile="smoke", bounds={"share": (0, 1)})
    with pytest.raises(ClaimFailed, match=r"share = 1.2 is outside its bounds \[0, 1\]"):
        claims.check_claim("out", "share in [0,1]", {"share": 1.2}, True, profile="smoke",
                           bounds={"share": (0, 1)})
    claims.check_claim("open", "positive", {"v": 1e9}, True, profile="smoke", bounds={"v": (0, None)})


def test_bounds_naming_an_unmeasured_value_is_a_config_error(ledger):
    with pytest.raises(ConfigError, match="bounds names 'y', which is not in measured; valid names: x"):
        claims.check_claim("c", "s", {"x": 1.0}, True, bounds={"y": (0, 1)})


def test_invalid_kind_names_valid_values(ledger):
    with pytest.raises(ConfigError, match="kind='hoped' is not a claim kind; valid values: asserted, examined"):
        claims.check_claim("c", "s", {"x": 1.0}, True, kind="hoped")


def test_rechecking_a_claim_replaces_it_in_place(ledger):
    for value in (1.0, 2.0):
        claims.check_claim("a", "first", {"v": value}, True)
        claims.check_claim("b", "second", {"v": value}, True)
    records = _claims(ledger)
    assert [r["id"] for r in records] == ["a", "b"]
    assert [r["measured"]["v"] for r in records] == [2.0, 2.0]


def test_values_become_plain_json(ledger):
    measured = {"np": np.float32(0.25), "int": np.int64(3), "t": torch.tensor(1.5), "vec": torch.arange(3),
                "flag": np.bool_(True), "name": "vae"}
    record = claims.check_claim("json", "plain", measured, True)
    assert record["measured"] == {"np": 0.25, "int": 3, "t": 1.5, "vec": [0, 1, 2], "flag": True, "name": "vae"}
    claims.record_metric("series", np.linspace(0, 1, 3))
    stored = claims.load_metrics()["notebooks"]["notebook"]
    assert stored["metrics"]["series"] == [0.0, 0.5, 1.0]
    assert stored["claims"][0]["measured"] == record["measured"]


def test_a_notebook_run_by_hand_writes_to_the_git_ignored_interactive_ledger(tmp_path, monkeypatch):
    monkeypatch.delenv(claims.METRICS_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # JupyterLab runs a notebook in notebooks/: nothing may land there
    default = claims.metrics_path()
    assert default == claims.interactive_ledger()
    assert default.parts[-3:] == ("runs", "interactive", "metrics.json")
    checkout = default.parents[2]
    ignored = subprocess.run(["git", "-C", str(checkout), "check-ignore", "-q", str(default)], check=False)
    assert ignored.returncode == 0, f"{default} is not git-ignored"
    path = tmp_path / "ledger.json"
    claims.record_metric("mse", 0.01, path=path)
    assert not (tmp_path / "metrics.json").exists()
    assert json.loads(path.read_text()) == {
        "schema": 1, "notebooks": {"notebook": {"claims": [], "metrics": {"mse": 0.01}}}}


def test_claims_table_is_compact_and_per_notebook(ledger):
    claims.check_claim("a", "first", {"x": 1 / 3, "n": 10}, True)
    claims.check_claim("b", "other", {"x": 2.0}, False, kind="examined", notebook="02_other")
    table = claims.claims_table()
    assert list(table.columns) == ["id", "kind", "statement", "measured", "holds", "enforced", "verdict", "effect",
                                   "ci", "p_value", "n_seeds", "test"]
    assert table.to_dict("records") == [{"id": "a", "kind": "asserted", "statement": "first",
                                         "measured": "x=0.3333, n=10", "holds": True, "enforced": True,
                                         "verdict": "", "effect": None, "ci": "", "p_value": None, "n_seeds": "",
                                         "test": ""}]
    everything = claims.claims_table(all_notebooks=True)
    assert list(everything["notebook"]) == ["notebook", "02_other"]
    assert claims.claims_table(notebook="missing").empty


def test_corrupt_ledger_is_reported_not_overwritten(ledger):
    ledger.parent.mkdir(parents=True)
    ledger.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        claims.record_metric("x", 1)
    assert ledger.read_text() == "{not json"


def _write_many(notebook: str, count: int) -> None:
    """Write `count` claims and metrics (the ledger path is inherited through the environment)."""
    for i in range(count):
        claims.check_claim(f"{notebook}-{i}", "concurrent", {"i": i}, True, notebook=notebook)
        claims.record_metric(f"m{i}", i, notebook=notebook)


def test_two_processes_writing_at_once_lose_nothing(ledger):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_write_many, args=(name, 20)) for name in ("p1", "p2")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    stored = claims.load_metrics()["notebooks"]
    for name in ("p1", "p2"):
        assert [c["id"] for c in stored[name]["claims"]] == [f"{name}-{i}" for i in range(20)]
        assert stored[name]["metrics"] == {f"m{i}": i for i in range(20)}


def test_watermark_shows_and_records_run_facts(ledger):
    import time

    from aestudy.watermark import watermark

    table = watermark(seed=3, profile="smoke", device="cpu", started_at=time.time() - 12.0)
    assert {"python", "torch", "numpy", "sklearn", "aestudy", "device"} <= set(table.index)
    assert table.loc["seed", "value"] == "3" and table.loc["profile", "value"] == "smoke"
    recorded = claims.load_metrics()["notebooks"]["notebook"]["metrics"]["watermark"]
    assert recorded["torch"] == torch.__version__ and recorded["seed"] == 3
    assert recorded["wall_time_s"] >= 12.0
    assert re.search(r"\(\d+ torch threads?\)", recorded["device"])  # "1 torch thread", "2 torch threads"


def test_claim_record_displays_as_one_verdict_line(ledger) -> None:
    record = claims.check_claim("t.display", "two is more than one", {"a": 2.0, "b": 1.0}, holds=True,
                                profile="standard", kind="examined")
    assert isinstance(record, dict) and record["holds"] is True
    text = repr(record)
    assert text.splitlines()[0] == "[examined, recorded] t.display: holds — two is more than one"
    assert "a=2" in text and "b=1" in text
    assert _claims(ledger)[0]["id"] == "t.display"


# --- examined claims with a statistical verdict (aestudy.stats.compare) ------------------------------------

LOWER_ERROR_AE = [0.010, 0.011, 0.0105, 0.0098, 0.0102]  # per-seed test MSE of the claimed-better arm
LOWER_ERROR_VAE = [0.014, 0.0135, 0.0142, 0.0138, 0.0145]


@pytest.mark.parametrize("profile", ["smoke", "standard", "full"])
def test_examine_records_the_verdict_and_never_raises_for_a_contrary_result(ledger, profile):
    verdict = compare(LOWER_ERROR_VAE, LOWER_ERROR_AE, higher_is_better=False, min_effect=0.001)
    assert verdict.verdict == "does not hold"
    record = claims.examine("vae.lower-mse", "the VAE reconstructs better than the AE", verdict,
                            measured={"mse_vae": 0.014}, profile=profile)
    (stored,) = _claims(ledger)
    assert stored == dict(record)
    assert stored["kind"] == "examined" and stored["enforced"] is False and stored["holds"] is False
    assert stored["verdict"] == "does not hold" and stored["n_seeds"] == [5, 5] and stored["profile"] == profile
    for field in ("effect", "ci_low", "ci_high", "p_value", "min_effect", "alpha", "mean_a", "mean_b"):
        assert stored[field] == pytest.approx(getattr(verdict, field))
    assert stored["test"] == "Welch t (scipy.stats.ttest_ind)" and stored["measured"] == {"mse_vae": 0.014}


def test_examined_verdict_displays_its_evidence(ledger):
    verdict = compare(LOWER_ERROR_AE, LOWER_ERROR_VAE, higher_is_better=False, min_effect=0.001)
    record = claims.examine("ae.lower-mse", "the AE reconstructs better than the VAE", verdict)
    assert record["holds"] is True and record["verdict"] == "holds"
    assert repr(record).splitlines() == [
        "[examined, recorded] ae.lower-mse: holds — the AE reconstructs better than the VAE",
        f"  evidence: {verdict.evidence()}"]
    # effect = mean(VAE) - mean(AE) = 0.014 - 0.0103 (lower is better); interval and p as in test_stats.
    assert verdict.evidence() == ("effect +0.0037 [0.00307, 0.00433] (min effect 0.001), Welch t "
                                  "(scipy.stats.ttest_ind) p = 1.1e-06, 5 vs 5 seeds")
    contrary = claims.examine("x", "s", dataclasses.replace(verdict, verdict="does not hold"), measured={"k": 2})
    assert repr(contrary).splitlines()[0] == "[examined, recorded] x: DOES NOT HOLD — s"
    assert repr(contrary).splitlines()[2] == "  measured: k=2"


def test_one_seed_examined_claim_is_inconclusive_and_tabulated(ledger):
    claims.check_claim("elbo-bound", "ELBO <= log p(x)", {"gap": 0.2}, True)
    claims.examine("one-seed", "the AE reconstructs better", compare([0.01], [0.014], higher_is_better=False,
                                                                      min_effect=0.001))
    table = claims.claims_table()
    assert table[["id", "verdict", "ci", "n_seeds", "test"]].to_dict("records") == [
        {"id": "elbo-bound", "verdict": "", "ci": "", "n_seeds": "", "test": ""},
        {"id": "one-seed", "verdict": "inconclusive", "ci": "no CI", "n_seeds": "1 vs 1", "test": "none"}]
    assert table.loc[1, "effect"] == pytest.approx(0.004) and not table.loc[1, "holds"]
    assert _claims(ledger)[1]["p_value"] is None


def test_examine_tabulates_interval_text(ledger):
    verdict = Verdict(effect=3.1, ci_low=1.9, ci_high=4.2, p_value=0.001, n_seeds=(5, 5), test="Welch t",
                      min_effect=0.5, alpha=0.05, verdict="holds", higher_is_better=True, mean_a=4.1, mean_b=1.0)
    claims.examine("c", "a beats b", verdict)
    row = claims.claims_table().to_dict("records")[0]
    assert {k: row[k] for k in ("verdict", "effect", "ci", "p_value", "n_seeds", "test")} == {
        "verdict": "holds", "effect": 3.1, "ci": "[1.9, 4.2]", "p_value": 0.001, "n_seeds": "5 vs 5",
        "test": "Welch t"}


def test_claims_table_counts_one_arm_for_a_one_sample_test(ledger):
    """A one-sample test has one arm against a fixed value: the table shows "5", as its verdict line does."""
    verdict = compare_to_value([0.2, 0.3, 0.25, 0.35, 0.3], 0.0, higher_is_better=True, min_effect=0.1)
    claims.examine("one-arm", "a beats zero", verdict)
    row = claims.claims_table().to_dict("records")[0]
    assert verdict.test.startswith("one-sample") and row["n_seeds"] == "5" and "5 seeds" in verdict.evidence()


def test_examine_writes_to_an_explicit_path(ledger, tmp_path):
    other = tmp_path / "elsewhere" / "metrics.json"
    claims.examine("p", "s", compare([1.0, 2.0], [0.0, 1.0], higher_is_better=True, min_effect=0.1), path=other,
                   notebook="03_x")
    assert [c["id"] for c in json.loads(other.read_text())["notebooks"]["03_x"]["claims"]] == ["p"]
    assert not ledger.exists()


def test_examine_sanity_problems_raise_after_recording(ledger):
    verdict = Verdict(effect=float("nan"), ci_low=None, ci_high=None, p_value=None, n_seeds=(1, 1), test="none",
                      min_effect=0.5, alpha=0.05, verdict="holds", higher_is_better=True, mean_a=1.0, mean_b=1.0)
    with pytest.raises(ClaimFailed, match=r"Claim 'bad' failed its sanity checks \(verdict.effect = nan is not "
                                          r"finite\): s — holds: effect"):
        claims.examine("bad", "s", verdict)
    (stored,) = _claims(ledger)
    assert stored["verdict"] == "inconclusive" and stored["holds"] is False and stored["effect"] == "nan"
    assert claims.claims_table().loc[0, "ci"] == "no CI"
    with pytest.raises(ClaimFailed, match="measured.x|x = inf is not finite"):
        claims.examine("bad2", "s", compare([1.0, 2.0], [1.0, 2.0], higher_is_better=True, min_effect=0.1),
                       measured={"x": float("inf")})


def test_examine_refuses_what_is_not_a_verdict(ledger):
    with pytest.raises(ConfigError, match=r"verdict=True is invalid; it must be a Verdict from "
                                          r"aestudy.stats.compare \(or compare_auroc / compare_accuracy\)."):
        claims.examine("c", "s", True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="claim_id='' is invalid; it must be a non-empty string."):
        claims.examine("", "s", compare([1.0], [2.0], higher_is_better=True, min_effect=0.0))
    assert not ledger.exists()
