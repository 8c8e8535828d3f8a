"""Metric identities and closed forms: SSIM/PSNR, Fréchet distance, precision/recall, MMD, probes, AUROC,
sharpness, interpolation smoothness, and the model-based evaluations on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aestudy import anomaly, evaluation, latent, metrics, probes
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, Posterior, build_model
from aestudy.objectives import elbo_terms


def _rand_images(n=6, side=28, seed=0):
    return torch.rand((n, 1, side, side), generator=torch.Generator().manual_seed(seed))


# --- reconstruction quality -------------------------------------------------------------------------------

def test_mse_and_psnr_on_a_known_error():
    x = torch.zeros(3, 1, 4, 4)
    x_hat = torch.full_like(x, 0.1)
    torch.testing.assert_close(metrics.mse_per_image(x, x_hat), torch.full((3,), 0.01))
    torch.testing.assert_close(metrics.psnr(x, x_hat), torch.full((3,), 20.0))
    torch.testing.assert_close(metrics.psnr(x, x), torch.full((3,), 100.0))  # floored MSE


def test_ssim_identities():
    x = _rand_images()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y = (x + 0.1 * noise).clamp(0, 1)
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics.ssim(x, y), metrics.ssim(y, x))
    assert (metrics.ssim(x, y) < 1).all()
    levels = [metrics.ssim(x, (x + s * noise).clamp(0, 1)).mean() for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(levels[:-1], levels[1:], strict=True))


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.7), (0.5, 0.5), (0.0, 1.0)])
def test_ssim_of_constant_images_is_the_luminance_term(a, b):
    # σ_x = σ_y = σ_xy = 0, so SSIM = (2ab + C1) / (a² + b² + C1) · C2 / C2.
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = metrics.ssim(torch.full((1, 1, 28, 28), a), torch.full((1, 1, 28, 28), b))
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_ssim_works_on_images_smaller_than_the_window():
    x = _rand_images(side=8)
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(6), atol=1e-6, rtol=0)
    assert (metrics.ssim(x, 1 - x) < 0.5).all()


def test_sharpness_of_an_impulse_and_under_blur():
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    # valid Laplacian response: -4 at the centre, 1 at its 4 neighbours, 0 at the 4 corners -> var 20/9
    assert metrics.sharpness(impulse).item() == pytest.approx(20 / 9)
    assert metrics.sharpness(torch.full((1, 1, 6, 6), 0.3)).item() == 0.0
    x = _rand_images()
    blurred = nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert (metrics.sharpness(blurred) < metrics.sharpness(x)).all()


# --- Fréchet distance ----------------------------------------------------------------------------------------

def _with_moments(n, mean, cov, seed):
    """n samples whose *sample* mean and (unbiased) covariance are exactly `mean` and `cov`."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov = I
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_matches_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))  # a shared eigenbasis -> Σ_a Σ_b commute
    var_a, var_b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.5, 0.5, 1.0])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    a = _with_moments(300, mu_a, q @ np.diag(var_a) @ q.T, 1)
    b = _with_moments(200, mu_b, q @ np.diag(var_b) @ q.T, 2)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(torch.from_numpy(a), b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_symmetric_form_for_general_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 5)), rng.standard_normal((300, 5)) + 1
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = v @ np.diag(np.sqrt(w)) @ v.T
    # Tr (Σ_a Σ_b)^{1/2} = Tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}, a symmetric PSD matrix
    tr_mean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_mean
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_identical_sets_is_zero_even_when_singular():
    feats = np.random.default_rng(0).standard_normal((20, 50))  # n < D: singular covariance
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    one_d = np.random.default_rng(1).standard_normal((100, 1))
    # 1-D: (μ − 3μ)² + (σ − 3σ)²
    assert metrics.frechet_distance(one_d, 3 * one_d) == pytest.approx(
        4 * one_d.mean() ** 2 + 4 * one_d.var(ddof=1))


# --- precision / recall, MMD --------------------------------------------------------------------------------

