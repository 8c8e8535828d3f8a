"""The interpreting sentences next to surprising results (issue 19): each one's wording follows the measured values,
so it stays true whichever way a run falls."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aestudy.errors import ConfigError
from aestudy.series import applications as s04
from aestudy.series import basics as s01
from aestudy.series import elbo as s02
from aestudy.series import limits as s05
from aestudy.stats import Verdict


def _ood(deciding: dict[str, float], other: dict[str, float]) -> pd.DataFrame:
    rows = [{"OOD set": name, "score": score, "auroc": value}
            for name, scores in (("digits, MNIST layout", deciding), ("digits", other))
            for score, value in scores.items()]
    return pd.DataFrame(rows).set_index(["OOD set", "score"])


def test_ood_reading_names_the_best_detector_and_what_the_likelihood_ratio_did():
    table = _ood({"AE recon error": 0.842, "VAE IS-NLL": 0.420, "likelihood ratio": 0.291},
                 {"AE recon error": 0.943, "VAE IS-NLL": 0.921, "likelihood ratio": 0.953})
    text = s04.ood_reading(table, "digits, MNIST layout")
    assert "the AE's reconstruction error is the best detector of digits, MNIST layout** (AUROC 0.842, the VAE's " \
           "IS-NLL 0.420)" in text
    assert "the likelihood ratio deepens the failure on digits, MNIST layout** (AUROC 0.420 → 0.291), although it " \
           "helps on digits." in text
    assert "Ren et al. (2019)" in text and "Nalisnick et al." in text
    fixed = s04.ood_reading(_ood({"AE recon error": 0.6, "VAE IS-NLL": 0.42, "likelihood ratio": 0.7},
                                 {"AE recon error": 0.9, "VAE IS-NLL": 0.9, "likelihood ratio": 0.8}),
                            "digits, MNIST layout")
    assert "best detector is likelihood ratio (AUROC 0.700)" in fixed and "deepens" not in fixed
    assert "raises the AUROC on digits, MNIST layout (0.420 → 0.700)" in fixed
    with pytest.raises(ConfigError, match="the deciding OOD set 'mnist' is not in the table"):
        s04.ood_reading(table, "mnist")


def _probes(acc: dict[tuple[int, str], float]) -> pd.DataFrame:
    rows = [{"representation": rep, "labels": labels, "probe": probe, "repeat": 0, "accuracy": value + shift}
            for (labels, rep), value in acc.items() for probe, shift in (("linear probe", 0.0), ("5-NN", -0.5))]
    return pd.DataFrame(rows)


def test_probe_reading_explains_weak_vae_features_only_when_they_are_the_weakest():
    acc = {(100, "AE"): 0.69, (100, "VAE"): 0.62, (100, "PCA"): 0.66, (100, "raw pixels"): 0.68,
           (55000, "AE"): 0.80, (55000, "PCA"): 0.84}
    text = s04.probe_reading(_probes(acc), active=6, latent_dim=16)
    assert text.startswith("**Reading:** with 100 labels the linear probe does best on AE (0.690) and worst on VAE "
                           "(0.620). The VAE's means being the weakest features")
    assert "(6 of 16 kept)" in text
    assert "With all 55,000 labels PCA (0.840) beats the nonlinear AE codes (0.800)" in text
    acc |= {(100, "VAE"): 0.70, (55000, "AE"): 0.86}
    text = s04.probe_reading(_probes(acc), active=6, latent_dim=16)
    assert "best on VAE (0.700) and worst on PCA (0.660)." in text
    assert "weakest" not in text and "beats the nonlinear AE" not in text


def _samples(fid: dict[str, float], sharp: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"source": s, "seed": 0, "fid": fid[s], "laplacian_ratio": sharp[s]} for s in fid])


def test_sample_reading_credits_the_ex_post_ae_when_it_wins_and_separates_sharpness_from_fid():
    fid = {"VAE": 44.2, "GAN": 85.6, "VAE + GMM ex post": 26.2, "AE + GMM ex post": 13.5, "data": 0.9}
    sharp = {"VAE": 0.21, "GAN": 0.93, "VAE + GMM ex post": 0.3, "AE + GMM ex post": 0.42, "data": 1.0}
    text = s05.sample_reading(_samples(fid, sharp), fid_name="FID-FMNIST")
    assert text.startswith("**Reading:** the lowest FID-FMNIST of the generators is AE + GMM ex post's (13.5; the "
                           "VAE's prior samples 44.2). A deterministic AE")
    assert "Ghosh et al. (2020)" in text
    assert "(Laplacian ratio 0.93, the VAE's 0.21) and still score a worse FID-FMNIST (85.6 vs 44.2)" in text
    fid |= {"VAE": 10.0, "GAN": 20.0}
    sharp |= {"GAN": 0.1}
    text = s05.sample_reading(_samples(fid, sharp))
    assert "is VAE's (10.0;" in text and "Ghosh" not in text and "as sharp as the data" not in text
    with pytest.raises(ConfigError, match=r"needs the sources \['GAN'\]"):
        s05.sample_reading(_samples({"VAE": 1.0, "AE + GMM ex post": 2.0}, {"VAE": 1.0, "AE + GMM ex post": 1.0}))


def test_m1_reading_says_per_label_count_which_method_is_worst_and_why_when_it_surprises():
    err = {(100, "VAE codes"): 0.388, (100, "AE codes"): 0.329, (100, "pixels"): 0.317, (100, "M2"): 0.31,
           (1000, "VAE codes"): 0.262, (1000, "pixels"): 0.208, (1000, "M2"): 0.231, (2000, "pixels"): 0.1,
           (2000, "M2"): 0.2, (2000, "VAE codes"): 0.3}
    ssl = pd.DataFrame([{"labels": k, "method": m, "seed": 0, "test_error": e} for (k, m), e in err.items()])
    text = s05.m1_reading(ssl)
    assert text.startswith("**Reading:** With 100 labels the lowest test error is that of M2 (31.0%), the highest "
                           "that of VAE codes (38.8%). The VAE's codes are the worst M1 features")
    assert "With 1,000 labels the lowest test error is that of pixels (20.8%)" in text
    assert text.count("Raw pixels beating M2") == 1 and text.count("worst M1 features") == 1
    # reader 7: at 100 labels M2 is best, so the sentence names the label count where pixels beat it
    assert "Raw pixels beating M2 with 1,000 labels means" in text
    with pytest.raises(ConfigError, match="empty"):
        s05.m1_reading(ssl.iloc[:0])


def test_ood_reading_quotes_the_mean_ratios_when_the_table_has_them():
    table = _ood({"AE recon error": 0.842, "VAE IS-NLL": 0.420, "likelihood ratio": 0.291},
                 {"AE recon error": 0.943, "VAE IS-NLL": 0.921, "likelihood ratio": 0.953})
    table["mean_normal"], table["mean_anomalous"] = -40.57, -50.99
    text = s04.ood_reading(table, "digits, MNIST layout")
    assert "(mean ratio -51.0 on them vs -40.6 on the test images: lower = more normal)" in text
    table["mean_anomalous"] = -30.0  # the ratio no longer prefers them on average: no such clause
    assert "mean ratio" not in s04.ood_reading(table, "digits, MNIST layout")


def test_generation_reading_explains_the_ex_post_ae_only_when_it_is_the_best_sampler():
    from aestudy.series import comparison as s03

    fid = {("AE", "prior N(0, I)"): 245.0, ("AE", "GMM ex post"): 59.7, ("VAE", "prior N(0, I)"): 158.0,
           ("VAE", "GMM ex post"): 79.7, ("DAE", "prior N(0, I)"): 10.0}  # other models are not the AE-vs-VAE reading
    gen = pd.DataFrame([{"model": m, "source": s, "seed": 0, "fid": v} for (m, s), v in fid.items()])
    text = s03.generation_reading(gen)
    assert text.startswith("**Reading:** the lowest FID of the AE and VAE samplers is the AE's from its GMM ex post "
                           "(59.7; the VAE's prior samples 158.0). A deterministic AE")
    assert "Ghosh et al. (2020)" in text
    gen.loc[gen["source"] == "GMM ex post", "fid"] = 300.0
    text = s03.generation_reading(gen)
    assert "is the VAE's from its prior N(0, I) (158.0;" in text and "Ghosh" not in text
    with pytest.raises(ConfigError, match="needs AE and VAE rows"):
        s03.generation_reading(gen[gen["model"] == "AE"])


def test_interpolation_reading_points_out_when_the_two_path_measures_disagree():
    from aestudy.series import comparison as s03

    lat = pd.DataFrame([{"model": "AE", "seed": 0, "off_manifold": 1.15, "path_realism": 0.901},
                        {"model": "VAE", "seed": 0, "off_manifold": 1.19, "path_realism": 0.929}])
    text = s03.interpolation_reading(lat)
    assert ("the AE's images lie closer to real images on average (off-manifold distance AE 1.15, VAE 1.19) and the "
            "VAE's stay more recognisable (realism AE 90.1%, VAE 92.9%). The two measures disagree") in text
    # reader 4: a difference whose interval includes 0 is seed noise, and then the measures do not "disagree"
    from aestudy.stats import compare
    noisy = compare([1.18, 1.20, 1.19], [1.10, 1.21, 1.14], higher_is_better=False, min_effect=0.05)
    settled = compare([0.93, 0.92, 0.94], [0.90, 0.91, 0.89], higher_is_better=True, min_effect=0.02)
    assert noisy.ci_low < 0 < noisy.ci_high and settled.ci_low > 0
    text = s03.interpolation_reading(lat, noisy, settled)
    assert ("(off-manifold distance AE 1.15, VAE 1.19 — within seed noise (its 95 % interval includes 0)) and the "
            "VAE's stay more recognisable (realism AE 90.1%, VAE 92.9%).") in text and "disagree" not in text
    two = compare([1.18, 1.20], [1.10, 1.12], higher_is_better=False, min_effect=0.05)  # interval clear of 0
    assert two.ci_high < 0 and "too few seeds to settle (2 per model)" in s03.interpolation_reading(lat, two, settled)
    lat.loc[1, "off_manifold"] = 1.0
    text = s03.interpolation_reading(lat)
    assert "the VAE's images lie closer" in text and "disagree" not in text


def test_ood_reading_calls_no_score_a_detector_when_all_are_below_chance():
    table = _ood({"AE recon error": 0.332, "VAE IS-NLL": 0.029, "likelihood ratio": 0.022},
                 {"AE recon error": 0.5, "VAE IS-NLL": 0.5, "likelihood ratio": 0.4})
    text = s04.ood_reading(table, "digits, MNIST layout")
    assert text.startswith("**Reading: no score detects digits, MNIST layout better than chance here** (the highest "
                           "AUROC is AE recon error's, 0.332)")
    assert "is the best detector" not in text


def test_a_sampler_within_ten_percent_of_the_vae_is_not_called_the_better_one():
    from aestudy.series import comparison as s03

    fid = {"VAE": 108.2, "GAN": 200.0, "AE + GMM ex post": 108.0, "data": 1.0}
    text = s05.sample_reading(_samples(fid, dict.fromkeys(fid, 0.5)))
    assert "It is within 10% of the VAE's: no clear winner" in text and "Ghosh" not in text
    gen = pd.DataFrame([{"model": m, "source": s, "seed": 0, "fid": v} for m, s, v in (
        ("AE", "prior N(0, I)", 245.0), ("AE", "GMM ex post", 150.0), ("VAE", "prior N(0, I)", 158.0))])
    text = s03.generation_reading(gen)
    assert "within 10% of the VAE's prior samples: no clear winner" in text and "Ghosh" not in text


def _sharp(ae_recon: float, vae_recon: float, ae_samples: float, vae_samples: float) -> pd.DataFrame:
    rows = [("data", "test images", 0.05), ("AE", "reconstructions", ae_recon), ("VAE", "reconstructions", vae_recon),
            ("AE", "prior samples", ae_samples), ("VAE", "prior samples", vae_samples)]
    return pd.DataFrame([{"model": m, "source": s, "seed": 0, "sharpness": v} for m, s, v in rows])


def test_sharpness_reading_separates_reconstructions_from_samples():
    from aestudy.series import comparison as s03

    text = s03.sharpness_reading(_sharp(0.042, 0.031, 0.00986, 0.0173))  # standard run 20261130-132526
    assert text.startswith("**Reading:** of reconstructions the AE's are sharper (AE 0.042, VAE 0.031); of prior "
                           "samples the VAE's are sharper (AE 0.00986, VAE 0.0173) (test images 0.05).")
    assert "not of its samples" in text
    text = s03.sharpness_reading(_sharp(0.03, 0.04, 0.02, 0.01))
    assert "of reconstructions the VAE's are sharper" in text and "does not show in reconstructions" in text
    with pytest.raises(ConfigError, match="needs AE and VAE reconstructions and prior samples"):
        s03.sharpness_reading(_sharp(1, 1, 1, 1).iloc[:3])


def test_generation_reading_no_longer_claims_the_ae_samples_are_sharper():
    from aestudy.series import comparison as s03

    gen = pd.DataFrame([{"model": m, "source": s, "seed": 0, "fid": v} for m, s, v in (
        ("AE", "prior N(0, I)", 245.0), ("AE", "GMM ex post", 59.7), ("VAE", "prior N(0, I)", 158.0))])
    text = s03.generation_reading(gen)
    assert "sharper, and" not in text and "section 7 measures whose outputs are sharper" in text


def test_holes_reading_explains_equal_holes_despite_different_mmd():
    from aestudy.series import comparison as s03

    lat = pd.DataFrame([{"model": "AE", "seed": 0, "mmd": 0.293, "holes": 0.434},
                        {"model": "VAE", "seed": 0, "mmd": 0.007, "holes": 0.430}])
    text = s03.holes_reading(lat)
    assert text.startswith("**Reading:** MMD² to N(0, I) is AE 0.293 against VAE 0.007; the share of prior samples "
                           "in holes is AE 43% against VAE 43%. The holes are about as common for both")
    assert "Rosca et al. 2018" in text
    lat.loc[0, "mmd"] = 0.02  # both codes match the prior about equally: equal holes need no explaining
    assert "about as common" not in s03.holes_reading(lat)
    lat.loc[0, "mmd"] = 0.293
    lat.loc[0, "holes"] = 0.7
    assert "about as common" not in s03.holes_reading(lat) and "point different ways" not in s03.holes_reading(lat)
    lat.loc[0, "holes"] = 0.2  # fewer holes for the AE although its MMD² is larger
    assert "point different ways" in s03.holes_reading(lat)
    with pytest.raises(ConfigError, match="needs rows for"):
        s03.holes_reading(lat[lat["model"] == "AE"])


def test_generalisation_reading_explains_a_negative_gap_for_every_model():
    from aestudy.series import comparison as s03

    gaps = pd.DataFrame([{"model": m, "seed": 0, "mse_gap_rel": g, "recon_gap": 1.0}
                         for m, g in (("AE", -0.0121), ("VAE", -0.0103))])
    text = s03.generalisation_reading(gaps)
    assert text.startswith("**Reading:** the relative MSE gap (test − train; the MSE scores reconstructions against "
                           "the grey levels) is AE -1.21%, VAE -1.03%; by MSE every model reconstructs its test images "
                           "better than its own training images.")
    assert "has not begun to memorise" in text
    gaps.loc[0, "mse_gap_rel"] = 0.02
    text = s03.generalisation_reading(gaps)
    assert "not every model's has the same sign" in text and "memorise" not in text
    with pytest.raises(ConfigError, match="got none"):
        s03.generalisation_reading(gaps.iloc[:0])


def test_cost_reading_names_batched_seed_times_and_an_unconverged_budget():
    from aestudy.series import comparison as s03

    cost = pd.DataFrame([{"model": m, "seed": s, "seconds_per_epoch": t + 1e-6 * s, "epochs_to_converge": 4,
                          "epochs": 4} for m, t in (("AE", 0.9562), ("VAE", 1.1)) for s in range(5)])
    text = s03.cost_reading(cost)
    assert text.startswith("**Reading:** AE, VAE: every seed shows the same seconds per epoch because")
    assert "`aestudy.ensemble.fit_many`" in text
    assert "**No run converged within its budget:** epochs to converge equals the whole budget (4 epochs)" in text
    cost["seconds_per_epoch"] = cost["seconds_per_epoch"] * (1 + 0.1 * cost["seed"])
    cost.loc[0, "epochs_to_converge"] = 2
    text = s03.cost_reading(cost)
    assert "same seconds" not in text and text.startswith("9 of 10 runs had their best validation loss in the last")
    one = s03.cost_reading(cost.assign(epochs=1, epochs_to_converge=1))
    assert "equals the whole budget (1 epoch) for every" in one


def test_precision_reading_names_samplers_above_the_data_and_why():
    from aestudy.series import comparison as s03

    gen = pd.DataFrame([{"model": m, "source": s, "seed": 0, "precision": p, "recall": r} for m, s, p, r in (
        ("AE", "GMM ex post", 0.917, 0.055), ("VAE", "GMM ex post", 0.91, 0.0095), ("VAE", "prior N(0, I)", 0.8, 0.4))])
    text = s03.precision_reading(gen, {"precision": 0.9, "recall": 0.885})
    assert text.startswith("**Reading:** AE + GMM ex post (precision 0.917, recall 0.055), VAE + GMM ex post "
                           "(precision 0.91, recall 0.0095) have a precision above the held-out real images' (0.9).")
    assert "Kynkäänniemi et al. (2019)" in text
    assert s03.precision_reading(gen, {"precision": 0.95}) == (
        "**Reading:** no sampler's precision reaches the held-out real images' (0.95).")
    with pytest.raises(ConfigError, match="needs the data's precision"):
        s03.precision_reading(gen, {})


def test_variance_ood_reading_flags_a_shown_model_on_the_other_side_of_chance():
    lik = pd.DataFrame({"seed": range(5), "auroc_var": [0.95, 0.97, 0.99, 0.997, 0.96], "active_units": [16] * 5})
    text = s04.variance_ood_reading(lik, shown_auroc=0.168, shown_active=6, latent_dim=16, ood_name="digits")
    assert text.startswith("**Reading:** the shown model's posterior-variance AUROC is 0.168 with 6 of 16 units "
                           "active; the 5 replicates the verdict rests on give 0.950 to 0.997 with 16 active.")
    assert "They point opposite ways: the replicates give digits images a higher variance" in text
    same = s04.variance_ood_reading(lik, shown_auroc=0.9, shown_active=14, latent_dim=16, ood_name="digits")
    assert "opposite" not in same
    with pytest.raises(ConfigError, match="needs likelihood_seed_table rows"):
        s04.variance_ood_reading(lik.drop(columns="active_units"), shown_auroc=0.5, shown_active=1, latent_dim=16,
                                 ood_name="digits")


def test_sample_reading_says_whether_the_ex_post_ae_is_sharper_than_the_vae_as_measured():
    fid = {"VAE": 44.2, "GAN": 85.6, "AE + GMM ex post": 13.5, "data": 0.9}
    blurry = s05.sample_reading(_samples(fid, {"VAE": 0.5, "GAN": 0.9, "AE + GMM ex post": 0.36, "data": 1.0}))
    assert ("its samples are not sharper than the VAE's (Laplacian ratio 0.36 against 0.50; 1 = the data's), so its "
            "lead comes from where it samples, not from sharpness. Ghosh et al. (2020)") in blurry
    assert "stays sharp" not in blurry
    sharp = s05.sample_reading(_samples(fid, {"VAE": 0.2, "GAN": 0.9, "AE + GMM ex post": 0.42, "data": 1.0}))
    assert "its samples are also sharper than the VAE's (Laplacian ratio 0.42 against 0.20; 1 = the data's)." in sharp


def test_gan_budget_text_counts_passes_and_steps_and_compares_images_seen():
    text = s05.gan_budget_text(gan_epochs=3, gan_images=20_000, vae_epochs=8, vae_images=20_000)
    assert text == ("**The GAN's budget** (this profile): 3 passes over its 20,000 training images in batches of 64 "
                    "(939 steps, 60,000 images seen), against the VAE's 8 epochs over 20,000 images (160,000 seen): "
                    "*less* training than the VAE's, so any advantage in sharpness is not bought with more training.")
    one = s05.gan_budget_text(gan_epochs=1, gan_images=500, vae_epochs=1, vae_images=500)
    assert "one pass over its 500 training images" in one and "(8 steps, 500 images seen)" in one
    assert "against the VAE's 1 epoch over 500 images" in one
    assert one.endswith("at least as much training as the VAE's, so read a GAN advantage in sharpness with its "
                        "budget in mind.")
    with pytest.raises(ConfigError, match="gan_epochs"):
        s05.gan_budget_text(gan_epochs=0, gan_images=500, vae_epochs=1, vae_images=500)


def _gan_vae(gan: tuple[float, float, float], vae: tuple[float, float, float]) -> pd.DataFrame:
    return pd.DataFrame([{"source": s, "seed": 0, "fid": f, "precision": p, "laplacian_ratio": lap}
                         for s, (f, p, lap) in (("GAN", gan), ("VAE", vae))])


def test_blur_caveat_flags_speckle_only_when_the_sharper_gan_scores_worse():
    speckle = s05.blur_caveat(_gan_vae((65.5, 0.48, 1.2), (51.1, 0.80, 0.3)), fid_name="FID-FMNIST")
    assert speckle.startswith("**Beside the blur verdict:** the GAN's samples are sharper (Laplacian ratio 1.20 "
                              "against 0.30) but have a worse FID-FMNIST (65.5 against 51.1) and a lower precision "
                              "(0.48 against 0.80) than the VAE's: part of that sharpness may be speckle")
    only_precision = s05.blur_caveat(_gan_vae((40.0, 0.5, 1.2), (51.1, 0.8, 0.3)))
    assert "but have a lower precision (0.50 against 0.80) than the VAE's" in only_precision
    assert "worse FID" not in only_precision
    clean = s05.blur_caveat(_gan_vae((40.0, 0.9, 1.2), (51.1, 0.8, 0.3)))
    assert "come with no worse FID and precision than the VAE's" in clean and "speckle" not in clean
    blunt = s05.blur_caveat(_gan_vae((40.0, 0.9, 0.2), (51.1, 0.8, 0.3)))
    assert blunt == ("**Beside the blur verdict:** the GAN's samples are not sharper than the VAE's here (Laplacian "
                     "ratio 0.20 against 0.30).")
    with pytest.raises(ConfigError, match=r"needs the sources \['GAN'\]"):
        s05.blur_caveat(_gan_vae((1, 1, 1), (1, 1, 1)).replace({"GAN": "AE"}))


def test_linear_sweep_reading_names_the_sizes_inside_and_outside_the_margin():
    gaps = {2: 0.014, 4: 0.042, 8: 0.054, 16: 0.070, 32: 0.098, 64: 0.126}
    text = s01.linear_sweep_reading(gaps, tested_d=16)
    assert ("within the ±8% margin at d = 2 (+1.4%), 4 (+4.2%), 8 (+5.4%), 16 (+7.0%); outside it at d = 32 (+9.8%), "
            "64 (+12.6%). That is an unfinished optimisation") in text
    assert "Its larger gap at d = 64 than at d = 2 is that drift." in text
    assert text.endswith("longer-trained replicates at d = 16, and says nothing about the sizes it does not test.")
    inside = s01.linear_sweep_reading({2: 0.01, 16: -0.03})
    assert "at every size, d = 2 (+1.0%), 16 (-3.0%)" in inside and "unfinished" not in inside
    outside = s01.linear_sweep_reading({2: 0.3, 16: 0.1})
    assert "outside the ±8% margin of the equivalence claim at d = 2 (+30.0%), 16 (+10.0%)." in outside
    assert "is that drift" not in outside
    with pytest.raises(ConfigError, match="needs the sweep's gaps"):
        s01.linear_sweep_reading({})


def test_active_units_reading_places_the_reference_vae_against_the_replicates():
    low = s02.active_units_reading(6, 16, [16, 16, 16, 16, 16])
    assert low.startswith("**Reading the active units.** The reference VAE keeps 6 of its 16 units active; section 4's "
                          "5 β = 1 replicates keep 16 (mean 16.0). At the same β, the reference VAE is the more "
                          "collapsed: which units stay active is not fixed by β.")
    assert "*posterior collapse*" in low
    high = s02.active_units_reading(16, 16, [12, 14])
    assert "keep 12 to 14 (mean 13.0). At the same β, the reference VAE is the less collapsed:" in high
    inside = s02.active_units_reading(13, 16, [12, 14])
    assert "The reference VAE falls within the replicates' range:" in inside
    with pytest.raises(ConfigError, match="shown_active"):
        s02.active_units_reading(17, 16, [12])
    with pytest.raises(ConfigError, match="it got none"):
        s02.active_units_reading(3, 16, [])


def test_probe_reading_credits_m1_to_a_transductive_svm_not_a_nonlinear_classifier():
    rows = [{"representation": r, "probe": "linear", "labels": 100, "accuracy": a}
            for r, a in (("VAE", 0.5), ("AE", 0.7), ("PCA", 0.6))]
    text = s04.probe_reading(pd.DataFrame(rows), active=6, latent_dim=16)
    assert ("a transductive SVM on the codes (M1 + TSVM, [glossary](../README.md#glossary)), which lets the unlabelled "
            "images' codes shape the decision boundary too.") in text
    assert "nonlinear classifier" not in text


def test_tuning_reading_says_when_the_spread_measures_under_training():
    from aestudy.series import comparison as s03

    def grid(best_ae: float, best_vae: float) -> pd.DataFrame:
        rows = []
        for model, best in (("AE", best_ae), ("VAE", best_vae)):
            for lr in (3e-4, 1e-3, 3e-3):
                for seed in (0, 1):
                    rows.append({"model": model, "varied": "lr", "lr": lr, "seed": seed,
                                 "test_mse": 0.02 + abs(math.log10(lr) - math.log10(best))})
        rows.append({"model": "VAE", "varied": "beta", "lr": 1e-3, "seed": 0, "test_mse": 9.0})
        return pd.DataFrame(rows)

    text = s03.tuning_reading(grid(3e-3, 3e-3), 2)
    assert text.startswith("**Reading:** after 2 epochs both models do best at the largest learning rate tried")
    assert "lags at small rates" in text
    assert "the AE does best at the largest learning rate tried" in s03.tuning_reading(grid(3e-3, 1e-3), 1)
    assert "1 epoch the AE" in s03.tuning_reading(grid(3e-3, 1e-3), 1)
    assert "sensitivity to tuning, as the claim reads it" in s03.tuning_reading(grid(1e-3, 1e-3), 2)
    with pytest.raises(ConfigError, match="needs learning-rate rows for AE and VAE"):
        s03.tuning_reading(grid(1e-3, 1e-3).query("model == 'AE'"), 2)


def test_probe_reading_says_when_another_probe_ranks_the_vae_first():
    # reader 5: the linear probe ranked the VAE's means last while 5-NN ranked them first at the same labels
    rows = [{"representation": rep, "labels": 100, "probe": probe, "repeat": 0, "accuracy": acc}
            for probe, accs in (("linear probe", {"AE": 0.69, "VAE": 0.62, "PCA": 0.66}),
                                ("5-NN", {"AE": 0.632, "VAE": 0.638, "PCA": 0.624}))
            for rep, acc in accs.items()]
    text = s04.probe_reading(pd.DataFrame(rows), active=6, latent_dim=16)
    assert ("worst on VAE (0.620). The 5-NN probe ranks the VAE's means first at the same labels, so which features "
            "are weakest depends on the probe. The VAE's means being the weakest features for the linear probe goes "
            "against M1") in text


def test_m1_reading_calls_no_method_clearly_worst_within_two_points():
    # reader 5: "the VAE's codes are the worst M1 features" rested on 37.6 % against 37.3 %
    ssl = pd.DataFrame([{"labels": 100, "method": m, "seed": 0, "test_error": e}
                        for m, e in (("VAE codes", 0.376), ("PCA", 0.373), ("pixels", 0.35), ("M2", 0.30))])
    text = s05.m1_reading(ssl)
    assert "worst M1 features" not in text
    assert ("The VAE's codes trail the next method (PCA) by 0.3 percentage points of test error, under the 2 points "
            "this reading asks before calling a method clearly worst; only one labelled subset was drawn at 100 "
            "labels, so how much another subset would move this gap was not measured: no clear ranking at the bottom "
            "from this run.") in text  # r7b: worded by the number of subsets (test at the end)


# --- r6c (issue 19, reader 5 on notebook 04): denoisers off their training noise, the two bounds as anomaly
# --- scores, the complexity correction where it hurts, the grey-level shares' thresholds.

def _psnr(values: dict[tuple[str, float], dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "noise": k, "level": lv, "psnr": v}
                         for (k, lv), row in values.items() for m, v in row.items()])


_RUN_PSNR = {("gaussian", 0.1): {"AE": 16.77, "DAE": 17.00, "DVAE": 16.15, "VAE": 15.78},
             ("gaussian", 0.2): {"AE": 14.64, "DAE": 17.35, "DVAE": 16.62, "VAE": 13.94},
             ("gaussian", 0.3): {"AE": 13.18, "DAE": 17.40, "DVAE": 16.80, "VAE": 12.81},
             ("gaussian", 0.5): {"AE": 11.27, "DAE": 16.07, "DVAE": 15.41, "VAE": 11.29},
             ("salt_pepper", 0.05): {"AE": 17.42, "DAE": 16.85, "DVAE": 15.98, "VAE": 16.39},
             ("salt_pepper", 0.1): {"AE": 15.99, "DAE": 17.09, "DVAE": 16.30, "VAE": 15.14},
             ("salt_pepper", 0.2): {"AE": 13.72, "DAE": 17.28, "DVAE": 16.69, "VAE": 13.21},
             ("salt_pepper", 0.3): {"AE": 12.26, "DAE": 16.81, "DVAE": 16.27, "VAE": 12.08}}


def test_denoising_reading_names_the_training_level_and_the_rise_towards_it():
    from aestudy.noise import NoiseConfig

    text = s04.denoising_reading(_psnr(_RUN_PSNR), NoiseConfig("gaussian", 0.3))
    assert ("**Reading: the DAE and the DVAE score higher at their training noise than on cleaner inputs.** On "
            "Gaussian noise at σ = 0.1 → 0.2 → 0.3 (the last is the training level, `train_noise_level` = 0.3): DAE "
            "17.00 → 17.35 → 17.40 dB; DVAE 16.15 → 16.62 → 16.80 dB. A denoiser trained at one noise level is tuned "
            "to it") in text
    assert ("On salt-and-pepper noise the DAE scores 17.28 dB at p = 0.2 but 16.85 dB at the weakest, 0.05, where the "
            "plain AE (17.42 dB) beats it; the DVAE scores 16.69 dB at p = 0.2 but 15.98 dB at the weakest, 0.05, "
            "where "
            "the plain VAE (16.39 dB) beats it. The same tuning shows there: trained on Gaussian noise at 0.3") in text
    # The other direction: PSNR falls with the noise everywhere, and the plain models never win at the weakest level.
    falling = {key: {m: 20.0 - 10 * key[1] - (0.5 if m in ("AE", "VAE") else 0.0) for m in row}
               for key, row in _RUN_PSNR.items()}
    calm = s04.denoising_reading(_psnr(falling), NoiseConfig("gaussian", 0.3))
    assert calm == ("**Reading:** on Gaussian noise the denoisers score at least as well at the weakest level (σ = "
                    "0.1) as at their training level (0.3): cleaner inputs do not cost them here.")
    # Only the DVAE rises: only it is named; the plain AE beaten nowhere, so no "beats it".
    only_dvae = {key: dict(row) for key, row in falling.items()}
    only_dvae[("gaussian", 0.3)]["DVAE"] = 25.0
    assert ("**Reading: the DVAE scores higher at its training noise than on cleaner inputs.** On Gaussian noise at "
            "σ = 0.1 → 0.2 → 0.3") in s04.denoising_reading(_psnr(only_dvae), NoiseConfig("gaussian", 0.3))
    with pytest.raises(ConfigError, match="no row of the training noise 'salt_pepper'"):
        s04.denoising_reading(_psnr({("gaussian", 0.1): {"DAE": 17.0}}), NoiseConfig("salt_pepper", 0.2))


def _held(seeds: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "score": score, "auroc": v} for s, (elbo, nll) in enumerate(seeds)
                         for score, v in (("VAE −ELBO", elbo), ("VAE IS-NLL", nll), ("AE recon error", 0.6))])


def _shown(elbo: tuple[float, float, float], nll: tuple[float, float, float]) -> pd.DataFrame:
    return pd.DataFrame([elbo, nll], index=["VAE −ELBO", "VAE IS-NLL"],
                        columns=["auroc", "mean_normal", "mean_anomalous"])


def test_bound_reading_explains_a_looser_bound_ranking_better_only_when_it_does():
    run = [(0.737, 0.722), (0.731, 0.723), (0.724, 0.720), (0.722, 0.712), (0.731, 0.718)]
    shown = {"the shown pair": _shown((0.698, 249.726, 298.267), (0.694, 246.425, 293.519))}
    text = s04.bound_reading(shown, _held(run))
    assert text.startswith("**Reading: the looser bound is the better anomaly score here.** −ELBO detects the held-out "
                           "class better than the tighter IS-NLL in every one of the 5 training seeds (mean AUROC "
                           "0.729 "
                           "against 0.719).")
    assert "On the shown pair −ELBO ranks better (0.698 against the IS-NLL's 0.694)." in text
    assert "A tighter bound is a better estimate of log p(x), not a better anomaly score" in text
    assert ("Measured on the shown pair: the mean gap −ELBO − IS-NLL is 4.75 nats on the anomalous images against 3.30 "
            "on the normal ones.") in text
    # The other direction: the tighter bound wins in every seed and on the shown pair; no mechanism, no gap line.
    tight = s04.bound_reading({"the shown pair": _shown((0.69, 250.0, 290.0), (0.70, 246.0, 288.0))},
                              _held([(n, e) for e, n in run]))
    assert tight == ("**Reading:** the tighter IS-NLL detects the held-out class better than −ELBO in every one of "
                     "the 5 "
                     "training seeds (mean AUROC 0.729 against 0.719), as a closer estimate of log p(x) would.\n\n"
                     "On the shown pair the IS-NLL ranks at least as well (0.700 against −ELBO's 0.690).")
    mixed = s04.bound_reading({}, _held([(0.74, 0.72), (0.70, 0.72)]))
    assert mixed == ("**Reading:** −ELBO detects the held-out class better than the IS-NLL in 1 of the 2 training "
                     "seeds "
                     "(mean AUROC 0.720 against 0.720): neither bound is the better score in every seed.")
    # −ELBO ranks better but its gap is not larger on the anomalies: the gap is said not to explain it.
    odd = s04.bound_reading({"digits": _shown((0.91, 248.0, 366.0), (0.90, 245.0, 364.0))}, target="the OOD images",
                            explain=False)
    assert odd == ("**Reading (the two bounds):** on digits −ELBO ranks better (0.910 against the IS-NLL's 0.900).\n\n"
                   "Measured on digits, though, the mean gap −ELBO − IS-NLL is not larger on the anomalous images "
                   "(2.00 "
                   "nats against 3.00 on the normal ones), so it does not explain the difference there.")
    with pytest.raises(ConfigError, match="bound_reading needs the scores"):
        s04.bound_reading({"x": pd.DataFrame({"auroc": [0.5]}, index=["AE recon error"])})


def _ood_means(rows: dict[str, dict[str, tuple[float, float, float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"OOD set": s, "score": score, "auroc": a, "mean_normal": n, "mean_anomalous": o}
                         for s, scores in rows.items() for score, (a, n, o) in scores.items()]
                        ).set_index(["OOD set", "score"])


def test_complexity_reading_says_what_subtracting_the_code_length_did_where_it_hurts():
    ln2 = math.log(2)
    run = _ood_means({
        "digits": {"VAE IS-NLL": (0.906, 245.890, 361.707), "complexity-corrected IS-NLL": (0.673, -315.792, -260.216)},
        "digits, MNIST layout": {"VAE IS-NLL": (0.364, 245.890, 210.420),
                                 "complexity-corrected IS-NLL": (0.610, -315.792, -289.143)}})
    text = s04.complexity_reading(run, normal="fashion-mnist test")
    l_in, l_out = 245.890 / ln2 + 315.792, 361.707 / ln2 + 260.216  # mean L = mean NLL in bits − mean S
    assert (round(l_in), round(l_out)) == (671, 782)
    assert text.startswith("**Reading: the complexity correction lowers the AUROC on digits** (0.906 → 0.673, -0.233). "
                           "S(x) subtracts each image's compressed length L(x) from its NLL in bits. These images cost "
                           "the compressor more bits than the fashion-mnist test images too (mean L 782 against 671 "
                           "bits), as they cost the model more (mean NLL 522 against 355 bits): the subtraction "
                           "credits "
                           "67 % of their extra NLL (112 of 167 bits on average) to generic complexity")
    assert text.endswith("It raises the AUROC on digits, MNIST layout (0.364 → 0.610; these images are "
                         "simpler for the compressor, mean L 593 against 671 bits, the case the correction is built "
                         "for).")
    # The correction takes away more than the extra NLL: said so, not "credits N %".
    over = s04.complexity_reading(_ood_means({"digits": {"VAE IS-NLL": (0.9, 100 * ln2, 150 * ln2),
                                                         "complexity-corrected IS-NLL": (0.4, -100.0, -120.0)}}))
    assert "takes away more than their extra NLL (70 against 50 bits on average)" in over and "credits" not in over
    # The other direction: it helps everywhere, so no "lowers" reading.
    helps = s04.complexity_reading(_ood_means({"digits": {"VAE IS-NLL": (0.4, 100 * ln2, 90 * ln2),
                                                          "complexity-corrected IS-NLL": (0.7, -100.0, -60.0)}}))
    assert helps == ("**Reading:** the complexity correction raises the AUROC on digits (0.400 → 0.700; "
                     "these images are simpler for the compressor, mean L 150 against 200 bits, the case the "
                     "correction "
                     "is built for).")
    # reader 7: a tie at the precision shown is "unchanged", never "raises"
    tie = s04.complexity_reading(_ood_means({"digits": {"VAE IS-NLL": (0.4001, 100 * ln2, 90 * ln2),
                                                        "complexity-corrected IS-NLL": (0.4002, -100.0, -60.0)}}))
    assert tie.startswith("**Reading:** the complexity correction leaves the AUROC unchanged on digits (0.400 → 0.400")
    with pytest.raises(ConfigError, match="missing \\['mean_anomalous', 'mean_normal'\\]"):
        s04.complexity_reading(run[["auroc"]])


def test_grey_level_summary_counts_shares_at_its_named_thresholds():
    import torch

    from aestudy import anomaly

    b, h = anomaly.BACKGROUND_BELOW, anomaly.BRIGHT_ABOVE
    x = torch.tensor([b - 0.01, b, h, h + 0.01, 1.0]).reshape(1, 1, 1, 5)
    row = anomaly.grey_level_summary({"x": x}).loc["x"]
    assert row["background_share"] == pytest.approx(1 / 5) and row["bright_share"] == pytest.approx(2 / 5)


def test_r6c_readings_compare_numbers_as_they_are_shown():
    from aestudy.noise import NoiseConfig

    # The smoke run's DVAE: 9.80 → 9.80 → 9.80 dB as shown; its raw values rise by less than the last shown digit.
    flat = {key: {"DAE": 17.0 - key[1], "DVAE": 9.8 + 0.001 * key[1], "AE": 10.0, "VAE": 9.0}
            for key in _RUN_PSNR if key[0] == "gaussian"}
    text = s04.denoising_reading(_psnr(flat), NoiseConfig("gaussian", 0.3))
    assert text.startswith("**Reading:** on Gaussian noise the denoisers score at least as well at the weakest level")
    # A shown set where the IS-NLL ranks better gets no gap sentence, even when the seeds favour −ELBO.
    mixed = s04.bound_reading({"the shown pair": _shown((0.612, 250.0, 290.0), (0.616, 238.0, 282.0))},
                              _held([(0.608, 0.606), (0.606, 0.604)]))
    assert "On the shown pair the IS-NLL ranks at least as well (0.616 against −ELBO's 0.612)." in mixed
    assert "Measured on" not in mixed and "A tighter bound is a better estimate" in mixed
    # Seeds that differ only past the third decimal count as ties: neither bound is called the better one.
    assert s04.bound_reading({}, _held([(0.7201, 0.7199), (0.7102, 0.71)])) == (
        "**Reading:** −ELBO detects the held-out class better than the IS-NLL in 0 of the 2 training seeds (mean AUROC "
        "0.715 against 0.715): neither bound is the better score in every seed.")


# --- r6b (issue 19, reader 5): notebook 03's timing, Output row, β-VAE reading and citations ---------------------

def _step_record(effect: float, low: float, high: float, verdict: str = "inconclusive") -> dict:
    return {"id": "03.ae-faster-per-step", "verdict": verdict, "holds": verdict == "holds", "effect": effect,
            "ci_low": low, "ci_high": high}


def _timing(ae: list[float], vae: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "round": r + 1, "seconds_per_step": t}
                         for m, times in (("AE", ae), ("VAE", vae)) for r, t in enumerate(times)])


def test_step_ratio_is_the_exponential_of_the_timing_claims_effect():
    import numpy as np

    from aestudy import stats
    from aestudy.series import comparison as s03

    timing = _timing([0.010, 0.010, 0.010], [0.011, 0.012, 0.009])
    ratio = s03.paired_step_ratio(timing)
    assert ratio == pytest.approx(math.exp(np.mean(np.log([1.1, 1.2, 0.9]))))
    # the claim's own effect: mean over rounds of log VAE − log AE (lower is better for the AE)
    v = stats.compare(np.log(timing[timing.model == "AE"]["seconds_per_step"]),
                      np.log(timing[timing.model == "VAE"]["seconds_per_step"]), higher_is_better=False,
                      min_effect=math.log(1.05), paired=True)
    assert math.exp(v.effect) == pytest.approx(ratio)
    assert s03.step_ratio_text(_step_record(0.0186, -0.0116, 0.0488)) == (
        "VAE/AE time per training step ×1.019 [0.988, 1.050] (geometric mean of the paired per-round ratios, "
        "03.ae-faster-per-step: inconclusive)")
    assert s03.step_ratio_text(None, 0.95) == ("VAE/AE time per training step ×0.950 (per-round ratios, geometric "
                                               "mean; no interval recorded)")
    with pytest.raises(ConfigError, match="lacks \\['round'\\]"):
        s03.paired_step_ratio(timing.drop(columns="round"))


def test_advantages_row_quotes_the_timing_claims_effect_not_the_medians():
    import dataclasses

    from aestudy.series import comparison as s03

    facts = s03.Facts(**{f.name: 0.5 + k for k, f in enumerate(dataclasses.fields(s03.Facts))})
    records = {f"03.{name}": {"id": f"03.{name}", "holds": True} for name in s03.TABLE_CLAIMS}
    records["03.ae-faster-per-step"] = _step_record(0.0186, -0.0116, 0.0488)
    row = s03.comparison_table(facts, records).set_index("Aspect").loc["Advantages", "Evidence"]
    assert row.startswith("VAE/AE time per training step ×1.019 [0.988, 1.050] (geometric mean of the paired "
                          "per-round ratios, 03.ae-faster-per-step: inconclusive); per epoch AE")
    records["03.ae-faster-per-step"] = _step_record(-0.1, -0.15, -0.05, "does not hold")
    row = s03.comparison_table(facts, records).set_index("Aspect").loc["Advantages", "Evidence"]
    assert row.startswith("VAE/AE time per training step ×0.905 [0.861, 0.951] (geometric mean of the paired "
                          "per-round ratios, 03.ae-faster-per-step: does not hold)")


def test_step_timing_reading_explains_medians_that_order_the_models_against_the_effect():
    from aestudy.series import comparison as s03

    # reader 5: medians AE 13.85 ms, VAE 13.80 ms (VAE faster) against an effect of +0.0186 (AE faster)
    timing = _timing([0.01385] * 5, [0.0138, 0.0138, 0.0138, 0.016, 0.016])
    text = s03.step_timing_reading(timing, _step_record(0.0186, -0.0116, 0.0488))
    assert text == (
        "**Reading:** the table's step times are medians per model (AE 13.85 ms, VAE 13.80 ms: by medians the VAE "
        "is faster). The claim pairs the rounds instead: its effect is the mean over rounds of log(VAE time / AE "
        "time), as a ratio ×1.019 [0.988, 1.050] (geometric mean of the paired per-round ratios, "
        "03.ae-faster-per-step: inconclusive) — the AE taking about 1.8% less time per step on average over the "
        "rounds. The two order "
        "the models differently: a median per model ignores which rounds belong together, while the paired ratio "
        "compares the two models within each round (same machine load) and averages over all rounds, so a few "
        "rounds in which one model was slower move it and not the medians. With the models this close, the "
        "claim's interval is what to read.")
    agree = s03.step_timing_reading(_timing([0.010] * 3, [0.012] * 3), _step_record(0.18, 0.1, 0.26, "holds"))
    assert "by medians the AE is faster" in agree and "the AE taking about 16.5% less time per step" in agree
    assert agree.endswith("Both put the AE ahead; the claim's interval says whether that is more than noise.")
    vae = s03.step_timing_reading(_timing([0.012] * 3, [0.010] * 3), _step_record(-0.18, -0.26, -0.1))
    assert "the VAE taking about 16.5% less time per step" in vae and "Both put the VAE ahead" in vae
    with pytest.raises(ConfigError, match="needs the effect"):
        s03.step_timing_reading(timing, {"id": "03.ae-faster-per-step", "holds": False})
    with pytest.raises(ConfigError, match="needs rows for \\['VAE'\\]"):
        s03.step_timing_reading(timing[timing.model == "AE"], _step_record(0.0186, -0.0116, 0.0488))


def test_output_row_names_both_models_sample_sharpness_and_why_it_can_differ():
    import dataclasses

    from aestudy.series import comparison as s03

    base = s03.Facts(**{f.name: 0.5 + k for k, f in enumerate(dataclasses.fields(s03.Facts))})
    records = {f"03.{name}": {"id": f"03.{name}", "holds": True} for name in s03.TABLE_CLAIMS}

    def output(**sharp):
        facts = dataclasses.replace(base, **sharp)
        return s03.comparison_table(facts, records).set_index("Aspect").loc["Output", "Evidence"]

    # reader 5's run: AE reconstructions sharper, VAE samples sharper
    text = output(sharp_data=0.1821, sharp_ae_recon=0.0421, sharp_vae_recon=0.0314, sharp_ae_samples=0.00986,
                  sharp_vae_samples=0.0173)
    assert text == ("sharpness (Laplacian variance) of reconstructions, which 03.vae-outputs-blurrier compares: AE "
                    "0.0421 vs VAE 0.0314 (data 0.1821); of prior samples: AE 0.0099 vs VAE 0.0173 — the VAE's "
                    "samples are the sharper ones: the AE decodes N(0, I) draws, codes off the manifold of its "
                    "training codes, into smeared blends; the claim is about reconstructions")
    assert output(sharp_ae_recon=0.04, sharp_vae_recon=0.03, sharp_ae_samples=0.02, sharp_vae_samples=0.01).endswith(
        "— the AE's are the sharper ones for both")
    assert output(sharp_ae_recon=0.03, sharp_vae_recon=0.04, sharp_ae_samples=0.02, sharp_vae_samples=0.01).endswith(
        "— the AE's samples are the sharper ones although its reconstructions are not; the claim is about "
        "reconstructions")


def _beta_tables(fid_b: float, fid_v: float, sharp_b: float, sharp_v: float, mmd_b: float, mmd_v: float,
                 mse_b: float, mse_v: float, spread: float = 0.02):
    P = "prior N(0, I)"
    gen = pd.DataFrame([{"model": m, "source": P, "seed": k, "fid": f * (1 + spread * (k - 2))}
                        for m, f in (("VAE", fid_v), ("β-VAE", fid_b)) for k in range(5)])
    sharp = pd.DataFrame([{"model": m, "source": s, "seed": k, "sharpness": v}
                          for m, s, v in (("VAE", "prior samples", sharp_v), ("β-VAE", "prior samples", sharp_b),
                                          ("VAE", "reconstructions", 0.0314), ("β-VAE", "reconstructions", 0.0246))
                          for k in range(5)])
    lat = pd.DataFrame([{"model": m, "seed": k, "mmd": v, "active_units": a}
                        for m, v, a in (("VAE", mmd_v, 15.6), ("β-VAE", mmd_b, 12.2)) for k in range(5)])
    recon = pd.DataFrame([{"model": m, "seed": k, "mse": v} for m, v in (("VAE", mse_v), ("β-VAE", mse_b))
                          for k in range(5)])
    return gen, sharp, lat, recon


def test_beta_vae_reading_reads_better_samples_at_beta_above_one_both_ways():
    from aestudy.series import comparison as s03

    # reader 5's run (β = 4): FID 110 against 125, sharpness 0.019 against 0.0173
    tables = _beta_tables(110.0, 125.0, 0.019, 0.0173, 0.00225, 0.00714, 0.03539, 0.02814)
    text = s03.beta_vae_reading(*tables, 4.0, fid_name="FID-FMNIST")
    assert text.startswith("**Reading (β-VAE, β = 4):** its prior samples have a lower FID-FMNIST than the VAE's "
                           "(110.0 against 125.0, Welch p = ")
    assert text.endswith(
        " on log FID) and are sharper (sharpness 0.019 against 0.0173); its aggregated posterior lies closer to "
        "N(0, I) (MMD² 0.00225 against 0.00714) and it reconstructs worse (test MSE 0.0354 against 0.0281). With "
        "β > 1 the KL term weighs more than in the VAE's ELBO: the codes are pulled closer to N(0, I) and fewer "
        "units stay active (section 3's table), so a prior draw more often lands where the decoder has seen codes. "
        "The better samples are bought with reconstruction detail: its reconstructions are blurrier too (section "
        "7's table), so the textbook's \"a larger β blurs\" holds for reconstructions, not for samples.")
    worse = s03.beta_vae_reading(*_beta_tables(140.0, 110.0, 0.015, 0.0173, 0.00225, 0.00714, 0.035, 0.028), 4.0)
    assert "have a higher FID than the VAE's (140.0 against 110.0" in worse and "are blurrier" in worse
    assert worse.endswith("With β > 1 the KL term weighs more than in the VAE's ELBO; here the detail it costs the "
                          "decoder outweighs what the closer match to the prior gains the samples, the usual textbook "
                          "outcome.")
    noise = s03.beta_vae_reading(*_beta_tables(124.0, 125.0, 0.019, 0.0173, 0.002, 0.007, 0.035, 0.028,
                                              spread=0.1), 4.0)
    assert "within seed noise: Welch p = " in noise
    assert noise.endswith("The samples' FIDs do not separate the two models in this run.")


def test_beta_vae_reading_reads_beta_below_one_and_rejects_a_bad_beta():
    from aestudy.series import comparison as s03

    better = s03.beta_vae_reading(*_beta_tables(100.0, 125.0, 0.02, 0.017, 0.01, 0.007, 0.025, 0.028), 0.5)
    assert better.startswith("**Reading (β-VAE, β = 0.5):** its prior samples have a lower FID")
    assert "lies further from N(0, I)" in better and "reconstructs better" in better
    assert better.endswith("With β < 1 the KL term weighs less than in the VAE's ELBO: the codes keep more detail, "
                           "which can make samples sharper and FID better even though the aggregated posterior "
                           "matches the prior less.")
    worse = s03.beta_vae_reading(*_beta_tables(150.0, 125.0, 0.02, 0.017, 0.01, 0.007, 0.025, 0.028), 0.5)
    assert worse.endswith("With β < 1 the KL term weighs less than in the VAE's ELBO: the aggregated posterior "
                          "matches the prior less, so more prior draws land where the decoder saw few codes.")
    with pytest.raises(ConfigError, match="KL weight > 0"):
        s03.beta_vae_reading(*_beta_tables(100.0, 125.0, 0.02, 0.017, 0.01, 0.007, 0.025, 0.028), 0.0)
    gen, sharp, lat, recon = _beta_tables(100.0, 125.0, 0.02, 0.017, 0.01, 0.007, 0.025, 0.028)
    with pytest.raises(ConfigError, match="needs rows for \\['β-VAE'\\]"):
        s03.beta_vae_reading(gen[gen.model == "VAE"], sharp, lat, recon, 4.0)


def test_03_readings_cite_rosca_dai_wipf_and_goodfellow_in_full():
    from aestudy.series import comparison as s03

    lat = pd.DataFrame([{"model": "AE", "seed": 0, "mmd": 0.293, "holes": 0.434},
                        {"model": "VAE", "seed": 0, "mmd": 0.007, "holes": 0.430}])
    text = s03.holes_reading(lat)
    assert ("Rosca et al. 2018 (\"Distribution Matching in Variational Inference\", arXiv:1802.06847) show that a "
            "VAE's aggregated posterior does not match its prior") in text
    assert "Dai & Wipf (2019, \"Diagnosing and Enhancing VAE Models\", ICLR)" in text
    assert "necessary for good samples" not in text  # no paper says so
    gaps = pd.DataFrame([{"model": m, "seed": 0, "mse_gap_rel": -0.01, "recon_gap": 1.0} for m in ("AE", "VAE")])
    text = s03.generalisation_reading(gaps)
    assert "(Goodfellow, Bengio & Courville 2016, *Deep Learning*, MIT Press, §5.2)" in text
    assert "§7.8, early stopping" in text


# --- r6a (reader 5, notebooks 01 and 02) -------------------------------------------------------------------------

_PARAMS = {"mlp AE": 1_079_825, "conv AE": 141_073}


def test_conv_vs_mlp_reading_names_the_winner_with_its_numbers_either_way():
    conv = s01.conv_vs_mlp_reading({"mlp AE": 0.0153, "conv AE": 0.0134}, _PARAMS, epochs=8)
    assert conv.startswith("**Reading the two architectures.** The conv AE reconstructs better: its validation MSE is "
                           "12% below the MLP AE's (validation MSE per pixel after 8 epochs, the curves' last points: "
                           "conv AE 0.0134, MLP AE 0.0153; parameters: conv 141,073, MLP 1,079,825), with 7.7× fewer "
                           "parameters.")
    assert "each filter is reused at every position" in conv and "MLP AE reconstructs better" not in conv
    mlp = s01.conv_vs_mlp_reading({"mlp AE": 0.0134, "conv AE": 0.0153}, _PARAMS, epochs=1)
    assert ("The MLP AE reconstructs better: the conv AE's validation MSE is 14% above the MLP AE's (validation MSE "
            "per pixel after 1 epoch,") in mlp
    assert "are a prior about images, not a guarantee: with 7.7× the conv AE's parameters, the MLP's dense" in mlp
    assert "conv AE reconstructs better" not in mlp
    level = s01.conv_vs_mlp_reading({"mlp AE": 0.0150, "conv AE": 0.0152}, _PARAMS, epochs=8)
    assert "The conv AE and the MLP AE end level, within 2% of each other" in level
    assert "let the conv AE match the MLP with 7.7× fewer parameters." in level
    bigger = s01.conv_vs_mlp_reading({"mlp AE": 0.0153, "conv AE": 0.0134}, {"mlp AE": 100, "conv AE": 300}, epochs=8)
    assert "although it has 3.0× the MLP's parameters" in bigger
    for text in (conv, mlp, level):
        assert text.endswith("One model per architecture (one training seed): no claim is tested on this difference.")
    with pytest.raises(ConfigError, match="needs 'conv AE' in both val_mse and parameters"):
        s01.conv_vs_mlp_reading({"mlp AE": 0.01}, _PARAMS, epochs=8)
    with pytest.raises(ConfigError, match=r"val_mse\['conv AE'\]"):
        s01.conv_vs_mlp_reading({"mlp AE": 0.01, "conv AE": float("nan")}, _PARAMS, epochs=8)


def _sources(encoded: float, real: float) -> pd.DataFrame:
    return pd.DataFrame({"fid": [13.6, 225.9, 0.23], "precision": [encoded, 0.5, real], "recall": [0.3, 0.02, 0.89]},
                        index=pd.Index(["encoded real images", "z ~ N(0, I)", "real images"], name="source"))


def test_reconstruction_precision_reading_speaks_only_when_reconstructions_beat_the_real_images():
    text = s01.reconstruction_precision_reading(_sources(0.943, 0.892))
    assert text.startswith("**Precision of reconstructions.** The decoded real codes score a precision of 0.943, "
                           "above the held-out real images' own 0.892. That does not make them better than real "
                           "images: precision counts the generated points that fall inside some real image's k-NN "
                           "ball in feature space.")
    assert "they sit in the dense regions of the data" in text
    assert s01.reconstruction_precision_reading(_sources(0.85, 0.892)) == ""
    assert s01.reconstruction_precision_reading(_sources(0.892, 0.892)) == ""  # equal is not above
    with pytest.raises(ConfigError, match="needs a 'real images' row"):
        s01.reconstruction_precision_reading(_sources(0.9, 0.8).drop(index="real images"))
    with pytest.raises(ConfigError, match="needs a 'precision' column"):
        s01.reconstruction_precision_reading(_sources(0.9, 0.8).drop(columns="precision"))


def _gap_verdict(small: float, large: float, low: float | None, high: float | None, verdict: str,
                 seeds: int = 5, reason: str = "") -> Verdict:
    return Verdict(effect=small - large, ci_low=low, ci_high=high, p_value=0.01, n_seeds=(seeds, seeds),
                   test="paired t (scipy.stats.ttest_rel)", min_effect=0.002, alpha=0.05, verdict=verdict,
                   higher_is_better=True, mean_a=small, mean_b=large, reason=reason)


def test_overfitting_reading_says_a_positive_gap_below_the_threshold_is_still_overfitting():
    # reader 5: "does not hold" with effect +0.00143 [0.00105, 0.00182] read as "small data does not overfit"
    v = _gap_verdict(0.00556, 0.00413, 0.00105, 0.00182, "does not hold")
    text = s01.overfitting_reading(v, small_n=1000, large_n=55000, latent_dim=16, rep_budget=30_000,
                                   curve_gaps=(0.0055, 0.0001), curve_budget=120_000)
    assert text == (
        "**What the verdict measured.** Across the 5 seed replicates (d = 16, at least 30,000 training images seen "
        "each) the mean train–validation gap was 0.0056 per pixel on 1,000 images and 0.0041 on 55,000: the small "
        "set's gap is larger by 0.00143 per pixel, and its interval [0.00105, 0.00182] excludes zero: the AE does "
        "overfit the small set. That is below the minimum effect of 0.002 per pixel fixed before measuring, so "
        "\"does not hold\" here means \"overfits, but by less than the claim's threshold\", not \"small data does not "
        "overfit\". The one-seed curve above (at least 120,000 training images seen per model) shows a gap of 0.0055 "
        "on 1,000 images against 0.0001 at d = 16; the replicates made 30 passes over the small set against the "
        "curve's 120, so less time to memorise it.")
    noisy = s01.overfitting_reading(_gap_verdict(0.0046, 0.0041, -0.0002, 0.0012, "inconclusive"), small_n=1000,
                                    large_n=55000, latent_dim=16, rep_budget=30_000)
    assert "larger by 0.0005 per pixel, though its interval includes zero, so seed noise could explain it." in noisy
    assert "does overfit" not in noisy and "curve" not in noisy


def test_overfitting_reading_other_cases_no_gap_and_above_the_minimum():
    none = s01.overfitting_reading(_gap_verdict(0.0040, 0.0043, -0.0006, 0.0001, "does not hold"), small_n=1000,
                                   large_n=55000, latent_dim=16, rep_budget=30_000)
    assert ("the small set's gap is not the larger one (difference -0.0003). At this budget the replicates show no "
            "extra overfitting from scarce data.") in none
    assert "overfits, but" not in none
    holds = s01.overfitting_reading(_gap_verdict(0.0071, 0.0041, 0.0025, 0.0035, "holds"), small_n=1000,
                                    large_n=55000, latent_dim=16, rep_budget=30_000)
    assert ("larger by 0.003 per pixel, at least the minimum effect of 0.002: the textbook expectation holds at this "
            "budget.") in holds
    smoke = s01.overfitting_reading(_gap_verdict(0.0071, 0.0041, 0.0005, 0.0055, "inconclusive", seeds=2,
                                                 reason="only 2 seeds in an arm"),
                                    small_n=200, large_n=2000, latent_dim=16, rep_budget=2000,
                                    curve_gaps=(0.001, 0.0002), curve_budget=2000)
    assert "at least the minimum effect of 0.002, but the verdict stays inconclusive (only 2 seeds in an arm)." in smoke
    assert smoke.endswith("shows a gap of 0.0010 on 200 images against 0.0002 at d = 16.")  # equal passes: no claim
    with pytest.raises(ConfigError, match="curve_budget=None"):
        s01.overfitting_reading(_gap_verdict(0.0071, 0.0041, 0.0025, 0.0035, "holds"), small_n=1000, large_n=55000,
                                latent_dim=16, rep_budget=30_000, curve_gaps=(0.001, 0.0))


# --- r6d (issue 19, reader-5 findings in notebook 05 and the report) -------------------------------------------------

def _coverage(gan: tuple[float, float, float], vae: tuple[float, float, float],
              data: tuple[float, float, float] = (0.90, 0.885, 1.0),
              **more: tuple[float, float, float]) -> pd.DataFrame:
    sources = {"GAN": gan, "VAE": vae, "data": data, **more}
    return pd.DataFrame([{"source": s, "seed": 0, "precision": p, "recall": r, "laplacian_ratio": lap}
                         for s, (p, r, lap) in sources.items()])


def test_coverage_reading_explains_a_gan_recall_above_the_vaes_only_as_measured():
    # reader 5, A-4.3: GAN recall 0.528 against the VAE's 0.367 with no sentence on why
    text = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 0.15)))
    assert text.startswith("**Reading (diversity):** the GAN's samples cover more of the real images than the VAE's "
                           "prior samples (recall GAN 0.53 against VAE 0.37; held-out real images 0.89). Mode "
                           "collapse, the textbook's reason to expect the opposite, is a way a GAN *can* fail, not a "
                           "rule, and this GAN's recall does not show it.")
    assert ("The VAE's prior samples are decoder means, blurrier than the data (Laplacian ratio 0.15), and they fall "
            "short of real images on both counts: fewer of them land near real images (precision 0.80 against the "
            "data's 0.90) and they reach fewer real images (recall).") in text
    sharp_vae = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 1.05)))
    assert "decoder means" not in sharp_vae and "Mode collapse" in sharp_vae  # no blur, no blurred-average mechanism
    precise_vae = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.95, 0.367, 0.15)))
    assert "decoder means" not in precise_vae
    other_way = s05.coverage_reading(_coverage((0.48, 0.30, 0.93), (0.80, 0.367, 0.15)))
    assert other_way == ("**Reading (diversity):** the GAN's samples cover no more of the real images than the "
                         "VAE's (recall GAN 0.30 against VAE 0.37; held-out real images 0.89): the direction of the "
                         "textbook's mode dropping; the verdict above says whether the gap reaches the minimum "
                         "effect.")
    level = s05.coverage_reading(_coverage((0.0, 0.001, 5.9), (0.43, 0.0, 0.13)))
    assert level == ("**Reading (diversity):** the GAN's and the VAE's samples cover the same share of the real "
                     "images (recall GAN 0.00, VAE 0.00; held-out real images 0.89): no sign here that either drops "
                     "more of the data.")
    with pytest.raises(ConfigError, match=r"needs the sources \['data'\]"):
        s05.coverage_reading(_coverage((0.5, 0.5, 1), (0.5, 0.5, 1)).query("source != 'data'"))


def test_coverage_reading_explains_a_precision_above_the_datas():
    # reader 5, A-4.5: VAE + GMM precision 0.93 above the data's 0.90, unexplained
    text = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 0.15),
                                          **{"VAE + GMM ex post": (0.93, 0.231, 0.25)}))
    assert ("\n\nVAE + GMM ex post's precision (0.93) is above the held-out real images' own (0.90): precision counts "
            "generated images inside the k-nearest-neighbour balls of real images, and samples concentrated on "
            "typical images land in the dense regions where those balls overlap, while real images include atypical "
            "ones that fall outside. Its recall (0.23 against the data's 0.89) is the other side of that "
            "concentration: a precision above the data's does not mean better-than-real samples.") in text
    below = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 0.15),
                                           **{"VAE + GMM ex post": (0.88, 0.231, 0.25)}))
    assert "above the held-out real images' own" not in below
    covering = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 0.15),
                                              **{"AE + GMM ex post": (0.93, 0.95, 0.3)}))
    assert "AE + GMM ex post's precision (0.93) is above" in covering and "other side" not in covering


def _ladder_rows(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"rung": r, "model": m, "output": o, "seed": 0, "laplacian_ratio": lap, "psnr": psnr}
                         for r, m, o, lap, psnr in rows])


def test_gan_sharpness_reading_reconciles_section_1_with_the_ladder():
    # reader 5, A-4.4: GAN sharpness 0.93 in section 1 against 5.14 on the ladder's Fashion-MNIST rung
    ladder = _ladder_rows([("fashion-mnist", "GAN", "samples", 5.14, math.nan),
                           ("fashion-mnist", "VAE", "samples", 0.13, math.nan)])
    section = s05.gan_budget(epochs=3, images=20000, batch_size=64, width=32)
    rung = s05.ladder_gan_budget(2000, 100)
    assert section == {"steps": 939, "batch": 64, "width": 32, "images": 20000}
    assert rung == {"steps": 112, "batch": 128, "width": 16, "images": 2000}  # 7 epochs of 16 batches
    text = s05.gan_sharpness_reading(0.934, ladder, rung="fashion-mnist", section_budget=section, ladder_budget=rung)
    assert text == ("**Two GAN sharpness numbers.** Section 1's GAN has a Laplacian variance 0.93× the real images', "
                    "the ladder's GAN on fashion-mnist 5.14×: one measure (mean Laplacian variance of the samples over "
                    "that of held-out real images of the same data), two different GANs. Section 1's trains 939 steps "
                    f"of batch 64 at width 32 ({s05.GAN_WIDTH_MEANS}) on 20,000 images; the ladder's 112 steps of "
                    "batch 128 at width 16 on "
                    "2,000 images (one budget for every rung). The ladder's GAN has the higher ratio. A ratio above 1 "
                    "(the ladder's) means more high-frequency content than the real images have: noise such as "
                    "speckle, not extra detail.")
    other_way = s05.gan_sharpness_reading(1.3, _ladder_rows([("fashion-mnist", "GAN", "samples", 0.8, math.nan)]),
                                          rung="fashion-mnist", section_budget=section, ladder_budget=rung)
    assert "Section 1's GAN has the higher ratio. A ratio above 1 (section 1's) means" in other_way
    neither = s05.gan_sharpness_reading(0.5, _ladder_rows([("fashion-mnist", "GAN", "samples", 0.8, math.nan)]),
                                        rung="fashion-mnist", section_budget=section, ladder_budget=rung)
    assert neither.endswith("The ladder's GAN has the higher ratio.")
    assert s05.gan_sharpness_reading(0.9, ladder, rung="digits", section_budget=section, ladder_budget=rung) == ""
    with pytest.raises(ConfigError, match="width"):
        s05.gan_sharpness_reading(0.9, ladder, rung="fashion-mnist", section_budget={"steps": 1, "batch": 1,
                                                                                     "images": 1},
                                  ladder_budget=rung)


def test_psnr_reading_sets_each_rung_against_its_mean_image_baseline():
    # reader 5, A-4.2: the digits rung's lowest PSNR (AE 11.7 dB against 14.6 dB on Fashion-MNIST), unexplained
    ladder = _ladder_rows([("digits", "AE", "reconstructions", 0.1, 11.7),
                           ("digits", "VAE", "reconstructions", 0.1, 10.9),
                           ("fashion-mnist", "AE", "reconstructions", 0.3, 14.6),
                           ("fashion-mnist", "VAE", "reconstructions", 0.1, 13.1),
                           ("photo-patches-32", "AE", "reconstructions", 0.7, 14.0)])
    base = {"digits": 11.37, "fashion-mnist": 10.57, "photo-patches-32": 9.82}
    text = s05.psnr_reading(ladder, base)
    assert text == ("**Reading (PSNR):** the AE's reconstructions score their lowest PSNR on digits (11.7 dB; "
                    "fashion-mnist 14.6 dB, photo-patches-32 14.0 dB). A baseline that ignores the input, every pixel "
                    "predicted by the rung's mean training image, scores 11.4 dB on digits; the AE's gain over it per "
                    "rung: digits +0.3 dB, fashion-mnist +4.0 dB, photo-patches-32 +4.2 dB. So the digits rung's low "
                    "PSNR is not that its images are harder to predict from their average (its baseline is the "
                    "highest of the rungs): within the one budget of optimiser steps the AE learned least beyond the "
                    "average image there. The VAE's reconstructions score below the mean-image baseline on digits "
                    "(10.9 against 11.4 dB).")
    # reader 8: the sentence about difficulty follows the baselines' order, whichever way it falls
    lowest = s05.psnr_reading(ladder, {"digits": 11.37, "fashion-mnist": 12.0, "photo-patches-32": 11.5})
    assert ("So the digits rung's low PSNR is partly that its images are the hardest to predict from their average "
            "(its baseline is the lowest of the rungs), and partly that within the one budget of optimiser steps the "
            "AE learned least beyond the average image there.") in lowest
    middle = s05.psnr_reading(ladder, {"digits": 11.37, "fashion-mnist": 12.0, "photo-patches-32": 9.82})
    assert ("So the digits rung's low PSNR is not mainly its baseline, which lies between the other rungs': within "
            "the one budget") in middle
    level = s05.psnr_reading(ladder, {**base, "fashion-mnist": 13.06})
    assert "fashion-mnist (13.1 against" not in level  # 13.1 against 13.06 is not "below" at the precision shown
    hard = s05.psnr_reading(ladder, {"digits": 6.0, "fashion-mnist": 10.57, "photo-patches-32": 9.82})
    assert ("The gains rank the rungs differently from the raw PSNR: the digits rung's low value comes largely from "
            "images that are harder to predict from their average.") in hard
    assert "below the mean-image baseline" not in hard
    with pytest.raises(ConfigError, match="photo-patches-32"):
        s05.psnr_reading(ladder, {"digits": 1.0, "fashion-mnist": 1.0})


def test_mean_image_psnr_is_the_psnr_of_the_average_image():
    import torch

    train = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    assert s05.mean_image_psnr(train, train) == pytest.approx(10 * math.log10(1 / 0.25))  # error 0.5 everywhere
    with pytest.raises(ConfigError, match="targets"):
        s05.mean_image_psnr(train, torch.zeros(1, 1, 3, 3))


def test_blur_caveat_note_travels_into_the_limits_table_recap_and_report():
    # reader 5, A-5.V1: "Output vs GANs — holds" without the caveat the notebook shows
    from aestudy.runner import report

    worse = _gan_vae((65.5, 0.48, 0.93), (56.3, 0.80, 0.15))
    note = s05.blur_caveat_note(worse, fid_name="FID-FMNIST")
    assert note == ("the sharper GAN samples have a worse FID-FMNIST (65.5 against 56.3) and a lower precision (0.48 "
                    "against 0.80) than the VAE's, so part of their sharpness may be speckle; blurrier here means "
                    "fewer high frequencies, not worse samples")
    assert s05.blur_caveat_note(_gan_vae((40.0, 0.9, 0.93), (56.3, 0.8, 0.15))) == ""  # sharper and no worse
    assert s05.blur_caveat_note(_gan_vae((65.5, 0.48, 0.1), (56.3, 0.8, 0.15))) == ""  # not sharper
    records = {claim: {"verdict": "holds", "holds": True, "effect": 0.78, "ci_low": 0.70, "ci_high": 0.86}
               for _, _, claim in s05.LIMIT_ROWS.values()}
    table = s05.limits_table({aspect: "measured" for aspect in s05.LIMIT_ROWS}, records,
                             caveats={"Output vs GANs": note + "."})
    row = table.iloc[0].to_dict()
    assert row["Verdict"] == f"holds (caveat: {note}): 05.vae-blurrier-than-gan (effect +0.78, CI [0.7, 0.86])"
    assert row["Caveat"] == note and table.iloc[1]["Caveat"] == ""
    with pytest.raises(ConfigError, match="caveats"):
        s05.limits_table({aspect: "measured" for aspect in s05.LIMIT_ROWS}, records, caveats={"Output": "x"})
    claims = {"05.vae-blurrier-than-gan": {"id": "05.vae-blurrier-than-gan", "statement": "VAE samples are blurrier.",
                                           "verdict": "holds", "holds": True}}
    sentence = report.row_sentence(row, claims)
    assert sentence.startswith(f"**Output vs GANs** — **holds** (caveat: {note}): “VAE samples are blurrier” holds")
    cell = report.comparison_with_sentences(pd.DataFrame([row]), claims)
    assert "Caveat" not in cell.columns
    assert cell["Verdict"][0].startswith(f"Holds (caveat: {note}): “VAE samples are blurrier” holds")
    # a row without the field (older ledgers, notebook 03's rows beside 05's in one frame) reads as before
    old = {k: v for k, v in row.items() if k != "Caveat"}
    assert report.row_sentence(old, claims).startswith("**Output vs GANs** — **holds**: “VAE samples")
    assert report.row_caveat({"Caveat": float("nan")}) == ""


def test_the_report_says_its_notebook_times_are_the_runners():
    # reader 5 (not counted): report.md's 132.3 s against the watermark's 126.0 s, unexplained
    from pathlib import Path

    from aestudy.runner import report

    metrics = {"run": "r", "status": "complete", "profile": "smoke",
               "notebooks": {"01_a": {"claims": [], "metrics": {}, "wall_s": 132.3, "status": "done"}}}
    blocks = report.report_blocks(metrics, Path("."))
    assert any(b.kind == "h3" and b.content == "01_a (done, 132.3 s runner wall time)" for b in blocks)
    table = next(b for b in blocks if b.kind == "table" and b.caption == report.RUNNER_TIME_NOTE)
    assert list(table.content["notebook"]) == ["01_a"]
    assert report.RUNNER_TIME_NOTE.startswith("Each notebook's time here is the runner's wall time: from starting its "
                                              "kernel to saving the executed notebook.")


# --- r7b (issue 19, reader 6 on notebook 05): m1 reading by subsets drawn, GAN width, the two blur measures,
# --- the GAN's recall beside its precision.

def _ssl(rows: list[tuple[int, str, int, float]]) -> pd.DataFrame:
    # (labels, method, seed, test error) with a Wilson-like ±0.9-point interval, as semi_supervised_table gives
    return pd.DataFrame([{"labels": k, "method": m, "seed": s, "test_error": e, "ci_low": e - 0.009,
                          "ci_high": e + 0.009} for k, m, s, e in rows])


def test_m1_reading_at_one_labelled_subset_uses_the_test_set_intervals_not_a_subset_spread():
    # reader 6, T3: "within what a different labelled subset can change" at 1,000 labels, where one subset was drawn
    far = s05.m1_reading(_ssl([(1000, "VAE codes", 0, 0.266), (1000, "AE codes", 0, 0.247),
                               (1000, "pixels", 0, 0.208)]))
    assert ("The VAE's codes trail the next method (AE codes) by 1.9 percentage points of test error, under the 2 "
            "points this reading asks before calling a method clearly worst; only one labelled subset was drawn at "
            "1,000 labels, so how much another subset would move this gap was not measured. On the test set alone "
            "their 95 % Wilson intervals (VAE codes [25.7%, 27.5%], AE codes [23.8%, 25.6%]) do not overlap: on "
            "these test images the VAE's codes are worse, by less than the reading's threshold and with the labelled "
            "subset's own variation unmeasured.") in far
    assert "within what a different labelled subset" not in far
    near = s05.m1_reading(_ssl([(1000, "VAE codes", 0, 0.266), (1000, "AE codes", 0, 0.255),
                                (1000, "pixels", 0, 0.208)]))
    assert ("their 95 % Wilson intervals (VAE codes [25.7%, 27.5%], AE codes [24.6%, 26.4%]) overlap: the test set "
            "does not separate them either, so no clear ranking at the bottom.") in near


def test_m1_reading_with_several_subsets_quotes_the_per_subset_gaps():
    rows = [(100, "VAE codes", s, e) for s, e in enumerate((0.38, 0.37, 0.36))]
    flips = s05.m1_reading(_ssl(rows + [(100, "PCA", s, e) for s, e in enumerate((0.37, 0.375, 0.35))]
                                + [(100, "M2", s, 0.3) for s in range(3)]))
    assert ("The VAE's codes trail the next method (PCA) by 0.5 percentage points of test error, under the 2 points "
            "this reading asks before calling a method clearly worst; per labelled subset the gap runs from -0.5 to "
            "+1.0 points over the 3 subsets drawn at 100 labels, and in 1 of them the VAE's codes are not the worse "
            "of the two: a different labelled subset can change this order, so no clear ranking at the "
            "bottom.") in flips
    steady = s05.m1_reading(_ssl(rows + [(100, "PCA", s, e - 0.01) for s, e in enumerate((0.38, 0.37, 0.36))]
                                 + [(100, "M2", s, 0.3) for s in range(3)]))
    assert ("per labelled subset the gap runs from +1.0 to +1.0 points over the 3 subsets drawn at 100 labels: the "
            "VAE's codes are the worse of the two in every subset, by less than the reading's threshold.") in steady
    assert "no clear ranking" not in steady and "Wilson" not in steady


def test_gan_sharpness_reading_defines_width_where_it_first_uses_it():
    # reader 6, U1: "width 32 / width 16" undefined
    ladder = _ladder_rows([("fashion-mnist", "GAN", "samples", 5.14, math.nan)])
    text = s05.gan_sharpness_reading(0.934, ladder, rung="fashion-mnist",
                                     section_budget=s05.gan_budget(epochs=3, images=20000, batch_size=64, width=32),
                                     ladder_budget=s05.ladder_gan_budget(2000, 100))
    assert ("at width 32 (width = the number of feature maps of the generator's last hidden layer and of the "
            "discriminator's first layer, doubled at each coarser layer) on 20,000 images") in text
    assert text.count("width =") == 1 and "at width 16 on 2,000 images" in text
    # the definition is what aestudy.gan builds: last generator stage width -> C, first critic stage C -> width
    import torch

    from aestudy.gan import Discriminator, Generator

    gen, disc = Generator((1, 28, 28), 8, 32), Discriminator((1, 28, 28), 32)
    convt = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convt[-1].in_channels == 32 and convt[0].in_channels == 64 and convs[0].out_channels == 32


def test_blur_measures_reading_names_the_rows_where_the_measures_disagree():
    # reader 6, S1: photo-patch VAE reconstructions, Laplacian ratio 0.2 against high-frequency share 2.99
    ladder = pd.DataFrame([{"rung": r, "model": m, "output": o, "seed": 0, "laplacian_ratio": lap, "hf_ratio": hf}
                           for r, m, o, lap, hf in (("digits", "VAE", "samples", 0.179, 0.759),
                                                    ("photo-patches-32", "VAE", "reconstructions", 0.2, 2.99),
                                                    ("fashion-mnist", "GAN", "samples", 5.14, 4.49))])
    text = s05.blur_measures_reading(ladder)
    assert text.startswith("**Reading (two blur measures):** the two blur measures point opposite ways on 1 row, one "
                           "below the data's 1 and the other above: photo-patches-32 VAE reconstructions (Laplacian "
                           "variance 0.20× the data's, high-frequency share 2.99×). They measure different things:")
    assert text.endswith("05.vae-blurrier-than-gan rests on the Laplacian ratio (section 1), the ladder's claims on "
                         "the relative FID-AE, and the ladder's sharpness panel plots the Laplacian ratio.")
    assert "digits" not in text and "fashion-mnist" not in text  # both measures on one side of 1 there
    flipped = ladder.assign(laplacian_ratio=[0.179, 1.4, 5.14], hf_ratio=[0.759, 0.6, 4.49])
    assert "on 1 row" in s05.blur_measures_reading(flipped) and "(Laplacian variance 1.40× the data's, high-frequency "\
        "share 0.60×)" in s05.blur_measures_reading(flipped)
    assert s05.blur_measures_reading(ladder.iloc[[0, 2]]) == ""
    assert s05.blur_measures_reading(ladder.assign(hf_ratio=[0.759, 1.001, 4.49])) == ""  # 1.00 at two decimals
    with pytest.raises(ConfigError, match="hf_ratio"):
        s05.blur_measures_reading(ladder.drop(columns="hf_ratio"))


def test_coverage_reading_sets_a_gan_recall_lead_beside_a_lower_precision():
    # reader 6, S2: recall GAN 0.53 > VAE 0.37 read as coverage although the GAN's precision is 0.48
    text = s05.coverage_reading(_coverage((0.48, 0.528, 0.93), (0.80, 0.367, 0.15)))
    assert ("Read that recall beside the GAN's precision, 0.48 against the VAE's 0.80 and the held-out real images' "
            "0.90: fewer of its samples land near real images, and a broad, noisy cloud of samples reaches many real "
            "images' neighbourhoods without resembling them (notebook 01's samples drawn uniformly from the code box "
            "show this), so part of this recall may come from samples off the data's manifold rather than from "
            "covering more of the data.") in text
    only_data = s05.coverage_reading(_coverage((0.85, 0.528, 0.93), (0.80, 0.367, 0.15)))
    assert "Read that recall beside the GAN's precision, 0.85 against the held-out real images' 0.90:" in only_data
    precise = s05.coverage_reading(_coverage((0.92, 0.528, 0.93), (0.80, 0.367, 0.15)))
    assert "off the data's manifold" not in precise
    other_way = s05.coverage_reading(_coverage((0.48, 0.30, 0.93), (0.80, 0.367, 0.15)))
    assert "off the data's manifold" not in other_way  # no recall lead to qualify


# --- lead (reader 6, T4): 03's per-epoch column against the interleaved step timing -------------------------------

def test_cost_reading_says_which_timing_compares_the_models_when_they_disagree():
    from aestudy.series import comparison as s03

    cost = pd.DataFrame([{"model": m, "seed": s, "seconds_per_epoch": t, "epochs_to_converge": 2, "epochs": 4}
                         for m, t in (("AE", 1.044), ("VAE", 1.01)) for s in range(5)])
    ae_quicker = _timing([0.0130, 0.0131, 0.0129], [0.0134, 0.0135, 0.0133])  # paired: the AE quicker every round
    text = s03.cost_reading(cost, ae_quicker)
    ratio = s03.paired_step_ratio(ae_quicker)
    assert ratio > 1 and ("**The two timings disagree:** by seconds per epoch the VAE is the quicker (1.01 s against "
                          f"1.04 s), by the interleaved step timing the AE (VAE/AE time per step ×{ratio:.3f}, paired "
                          "by round as 03.ae-faster-per-step pairs them).") in text
    assert text.endswith("so only it compares them.")
    vae_quicker = _timing([0.0134, 0.0135, 0.0133], [0.0130, 0.0131, 0.0129])  # agrees with the epochs: nothing to say
    assert "disagree" not in s03.cost_reading(cost, vae_quicker)
    assert s03.cost_reading(cost, vae_quicker) == s03.cost_reading(cost)
    # reader 11: medians that order the models against the paired ratio must not decide it. Medians: VAE quicker
    # (13.28 vs 13.29 ms); paired: the AE quicker (two rounds where the VAE was much slower).
    split = _timing([0.01329, 0.01329, 0.01329, 0.01329, 0.01329], [0.01328, 0.01328, 0.01328, 0.016, 0.016])
    assert s03.paired_step_ratio(split) > 1
    assert "by the interleaved step timing the AE" in s03.cost_reading(cost, split)


# --- r7a (issue 19, reader 6: T2, S3) ---

def test_bound_reading_says_the_is_nll_removes_part_of_the_kl_term_not_most():
    # reader 6 T2: "removes most of that KL term" against 02's measurement (importance weighting closed 41 %)
    run = [(0.737, 0.722), (0.731, 0.723), (0.724, 0.720), (0.722, 0.712), (0.731, 0.718)]
    shown = {"the shown pair": _shown((0.698, 249.726, 298.267), (0.694, 246.425, 293.519))}
    text = s04.bound_reading(shown, _held(run))
    assert "removes most" not in text
    assert ("−ELBO(x) = −log p(x) + KL(q(z|x) ‖ p(z|x)), where the KL term is the gap between the encoder's posterior "
            "and the true one. The IS-NLL removes part of that term; how much of it, notebook 02 measures on a model "
            "whose log p(x) is exact (what it removed here is the gap −ELBO − IS-NLL measured below). The encoder "
            "was fitted") in text
    # Without mean scores there is no gap line, so the mechanism does not point to one.
    bare = s04.bound_reading({}, _held(run))
    assert ("notebook 02 measures on a model whose log p(x) is exact. The encoder was fitted") in bare
    assert "measured below" not in bare


def _shown_auc(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"auroc": list(values.values())}, index=list(values))


def _held_reps(per_score: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "score": score, "auroc": v} for score, vs in per_score.items()
                         for s, v in enumerate(vs)])


def test_holdout_shown_reading_states_where_the_shown_pair_falls_and_what_differs():
    # reader 6 S3: the shown pair below every replicate on every score, with only "can differ" beside it
    reps = _held_reps({"AE recon error": [0.593, 0.621, 0.60, 0.61, 0.605], "VAE −ELBO": [0.722, 0.737, 0.73, 0.731,
                                                                                            0.724]})
    below = s04.holdout_shown_reading(_shown_auc({"AE recon error": 0.550, "VAE −ELBO": 0.698}), reps,
                                      shown_budget=(18000, 5, 2000), replicate_budget=(4500, 3, 1000))
    assert below == ("**Reading (the shown pair against its replicates):** on every score the shown pair's AUROC is "
                     "lower than every one of the 5 replicates' (AE recon error 0.550 against 0.593–0.621; VAE −ELBO "
                     "0.698 against 0.722–0.737). They differ in training images: 18,000 for the shown pair against "
                     "4,500 for each replicate; epochs: 5 for the shown pair against 3 for each replicate; test images "
                     "scored: 2,000 for the shown pair against 1,000 for each replicate. The shown pair is a "
                     "single trained pair, so this run does not test which of these differences moves its AUROC.")
    above = s04.holdout_shown_reading(_shown_auc({"AE recon error": 0.70, "VAE −ELBO": 0.80}), reps,
                                      shown_budget=(4500, 3, 1000), replicate_budget=(4500, 3, 1000))
    assert above == ("**Reading (the shown pair against its replicates):** on every score the shown pair's AUROC is "
                     "higher than every one of the 5 replicates' (AE recon error 0.700 against 0.593–0.621; VAE −ELBO "
                     "0.800 against 0.722–0.737). The shown pair has the replicates' budget (training "
                     "images, epochs, test images scored).")
    # Mixed, and a tie with the range's end counts as inside it (compared as printed); one budget differs.
    mixed = s04.holdout_shown_reading(_shown_auc({"AE recon error": 0.5931, "VAE −ELBO": 0.75, "other": 0.1}), reps,
                                      shown_budget=(4500, 5, 1000), replicate_budget=(4500, 3, 1000))
    assert mixed == ("**Reading (the shown pair against its replicates):** the shown pair's AUROC against the range "
                     "over its 5 replicates: AE recon error 0.593 against 0.593–0.621 (inside their range); VAE −ELBO "
                     "0.750 against 0.722–0.737 (above all of them). They differ in epochs: 5 for the shown pair "
                     "against 3 for each replicate. The shown pair is a single trained pair, so this run does "
                     "not test which of these differences moves its AUROC.")
    with pytest.raises(ConfigError, match="holdout_shown_reading needs a score"):
        s04.holdout_shown_reading(_shown_auc({"x": 0.5}), reps, shown_budget=(1, 1, 1), replicate_budget=(1, 1, 1))


# --- r9a (reader 8: N4 and C1 in notebook 03, S4 in notebook 02) ---------------------------------------------------


def test_generalisation_reading_states_both_gaps_and_which_one_the_claim_uses():
    from aestudy.series import comparison as s03

    # reader 8 N4: a negative MSE gap beside a positive NLL gap, and only the MSE sign explained
    def gaps(mse, nll):
        return pd.DataFrame([{"model": m, "seed": 0, "mse_gap_rel": g, "recon_gap": r}
                             for m, g, r in zip(("AE", "VAE"), mse, nll, strict=True)])

    memorise = ("A negative gap is no better-than-perfect generalisation: a model that has not begun to memorise its "
                "training images (the replicates train a few epochs on a subset) has a gap near 0, and its sign is "
                "then set by which image set is easier to reconstruct by that measure. Overfitting shows as a large "
                "positive gap between test and training error (Goodfellow, Bengio & Courville 2016, *Deep Learning*, "
                "MIT Press, §5.2), one that grows as training goes on once a model starts to memorise (the learning "
                "curves of its §7.8, early stopping).")
    head = ("**Reading:** the relative MSE gap (test − train; the MSE scores reconstructions against the grey levels) "
            "is ")
    nll = ("The reconstruction-NLL gap (test − train, nats/image; the Bernoulli negative log-likelihood of the fixed "
           "binarization of the same images) is ")
    assert s03.generalisation_reading(gaps((-0.0121, -0.0103), (1.60, 1.53))) == (
        head + "AE -1.21%, VAE -1.03%; by MSE every model reconstructs its test images better than its own training "
        "images. " + nll + "AE +1.60, VAE +1.53; by this NLL every model reconstructs its training images better than "
        "its test images. The two gaps rank the image sets differently: by MSE the test images are the easier to "
        "reconstruct, by the NLL the training images; this run does not test why. 03.vae-generalises-better uses "
        "the NLL gap. " + memorise)
    assert s03.generalisation_reading(gaps((0.03, 0.01), (-0.5, -0.2))) == (
        head + "AE +3.00%, VAE +1.00%; by MSE every model reconstructs its training images better than its test "
        "images. " + nll + "AE -0.50, VAE -0.20; by this NLL every model reconstructs its test images better than its "
        "own training images. The two gaps rank the image sets differently: by MSE the training images are the "
        "easier to reconstruct, by the NLL the test images; this run does not test why. 03.vae-generalises-better "
        "uses the NLL gap. " + memorise)
    agree = s03.generalisation_reading(gaps((0.03, 0.01), (1.6, 0.7)))  # same sign: nothing to reconcile
    assert agree == (head + "AE +3.00%, VAE +1.00%; by MSE every model reconstructs its training images better than "
                     "its test images. " + nll + "AE +1.60, VAE +0.70; by this NLL every model reconstructs its "
                     "training images better than its test images.")
    mixed = s03.generalisation_reading(gaps((0.03, -0.01), (1.6, 0.7)))
    assert "not every model's has the same sign" in mixed and "rank the image sets" not in mixed


def test_advantages_row_gives_the_per_epoch_means_and_says_when_they_go_the_other_way():
    # reader 8 C1: the textbook's "faster per epoch" beside per-step evidence only, per-epoch means the other way
    import dataclasses

    from aestudy.series import comparison as s03

    base = s03.Facts(**{f.name: 0.5 + k for k, f in enumerate(dataclasses.fields(s03.Facts))})
    records = {f"03.{name}": {"id": f"03.{name}", "holds": True} for name in s03.TABLE_CLAIMS}
    records["03.ae-faster-per-step"] = _step_record(0.0344, -0.01, 0.08)  # ×1.035: the AE the quicker per step

    def row(**epochs):
        facts = dataclasses.replace(base, **epochs)
        return s03.comparison_table(facts, records).set_index("Aspect").loc["Advantages", "Evidence"]

    step = ("VAE/AE time per training step ×1.035 [0.990, 1.083] (geometric mean of the paired per-round ratios, "
            "03.ae-faster-per-step: inconclusive)")
    assert row(epoch_ae=1.044, epoch_vae=1.01).startswith(
        step + "; per epoch AE 1.04 s vs VAE 1.01 s, each model's own batched run — the VAE the quicker per epoch, "
        "against the step timing's order; only the interleaved step timing compares them; SSIM AE")
    assert row(epoch_ae=0.98, epoch_vae=1.01).startswith(
        step + "; per epoch AE 0.98 s vs VAE 1.01 s, each model's own batched run; SSIM AE")
    records["03.ae-faster-per-step"] = _step_record(-0.1, -0.15, -0.05, "does not hold")  # the VAE quicker per step
    assert "— the AE the quicker per epoch, against the step timing's order; only the interleaved step timing " \
        "compares them; SSIM" in row(epoch_ae=0.98, epoch_vae=1.01)
    assert "step timing's order" not in row(epoch_ae=1.044, epoch_vae=1.01)


def test_iwae_share_sentence_says_the_shown_seed_is_the_same_model_on_fewer_images():
    # reader 8 S4: the shown linear VAE closes 41 %; the replicate table, "trained like the one above", shows 46-49 %
    iw = pd.DataFrame({"k": [1, 10, 100, 1000], "gap": [32.1, 27.0, 22.5, 18.9]})
    reps = pd.DataFrame({"seed": [0, 1, 2], "gap_k1": [34.8, 39.3, 36.0], "gap_kmax": [18.1, 20.9, 19.1],
                         "closed": [0.48, 0.468, 0.469]})
    head = ("At $k = 1,000$ importance samples the IWAE bound closes **41%** of the ELBO's gap to the exact "
            "$\\log p_\\theta(x)$ (32.1 → 18.9 nats per image).")
    assert s02.iwae_share_sentence(iw, reps, shown_seed=0, repeats=3) == (
        head + " The replicate table's seed 0 is this same model, scored there on fewer of the same test images with "
        "one Monte-Carlo draw per image and k (here the mean of 3 draws): it closes 48% there (34.8 → 18.1 nats), so "
        "the two shares differ by those images and draws only; the 3 replicates close 47% to 48%.")
    assert "(here one draw)" in s02.iwae_share_sentence(iw, reps, shown_seed=1, repeats=1)
    assert s02.iwae_share_sentence(iw, reps, shown_seed=7, repeats=3) == head  # no replicate of the shown seed
    with pytest.raises(ConfigError, match="iwae_share_sentence needs the rows"):
        s02.iwae_share_sentence(iw.iloc[:0], reps, shown_seed=0, repeats=3)


# --- r9b (issue 19, reader 8 N3): the scaling row's slopes name their rungs; the GAN's beside the VAE's on its rungs


def _slopes(vae: list[float], ae: list[float], vae_gan: list[float], gan: list[float]) -> dict[str, pd.Series]:
    return {"VAE samples": pd.Series(vae), "AE reconstructions": pd.Series(ae),
            "VAE samples (GAN's rungs)": pd.Series(vae_gan), "GAN samples": pd.Series(gan)}


def test_slopes_evidence_compares_the_gan_with_the_vae_over_the_gans_rungs():
    rungs, gan_rungs = ["digits", "fashion-mnist", "photo patches"], ["fashion-mnist", "photo patches"]
    # reader 8 N3: the VAE's 3-rung slope against the GAN's 2-rung one read as a VAE degrading faster; on the same
    # rungs the VAE's is the more negative.
    text = s05.slopes_evidence(_slopes([-1.3, -1.5], [-1.6, -1.66], [-3.2, -3.28], [-3.1, -3.26]), rungs, gan_rungs)
    assert text == ("slope per rung over digits → fashion-mnist → photo patches: VAE samples -1.40 vs AE "
                    "reconstructions -1.63; over the GAN's rungs fashion-mnist → photo patches: VAE samples -3.24 vs "
                    "GAN samples -3.18")
    # The other way round (the VAE's slope above the GAN's on its rungs): the same wording, the values as measured.
    other = s05.slopes_evidence(_slopes([0.5], [-0.2], [0.25], [-0.75]), rungs, gan_rungs)
    assert other == ("slope per rung over digits → fashion-mnist → photo patches: VAE samples +0.50 vs AE "
                     "reconstructions -0.20; over the GAN's rungs fashion-mnist → photo patches: VAE samples +0.25 vs "
                     "GAN samples -0.75")
    # A GAN on every rung: one rung set, named once.
    same = s05.slopes_evidence(_slopes([-1.0], [-2.0], [-1.0], [-3.0]), gan_rungs, gan_rungs)
    assert same == ("slope per rung over fashion-mnist → photo patches: VAE samples -1.00 vs AE reconstructions "
                    "-2.00 vs GAN samples -3.00")
    with pytest.raises(ConfigError, match="slopes_evidence needs the slopes GAN samples"):
        s05.slopes_evidence({k: v for k, v in _slopes([0], [0], [0], [0]).items() if k != "GAN samples"}, rungs,
                            gan_rungs)
