"""Your own data through the study (issue 17 items 3-4): every function that needs labels refuses unlabelled
data with a message naming it; plots draw one colour; notebooks skip what needs labels with a visible note; a
smoke run of notebooks 03 and 04 on generated folders of RGB PNGs reports "For this data".

The folders are generated here (tmp_path): small RGB PNGs, 16x16 (neither 28x28 nor grey), with and without
class sub-folders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from aestudy import anomaly, generation, plots, probes, semisupervised
from aestudy.classifier import get_classifier
from aestudy.data import UNLABELLED, has_labels, load_dataset, require_labels
from aestudy.errors import ConfigError
from aestudy.parameters import validate_parameters
from aestudy.series import shared
from aestudy.study import Study

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
NEEDS = "needs class labels, but the data has none (every label is -1"


def write_folder(root: Path, n: int, *, classes: int = 0, side: int = 16, seed: int = 0) -> Path:
    """`n` RGB PNGs of side x side: smooth colour ramps with noise; `classes` > 0 puts them in class sub-folders
    (class k has its channel k mod 3 inverted, so the classes differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        base = np.stack([np.sin(6 * xx + i % 7) * 0.5 + 0.5, yy, (xx + yy) / 2], axis=-1)
        folder = root
        if classes:
            c = i % classes
            base[..., c % 3] = 1 - base[..., c % 3]
            folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"im{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("own") / "photos", 60)


@pytest.fixture(scope="module")
def unlabelled_data(unlabelled: Path):
    return load_dataset(unlabelled, val_size=10, progress=False)


# ------------------------------------------------------------------------------------------ library guards


def test_has_labels_reads_datasets_splits_and_label_arrays(unlabelled_data) -> None:
    assert not has_labels(unlabelled_data) and not has_labels(unlabelled_data.train)
    assert not has_labels(torch.full((5,), UNLABELLED)) and not has_labels(np.full(3, -1))
    assert has_labels(torch.tensor([0, 1, 1])) and has_labels([])  # nothing to refuse in an empty set
    assert shared.has_labels(unlabelled_data) is False
    with pytest.raises(ConfigError) as err:
        require_labels(unlabelled_data.test, "my.function")
    assert str(err.value) == (
        "my.function needs class labels, but the data has none (every label is -1, e.g. a folder of images without "
        "class sub-folders); give it labelled data (class sub-folders, or `labels` in the .npz) or skip this step "
        "(aestudy.series.shared.has_labels).")


def test_probes_refuse_unlabelled_codes_instead_of_scoring_one() -> None:
    """Before: a k-NN vote among labels that are all -1 scored a perfect 1.0."""
    x = torch.randn(40, 3)
    y_none, y = torch.full((40,), UNLABELLED), torch.arange(40) % 2
    cases = {
        "probes.knn_accuracy (train labels)": lambda: probes.knn_accuracy(x, y_none, x, y_none),
        "probes.knn_accuracy (test labels)": lambda: probes.knn_accuracy(x, y, x, y_none),
        "probes.linear_probe_accuracy (train labels)": lambda: probes.linear_probe_accuracy(x, y_none, x, y),
        "probes.probe_table (train labels)": lambda: probes.probe_table({"z": (x, x)}, y_none, y_none,
                                                                        label_counts=(None,)),
    }
    for where, call in cases.items():
        with pytest.raises(ConfigError, match=r"^" + __import__("re").escape(f"{where} {NEEDS}")):
            call()
    assert 0.0 <= probes.knn_accuracy(x, y, x, y) <= 1.0  # labelled data still works


def test_anomaly_classes_m2_tstr_and_the_classifier_refuse_unlabelled_data(unlabelled_data, tmp_path) -> None:
    data = unlabelled_data
    cases = {
        "anomaly.split_by_class": lambda: anomaly.split_by_class(data.test, 0),
        "anomaly.holdout_models": lambda: anomaly.holdout_models(data, 0, None, None, None),
        "anomaly.holdout_sweep": lambda: anomaly.holdout_sweep(data, [0], None, None, None),
        "semisupervised.balanced_labelled_subset": lambda: semisupervised.balanced_labelled_subset(
            data.train.labels, 2),
        "semisupervised.fit_m2": lambda: semisupervised.fit_m2(semisupervised.M2Config(), data, [0]),
        "generation.tstr_results": lambda: generation.tstr_results({}, data.test, data.info, classifier_fn=None),
        "classifier.get_classifier (the domain classifier behind FID-FMNIST)": lambda: get_classifier(
            data, epochs=1, cache_dir=str(tmp_path), progress=False),
    }
    for where, call in cases.items():
        with pytest.raises(ConfigError) as err:
            call()
        assert str(err.value).startswith(f"{where} {NEEDS}"), str(err.value)
    with pytest.raises(ConfigError) as err:
        anomaly.check_class(0, data.info)
    assert str(err.value) == (f"anomaly.check_class needs class labels, but {data.info.name} has none: a held-out "
                              "class cannot be defined on unlabelled data (score it against another dataset instead).")
    assert not any((tmp_path).iterdir())  # refused before anything was trained or cached


def test_fid_is_named_by_its_feature_space(unlabelled_data, tmp_path) -> None:
    labelled = load_dataset(write_folder(tmp_path / "pngs", 30, classes=2), val_size=4, progress=False)
    assert shared.fid_label(labelled) == "FID (pngs classifier)"
    assert shared.fid_label(unlabelled_data) == "FID-AE"


def test_latent_scatter_without_labels_draws_one_colour() -> None:
    codes = np.random.default_rng(0).normal(size=(50, 2))
    ax = plots.latent_scatter(codes, np.full(50, UNLABELLED), class_names=())
    colours = {tuple(c) for coll in ax.collections for c in np.round(coll.get_facecolors(), 4)}
    assert len(colours) == 1 and ax.get_legend() is None
    assert sum(len(coll.get_offsets()) for coll in ax.collections) == 50
    labelled = plots.latent_scatter(codes, np.arange(50) % 3, class_names=("a", "b", "c"), ax=Figure().add_subplot())
    assert len({tuple(c) for coll in labelled.collections for c in np.round(coll.get_facecolors(), 4)}) == 3


def test_dataset_parameter_takes_a_path_and_anomaly_class_waits_for_the_files(unlabelled) -> None:
    values = validate_parameters({"dataset": str(unlabelled), "anomaly_class": 3, "ood_dataset": None},
                                 notebook="04_applications")
    assert values["dataset"] == str(unlabelled) and values["anomaly_class"] == 3
    with pytest.raises(ConfigError, match=r"dataset='fashion_mnist' is invalid; valid values: 'fashion-mnist'"):
        validate_parameters({"dataset": "fashion_mnist"})


def test_study_skips_a_section_with_a_note_and_records_the_skipped_claims(unlabelled, tmp_path, monkeypatch,
                                                                          capsys) -> None:
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics" / "04_applications.json"))
    folder = write_folder(tmp_path / "photos", 100)  # the study's minimum (issue 17); the module's 60 are too few
    study = Study("04_applications", {"epochs": (1, 1, 1)}, profile="smoke", dataset=str(folder))
    data = study.data()
    assert not shared.skip_without_labels(study, data, "section 2, probes", ("04.a", "04.b"))
    assert capsys.readouterr().out == ("skipped: this dataset has no labels — section 2, probes (claims not "
                                       "recorded: 04.a, 04.b)\n")
    ledger = json.loads((tmp_path / "metrics" / "04_applications.json").read_text())
    entry = ledger["notebooks"]["04_applications"] if "notebooks" in ledger else ledger
    assert entry["metrics"]["skipped_claims"] == [{"id": "04.a", "reason": "this dataset has no labels"},
                                                  {"id": "04.b", "reason": "this dataset has no labels"}]
    assert not entry.get("claims")  # a skipped claim is never recorded as a verdict
    study.unavailable["confidence"] = "no classifier"
    kept = study._without_unavailable({"fid": 3.0, "confidence_vae": math.nan})
    assert kept == {"fid": 3.0, "not_measured": "confidence_vae (no classifier)"}
    assert study._without_unavailable({"fid": math.nan}) == {"fid": math.nan}  # still fails its sanity check


# ------------------------------------------------------------------------------------------ the series in CI


def _run(folder: Path, out: Path, only: list[str]) -> dict:
    from aestudy.runner.run import run_study

    run_study(REPO / "notebooks", out=out, profile="smoke", device="cpu", only=only,
              params={"dataset": str(folder)}, progress=False)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("classes", "only"), [(0, ["03", "04"]), (3, ["04"])], ids=["unlabelled", "class-folders"])