def _cluster(n, centre, seed, dim=8):
    return torch.randn((n, dim), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + centre


def test_precision_recall_identical_and_disjoint_sets():
    real = _cluster(200, 0.0, 0)
    assert metrics.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert metrics.precision_recall(real, _cluster(150, 100.0, 1)) == (0.0, 0.0)


def test_precision_recall_of_a_mode_dropping_generator():
    mode_a, mode_b = _cluster(120, 0.0, 0), _cluster(80, 50.0, 1)
    real = torch.cat([mode_a, mode_b])
    # generated = mode A only: every sample is realistic (precision 1) but mode B is missed (recall 120/200)
    assert metrics.precision_recall(real, mode_a.clone(), k=3, chunk_size=37) == (1.0, 0.6)


def test_precision_recall_rejects_too_few_points():
    with pytest.raises(ConfigError, match="more than k=3 points"):
        metrics.precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))


def test_mmd_of_point_masses_has_closed_form():
    x, y = torch.zeros(2, 3), torch.ones(2, 3)  # distance² 3
    expected = 2 - 2 * math.exp(-3 / (2 * 1.5**2))
    assert metrics.mmd(x, y, bandwidths=(1.5,)) == pytest.approx(expected)


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    same = metrics.mmd(_cluster(400, 0.0, 0, dim=4), _cluster(400, 0.0, 1, dim=4))
    shifted = metrics.mmd(_cluster(400, 0.0, 0, dim=4), _cluster(400, 1.0, 1, dim=4))
    assert abs(same) < 0.01 < 0.1 < shifted
    assert metrics.mmd(_cluster(400, 0.0, 0, dim=4), _cluster(400, 1.0, 1, dim=4), chunk_size=33) == (
        pytest.approx(shifted))


# --- probes and AUROC -------------------------------------------------------------------------------------

def _blobs(n, seed, separation=6.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.standard_normal((n, 5)) + separation * np.eye(3, 5)[y], y


def test_probes_separate_blobs_and_fail_on_random_labels():
    (train_x, train_y), (test_x, test_y) = _blobs(600, 0), _blobs(300, 1)
    assert probes.linear_probe_accuracy(train_x, train_y, test_x, test_y) > 0.97
    assert probes.knn_accuracy(train_x, train_y, test_x, test_y, k=5) > 0.97
    assert probes.linear_probe_accuracy(train_x, train_y, test_x, test_y, n_labels=30, seed=1) > 0.9
    shuffled = np.random.default_rng(2).permutation(test_y)
    assert probes.knn_accuracy(train_x, train_y, test_x, shuffled) < 0.5


def test_label_subsets_are_stratified_and_validated():
    x, y = _blobs(600, 0)
    sub_x, sub_y = probes._labelled_subset(x, y, 30, seed=0)
    assert len(sub_y) == 30 and set(np.unique(sub_y)) == {0, 1, 2}
    with pytest.raises(ConfigError, match=r"n_labels=2 is invalid; .* number of classes \(3\)"):
        probes.linear_probe_accuracy(x, y, x, y, n_labels=2)
    with pytest.raises(ConfigError, match=r"k=31 is invalid; it must be an integer in \[1, 30\]"):
        probes.knn_accuracy(x, y, x, y, k=31, n_labels=30)


def test_auroc_extremes_and_pairwise_definition():
    assert anomaly.anomaly_auroc([0.1, 0.2], [0.5, 0.9]) == 1.0
    assert anomaly.anomaly_auroc(np.array([0.5, 0.9]), torch.tensor([0.1, 0.2])) == 0.0
    assert anomaly.anomaly_auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    rng = np.random.default_rng(0)
    normal, anomalous = rng.standard_normal(50), rng.standard_normal(40) + 0.7
    pairs = (anomalous[None, :] > normal[:, None]).mean()  # P(score_anomalous > score_normal)
    assert anomaly.anomaly_auroc(normal, anomalous) == pytest.approx(pairs)
    fpr, tpr, _ = anomaly.roc_curve_points(normal, anomalous)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="1 not finite"):
        anomaly.anomaly_auroc([0.1, float("nan")], [0.3])


# --- model-based metrics on tiny models -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data():
    return _rand_images(n=40, side=8, seed=5)


