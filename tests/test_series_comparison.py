"""Notebook 03's comparison module: protocol, seed aggregation, ex-post code densities, the per-section tables
and the AE-vs-VAE table, on tiny models and 8×8 digits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import spy_on_mmd
from torch import nn

from aestudy import generation, latent, metrics, stats
from aestudy.classifier import DomainClassifier
from aestudy.data import load_dataset
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig
from aestudy.objectives import gaussian_kl
from aestudy.series import comparison as s03
from aestudy.train import TrainConfig, TrainResult, train_key

SHAPE = (1, 8, 8)


def _protocol(**kw):
    return s03.Protocol(latent_dim=3, input_shape=SHAPE, hidden=(16,), **kw)


def _results(names=("AE", "VAE"), seeds=(0, 1)):
    """Untrained tiny models wrapped as TrainResults, keyed by (name, seed)."""
    specs = _protocol().specs(TrainConfig(epochs=1))
    out = {}
    for seed in seeds:
        for name in names:
            torch.manual_seed(seed)
            history = pd.DataFrame({"epoch": [1, 2, 3], "val_loss": [10.0, 9.0, 8.95], "seconds": [1.0, 3.0, 2.0]})
            out[(name, seed)] = TrainResult(build_model(specs[name][0]).eval(), history, "k", False, 0.0)
    return out


def _images(n=40, seed=0):
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


# --- protocol ---------------------------------------------------------------------------------------------

def test_specs_share_everything_but_kind_noise_and_beta():
    base = TrainConfig(epochs=7, batch_size=64, lr=2e-3, seed=3, beta=0.5)
    specs = _protocol(beta_vae=4.0, dae_noise=0.2).specs(base)
    assert list(specs) == list(s03.MODEL_NAMES)
    models = {name: m for name, (m, _) in specs.items()}
    assert {m.kind for m in models.values()} == {"ae", "vae"}
    assert len({(m.arch, m.latent_dim, m.likelihood, m.hidden, m.input_shape) for m in models.values()}) == 1
    trains = {name: t for name, (_, t) in specs.items()}
    assert trains["AE"] == trains["VAE"] == TrainConfig(epochs=7, batch_size=64, lr=2e-3, seed=3, beta=1.0)
    assert trains["DAE"].noise == NoiseConfig("gaussian", 0.2) and trains["DAE"].beta == 1.0
    assert trains["β-VAE"].beta == 4.0 and trains["β-VAE"].noise is None


def test_the_vae_spec_is_notebook_02s_model_so_its_cache_is_reused():
    data = load_dataset("digits", val_size=20, limit=60, upscale=False, binarize="dynamic")
    train = TrainConfig(epochs=10, batch_size=128, lr=1e-3, seed=0, device="cpu", beta=1.0)
    nb02 = ModelConfig(kind="vae", arch="mlp", latent_dim=16, likelihood="bernoulli", input_shape=SHAPE)
    model_cfg, train_cfg = s03.Protocol(input_shape=SHAPE).specs(train)["VAE"]
    assert train_key(model_cfg, train_cfg, data) == train_key(nb02, train, data)


def test_seeds_follow_the_base_seed():
    assert _protocol(n_seeds=3).seeds(5) == (5, 6, 7)


@pytest.mark.parametrize(("kw", "message"), [
    ({"beta_vae": 0}, "beta_vae=0 is invalid; it must be a finite number > 0 (the β-VAE's KL weight)."),
    ({"dae_noise": -1.0}, "dae_noise=-1.0 is invalid; it must be a finite number > 0 (the σ of the DAE's "
                          "Gaussian input noise)."),
    ({"n_seeds": 0}, "n_seeds=0 is invalid; it must be an integer >= 1."),
])
def test_protocol_rejects_bad_values_naming_the_parameter(kw, message):
    with pytest.raises(ConfigError) as err:
        _protocol(**kw)
    assert str(err.value) == message


def test_protocol_validates_the_backbone_through_model_config():
    with pytest.raises(ConfigError, match="arch"):
        s03.Protocol(arch="transformer")


# --- aggregation over seeds -------------------------------------------------------------------------------

def test_mean_sd_matches_numpy_per_group():
    df = pd.DataFrame({"model": ["AE", "AE", "AE", "VAE", "VAE"], "mse": [1.0, 2.0, 4.0, 3.0, 5.0],
                       "fid": [10.0, 11.0, 15.0, 7.0, 7.0]})
    out = stats.mean_sd(df, "model", ["mse", "fid"])
    assert list(out.columns) == ["mse_mean", "mse_sd", "fid_mean", "fid_sd", "n"]
    assert list(out.index) == ["AE", "VAE"]  # first-seen order, not sorted
    assert out.loc["AE", "mse_mean"] == pytest.approx(7 / 3)
    assert out.loc["AE", "mse_sd"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert out.loc["VAE", "fid_sd"] == 0.0
    assert out["n"].tolist() == [3, 2]


def test_mean_sd_of_one_seed_has_no_sd_and_text_says_so():
    df = pd.DataFrame({"model": ["AE", "VAE", "VAE"], "mse": [0.5, 1.0, 2.0]})
    assert math.isnan(stats.mean_sd(df, "model", ["mse"]).loc["AE", "mse_sd"])
    text = stats.mean_sd_text(df, "model", ["mse"], digits=3)
    assert text.loc["AE", "mse"] == "0.5"
    assert text.loc["VAE", "mse"] == "1.5 ± 0.71"


def test_mean_sd_groups_by_several_keys_and_names_missing_columns():
    df = pd.DataFrame({"model": ["AE"] * 4, "source": ["a", "b", "a", "b"], "fid": [1.0, 2.0, 3.0, 6.0]})
    out = stats.mean_sd(df, ["model", "source"], ["fid"])
    assert out.loc[("AE", "b"), "fid_mean"] == 4.0
    with pytest.raises(ConfigError, match=r"columns \['psnr'\] are not in the table"):
        stats.mean_sd(df, "model", ["psnr"])


def test_per_seed_filters_and_consistently_lower_needs_no_overlap():
    df = pd.DataFrame({"model": ["AE", "AE", "VAE", "VAE", "AE"], "source": ["a", "a", "a", "a", "b"],
                       "fid": [1.0, 3.0, 2.5, 4.0, 9.0]})
    np.testing.assert_array_equal(stats.per_seed(df, "AE", "fid", source="a"), [1.0, 3.0])
    assert not stats.consistently_lower([1.0, 3.0], [2.5, 4.0])  # seed 1 of AE is above seed 0 of VAE
    assert stats.consistently_lower([1.0, 2.0], [2.5, 4.0])
    assert not stats.consistently_lower([1.0], [1.0])
    assert stats.lower_in_every_seed(df, "fid", "AE", "VAE", source="a") is False
    assert stats.lower_in_every_seed(df[df["fid"] != 3.0], "fid", "AE", "VAE", source="a") is True
    with pytest.raises(ConfigError, match="no rows for model='DAE'"):
        stats.per_seed(df, "DAE", "fid")
    with pytest.raises(ConfigError, match="non-empty finite values"):
        stats.consistently_lower([], [1.0])


# --- ex-post code densities -------------------------------------------------------------------------------

def _two_clusters(n=4000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn((n // 2, 3), generator=gen) * 0.3 + torch.tensor([4.0, 0.0, -1.0])
    b = torch.randn((n // 2, 3), generator=gen) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.2]])
    return torch.cat([a, b])


@pytest.mark.parametrize("kind", ["gaussian", "gmm"])
def test_density_samples_match_the_codes_mean_and_covariance(kind):
    codes = _two_clusters()
    density = generation.fit_code_density(codes, kind=kind, n_components=2, seed=0)
    z = density.sample(40000, generator=torch.Generator().manual_seed(1))
    assert z.shape == (40000, 3) and z.dtype == torch.float32
    torch.testing.assert_close(z.mean(0), codes.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.cov(codes.T), atol=0.08, rtol=0.03)


def test_gaussian_density_is_the_sample_mean_and_covariance():
    codes = _two_clusters()
    density = generation.fit_code_density(codes, kind="gaussian")
    torch.testing.assert_close(density.means[0].float(), codes.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(density.covariances[0].float(), torch.cov(codes.T), atol=1e-5, rtol=1e-5)
    assert density.weights.tolist() == [1.0]


def test_gmm_samples_are_shuffled_and_temperature_zero_gives_component_means():
    density = generation.fit_code_density(_two_clusters(), kind="gmm", n_components=2, seed=0)
    z = density.sample(200, generator=torch.Generator().manual_seed(0))
    near_first = (z - density.means[0].float()).norm(dim=1) < (z - density.means[1].float()).norm(dim=1)
    assert 0 < near_first[:100].sum() < 100  # components interleaved, unlike GaussianMixture.sample's blocks
    z0 = density.sample(50, generator=torch.Generator().manual_seed(0), temperature=0.0)
    dist = torch.cdist(z0.double(), density.means).min(dim=1).values
    assert dist.max() < 1e-5


def test_density_rejects_unknown_kinds_and_too_many_components():
    with pytest.raises(ConfigError, match="kind='kde' is invalid; valid values: 'gaussian', 'gmm'."):
        generation.fit_code_density(torch.randn(10, 2), kind="kde")
    with pytest.raises(ConfigError, match=r"n_components=11 is invalid; it must be an integer in \[1, 10\]"):
        generation.fit_code_density(torch.randn(10, 2), n_components=11)


def test_gap_closed_is_the_share_of_the_fid_gap():
    assert generation.gap_closed(100.0, 60.0, 20.0) == pytest.approx(0.5)
    assert generation.gap_closed(100.0, 10.0, 20.0) == pytest.approx(1.125)  # beats the target
    with pytest.raises(ConfigError, match="same FID"):
        generation.gap_closed(5.0, 1.0, 5.0)


# --- reconstruction, latent space, generalisation ---------------------------------------------------------

class _Constant(nn.Module):
    """A stand-in model whose reconstruction is a fixed grey level (or the input, when level is None)."""

    def __init__(self, level=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.level = level

    def reconstruct(self, x, y=None):
        return x.clone() if self.level is None else torch.full_like(x, self.level)


def test_reconstruction_scores_against_separate_targets():
    targets = _images(30)
    perfect = metrics.reconstruction_metrics(_Constant(), targets, targets=targets, batch_size=7)
    assert perfect == {"mse": pytest.approx(0.0), "psnr": pytest.approx(100.0), "ssim": pytest.approx(1.0)}
    grey = metrics.reconstruction_metrics(_Constant(0.5), torch.zeros_like(targets), targets=targets, batch_size=7)
    assert grey["mse"] == pytest.approx(float((targets - 0.5).pow(2).mean()), rel=1e-5)
    with pytest.raises(ConfigError, match="one shape"):
        metrics.reconstruction_metrics(_Constant(), targets, targets=targets[:5])


def test_reconstruction_table_has_one_row_per_model_and_seed():
    table = s03.reconstruction_table(_results(), _images(), _images())
    assert table[["model", "seed"]].values.tolist() == [["AE", 0], ["VAE", 0], ["AE", 1], ["VAE", 1]]
    assert ((table["ssim"] <= 1) & (table["mse"] >= 0)).all()


def test_own_loss_of_the_vae_adds_beta_times_the_analytic_kl():
    model_cfg, train_cfg = _protocol().specs(TrainConfig(epochs=1))["VAE"]
    torch.manual_seed(0)
    vae = build_model(model_cfg).eval()
    x = (_images(25) > 0.5).float()
    zero = s03.own_loss(vae, x, TrainConfig(beta=0.0), seed=3, batch_size=10)
    two = s03.own_loss(vae, x, TrainConfig(beta=2.0), seed=3, batch_size=10)
    with torch.no_grad():
        post = vae.encode(x)
    assert two - zero == pytest.approx(2 * float(gaussian_kl(post.mu, post.logvar).mean()), rel=1e-4)


def test_own_loss_of_the_ae_is_its_reconstruction_nll():
    model_cfg, _ = _protocol().specs(TrainConfig(epochs=1))["AE"]
    torch.manual_seed(0)
    ae = build_model(model_cfg).eval()
    x = (_images(25) > 0.5).float()
    with torch.no_grad():
        expected = -ae.likelihood.log_prob(x, ae.decode(ae.encode(x).mu)).mean()
    assert s03.own_loss(ae, x, TrainConfig(), batch_size=10) == pytest.approx(float(expected), rel=1e-5)


def test_generalisation_gaps_are_test_minus_train():
    results = _results(seeds=(0,))
    specs = _protocol().specs(TrainConfig(epochs=1))
    x_train, x_test = (_images(20, 1) > 0.5).float(), (_images(20, 2) > 0.5).float()
    table = s03.generalisation_table(results, specs, train_inputs=x_train, train_targets=_images(20, 1),
                                     test_inputs=x_test, test_targets=_images(20, 2))
    for what in ("mse", "loss", "recon"):
        np.testing.assert_allclose(table[f"{what}_gap"], table[f"test_{what}"] - table[f"train_{what}"])
        np.testing.assert_allclose(table[f"{what}_gap_rel"], table[f"{what}_gap"] / table[f"train_{what}"].abs())


def test_the_like_for_like_gap_leaves_the_vaes_kl_out():
    """Issue 14 (3): the VAE's own loss holds its KL term; the reconstruction NLL is the AE's loss and the VAE's
    loss minus its KL, so its gap compares fit with fit."""
    results = _results(seeds=(0,))
    specs = _protocol().specs(TrainConfig(epochs=1))
    x_train, x_test = (_images(20, 1) > 0.5).float(), (_images(20, 2) > 0.5).float()
    table = s03.generalisation_table(results, specs, train_inputs=x_train, train_targets=_images(20, 1),
                                     test_inputs=x_test, test_targets=_images(20, 2)).set_index("model")
    np.testing.assert_allclose(table.loc["AE", ["train_recon", "test_recon"]],
                               table.loc["AE", ["train_loss", "test_loss"]])
    vae = results[("VAE", 0)].model
    for part, x in (("train", x_train), ("test", x_test)):
        with torch.no_grad():
            post = vae.encode(x)
        kl = float(gaussian_kl(post.mu, post.logvar).mean())
        assert table.loc["VAE", f"{part}_loss"] - table.loc["VAE", f"{part}_recon"] == pytest.approx(kl, rel=1e-4)


def test_aggregate_posterior_sample_is_the_code_for_an_ae_and_q_for_a_vae():
    results = _results(seeds=(0,))
    x = _images(20)
    ae, vae = results[("AE", 0)].model, results[("VAE", 0)].model
    torch.testing.assert_close(latent.aggregate_posterior_sample(ae, x, batch_size=7), ae.encode(x).mu.detach())
    same = x[:1].expand(4000, *SHAPE)
    z = latent.aggregate_posterior_sample(vae, same, generator=torch.Generator().manual_seed(0))
    post = vae.encode(x[:1])
    torch.testing.assert_close(z.mean(0), post.mu[0].detach(), atol=0.06, rtol=0)
    torch.testing.assert_close(z.var(0), post.logvar[0].exp().detach(), atol=0.0, rtol=0.1)


def test_random_pairs_are_distinct_in_range_and_seeded():
    a, b = latent.random_pairs(5, 200, seed=3)
    assert (a != b).all() and a.min() >= 0 and b.max() < 5
    a2, b2 = latent.random_pairs(5, 200, seed=3)
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_project_codes_keeps_the_standard_normal_standard():
    z = torch.randn((20000, 6), generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 2, 1, 1, 1, 1])
    p = latent.project_codes(z)
    assert p.shape == (20000, 2)
    assert (np.linalg.norm(p, axis=1) <= z.double().norm(dim=1).numpy() + 1e-9).all()  # orthonormal projection
    np.testing.assert_allclose(np.abs(p.std(axis=0)), [3.0, 2.0], rtol=0.05)  # the two widest axes
    np.testing.assert_array_equal(latent.project_codes(z[:, :2]), z[:, :2].double().numpy())


def test_latent_and_generation_tables_cover_every_model_seed_and_source():
    results = _results()
    classifier = DomainClassifier(SHAPE, 10).eval()
    x = _images(30)
    latent = s03.latent_table(results, x, classifier, n=20, n_pairs=4, steps=4)
    assert len(latent) == 4 and latent["holes"].between(0, 1).all() and (latent["roughness"] >= 0).all()
    assert (latent["path_realism"] > 0).all()
    gen = generation.generation_table(results, classifier, x, n=20, fit_inputs=x, n_components=2)
    per_model = gen.groupby("model")["source"].apply(lambda s: sorted(set(s))).to_dict()
    assert per_model == {"AE": ["GMM ex post", "Gaussian ex post", "prior N(0, I)"], "VAE": ["prior N(0, I)"]}
    assert len(gen) == 2 * (3 + 1)
    assert gen[["precision", "recall", "confidence"]].stack().between(0, 1).all()


def test_latent_table_measures_every_models_codes_with_one_kernel(monkeypatch):
    """Issue 14 (1): the MMD² of AE codes and of the VAE's q(z) are one statistic, the prior's kernel."""
    seen = spy_on_mmd(latent, monkeypatch)
    results = _results()
    for res in results.values():  # an AE code of a very different scale must not change the kernel
        if not res.model.is_variational:
            with torch.no_grad():
                res.model.encoder.head.weight.mul_(100.0)
    table = s03.latent_table(results, _images(30), DomainClassifier(SHAPE, 10).eval(), n=20, n_pairs=4, steps=4)
    assert len(seen) == len(results) == len(table)
    assert all(bw == metrics.prior_bandwidths(3) for bw in seen)
    assert (table["off_manifold"] > 0).all() and table["active_units"].between(0, 3).all()


def test_generation_table_gives_the_vae_the_same_ex_post_control():
    """Issue 14 (8): the ex-post GMM is fitted to the VAE's codes too (EX_POST), so AE + GMM has its control."""
    results = _results(seeds=(0,))
    x = _images(30)
    gen = generation.generation_table(results, DomainClassifier(SHAPE, 10).eval(), x, n=20, fit_inputs=x,
                                      n_components=2, ex_post=s03.EX_POST)
    sources = gen.groupby("model")["source"].apply(lambda s: sorted(set(s))).to_dict()
    assert sources["VAE"] == sources["AE"] == ["GMM ex post", "Gaussian ex post", "prior N(0, I)"]