def test_smoke_series_on_a_folder_of_rgb_pngs_reports_for_this_data(classes, only, tmp_path) -> None:
    """About 30 s per notebook: notebooks 03 and 04 on the unlabelled folder; on the labelled one only 04, whose
    sections are the ones that need labels (the other notebooks were run on such folders by hand)."""
    # Labelled: 150 images, so that the smoke profile's 100 labels for the probes are fewer than the training split.
    folder = write_folder(tmp_path / "pngs", 150 if classes else 100, classes=classes)
    metrics = _run(folder, tmp_path / "run", only)
    assert metrics["status"] == "complete"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## For this data" in report
    assert "| exact reconstruction |" in report and "| new samples |" in report
    executed = {nb: (tmp_path / "run" / f"{nb}.ipynb").read_text() for nb in metrics["notebooks"]}
    skipped = report.count("skipped (this dataset has no labels)")
    claims = {c["id"] for entry in metrics["notebooks"].values() for c in entry.get("claims", [])}
    if classes:
        assert skipped == 0 and "skipped: this dataset has no labels" not in executed["04_applications"]
        assert {"04.vae-beats-ae-few-labels", "04.likelihood-beats-recon-error", "04.cvae-follows-label"} <= claims
        row = next(line for line in report.splitlines() if line.startswith("| features for few labels |"))
        assert "skipped" not in row and "04.vae-beats-ae-few-labels" in row
    else:
        note = "skipped: this dataset has no labels — section 2, probes with few labels"
        assert note in executed["04_applications"]
        assert "skipped: this dataset has no labels — the realism ratio" in executed["03_ae_vs_vae_comparison"]
        assert "| features for few labels | skipped: this dataset has no labels |" in report
        assert "Sample scores use **FID-AE**" in report and "not comparable with FID-FMNIST" in report
        assert not claims & {"04.vae-beats-ae-few-labels", "03.vae-interpolations-realistic"}


