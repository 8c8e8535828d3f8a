"""aestudy.stats verdicts: calibration by simulation, the decision rule, exact messages, AUROC/McNemar, Holm.

Calibration follows issue 14: 5 seeds per arm, seed-to-seed sd 1, min_effect 0.5. A simulated rate from N studies
has Monte-Carlo standard error sqrt(r (1 - r) / N); every bound below allows 3 of them (one false alarm in ~700 for a
test whose true rate sits exactly on the bound, and the true rates sit well inside: ≈ 2.5 % for "holds" under no
difference, ≈ 99 % for the ±3 scenarios). All generators are seeded, so the tests are deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm, rankdata, ttest_ind
from sklearn.metrics import roc_auc_score

from aestudy import stats
from aestudy.errors import ConfigError
from aestudy.stats import Verdict, compare, compare_accuracy, compare_auroc, holm

N_SEEDS, MIN_EFFECT, ALPHA = 5, 0.5, 0.05


def _mc_error(rate: float, n: int) -> float:
    """Three Monte-Carlo standard errors of a rate estimated from n simulated studies."""
    return 3 * math.sqrt(rate * (1 - rate) / n)


def _rates(verdicts: list[Verdict], true_effect: float) -> dict[str, float]:
    n = len(verdicts)
    out = {v: sum(x.verdict == v for x in verdicts) / n for v in stats.VERDICTS}
    out["coverage"] = sum(x.ci_low <= true_effect <= x.ci_high for x in verdicts) / n
    return out


def _check_calibration(simulate, n: int) -> None:
    """The issue-14 bounds, plus coverage of the reported interval, for a simulator of one study per call."""
    null, plus, minus = (_rates([simulate(effect) for _ in range(n)], effect) for effect in (0.0, 3.0, -3.0))
    assert null["holds"] <= ALPHA + _mc_error(ALPHA, n), null
    assert plus["holds"] >= 0.80 - _mc_error(0.80, n), plus
    assert minus["does not hold"] >= 0.80 - _mc_error(0.80, n), minus
    for rates in (null, plus, minus):  # a (1 - alpha) interval covers the true effect at least that often
        assert rates["coverage"] >= 1 - ALPHA - _mc_error(ALPHA, n), rates


# --- calibration by simulation ----------------------------------------------------------------------------


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_welch_calibration(higher_is_better):
    rng = np.random.default_rng(14)
    sign = 1.0 if higher_is_better else -1.0

    def study(effect: float) -> Verdict:  # `effect` in the claimed direction: a better than b by `effect` sds
        return compare(rng.normal(sign * effect, 1.0, N_SEEDS), rng.normal(0.0, 1.0, N_SEEDS),
                       higher_is_better=higher_is_better, min_effect=MIN_EFFECT)

    _check_calibration(study, n=1000)  # MC error (3 SE): ±0.021 at 5 %, ±0.038 at 80 %


def test_welch_wrong_does_not_hold_is_rare_at_the_minimum_effect():
    """The other error: a true effect of exactly min_effect is called "does not hold" at most alpha/2 of the time."""
    rng = np.random.default_rng(15)
    n = 1000
    verdicts = [compare(rng.normal(MIN_EFFECT, 1.0, N_SEEDS), rng.normal(0.0, 1.0, N_SEEDS), higher_is_better=True,
                        min_effect=MIN_EFFECT) for _ in range(n)]
    assert _rates(verdicts, MIN_EFFECT)["does not hold"] <= ALPHA / 2 + _mc_error(ALPHA / 2, n)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_paired_calibration(higher_is_better):
    rng = np.random.default_rng(16)
    sign = 1.0 if higher_is_better else -1.0

    def study(effect: float) -> Verdict:
        # Each arm has seed-to-seed sd 1; half the variance is shared by the two runs of a seed (correlation 0.5).
        shared = rng.normal(0.0, math.sqrt(0.5), N_SEEDS)
        a = shared + sign * effect + rng.normal(0.0, math.sqrt(0.5), N_SEEDS)
        b = shared + rng.normal(0.0, math.sqrt(0.5), N_SEEDS)
        return compare(a, b, higher_is_better=higher_is_better, min_effect=MIN_EFFECT, paired=True)

    _check_calibration(study, n=1000)


@pytest.mark.parametrize("paired", [False, True])
def test_hierarchical_bootstrap_calibration(paired):
    rng = np.random.default_rng(17)
    n_images, image_sd = 20, 2.0  # image noise adds 2/sqrt(20) ≈ 0.45 sd to each seed's mean

    def study(effect: float) -> Verdict:
        seeds_a, seeds_b = rng.normal(-effect, 1.0, N_SEEDS), rng.normal(0.0, 1.0, N_SEEDS)  # lower is better
        if paired:  # the same images in both arms: a per-image difficulty shared by both
            difficulty = [rng.normal(0.0, image_sd, n_images) for _ in range(N_SEEDS)]
            images_a = [s + d + rng.normal(0.0, 0.5, n_images) for s, d in zip(seeds_a, difficulty, strict=True)]
            images_b = [s + d + rng.normal(0.0, 0.5, n_images) for s, d in zip(seeds_b, difficulty, strict=True)]
        else:
            images_a = [rng.normal(s, image_sd, n_images) for s in seeds_a]
            images_b = [rng.normal(s, image_sd, n_images) for s in seeds_b]
        return compare([x.mean() for x in images_a], [x.mean() for x in images_b], higher_is_better=False,
                       min_effect=MIN_EFFECT, paired=paired, per_image_a=images_a, per_image_b=images_b,
                       n_boot=200, seed=int(rng.integers(2**31)))

    _check_calibration(study, n=400)  # MC error (3 SE): ±0.033 at 5 %, ±0.060 at 80 %


def test_permutation_calibration():
    rng = np.random.default_rng(18)

    def study(effect: float) -> Verdict:
        return compare(rng.normal(effect, 1.0, N_SEEDS), rng.normal(0.0, 1.0, N_SEEDS), higher_is_better=True,
                       min_effect=MIN_EFFECT, method="permutation", n_boot=200, seed=int(rng.integers(2**31)))

    _check_calibration(study, n=300)  # MC error (3 SE): ±0.038 at 5 %, ±0.069 at 80 %


# --- the rule, the record and its special cases ---------------------------------------------------------------


def test_one_seed_per_arm_is_inconclusive_never_an_error():
    for per_image in (None, ([np.array([1.0, 3.0])], [np.array([5.0, 7.0])])):
        kwargs = {} if per_image is None else {"per_image_a": per_image[0], "per_image_b": per_image[1]}
        verdict = compare([2.0], [6.0], higher_is_better=False, min_effect=0.5, **kwargs)
        assert verdict.verdict == "inconclusive" and not verdict.holds
        assert (verdict.ci_low, verdict.ci_high, verdict.p_value) == (None, None, None)
        assert verdict.effect == 4.0 and verdict.n_seeds == (1, 1)
    assert str(verdict) == ("inconclusive: effect +4 no CI (min effect 0.5), no test (fewer than 2 seeds in an arm: "
                            "the seed-to-seed spread cannot be estimated), 1 vs 1 seeds")


def test_two_seeds_per_arm_give_an_interval_but_never_a_decisive_verdict():
    # The smoke profile's 2 vs 2 seeds: a clear separation would pass the t test, but the spread rests on one degree
    # of freedom (two smoke runs differing only in the run seed gave opposite decisive verdicts), so it stays
    # inconclusive, while the interval and p-value are still reported.
    a, b = np.array([1.0, 1.1]), np.array([3.0, 3.1])
    verdict = compare(a, b, higher_is_better=False, min_effect=0.5)
    assert verdict.ci_low > 0.5 and verdict.p_value < ALPHA  # the interval alone would say "holds"
    assert verdict.verdict == "inconclusive" and verdict.n_seeds == (2, 2)
    assert verdict.reason == ("only 2 seeds in an arm: a decisive verdict needs at least 3 (the interval alone "
                              "would say 'holds')")
    against = compare(b, a, higher_is_better=False, min_effect=0.5)
    assert against.verdict == "inconclusive" and "would say 'does not hold'" in against.reason
    rounds = compare(a, b, higher_is_better=False, min_effect=0.5, replicates="timing rounds")
    assert rounds.reason.startswith("only 2 timing rounds in an arm")
    assert stats.compare_to_value([3.0, 3.1], 0.0, higher_is_better=True, min_effect=0.5).verdict == "inconclusive"
    same = stats.compare_equivalent([1.0, 1.01], [1.0, 1.02], tolerance=0.5, paired=True)
    assert same.verdict == "inconclusive" and -0.5 < same.ci_low < same.ci_high < 0.5
    # Three seeds per arm (one more in the smaller arm) are enough for the same separation to hold.
    assert compare([1.0, 1.1, 1.05], [3.0, 3.1, 3.05], higher_is_better=False, min_effect=0.5).verdict == "holds"
    assert compare([1.0, 1.1, 1.05], b, higher_is_better=False, min_effect=0.5).verdict == "inconclusive"


def test_effect_is_signed_in_the_claimed_direction_and_matches_welch():
    a, b = np.array([1.0, 1.2, 0.9, 1.1, 1.0]), np.array([3.0, 2.8, 3.1, 3.3, 2.9])
    reference = ttest_ind(a, b, equal_var=False)
    ci = reference.confidence_interval(0.95)
    lower = compare(a, b, higher_is_better=False, min_effect=0.5)
    assert lower.effect == pytest.approx(b.mean() - a.mean())
    assert (lower.ci_low, lower.ci_high) == pytest.approx((-ci.high, -ci.low))
    assert lower.p_value == pytest.approx(reference.pvalue) and lower.verdict == "holds"
    higher = compare(a, b, higher_is_better=True, min_effect=0.5)
    assert higher.effect == pytest.approx(a.mean() - b.mean())
    assert (higher.ci_low, higher.ci_high) == pytest.approx((ci.low, ci.high))
    assert higher.verdict == "does not hold" and higher.p_value == lower.p_value
    assert (higher.mean_a, higher.mean_b) == pytest.approx((a.mean(), b.mean()))


def test_a_significant_effect_below_the_minimum_does_not_hold():
    a = 10.2 + np.array([0.01, -0.01, 0.0, 0.02, -0.02])
    verdict = compare(a, np.full(5, 10.0) + np.array([0.0, 0.01, -0.01, 0.0, 0.0]), higher_is_better=True,
                      min_effect=0.5)
    assert verdict.p_value < 1e-6 and verdict.ci_low > 0 and verdict.ci_high < 0.5
    assert verdict.verdict == "does not hold" and verdict.reason.startswith("CI upper end")


def test_wide_interval_is_inconclusive():
    verdict = compare([0.0, 3.0, -2.0, 1.0, 4.0], [0.5, -1.0, 2.0, 0.0, 1.0], higher_is_better=True, min_effect=0.5)
    assert verdict.ci_low < 0 < 0.5 < verdict.ci_high and verdict.verdict == "inconclusive"


def test_no_spread_is_inconclusive_for_t_and_exact_for_permutation():
    a, b = [1.0] * 5, [0.0] * 5
    t = compare(a, b, higher_is_better=True, min_effect=0.5)
    assert t.verdict == "inconclusive" and t.p_value is None and "t test is undefined" in t.reason
    permutation = compare(a, b, higher_is_better=True, min_effect=0.5, method="permutation")
    assert permutation.p_value == pytest.approx(2 / 252)  # the two extreme relabellings of C(10, 5) = 252
    assert permutation.verdict == "holds" and permutation.n_seeds == (5, 5)


def test_permutation_test_is_exact_for_five_vs_five():
    verdict = compare([5.0, 6.0, 7.0, 8.0, 9.0], [0.0, 1.0, 2.0, 3.0, 4.0], higher_is_better=True, min_effect=1.0,
                      method="permutation")
    assert verdict.p_value == pytest.approx(2 / 252) and verdict.verdict == "holds"


def test_paired_sign_flips_on_five_seeds_can_never_hold():
    """32 sign flips: the smallest two-sided p is 2/32 = 0.0625 > 0.05, whatever the data."""
    b = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    verdict = compare(b + np.array([5.0, 6.0, 5.5, 7.0, 6.5]), b, higher_is_better=True, min_effect=0.5,
                      paired=True, method="permutation")
    assert verdict.p_value == pytest.approx(2 / 32) and verdict.verdict != "holds"


def test_verdict_is_a_frozen_record_with_plain_json_and_one_line_text():
    verdict = Verdict(effect=3.1, ci_low=1.9, ci_high=4.2, p_value=0.001, n_seeds=(5, 5),
                      test="Welch t (scipy.stats.ttest_ind)", min_effect=0.5, alpha=0.05, verdict="holds",
                      higher_is_better=False, mean_a=1.0, mean_b=4.1)
    assert str(verdict) == ("holds: effect +3.1 [1.9, 4.2] (min effect 0.5), Welch t (scipy.stats.ttest_ind) "
                            "p = 0.001, 5 vs 5 seeds")
    plain = verdict.to_dict()
    assert json.loads(json.dumps(plain)) == plain and plain["n_seeds"] == [5, 5] and plain["verdict"] == "holds"
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.effect = 0.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="verdict='maybe' is invalid; valid values: 'holds', 'does not hold', "
                                          "'inconclusive'"):
        dataclasses.replace(verdict, verdict="maybe")
    computed = compare([1.0, 2.0, 3.0], [1.5, 2.5, 2.0], higher_is_better=True, min_effect=0.0)
    assert json.loads(json.dumps(computed.to_dict())) == computed.to_dict()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_effect": -0.1}, "min_effect=-0.1 is invalid; it must be a finite number >= 0."),
    ({"alpha": 1.0}, "alpha=1.0 is invalid; it must be a finite number in (0, 1)."),
    ({"alpha": 0}, "alpha=0 is invalid; it must be a finite number in (0, 1)."),
    ({"a": []}, "a=[] is invalid; it must hold at least one value."),
    ({"b": [1.0, float("nan")]}, "b=[1.0, nan] is invalid; every value must be finite (no NaN or inf)."),
    ({"a": [[1.0, 2.0]]}, "a=[[1.0, 2.0]] is invalid; it must be a 1-D sequence of numbers (one per seed or "
                          "image)."),
    ({"higher_is_better": "yes"}, "higher_is_better='yes' is invalid; it must be True or False."),
    ({"n_boot": 10}, "n_boot=10 is invalid; it must be an integer >= 100."),
    ({"method": "bayes"}, "method='bayes' is invalid; valid values: 't', 'permutation'."),
    ({"paired": True, "b": [1.0, 2.0]}, "b='<2 values>' is invalid; paired=True needs one value per seed of a (3)."),
    ({"per_image_a": [[1.0], [2.0], [3.0]]}, "per_image_b=None is invalid; per-image values must be given for "
                                             "both arms or for neither."),
    ({"per_image_a": [[1.0], [2.0], [3.0]], "per_image_b": [[1.0], [2.0]]},
     "per_image_b='<2 arrays>' is invalid; it must be a list of 3 1-D arrays, one per seed (the images behind each "
     "per-seed value)."),
    ({"per_image_a": [[1.0], [2.0], [3.0]], "per_image_b": [[1.0], [2.0], [4.0, 6.0]]},
     "per_image_b='<mean 5>' is invalid; the mean of per_image_b[2] must equal seed 2's value 3: pass per-seed "
     "values that are the means of the per-image values."),
])
def test_invalid_inputs_name_the_parameter(kwargs, message):
    args = {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0], "higher_is_better": True, "min_effect": 0.5, **kwargs}
    with pytest.raises(ConfigError) as info:
        compare(**args)
    assert str(info.value) == message


def test_hierarchical_bootstrap_reduces_to_each_level():
    """One image per seed: the seed-level bootstrap; one seed: the image-level bootstrap (variance (n-1)/n · s²/n)."""
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 1.0, 6)
    seeds_only = stats.hierarchical_bootstrap_means([np.array([v]) for v in values], 20000, rng)
    images_only = stats.hierarchical_bootstrap_means([values], 20000, rng)
    expected = (values.size - 1) / values.size * values.var(ddof=1) / values.size
    for replicates in (seeds_only, images_only):
        assert replicates.mean() == pytest.approx(values.mean(), abs=0.01)
        assert replicates.var() == pytest.approx(expected, rel=0.05)  # 20,000 replicates: ~1 % SE


def test_per_image_values_as_a_2d_array_equal_the_list_form():
    rng = np.random.default_rng(7)
    images_a, images_b = rng.normal(0.0, 1.0, (4, 30)), rng.normal(1.0, 1.0, (4, 30))  # (seeds, images)
    as_array = compare(images_a.mean(axis=1), images_b.mean(axis=1), higher_is_better=False, min_effect=0.2,
                       per_image_a=images_a, per_image_b=images_b, n_boot=300)
    as_list = compare(images_a.mean(axis=1), images_b.mean(axis=1), higher_is_better=False, min_effect=0.2,
                      per_image_a=list(images_a), per_image_b=list(images_b), n_boot=300)
    assert as_array == as_list and as_array.n_images == 30
    assert as_array.test == ("Welch t (scipy.stats.ttest_ind); t interval with hierarchical bootstrap SE (seeds, "
                             "then images; 300 replicates)")


def test_paired_per_image_needs_the_same_images():
    with pytest.raises(ConfigError, match=r"per_image_b\[1\]='<3 values>' is invalid; paired=True needs the same "
                                          r"images as per_image_a\[1\] \(2 values\)"):
        compare([1.0, 2.0], [1.0, 2.0], higher_is_better=True, min_effect=0.1, paired=True,
                per_image_a=[[1.0], [1.0, 3.0]], per_image_b=[[1.0], [1.0, 2.0, 3.0]])


# --- AUROC (DeLong) and accuracy (McNemar) ------------------------------------------------------------------


def _auroc_study(rng, separation_a: float, separation_b: float, n: int = 300):
    """Two correlated scores on the same images; class-1 scores shifted up by `separation` (in noise sds)."""
    labels = rng.integers(0, 2, n)
    common = rng.normal(0.0, 1.0, n)
    return (labels, separation_a * labels + common + rng.normal(0.0, 1.0, n),
            separation_b * labels + common + rng.normal(0.0, 1.0, n))


def test_auroc_effect_uses_sklearn_and_delong_matches_the_bootstrap_variance():
    rng = np.random.default_rng(4)
    labels, a, b = _auroc_study(rng, 1.5, 1.0, n=400)
    verdict = compare_auroc(labels, a, b, min_effect=0.02)
    assert verdict.mean_a == roc_auc_score(labels, a) and verdict.mean_b == roc_auc_score(labels, b)
    assert verdict.effect == pytest.approx(verdict.mean_a - verdict.mean_b)
    # Reference: a paired bootstrap over images, stratified by class as DeLong's variance is (class counts fixed);
    # AUROC of each replicate by the Mann-Whitney rank sum, vectorised over 2,000 replicates.
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pick = np.concatenate([rng.choice(pos, (2000, pos.size)), rng.choice(neg, (2000, neg.size))], axis=1)

    def auroc(scores: np.ndarray) -> np.ndarray:
        ranks = rankdata(scores[pick], axis=1)[:, :pos.size]
        return (ranks.sum(axis=1) - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)

    assert auroc(a)[0] == pytest.approx(roc_auc_score(labels[pick[0]], a[pick[0]]))
    delong_se = (verdict.ci_high - verdict.ci_low) / (2 * norm.ppf(0.975))
    assert delong_se == pytest.approx(np.std(auroc(a) - auroc(b)), rel=0.1)  # 2,000 replicates: SE of an sd ≈ 1.6 %
    swapped = compare_auroc(labels, b, a, min_effect=0.02)
    assert swapped.effect == pytest.approx(-verdict.effect) and swapped.p_value == pytest.approx(verdict.p_value)


def test_auroc_known_differences():
    rng = np.random.default_rng(5)
    n = 200  # MC error (3 SE): ±0.046 at 5 %, ±0.085 at 80 %; the true rates are ≈ 2 % and ≈ 100 %
    for separations, verdict, bound in (((1.0, 1.0), "holds", None), ((1.5, 0.5), "holds", 0.80),
                                        ((0.5, 1.5), "does not hold", 0.80)):
        rate = np.mean([compare_auroc(*_auroc_study(rng, *separations), min_effect=0.03).verdict == verdict
                        for _ in range(n)])
        if bound is None:
            assert rate <= ALPHA + _mc_error(ALPHA, n)
        else:
            assert rate >= bound - _mc_error(bound, n)


def test_auroc_validation_and_identical_scores():
    with pytest.raises(ConfigError, match=r"labels='<3 values, 0 ones>' is invalid; both classes \(0 and 1\) must "
                                          r"occur"):
        compare_auroc([0, 0, 0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], min_effect=0.01)
    with pytest.raises(ConfigError, match=r"labels='<3 values>' is invalid; every value must be 0 or 1"):
        compare_auroc([0, 2, 1], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], min_effect=0.01)
    with pytest.raises(ConfigError, match=r"scores_b='<2 values>' is invalid; it needs one score per label \(3\)"):
        compare_auroc([0, 1, 1], [1.0, 2.0, 3.0], [1.0, 2.0], min_effect=0.01)
    same = compare_auroc([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.3], [0.1, 0.9, 0.4, 0.3], min_effect=0.01)
    assert same.verdict == "inconclusive" and same.effect == 0.0 and same.n_images == 4 and same.n_seeds is None


def test_mcnemar_matches_the_exact_binomial_on_discordant_pairs():
    # 9 images only a gets right, 1 only b gets right, 90 both right: p = 2 · P(X <= 1 | 10, 1/2) = 22/1024.
    a = np.array([1] * 9 + [0] + [1] * 90, dtype=bool)
    b = np.array([0] * 9 + [1] + [1] * 90, dtype=bool)
    verdict = compare_accuracy(a, b, min_effect=0.01)
    assert verdict.p_value == pytest.approx(22 / 1024) == pytest.approx(binomtest(9, 10, 0.5).pvalue)
    assert verdict.effect == pytest.approx(0.08) and (verdict.mean_a, verdict.mean_b) == (0.99, 0.91)
    assert verdict.ci_low > 0 and verdict.verdict == "holds" and verdict.n_images == 100


def test_accuracy_known_differences():
    rng = np.random.default_rng(6)
    n = 300

    def study(acc_a: float, acc_b: float) -> str:
        difficulty = rng.random(500)  # shared by both classifiers: their errors are correlated
        a, b = difficulty < acc_a, difficulty + rng.normal(0.0, 0.1, 500) < acc_b
        return compare_accuracy(a, b, min_effect=0.02, n_boot=200, seed=int(rng.integers(2**31))).verdict

    assert np.mean([study(0.8, 0.8) == "holds" for _ in range(n)]) <= ALPHA + _mc_error(ALPHA, n)
    assert np.mean([study(0.85, 0.75) == "holds" for _ in range(n)]) >= 0.8 - _mc_error(0.8, n)
    assert np.mean([study(0.75, 0.85) == "does not hold" for _ in range(n)]) >= 0.8 - _mc_error(0.8, n)


def test_accuracy_of_classifiers_that_always_agree():
    verdict = compare_accuracy([True, False, True, True], [1, 0, 1, 1], min_effect=0.01)
    assert (verdict.effect, verdict.ci_low, verdict.ci_high, verdict.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert verdict.verdict == "does not hold"
    with pytest.raises(ConfigError, match=r"correct_b='<3 values>' is invalid; it needs one value per image of "
                                          r"correct_a \(4\)"):
        compare_accuracy([1, 0, 1, 1], [1, 0, 1], min_effect=0.01)


# --- Holm ---------------------------------------------------------------------------------------------------


def _verdict(p: float | None, verdict: str = "holds") -> Verdict:
    return Verdict(effect=1.0, ci_low=0.5, ci_high=1.5, p_value=p, n_seeds=(5, 5), test="t", min_effect=0.1,
                   alpha=0.05, verdict=verdict, higher_is_better=True, mean_a=1.0, mean_b=0.0)


def test_holm_against_a_hand_worked_example():
    # Six claims ("f" has no p and counts as p = 1). Sorted: 0.001 x 6 = 0.006, 0.005 x 5 = 0.025 and
    # 0.01 x 4 = 0.04 are below 0.05 (rejected); 0.03 x 3 = 0.09 is not, and the step-down stops there, so
    # 0.04 is not rejected either. Survivors: a, b, c. Then "c" is rejected but does not hold: it drops out.
    verdicts = {"a": _verdict(0.005), "b": _verdict(0.01), "c": _verdict(0.001), "d": _verdict(0.04),
                "e": _verdict(0.03), "f": _verdict(None, "inconclusive")}
    assert holm(verdicts) == {"a": True, "b": True, "c": True, "d": False, "e": False, "f": False}
    verdicts["c"] = _verdict(0.001, "does not hold")
    assert holm(verdicts) == {"a": True, "b": True, "c": False, "d": False, "e": False, "f": False}
    assert holm({}) == {}
    with pytest.raises(ConfigError, match=r"verdicts\['x'\]='float' is invalid; it must be a Verdict"):
        holm({"x": 0.01})  # type: ignore[dict-item]


# --- one arm against a fixed value; equivalence ------------------------------------------------------------------


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_compare_to_value_calibration(higher_is_better):
    """The issue-14 bounds for a one-sample claim: 5 seeds of sd 1 against a fixed reference, min effect 0.5."""
    rng = np.random.default_rng(17)
    sign, reference = (1.0 if higher_is_better else -1.0), 10.0

    def study(effect: float) -> Verdict:
        return stats.compare_to_value(rng.normal(reference + sign * effect, 1.0, N_SEEDS), reference,
                                      higher_is_better=higher_is_better, min_effect=MIN_EFFECT)

    _check_calibration(study, n=1000)


def test_compare_to_value_is_the_one_sample_t_test():
    from scipy.stats import ttest_1samp

    values = np.array([0.61, 0.58, 0.66, 0.55, 0.63])
    v = stats.compare_to_value(values, 0.5, higher_is_better=True, min_effect=0.05)
    expected = ttest_1samp(values, 0.5)
    ci = expected.confidence_interval(0.95)
    assert v.effect == pytest.approx(values.mean() - 0.5) and v.p_value == pytest.approx(expected.pvalue)
    assert (v.ci_low, v.ci_high) == (pytest.approx(ci.low - 0.5), pytest.approx(ci.high - 0.5))
    assert v.verdict == "holds" and v.mean_b == 0.5 and v.test.startswith("one-sample t against 0.5")
    below = stats.compare_to_value(1.0 - values, 0.5, higher_is_better=False, min_effect=0.05)
    assert below.effect == pytest.approx(v.effect) and below.verdict == "holds"  # the mirror image, lower is better
    assert stats.compare_to_value([0.7], 0.5, higher_is_better=True, min_effect=0.05).verdict == "inconclusive"
    with pytest.raises(ConfigError, match="reference="):
        stats.compare_to_value(values, float("nan"), higher_is_better=True, min_effect=0.05)


@pytest.mark.parametrize("paired", [True, False])
def test_equivalence_calibration(paired):
    """TOST within ±tolerance: identical arms are called equivalent most of the time (5 seeds, sd 0.1, tolerance 0.5),
    a shift of exactly the tolerance is called equivalent at most alpha/2 of the time, a shift of 4× the tolerance
    is called "does not hold" almost always."""
    rng = np.random.default_rng(18)
    n, tol, sd = 1000, 0.5, 0.1

    def study(shift: float) -> Verdict:
        b = rng.normal(0.0, sd, N_SEEDS)
        a = (b if paired else rng.normal(0.0, sd, N_SEEDS)) + shift + rng.normal(0.0, sd, N_SEEDS)
        return stats.compare_equivalent(a, b, tolerance=tol, paired=paired)

    same, edge, far = ([study(s) for _ in range(n)] for s in (0.0, tol, 4 * tol))
    assert sum(v.verdict == "holds" for v in same) / n >= 0.80
    assert sum(v.verdict == "holds" for v in edge) / n <= ALPHA / 2 + _mc_error(ALPHA / 2, n)
    assert sum(v.verdict == "does not hold" for v in far) / n >= 0.95
    assert all(v.ci_low <= v.effect <= v.ci_high for v in same + edge + far)


def test_equivalence_verdicts_and_statsmodels_p_value():
    from statsmodels.stats.weightstats import ttost_paired

    pca = np.full(5, np.log(0.02))
    close, shifted = pca + [0.01, 0.02, 0.015, 0.012, 0.018], pca + [0.31, 0.29, 0.33, 0.30, 0.32]
    straddle = pca + [0.02, 0.15, 0.05, 0.12, 0.0]
    v = stats.compare_equivalent(close, pca, tolerance=math.log(1.08), paired=True)
    assert v.verdict == "holds" and v.effect == pytest.approx(0.015) and v.min_effect == pytest.approx(math.log(1.08))
    assert v.p_value == pytest.approx(ttost_paired(close, pca, -math.log(1.08), math.log(1.08))[0])
    assert stats.compare_equivalent(shifted, pca, tolerance=math.log(1.08), paired=True).verdict == "does not hold"
    assert stats.compare_equivalent(-shifted + 2 * pca, pca, tolerance=math.log(1.08), paired=True).verdict == \
        "does not hold"  # outside below -tolerance too
    assert stats.compare_equivalent(straddle, pca, tolerance=math.log(1.08), paired=True).verdict == "inconclusive"
    assert stats.compare_equivalent(close[:1], pca[:1], tolerance=0.1, paired=True).verdict == "inconclusive"
    assert stats.compare_equivalent(pca, pca, tolerance=0.1, paired=True).reason.startswith("no spread")
    with pytest.raises(ConfigError, match="tolerance="):
        stats.compare_equivalent(close, pca, tolerance=0.0)
    with pytest.raises(ConfigError, match="paired=True needs one value per seed"):
        stats.compare_equivalent(close, pca[:3], tolerance=0.1, paired=True)


def test_a_verdict_names_what_its_replicates_are():
    """Timing rounds or held-out classes are not training seeds: the verdict line and the report say which."""
    from aestudy.claims import verdict_from_record
    from aestudy.runner.report import stats_phrase

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.1, 20), rng.normal(0.0, 0.1, 20)
    rounds = stats.compare(a, b, higher_is_better=True, min_effect=0.1, paired=True, replicates="timing rounds")
    assert rounds.evidence().endswith("20 vs 20 timing rounds") and rounds.to_dict()["replicates"] == "timing rounds"
    assert stats_phrase(rounds.to_dict()).split(", ")[2] == "20 vs 20 timing rounds"
    seeds = stats.compare(a[:5], b[:5], higher_is_better=True, min_effect=0.1)
    assert seeds.evidence().endswith("5 vs 5 seeds")
    old_record = {k: v for k, v in seeds.to_dict().items() if k != "replicates"}  # a ledger from before the field
    assert verdict_from_record(old_record).evidence().endswith("5 vs 5 seeds")
    with pytest.raises(ConfigError, match=r"replicates='' is invalid; it must be a non-empty phrase"):
        stats.compare(a, b, higher_is_better=True, min_effect=0.1, replicates="")


# --- r6a: a seedless arm (PCA's MSE repeated) gives the exact one-sample test, without scipy's warning -------------

def test_compare_against_a_constant_arm_is_the_one_sample_t_test_and_silent():
    import warnings

    from scipy.stats import ttest_1samp

    ae = np.log([0.0200, 0.0210, 0.0205, 0.0199, 0.0202])
    pca = np.full(5, np.log(0.0245))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reader 5: "RuntimeWarning ... Results may be unreliable" beside a ✓
        v = stats.compare(ae, pca, higher_is_better=False, min_effect=math.log(1.1))
    one = ttest_1samp(ae, pca[0])
    assert v.p_value == pytest.approx(float(one.pvalue), rel=1e-12)
    low, high = one.confidence_interval(0.95)
    assert (v.ci_low, v.ci_high) == pytest.approx((pca[0] - high, pca[0] - low), rel=1e-12)
    # Only the constant-arm case is silenced: nearly identical arms that both vary still warn.
    eps = np.finfo(float).eps
    with pytest.warns(RuntimeWarning, match="Precision loss occurred in moment calculation"):
        stats.compare(1.0 + eps * np.array([0.0, 1, 0, 1, 0]), 2.0 + 2 * eps * np.array([1.0, 0, 1, 0, 0]),
                      higher_is_better=True, min_effect=0.0)