def test_sharpness_table_has_data_and_two_sources_per_model():
    table = s03.sharpness_table(_results(), _images(), _images(), n=10)
    assert table.iloc[0][["model", "source"]].tolist() == ["data", "test images"]
    assert len(table) == 1 + 2 * 4 and (table["sharpness"] >= 0).all()


class _ConfidenceByBrightness(nn.Module):
    """A stand-in classifier whose top-class probability is an image's mean brightness."""

    def predict_proba(self, images):
        p = images.flatten(1).mean(dim=1, keepdim=True)
        return torch.cat([p, torch.zeros_like(p)], dim=1)


def test_path_realism_is_interior_over_end_confidence():
    results = _results(seeds=(0,))
    model = results[("AE", 0)].model
    x_a, x_b = _images(3, 1), _images(3, 2)
    paths = latent.latent_path_images(model, x_a, x_b, steps=4).flatten(2).mean(dim=2).double()  # (3, 5) brightness
    expected = paths[:, 1:-1].mean() / paths[:, [0, -1]].mean()
    assert latent.path_realism(model, _ConfidenceByBrightness(), x_a, x_b, steps=4) == pytest.approx(float(expected))


def test_interpolation_rows_end_at_the_reconstructions():
    results = _results(seeds=(0,))
    models = {name: results[(name, 0)].model for name in ("AE", "VAE")}
    x = _images(6)
    rows = latent.interpolation_rows(models, x, x, 1, 4, steps=5)
    assert list(rows) == ["A, B (data)", "AE", "VAE"]
    torch.testing.assert_close(rows["A, B (data)"], x[[1, 4]])
    for name, model in models.items():
        assert rows[name].shape == (6, *SHAPE)
        torch.testing.assert_close(rows[name][[0, -1]], model.reconstruct(x[[1, 4]]), atol=1e-5, rtol=0)


