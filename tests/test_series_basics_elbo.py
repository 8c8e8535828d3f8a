"""The notebook experiments (aestudy.experiments) against closed forms and reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import low_rank_images

from aestudy import generation
from aestudy.models import ModelConfig, build_model
from aestudy.ppca import PPCA, linear_vae_bounds, linear_vae_from_ppca, ppca_of_linear_vae
from aestudy.series import basics as s01
from aestudy.series import elbo as s02

SHAPE = (1, 4, 4)  # as synthetic.low_rank_images


def test_pca_mse_matches_projection_error_and_falls_with_rank() -> None:
    train, test = low_rank_images(200), low_rank_images(50, seed=1)
    x, t = train.flatten(1).numpy().astype(np.float64), test.flatten(1).numpy().astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    proj = (t - mean) @ vt[:3].T @ vt[:3] + mean
    expected = float(np.mean((np.clip(proj, 0, 1) - t) ** 2))
    assert s01.pca_mse(train, test, 3) == pytest.approx(expected, rel=1e-4)
    errors = [s01.pca_mse(train, test, k) for k in (1, 2, 4, 8)]
    assert all(a >= b - 1e-9 for a, b in zip(errors, errors[1:], strict=False))


def test_history_in_mse_inverts_the_fixed_sigma_gaussian_nll() -> None:
    d, mse, sigma = 784, 0.02, 1.0
    nll = 0.5 * d * mse / sigma**2 + 0.5 * d * math.log(2 * math.pi * sigma**2)
    hist = pd.DataFrame({"epoch": [1], "train_loss": [nll], "val_loss": [nll], "train_kl": [0.0]})
    out = s01.history_in_mse(hist, num_pixels=d, sigma=sigma)
    assert out["train_loss"].iloc[0] == pytest.approx(mse) and out["val_loss"].iloc[0] == pytest.approx(mse)
    assert out["train_kl"].iloc[0] == 0.0 and hist["train_loss"].iloc[0] == nll  # input left untouched


def test_kl_convergence_has_unbiased_standardised_errors() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn((4, 3), generator=g), torch.randn((4, 3), generator=g)
    df = s02.kl_convergence(mu, logvar, (2, 100, 5000), seed=0)
    assert set(df["n_samples"]) == {2, 100, 5000} and len(df) == 12
    # With 2 draws the standard error is itself a 1-degree-of-freedom guess; judge z-scores from 100 draws on.
    assert (df["sem"] > 0).all() and df.loc[df["n_samples"] >= 100, "z_score"].abs().max() < 5
    big = df[df["n_samples"] == 5000]
    assert np.allclose(big["mc_kl"], big["analytic_kl"], atol=5 * big["sem"].max())


def test_linear_vae_bounds_gap_is_posterior_kl_and_zero_at_exact_posterior() -> None:
    data = low_rank_images(300)
    ppca = PPCA.fit(data, 2)
    exact = linear_vae_from_ppca(ppca, input_shape=SHAPE)
    recovered = ppca_of_linear_vae(exact)
    torch.testing.assert_close(recovered.W, ppca.W)
    assert recovered.sigma2 == pytest.approx(ppca.sigma2)
    at_exact = linear_vae_bounds(exact, data[:20])
    assert at_exact["gap"].abs().max() < 1e-6
    perturbed = linear_vae_from_ppca(ppca, input_shape=SHAPE)
    with torch.no_grad():
        perturbed.encoder.head.bias[2:] += 1.0  # wrong posterior variances
    df = linear_vae_bounds(perturbed, data[:20])
    assert (df["gap"] > 0).all()
    np.testing.assert_allclose(df["gap"], df["kl_to_posterior"], rtol=1e-6, atol=1e-8)


def test_iwae_curve_approaches_the_exact_log_likelihood() -> None:
    data = low_rank_images(300)
    ppca = PPCA.fit(data, 2)
    vae = linear_vae_from_ppca(ppca, input_shape=SHAPE)
    with torch.no_grad():
        vae.encoder.head.bias[2:] += 1.5
    log_px = float(linear_vae_bounds(vae, data[:30])["log_px"].mean())
    curve = s02.iwae_curve(vae, data[:30], (1, 10, 1000), repeats=3, seed=0)
    gaps = log_px - curve["iwae"].to_numpy()
    assert (gaps > -0.05).all() and gaps[2] < gaps[0] and gaps[2] < 0.25 * gaps[0]


def test_reparameterised_gradient_has_lower_variance_than_score_function() -> None:
    torch.manual_seed(0)
    vae = build_model(ModelConfig(kind="vae", arch="mlp", input_shape=SHAPE, latent_dim=2, hidden=(8,)))
    x = (torch.rand(1, *SHAPE) > 0.5).float()
    df = s02.gradient_variance(vae, x, (1, 10), repeats=100, seed=0)
    var = df.pivot_table(index="n_samples", columns="estimator", values="variance")
    assert (var["score function"] > var["reparameterised"]).all()
    assert var.loc[10, "reparameterised"] < var.loc[1, "reparameterised"]  # variance falls like 1/n


def test_code_box_uniform_stays_inside_the_bounding_box() -> None:
    codes = torch.randn(100, 3)
    pts = generation.code_box_uniform(codes, 500, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (500, 3)
    assert (pts >= codes.min(dim=0).values).all() and (pts <= codes.max(dim=0).values).all()


def test_ae_distortion_is_the_reconstruction_nll() -> None:
    torch.manual_seed(0)
    ae = build_model(ModelConfig(kind="ae", arch="mlp", input_shape=SHAPE, latent_dim=2, hidden=(8,)))
    x = (torch.rand(5, *SHAPE) > 0.5).float()
    with torch.no_grad():
        logits = ae.decode(ae.encode(x).mu)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 5
    assert s02.ae_distortion(ae, x) == pytest.approx(float(expected), rel=1e-5)


# --- notebook 01's seed replicates ----------------------------------------------------------------------------

def test_replicate_table_has_one_row_per_size_and_seed_with_pca_on_the_same_images(tmp_path, monkeypatch) -> None:
    from aestudy.classifier import DomainClassifier
    from aestudy.data import load_dataset
    from aestudy.train import TrainConfig

    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path))
    data = load_dataset("digits", val_size=20, limit=120, upscale=False, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=40, device="cpu", progress=False)
    table = s01.replicate_table(data, (2, 4), cfg, (0, 1), classifier=DomainClassifier((1, 8, 8), 10).eval(),
                                n_gen=30, gen_latent=4, reference=data.test.images[:30])
    assert table[["latent_dim", "seed"]].values.tolist() == [[2, 0], [2, 1], [4, 0], [4, 1]]
    for k in (2, 4):  # PCA has no seed: every replicate carries PCA's one value on the same training images
        assert (table.loc[table["latent_dim"] == k, "pca_mse"] == s01.pca_mse(data.train.images, data.test.images, k)
                ).all()
    assert table.loc[table["latent_dim"] == 2, "ae_mse"].nunique() == 2  # the seeds differ
    assert table.loc[table["latent_dim"] == 4, ["fid_encoded", "fid_prior"]].notna().all().all()
    assert table.loc[table["latent_dim"] == 2, "fid_prior"].isna().all()


def test_gap_replicates_repeat_the_gaps_once_per_seed(tmp_path, monkeypatch) -> None:
    from aestudy.data import load_dataset
    from aestudy.train import TrainConfig

    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path))
    data = load_dataset("digits", val_size=20, limit=120, upscale=False, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=40, device="cpu", progress=False)
    table = s01.gap_replicates(data, 40, 2, cfg, (0, 1), samples_budget=120)
    assert table[["seed", "train_size"]].values.tolist() == [[0, 40], [0, 120], [1, 40], [1, 120]]
    np.testing.assert_allclose(table["gap"], table["val_mse"] - table["train_mse"])
    assert table["epochs"].tolist() == [3, 1, 3, 1]  # equal sample budget


def test_notebook01_ae_is_notebook_01s_section_1_model_from_the_cache(tmp_path, monkeypatch) -> None:
    """02 shows 01's AE beside its VAE (issue 19): rebuilt from 02's parameters, it is the very model 01 trained."""
    from aestudy.study import Study
    from aestudy.train import train_or_load

    monkeypatch.setenv("AESTUDY_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics.json"))
    params = dict(profile="smoke", dataset="digits", latent_dim=3, seed=0, device="cpu")
    nb01 = Study("01_autoencoder_basics", s01.SIZES, epochs_knobs=("epochs", "sweep_epochs"), **params)
    data = nb01.data()  # what 01's section 1 does
    trained = train_or_load(s01.ae_config("mlp", 3, input_shape=data.info.shape), nb01.train_config(), data)
    again = s01.notebook01_ae(Study("02_vae_maths_elbo", s02.SIZES, **params))
    assert not trained.from_cache and again.from_cache
    assert trained.model.state_dict().keys() == again.model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(),
                                                  again.model.state_dict().values(), strict=True))