def _tiny(kind="vae", **overrides):
    cfg = ModelConfig(**{"kind": kind, "arch": "mlp", "input_shape": (1, 8, 8), "latent_dim": 3,
                         "hidden": (16,), **overrides})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(cfg)


def test_reconstruction_metrics_are_batch_invariant_means(tiny_data):
    model = _tiny("ae")
    x_hat = model.reconstruct(tiny_data)
    got = metrics.reconstruction_metrics(model, tiny_data, batch_size=7)
    assert got == pytest.approx(metrics.reconstruction_metrics(model, tiny_data, batch_size=1000))
    assert got["mse"] == pytest.approx(metrics.mse_per_image(tiny_data, x_hat).mean().item(), rel=1e-6)
    assert got["psnr"] == pytest.approx(metrics.psnr(tiny_data, x_hat).mean().item(), rel=1e-6)
    assert got["ssim"] == pytest.approx(metrics.ssim(tiny_data, x_hat).mean().item(), rel=1e-5)
    assert model.training  # evaluation restores the mode it found


def test_evaluate_elbo_agrees_with_objectives(tiny_data):
    model = _tiny()
    got = metrics.evaluate_elbo(model, tiny_data, batch_size=16, n_samples=3,
                                generator=torch.Generator().manual_seed(0))
    assert got["elbo"] == pytest.approx(got["recon"] - got["kl"])
    assert got["bits_per_dim"] == pytest.approx(-got["elbo"] / (64 * math.log(2)))
    with torch.no_grad():
        terms = elbo_terms(model, tiny_data, n_samples=200, generator=torch.Generator().manual_seed(1))
    assert got["kl"] == pytest.approx(terms.kl.mean().item(), rel=1e-5)  # analytic: no sampling noise
    assert got["recon"] == pytest.approx(terms.recon.mean().item(), abs=5 * got["elbo_sem"] + 0.5)
    assert metrics.kl_per_dim(model, tiny_data, batch_size=9).sum().item() == pytest.approx(got["kl"], rel=1e-5)


@pytest.mark.parametrize("evaluate", ["evaluate_elbo", "evaluate_is_nll", "reconstruction_metrics"])
def test_likelihood_metrics_refuse_images_outside_unit_range(tiny_data, evaluate):
    """Issue 12, item 2: 0..255 images gave a Bernoulli "NLL" of -1.4e6 nats and an IS-NLL of -4.8e5."""
    with pytest.raises(ConfigError) as err:
        getattr(metrics, evaluate)(_tiny(), tiny_data * 255)
    inner = {"evaluate_elbo": "the image tensor given to elbo_per_image",
             "reconstruction_metrics": "the inputs given to reconstruction_metrics"}.get(
        evaluate, f"the image tensor given to {evaluate}")
    low, high = (float(v) for v in (tiny_data * 255).aminmax())
    assert str(err.value) == (f"{inner} has pixel values in [{low:g}, {high:g}] (first "
                              "outside [0, 1]: image 0); they must lie in [0, 1] (images in 0..255: divide by 255).")


def test_is_nll_is_below_negative_elbo(tiny_data):
    model = _tiny()
    nll = metrics.evaluate_is_nll(model, tiny_data, k=64, generator=torch.Generator().manual_seed(0))
    neg_elbo = -metrics.evaluate_elbo(model, tiny_data, n_samples=64,
                                      generator=torch.Generator().manual_seed(1))["elbo"]
    assert nll["k"] == 64 and nll["nll"] < neg_elbo
    assert nll["bits_per_dim"] == pytest.approx(nll["nll"] / (64 * math.log(2)))


def test_ae_has_no_kl_per_dim(tiny_data):
    with pytest.raises(ConfigError, match="kl_per_dim needs a variational model"):
        metrics.kl_per_dim(_tiny("ae"), tiny_data)