def test_sample_grids_decode_density_means_at_temperature_zero():
    results = _results(seeds=(0,))
    ae = results[("AE", 0)].model
    density = generation.fit_code_density(torch.randn(100, 3), kind="gaussian")
    grids = generation.sample_grids({"VAE": results[("VAE", 0)].model}, {"AE + Gaussian": (ae, density)}, 5, 0.0)
    assert {k: tuple(v.shape) for k, v in grids.items()} == {"VAE": (5, *SHAPE), "AE + Gaussian": (5, *SHAPE)}
    expected = ae.likelihood.mean(ae.decode(density.means.float())).detach()
    torch.testing.assert_close(grids["AE + Gaussian"], expected.expand(5, *SHAPE))


# --- training cost ----------------------------------------------------------------------------------------

def test_epochs_to_converge_is_the_first_epoch_within_tolerance_of_the_best():
    assert s03.epochs_to_converge([10.0, 5.0, 4.02, 4.0, 4.1], tolerance=0.01) == 3
    assert s03.epochs_to_converge([10.0, 5.0, 4.02, 4.0, 4.1], tolerance=0.001) == 4
    assert s03.epochs_to_converge([3.0]) == 1
    with pytest.raises(ConfigError, match="non-empty finite loss curve"):
        s03.epochs_to_converge([1.0, math.nan])


