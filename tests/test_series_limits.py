"""Notebook 05's recipe: GAN-vs-VAE scores, the scaling ladder's budget and slopes, M2-vs-M1 error rates and the
limits rows of the AE-vs-VAE table, on tiny models, 8×8 digits and synthetic tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from aestudy import widgets
from aestudy.data import load_dataset
from aestudy.errors import ConfigError
from aestudy.series import limits as s05
from aestudy.stats import compare


class FlatFeatures:
    """A feature map for the scores: the first 16 pixels of each image (a label-free stand-in for FID-AE)."""

    def embed(self, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
        return images.flatten(1)[:, :16].double()


def test_every_knob_has_three_profiles_and_standard_has_five_seeds_for_the_gan_claim():
    assert all(isinstance(v, tuple) and len(v) == 3 for v in s05.SIZES.values())
    assert s05.SIZES["n_seeds"][0] == 1 and s05.SIZES["n_seeds"][1] >= 5  # smoke: inconclusive; standard: >= 5
    assert s05.SIZES["ladder_seeds"][0] == 1 and s05.SIZES["ladder_seeds"][1] >= 2
    assert set(s05.MIN_EFFECT_REASONS) == {"blur", "slope", "m2", "recall"}


def test_epochs_for_gives_at_least_the_step_budget_and_not_a_whole_epoch_more():
    for steps, n in ((100, 2000), (100, 1297), (8, 300), (2000, 55000), (1, 10)):
        epochs = s05.epochs_for(steps, n)
        per_epoch = math.ceil(n / s05.LADDER_BATCH)
        assert epochs * per_epoch >= steps
        assert epochs == 1 or (epochs - 1) * per_epoch < steps
    assert s05.epochs_for(100, 2000) == 7  # 16 steps per epoch
    with pytest.raises(ConfigError, match="ladder_steps"):
        s05.epochs_for(0, 100)


def test_gan_fits_the_ladder_shapes_it_can_halve():
    assert not s05.gan_fits((1, 8, 8))  # digits: no stride-2 stage above 8
    assert s05.gan_fits((1, 28, 28)) and s05.gan_fits((3, 32, 32)) and s05.gan_fits((3, 64, 64))
    assert not s05.gan_fits((1, 28, 30))


def test_seeds_are_consecutive_from_the_base_seed():
    assert s05.seeds(3, 4) == (3, 4, 5, 6)
    with pytest.raises(ConfigError, match="n_seeds"):
        s05.seeds(0, 0)


def _ladder(slopes_by_seed: dict[int, float], model: str = "VAE", output: str = "samples",
            rungs=("a", "b", "c")) -> pd.DataFrame:
    return pd.DataFrame([{"rung": r, "model": model, "output": output, "seed": s, "rel_fid": math.exp(0.3 + b * i)}
                         for s, b in slopes_by_seed.items() for i, r in enumerate(rungs)])


def test_degradation_slope_recovers_the_log_linear_rate_per_rung():
    table = _ladder({0: 0.5, 1: -0.25, 2: 0.0})
    slopes = s05.degradation_slopes(table, "VAE", "samples", ["a", "b", "c"])
    np.testing.assert_allclose(slopes.to_numpy(), [0.5, -0.25, 0.0], atol=1e-12)
    assert list(slopes.index) == [0, 1, 2]
    # the rung order, not the table order, defines the positions: reversed rungs reverse the slope
    np.testing.assert_allclose(s05.degradation_slopes(table, "VAE", "samples", ["c", "b", "a"]), [-0.5, 0.25, 0.0],
                               atol=1e-12)


def test_degradation_slope_leaves_out_seeds_missing_a_rung_and_needs_two_rungs():
    table = _ladder({0: 0.5, 1: 0.1})
    table = table[~((table["seed"] == 1) & (table["rung"] == "c"))]
    assert list(s05.degradation_slopes(table, "VAE", "samples", ["a", "b", "c"]).index) == [0]
    np.testing.assert_allclose(s05.degradation_slopes(table, "VAE", "samples", ["a", "b"]), [0.5, 0.1], atol=1e-12)
    with pytest.raises(ConfigError, match="rungs"):
        s05.degradation_slopes(table, "VAE", "samples", ["a"])


def test_faster_degradation_is_a_holding_verdict_only_beyond_the_minimum_effect():
    vae = s05.degradation_slopes(_ladder({0: 0.60, 1: 0.62, 2: 0.58, 3: 0.61, 4: 0.59}), "VAE", "samples", list("abc"))
    ae = s05.degradation_slopes(_ladder({0: 0.10, 1: 0.11, 2: 0.09, 3: 0.12, 4: 0.10}, "AE", "reconstructions"),
                                "AE", "reconstructions", list("abc"))
    v = compare(vae, ae, higher_is_better=True, min_effect=s05.SLOPE_MIN_EFFECT, paired=True)
    assert v.verdict == "holds" and v.effect == pytest.approx(0.496)
    same = compare(vae, vae + 0.01 * np.array([1, -1, 1, -1, 0]), higher_is_better=True,
                   min_effect=s05.SLOPE_MIN_EFFECT, paired=True)
    assert same.verdict == "does not hold"


def test_error_rate_is_the_error_share_with_the_wilson_interval():
    correct = np.array([True] * 87 + [False] * 13)
    e = s05.error_rate(correct)
    low, high = proportion_confint(13, 100, alpha=0.05, method="wilson")
    assert e == {"error": 0.13, "ci_low": pytest.approx(low), "ci_high": pytest.approx(high), "n": 100}
    assert e["ci_low"] < 0.13 < e["ci_high"]
    assert s05.error_rate(np.ones(5, bool))["error"] == 0.0
    with pytest.raises(ConfigError, match="correct"):
        s05.error_rate(np.array([], dtype=bool))


def test_probe_predictions_separate_separable_classes_for_every_evaluation_set():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 4)) + 10 * np.eye(3, 4)[y]
    test_y = np.repeat([0, 1, 2], 5)
    test_x = rng.normal(size=(15, 4)) + 10 * np.eye(3, 4)[test_y]
    val_pred, test_pred = s05.probe_predictions(x, y, x[:6], test_x)
    np.testing.assert_array_equal(val_pred, y[:6])
    np.testing.assert_array_equal(test_pred, test_y)


def test_feasible_label_counts_keep_balanced_semi_supervised_subsets_only():
    labels = np.repeat(np.arange(10), 60)  # 600 images, 60 per class
    assert s05.feasible_label_counts(labels, (100, 300, 1000, 105)) == (100, 300)  # 1000: 100 > 60 per class
    assert s05.feasible_label_counts(np.repeat(np.arange(10), 15), (100,)) == ()  # no image left unlabelled


def _ssl_inputs():
    rng = np.random.default_rng(1)
    train_y, val_y, test_y = (np.tile(np.arange(2), n) for n in (20, 10, 50))
    good = lambda y: rng.normal(size=(len(y), 3)) + 8 * y[:, None]  # noqa: E731
    noise = lambda y: rng.normal(size=(len(y), 3))  # noqa: E731
    features = {"good": (good(train_y), good(val_y), good(test_y)),
                "noise": (noise(train_y), noise(val_y), noise(test_y))}
    labelled = {(4, 0): np.array([0, 1, 2, 3]), (4, 1): np.array([4, 5, 6, 7])}
    wrong = lambda share: np.where(np.arange(100) < share, 1 - test_y, test_y)  # noqa: E731
    m2 = {(4, 0): (val_y.copy(), wrong(10)), (4, 1): (val_y.copy(), wrong(20))}  # 10 % and 20 % wrong on test
    return features, m2, labelled, train_y, val_y, test_y


def test_semi_supervised_table_scores_every_method_of_a_run_on_the_same_test_images():
    features, m2, labelled, train_y, val_y, test_y = _ssl_inputs()
    table, correct = s05.semi_supervised_table(features, m2, labelled, train_y, val_y, test_y)
    assert set(table["method"]) == {"good", "noise", "M2"}
    assert set(zip(table["labels"], table["seed"], strict=True)) == set(labelled)
    row = table.set_index(["method", "seed"])
    assert row.loc[("M2", 0), "test_error"] == pytest.approx(0.10) and row.loc[("M2", 1), "test_error"] == 0.2
    assert row.loc[("M2", 0), "val_error"] == 0.0
    for (method, _k, s), c in correct.items():
        assert c.shape == (100,) and row.loc[(method, s), "test_error"] == pytest.approx(1 - c.mean())
        assert row.loc[(method, s), "ci_low"] <= row.loc[(method, s), "test_error"] <= row.loc[(method, s), "ci_high"]
    assert row.loc[("good", 0), "test_error"] == 0.0
    assert s05.best_m1(table, 4, 0) == "good"
    paired = s05.m2_against_best_m1(table, 4)
    assert list(paired["seed"]) == [0, 1] and list(paired["best_m1"]) == ["good", "good"]
    np.testing.assert_allclose(paired["m2_accuracy"], [0.9, 0.8])
    np.testing.assert_allclose(paired["best_m1_accuracy"], [1.0, 1.0])


def test_best_m1_is_chosen_on_validation_error_never_the_test_error_and_never_m2():
    table = pd.DataFrame([
        {"method": "M2", "labels": 100, "seed": 0, "val_error": 0.01, "test_error": 0.01},
        {"method": "pixels", "labels": 100, "seed": 0, "val_error": 0.30, "test_error": 0.10},
        {"method": "VAE codes", "labels": 100, "seed": 0, "val_error": 0.20, "test_error": 0.25},
        {"method": "pixels", "labels": 100, "seed": 1, "val_error": 0.10, "test_error": 0.12},
        {"method": "VAE codes", "labels": 100, "seed": 1, "val_error": 0.20, "test_error": 0.05},
        {"method": "M2", "labels": 100, "seed": 1, "val_error": 0.01, "test_error": 0.02},
    ])
    assert s05.best_m1(table, 100, 0) == "VAE codes" and s05.best_m1(table, 100, 1) == "pixels"
    paired = s05.m2_against_best_m1(table, 100)
    np.testing.assert_allclose(paired["best_m1_accuracy"], [0.75, 0.88])
    np.testing.assert_allclose(paired["m2_accuracy"], [0.99, 0.98])
    with pytest.raises(ConfigError, match="labels, seed"):
        s05.best_m1(table, 10, 0)
    with pytest.raises(ConfigError, match="labels"):
        s05.m2_against_best_m1(table, 1000)


def test_label_runs_repeat_the_smallest_count_over_seeds_and_name_the_fix_when_none_fits():
    labels = np.repeat(np.arange(10), 150)
    assert s05.label_runs(labels, (100, 1000), (3, 4, 5)) == [(100, 3), (100, 4), (100, 5)]  # 1000 > 150 per class
    labels = np.repeat(np.arange(10), 600)
    assert s05.label_runs(labels, (100, 1000), (0, 1)) == [(100, 0), (100, 1), (1000, 0)]
    with pytest.raises(ConfigError, match="m2_limit"):
        s05.label_runs(np.repeat(np.arange(10), 5), (100,), (0,))


def _records(verdict="holds"):
    return {claim: {"verdict": verdict, "effect": 0.5, "ci_low": 0.2, "ci_high": 0.8}
            for _, _, claim in s05.LIMIT_ROWS.values()}


def test_limits_table_rows_carry_the_evidence_and_the_claims_verdicts():
    evidence = {aspect: f"measured {i}" for i, aspect in enumerate(s05.LIMIT_ROWS)}
    records = _records()
    records["05.m2-beats-m1"] = {"verdict": "inconclusive", "effect": -0.01, "ci_low": None, "ci_high": None}
    table = s05.limits_table(evidence, records)
    assert list(table.columns) == ["Aspect", "AE", "VAE", "Evidence", "Verdict", "Caveat"]
    assert list(table["Aspect"]) == ["Output vs GANs", "Scaling to complex data", "Semi-supervised learning"]
    assert list(table["Evidence"]) == ["measured 0", "measured 1", "measured 2"]
    assert table["Verdict"][0] == "holds: 05.vae-blurrier-than-gan (effect +0.5, CI [0.2, 0.8])"
    assert table["Verdict"][2] == "inconclusive: 05.m2-beats-m1 (effect -0.01, no CI)"


def test_limits_table_names_what_is_missing():
    evidence = {aspect: "x" for aspect in s05.LIMIT_ROWS}
    records = _records()
    del records["05.vae-degrades-faster"]
    with pytest.raises(ConfigError, match="05.vae-degrades-faster"):
        s05.limits_table(evidence, records)
    with pytest.raises(ConfigError, match="Semi-supervised learning"):
        s05.limits_table({"Output vs GANs": "x", "Scaling to complex data": "x"}, _records())


def test_sample_table_scores_the_data_against_itself_as_sharp_as_the_data():
    data = load_dataset("digits", upscale=False, val_size=100)
    real = data.test.images[:100]
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    sources = {("data", 0): real, ("blurred", 0): blurred, ("blurred", 1): blurred}
    table = s05.sample_table(sources, FlatFeatures(), real)
    row = table.set_index(["source", "seed"])
    assert row.loc[("data", 0), "laplacian_ratio"] == pytest.approx(1.0)
    assert row.loc[("data", 0), "hf_ratio"] == pytest.approx(1.0)
    assert row.loc[("data", 0), "fid"] == pytest.approx(0.0, abs=1e-6)
    assert row.loc[("blurred", 0), "laplacian_ratio"] < 0.5 and row.loc[("blurred", 0), "hf_ratio"] < 1.0
    np.testing.assert_array_equal(s05.per_seed_values(table, "blurred", "fid"), table["fid"].to_numpy()[1:])
    with pytest.raises(ConfigError, match="GAN"):
        s05.per_seed_values(table, "GAN", "fid")


def test_a_digits_rung_trains_the_budget_and_scores_each_output_with_its_own_quantities():
    grey, binary = s05.rung_data("digits", limit=200, seed=0, val_size=50)
    assert grey.info.shape == (1, 8, 8) and binary.binarize == "dynamic"
    torch.testing.assert_close(grey.train.labels, binary.train.labels)  # the same images, two preparations
    models = s05.train_rung(binary, grey, (0,), latent_dim=2, steps=2, device="cpu")
    assert set(models) == {("AE", 0), ("VAE", 0)}  # no GAN at 8x8
    table = s05.rung_table("digits", models, grey, binary, FlatFeatures(), n=60)
    assert {(r.model, r.output) for r in table.itertuples()} == {("AE", "reconstructions"), ("VAE", "samples"),
                                                                 ("VAE", "reconstructions")}
    recon = table[table["output"] == "reconstructions"]
    assert recon["psnr"].gt(0).all() and table[table["output"] == "samples"]["psnr"].isna().all()
    bpd = table.set_index(["model", "output"])["bits_per_dim"]
    # after 2 steps the bound sits near 1 bit per binary pixel (logits near 0); the AE and the GAN have none
    assert 0.3 < bpd[("VAE", "samples")] < 3 and bpd.drop(("VAE", "samples")).isna().all()
    assert (table["rel_fid"] > 0).all() and table["fid_data"].nunique() == 1
    rows = s05.ladder_rows(models, grey, model_seed=0, n=4)
    assert list(rows) == ["training images", "AE reconstructions", "VAE reconstructions", "VAE samples"]
    assert all(v.shape == (4, 1, 8, 8) and float(v.min()) >= 0 and float(v.max()) <= 1 for v in rows.values())


def test_selection_viewer_renders_each_option_and_rejects_a_value_outside_them():
    seen = []

    def rows(option):
        seen.append(option)
        return {"row": torch.full((2, 1, 4, 4), 0.5)}

    w = widgets.selection_viewer(rows, options=["a", "b"], description="rung")
    assert seen == ["a"] and widgets.png_of(w.output) is not None
    w.main_control.value = "b"
    assert seen == ["a", "b"]
    with pytest.raises(ConfigError, match="value='c'"):
        widgets.selection_viewer(rows, options=["a", "b"], value="c")