def test_tables_built_from_records_say_skipped_for_a_claim_the_study_skipped() -> None:
    """`Study.skip` leaves a stand-in record: notebook 03's table counts it like an inconclusive claim, notebook
    05's limits table writes a "skipped" row without evidence."""
    import dataclasses

    from aestudy.series import comparison as s03
    from aestudy.series import limits as s05

    facts = s03.Facts(**{f.name: 0.5 + k for k, f in enumerate(dataclasses.fields(s03.Facts))})
    records = {f"03.{name}": {"id": f"03.{name}", "holds": True} for name in s03.TABLE_CLAIMS}
    records["03.vae-interpolations-realistic"] = {"verdict": "skipped", "holds": False, "skipped": "no labels"}
    latent = s03.comparison_table(facts, records).set_index("Aspect").loc["Latent space", "Verdict"]
    assert latent == ("holds: 03.vae-latent-matches-prior holds; 03.vae-smoother-interpolations holds; "
                      "03.vae-interpolations-realistic skipped")
    limits = {claim: {"verdict": "holds", "effect": 0.5, "ci_low": 0.2, "ci_high": 0.8}
              for _, _, claim in s05.LIMIT_ROWS.values()}
    limits["05.m2-beats-m1"] = {"verdict": "skipped", "holds": False, "skipped": "this dataset has no labels"}
    table = s05.limits_table({"Output vs GANs": "a", "Scaling to complex data": "b"}, limits)
    assert table["Evidence"].tolist() == ["a", "b", "not measured (this dataset has no labels)"]
    assert table["Verdict"][2] == "skipped: 05.m2-beats-m1 (this dataset has no labels)"


def test_label_counts_round_down_to_a_multiple_of_the_classes_of_your_own_data() -> None:
    from aestudy.series import limits as s05

    three = np.repeat(np.arange(3), 72)  # a folder with 3 class sub-folders: 100 labels cannot be balanced
    assert s05.feasible_label_counts(three, (100,)) == (99,)
    assert s05.feasible_label_counts(np.repeat(np.arange(10), 60), (100, 105, 300)) == (100, 300)


def test_a_verdict_over_images_has_no_seed_count_in_the_report() -> None:
    from aestudy.runner import report

    delong = {"effect": -0.02, "ci_low": -0.1, "ci_high": 0.06, "p_value": 0.8, "n_seeds": None, "test": "DeLong",
              "verdict": "inconclusive"}
    assert report.stats_phrase(delong) == "effect -0.02 (95% CI -0.1 to +0.06), p = 0.8, DeLong"


def test_ood_set_for_your_own_images_must_have_their_shape(unlabelled_data) -> None:
    from aestudy.series import applications as s04

    assert s04.own_data_ood(None, unlabelled_data.info) is None  # no OOD set: the OOD sections are skipped
    with pytest.raises(ConfigError) as err:
        s04.own_data_ood("digits", unlabelled_data.info)
    assert str(err.value) == (f"ood_dataset='digits' is invalid for {unlabelled_data.info.name}: its images are "
                              "1x28x28, the data's 3x16x16; pick a dataset of the same shape (e.g. photo-patches-32 "
                              "for 3x32x32 images) or None (no OOD section).")
    assert s04.held_out_text(unlabelled_data.info, None) == "held-out class: none (no labels)"


def test_rulers_are_trained_with_one_seed_whatever_the_run_seed(unlabelled_data, tmp_path, monkeypatch) -> None:
    """FID's feature map is part of the measurement: a run under `-p seed 3` must measure with the ruler of a run
    under seed 0, or `aestudy compare` mixes a ruler change with the models' change."""
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics" / "03_ae_vs_vae.json"))
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(shared, "get_classifier", lambda data, **kw: seen.append(("classifier", kw["seed"]))
                        or torch.nn.Identity())
    monkeypatch.setattr(shared.ae_features, "feature_extractor_from_autoencoder",
                        lambda data, **kw: seen.append(("autoencoder", kw["seed"])) or torch.nn.Identity())
    study = Study("03_ae_vs_vae", {"epochs": (1, 1, 1)}, profile="smoke", seed=3)
    labelled = load_dataset(write_folder(tmp_path / "pngs", 30, classes=2), val_size=4, progress=False)
    shared.feature_space(study, labelled, progress=False)
    shared.feature_space(study, unlabelled_data, progress=False)
    assert study.seed == 3 and seen == [("classifier", shared.RULER_SEED), ("autoencoder", shared.RULER_SEED)]