def test_cost_table_reads_the_history():
    table = s03.cost_table(_results(seeds=(0,)))
    assert table["seconds_per_epoch"].tolist() == [2.0, 2.0]  # medians of 1, 3, 2
    assert table["epochs_to_converge"].tolist() == [2, 2]  # 9.0 is within 1 % of the best, 8.95
    assert table.set_index("model")["parameters"].pipe(lambda p: p["VAE"] - p["AE"]) > 0


def test_step_timing_interleaves_every_model_in_every_round():
    specs = _protocol().specs(TrainConfig(epochs=1))
    timing = s03.step_timing(specs, (_images(8) > 0.5).float(), rounds=3, steps=1)
    assert len(timing) == 3 * 4
    assert timing.groupby("round")["model"].apply(sorted).tolist() == [sorted(s03.MODEL_NAMES)] * 3
    assert list(timing[timing["round"] == 2]["model"]) == ["DAE", "β-VAE", "AE", "VAE"]  # rotated by 2
    assert (timing["seconds_per_step"] > 0).all()


def test_sign_test_counts_paired_wins_with_a_binomial_p_value():
    rounds = [1, 2, 3, 4, 5, 6, 7, 8]
    ae = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]
    timing = pd.DataFrame({"model": ["AE"] * 8 + ["VAE"] * 8, "round": rounds * 2,
                           "seconds_per_step": ae + [1.5] * 8})
    result = stats.sign_test(timing, "AE", "VAE")
    assert result["wins"] == 7 and result["rounds"] == 8
    assert result["p_value"] == pytest.approx(9 / 256)  # P(X >= 7), X ~ Binomial(8, 1/2)
    assert stats.sign_test(timing, "VAE", "AE")["wins"] == 1