def test_active_units_count_dimensions_with_varying_means(tiny_data):
    model = _tiny()
    with torch.no_grad():  # head rows 0..2 are μ, 3..5 log σ²: freeze μ_0, amplify μ_1 and μ_2
        model.encoder.head.weight[0].zero_()
        model.encoder.head.weight[1:3] *= 50
    count, variances = metrics.active_units(model, tiny_data, batch_size=11)
    torch.testing.assert_close(variances, evaluation.encode_means(model, tiny_data).var(dim=0))
    assert variances[0].item() == 0.0 and count == int((variances > 0.01).sum()) == 2
    assert evaluation.encode_means(model, tiny_data, batch_size=3).shape == (40, 3)


def test_anomaly_scores_match_their_definitions(tiny_data):
    model = _tiny()
    recon = anomaly.anomaly_scores(model, tiny_data, score="recon", batch_size=9)
    torch.testing.assert_close(recon, metrics.mse_per_image(tiny_data, model.reconstruct(tiny_data)))
    neg_elbo = anomaly.anomaly_scores(model, tiny_data, score="neg_elbo", generator=torch.Generator().manual_seed(0))
    per_image = metrics.elbo_per_image(model, tiny_data, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(neg_elbo, -per_image["elbo"])
    with pytest.raises(ConfigError, match="score='likelihood' is invalid; valid values: recon, neg_elbo, is_nll"):
        anomaly.anomaly_scores(model, tiny_data, score="likelihood")


class _StepDecoderModel(nn.Module):
    """z = the first pixel; the 'decoder' draws all-ones once z > 0.5 (an abrupt switch)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.likelihood = nn.Identity()
        self.likelihood.mean = lambda out: out

    def encode(self, x):
        return Posterior(mu=x.flatten(1)[:, :1])

    def decode(self, z):
        return (z > 0.5).float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    def decode_mean(self, z):
        return self.decode(z)


def test_interpolation_smoothness_of_a_linear_decoder_and_a_step():
    linear = _tiny("ae", arch="linear", likelihood="gaussian", sigma=0.1)
    with torch.no_grad():  # keep the affine decoder mean inside [0, 1], where the display clamp is inactive
        linear.decoder.trunk[-1].weight.mul_(0.01)
        linear.decoder.trunk[-1].bias.fill_(0.5)
    x_a, x_b = _rand_images(4, 8, 1), _rand_images(4, 8, 2)
    assert latent.interpolation_smoothness(linear, x_a, x_b, steps=10) == pytest.approx(0.0, abs=1e-6)
    step = _StepDecoderModel()
    a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert latent.interpolation_smoothness(step, a, b, steps=10) == pytest.approx(2 / 9)
    assert latent.interpolation_smoothness(step, a[0], b[0], steps=4) == pytest.approx(2 / 3)


def test_latent_path_images_end_at_the_reconstructions(tiny_data):
    model = _tiny()
    path = latent.latent_path_images(model, tiny_data[0], tiny_data[1], steps=5)
    assert path.shape == (6, 1, 8, 8)
    torch.testing.assert_close(path[[0, -1]], model.reconstruct(tiny_data[:2]))
    assert latent.latent_path_images(model, tiny_data[:3], tiny_data[3:6], steps=2).shape == (3, 3, 1, 8, 8)
    with pytest.raises(ConfigError, match="steps=1 is invalid"):
        latent.latent_path_images(model, tiny_data[0], tiny_data[1], steps=1)


class _BrightnessClassifier:
    """Three classes; confident (top p = 0.9) about brighter samples, unsure (top p = 0.4) about darker ones."""

    cut = 0.505  # the untrained tiny VAE's samples have mean brightness 0.50-0.51

    def predict_proba(self, images):
        bright = images.flatten(1).mean(dim=1) > self.cut
        first = torch.where(bright, 0.9, 0.2)
        return torch.stack([first, torch.where(bright, 0.05, 0.4), torch.where(bright, 0.05, 0.4)], dim=1)


def test_prior_holes_is_the_share_of_unsure_samples():
    model = _tiny()
    share = latent.prior_holes(model, _BrightnessClassifier(), n=50, batch_size=16,
                                generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    samples = torch.cat([model.sample(k, generator=generator) for k in (16, 16, 16, 2)])
    expected = (samples.flatten(1).mean(dim=1) <= _BrightnessClassifier.cut).double().mean().item()
    assert 0.1 < expected < 0.9
    assert share == pytest.approx(expected)