# --- tuning sensitivity -----------------------------------------------------------------------------------

def test_tuning_summary_spread_and_failures_from_a_known_grid():
    grid = pd.DataFrame({
        "model": ["AE", "AE", "VAE", "VAE", "VAE", "VAE"],
        "varied": ["lr", "lr", "lr", "lr", "beta", "beta"],
        "test_mse": [0.010, 0.012, 0.020, math.nan, 0.05, 0.06],
        "collapsed": [False, False, False, True, True, False],
        "diverged": [False, False, False, True, False, False],
    })
    summary = s03.tuning_summary(grid)
    assert summary.loc["AE", "relative_spread"] == pytest.approx(0.2)
    assert summary.loc["VAE", "relative_spread"] == 0.0  # the β runs do not count; the NaN run is a failure
    assert summary.loc["VAE", ["runs", "lr_runs", "collapsed", "diverged"]].tolist() == [4, 2, 2, 1]


def test_tuning_grid_trains_every_point_and_flags_collapse(tmp_path, monkeypatch):
    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path))
    data = load_dataset("digits", val_size=20, limit=100, upscale=False, binarize="dynamic", progress=False)
    train = TrainConfig(epochs=1, batch_size=50, device="cpu", progress=False)
    x = data.test.images[:50]
    grid = s03.tuning_grid(_protocol(), train, data, lrs=(1e-3, 3e-3), betas=(1.0, 500.0), seeds=(0,),
                           test_inputs=x, test_targets=x)
    assert grid[["model", "varied"]].values.tolist() == [["AE", "lr"]] * 2 + [["VAE", "lr"]] * 2 + [["VAE", "beta"]]
    assert grid["collapsed"].tolist() == (grid["active_units"] <= s03.COLLAPSED_MAX_UNITS).tolist()
    assert grid["test_mse"].between(0, 1).all() and not grid["diverged"].any()


def test_train_all_returns_cpu_models_for_every_name_and_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path))
    data = load_dataset("digits", val_size=20, limit=60, upscale=False, binarize="dynamic", progress=False)
    specs = _protocol().specs(TrainConfig(epochs=1, batch_size=30, device="cpu", progress=False))
    results = s03.train_all(specs, data, (0, 1))
    assert sorted(results) == sorted((n, s) for n in s03.MODEL_NAMES for s in (0, 1))
    assert all(next(r.model.parameters()).device.type == "cpu" and not r.model.training for r in results.values())
    again = s03.train_all(specs, data, (0,))
    assert all(r.from_cache for r in again.values())


# --- the table --------------------------------------------------------------------------------------------

def _facts():
    return s03.Facts(**{f.name: 0.5 + k for k, f in enumerate(dataclasses.fields(s03.Facts))})


def _records(**verdicts):
    """Claim records as `study.claim` returns them: every table claim holds unless given otherwise."""
    held = dict.fromkeys(s03.TABLE_CLAIMS, True) | {k.replace("_", "-"): v for k, v in verdicts.items()}
    return {f"03.{name}": {"id": f"03.{name}", "holds": v is True, **({"verdict": v} if isinstance(v, str) else {})}
            for name, v in held.items()}


def test_comparison_table_has_every_required_row_in_order():
    table = s03.comparison_table(_facts(), _records())
    assert list(table.columns) == ["Aspect", "AE", "VAE", "Evidence", "Verdict"]
    assert table["Aspect"].tolist() == ["Purpose", "Architecture", "Latent space", "Loss function", "Output",
                                        "Use cases", "Advantages", "Limitations"]
    verdict = table.set_index("Aspect")["Verdict"]
    assert verdict["Architecture"].startswith("by construction")
    # all claims hold, so only the row the ex-post density contradicts is not fully supported
    assert verdict.drop(["Architecture", "Limitations", "Use cases"]).str.startswith("holds: 03.").all()
    # notebook 04's claims bear on "Use cases" too: this notebook's verdict says it is provisional (issue 19)
    assert verdict["Use cases"] == ("holds (provisional: notebook 03's claims only; the run report's row also weighs "
                                    "notebook 04's 5 claims on it): 03.vae-samples-beat-ae-prior holds")
    assert verdict["Limitations"] == ("mixed: 03.ex-post-density-closes-gap holds (against the row); "
                                      "03.vae-outputs-blurrier holds; 03.vae-needs-careful-tuning holds")
    assert table[["AE", "VAE", "Evidence"]].map(len).gt(10).all().all()


def test_comparison_table_names_the_runs_fid_space_and_shows_missing_scores_as_na():
    # On unlabelled data (issue 17) the FID is FID-AE and the classifier-only shares are NaN: the evidence says so.
    facts = dataclasses.replace(_facts(), holes_ae=float("nan"), holes_vae=float("nan"), real_ae=float("nan"),
                                real_vae=float("nan"))
    evidence = s03.comparison_table(facts, _records(), fid_name="FID-AE").set_index("Aspect")["Evidence"]
    assert "prior-sample FID-AE VAE" in evidence["Purpose"] and "FID-FMNIST" not in " ".join(evidence)
    assert "prior holes AE n/a (no classifier) vs VAE n/a (no classifier)" in evidence["Latent space"]
    assert "nan" not in evidence["Latent space"].lower().replace("n/a", "")
    default = s03.comparison_table(_facts(), _records()).set_index("Aspect")["Evidence"]
    assert "prior-sample FID-FMNIST VAE" in default["Purpose"]


def test_comparison_table_verdicts_follow_the_claims():
    records = _records(vae_smoother_interpolations=False, vae_generalises_better=False)
    table = s03.comparison_table(_facts(), records).set_index("Aspect")
    assert table.loc["Loss function", "Verdict"] == "does not hold: 03.vae-generalises-better does not hold"
    assert table.loc["Latent space", "Verdict"] == ("mixed: 03.vae-latent-matches-prior holds; "
                                                    "03.vae-smoother-interpolations does not hold; "
                                                    "03.vae-interpolations-realistic holds")
    contradicted = s03.comparison_table(_facts(), _records(vae_smoother_interpolations=False,
                                                           vae_generalises_better=False,
                                                           ex_post_density_closes_gap=False))
    assert contradicted.set_index("Aspect").loc["Limitations", "Verdict"].startswith("holds: ")


def test_comparison_table_reads_three_way_verdicts_and_skips_inconclusive_ones():
    table = s03.comparison_table(_facts(), _records(vae_generalises_better="inconclusive",
                                                    vae_smoother_interpolations="inconclusive"))
    verdict = table.set_index("Aspect")["Verdict"]
    assert verdict["Loss function"] == "inconclusive: 03.vae-generalises-better inconclusive"
    assert verdict["Latent space"].startswith("holds: 03.vae-latent-matches-prior holds; "
                                              "03.vae-smoother-interpolations inconclusive")


def test_comparison_table_names_a_missing_claim_record():
    records = _records()
    del records["03.ae-faster-per-step"]
    with pytest.raises(ConfigError, match=r"needs the record of claim 03\.ae-faster-per-step"):
        s03.comparison_table(_facts(), records)


def test_markdown_table_escapes_pipes():
    md = s03.markdown_table(pd.DataFrame({"a": ["x|y", "z"], "b": [1, 2]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |", "| z | 2 |"]


def test_collect_facts_averages_over_seeds_and_feeds_the_table():
    two = [0, 1]

    def rows(**cols):
        return pd.DataFrame(cols)

    recon = rows(model=["AE", "AE", "VAE", "VAE", "DAE", "β-VAE"], seed=two * 2 + [0, 0],
                 mse=[0.01, 0.03, 0.04, 0.04, 0.02, 0.05], ssim=[0.8, 0.9, 0.7, 0.7, 0.8, 0.6])
    gen = rows(model=["AE", "AE", "AE", "VAE", "VAE", "β-VAE"],
               source=[generation.PRIOR, "Gaussian ex post", "GMM ex post", generation.PRIOR, "GMM ex post",
                       generation.PRIOR],
               fid=[100.0, 70.0, 40.0, 20.0, 15.0, 30.0])
    per_model = rows(model=["AE", "VAE"], mmd=[0.5, 0.01], holes=[0.4, 0.1], roughness=[0.02, 0.01],
                     off_manifold=[1.8, 1.3], path_realism=[0.9, 0.95], recon_gap=[0.7, 0.2],
                     parameters=[10, 12], loss_gap_rel=[0.02, 0.01], mse_gap_rel=[0.03, 0.02],
                     seconds_per_epoch=[1.0, 1.2])
    timing = rows(model=["AE", "VAE", "AE", "VAE"], round=[1, 1, 2, 2], seconds_per_step=[1.0, 1.5, 1.0, 1.1])
    tuning = pd.DataFrame({"runs": [6, 10], "relative_spread": [0.1, 0.3], "collapsed": [0, 2]}, index=["AE", "VAE"])
    sharp = rows(model=["data", "AE", "VAE", "VAE", "AE"],
                 source=["test images", "reconstructions", "reconstructions", "prior samples", "prior samples"],
                 sharpness=[0.09, 0.03, 0.02, 0.01, 0.005])
    facts = s03.collect_facts(recon=recon, generation=gen, fid_data=2.0, latent=per_model, gaps=per_model,
                              cost=per_model, timing=timing, tuning=tuning, sharp=sharp)
    assert isinstance(facts, s03.Facts)
    assert facts.mse_ae == pytest.approx(0.02) and facts.ssim_vae == pytest.approx(0.7)
    assert facts.gap_closed_gmm == pytest.approx(0.75)  # (100 − 40) / (100 − 20)
    assert facts.fid_vae_gmm == 15.0 and facts.off_vae == 1.3 and facts.recon_gap_ae == 0.7
    assert facts.step_ratio == pytest.approx(math.sqrt(1.5 * 1.1))  # paired by round, as the timing claim
    assert facts.collapsed_vae == 2 and facts.runs_vae == 10
    table = s03.comparison_table(facts, _records())
    assert "closing 75%" in table.set_index("Aspect").loc["Limitations", "Evidence"]
    assert facts.sharp_ae_samples == 0.005
    with pytest.raises(ConfigError, match="no rows for model='VAE'"):
        s03.collect_facts(recon=recon[recon["model"] != "VAE"], generation=gen, fid_data=2.0, latent=per_model,
                          gaps=per_model, cost=per_model, timing=timing, tuning=tuning, sharp=sharp)


# --- per-seed summaries for the claims --------------------------------------------------------------------

def test_tuning_spread_per_seed_is_worst_over_best_minus_one_per_model_and_seed():
    grid = pd.DataFrame({"model": ["AE"] * 4 + ["VAE"] * 3, "varied": ["lr"] * 6 + ["beta"],
                         "seed": [0, 0, 1, 1, 0, 0, 0], "test_mse": [0.01, 0.012, 0.02, 0.02, 0.01, math.nan, 0.5],
                         "diverged": [False] * 5 + [True, False]})
    out = s03.tuning_spread_per_seed(grid).set_index(["model", "seed"])
    assert out.loc[("AE", 0), "relative_spread"] == pytest.approx(0.2)
    assert out.loc[("AE", 1), "relative_spread"] == 0.0
    # the VAE's β run is not an lr run; its diverged run is counted, not spread
    assert out.loc[("VAE", 0), ["relative_spread", "diverged"]].tolist() == [0.0, 1]


def test_seed_intervals_are_student_t_intervals():
    from scipy import stats as sps
    df = pd.DataFrame({"m": ["a"] * 5 + ["b"], "v": [1.0, 2.0, 3.0, 4.0, 6.0, 7.0]})
    out = s03.seed_intervals(df, ["m"], "v").set_index("m")
    low, high = sps.t.interval(0.95, 4, loc=3.2, scale=sps.sem([1.0, 2.0, 3.0, 4.0, 6.0]))
    assert out.loc["a", ["mean", "low", "high", "n"]].tolist() == pytest.approx([3.2, low, high, 5])
    assert math.isnan(out.loc["b", "low"]) and out.loc["b", "mean"] == 7.0


def test_holm_summary_names_the_claims_that_survive():
    def verdict(p, verdict):
        return stats.Verdict(effect=1.0, ci_low=0.1, ci_high=2.0, p_value=p, n_seeds=(5, 5), test="t", min_effect=0.5,
                             alpha=0.05, verdict=verdict, higher_is_better=True, mean_a=1.0, mean_b=0.0)

    line = s03.holm_summary({"x": verdict(0.001, "holds"), "y": verdict(0.04, "holds"),
                             "z": verdict(0.5, "inconclusive")})
    # Holm: 0.001 < 0.05/3 survives; 0.04 > 0.05/2 does not
    assert line == ("**Holm–Bonferroni** over the 3 comparative claims of this notebook (family-wise α = 0.05): "
                    "2 hold, 1 survives the correction (x); not surviving: y.")
