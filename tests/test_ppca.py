"""pPCA ground truth: exact log p(x) and posterior, and the ELBO/IWAE identities it lets us prove exactly."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.decomposition import PCA
from torch.distributions import MultivariateNormal

from aestudy.errors import ConfigError, DataError
from aestudy.ppca import (
    PPCA,
    elbo_with_gaussian_posterior,
    iwae_with_posterior,
    kl_to_posterior,
    linear_vae_from_ppca,
    mc_elbo_with_gaussian_posterior,
)

D, K = 6, 2


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def truth() -> PPCA:
    return PPCA(torch.randn(D, K, generator=_gen(1), dtype=torch.float64),
                torch.rand(D, generator=_gen(2), dtype=torch.float64), 0.3)


@pytest.fixture(scope="module")
def data(truth) -> torch.Tensor:
    return truth.sample(400, generator=_gen(3))


@pytest.fixture(scope="module")
def fitted(data) -> PPCA:
    return PPCA.fit(data, K)


def _random_q(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random Gaussian encoders: means (n, K) and full covariances (n, K, K)."""
    g = _gen(seed)
    mean = torch.randn(n, K, generator=g, dtype=torch.float64)
    a = torch.randn(n, K, K, generator=g, dtype=torch.float64)
    return mean, a @ a.transpose(1, 2) + 0.05 * torch.eye(K, dtype=torch.float64)


def test_log_prob_equals_the_gaussian_marginal(truth, data):
    cov = truth.W @ truth.W.T + truth.sigma2 * torch.eye(D, dtype=torch.float64)
    expected = MultivariateNormal(truth.mu, covariance_matrix=cov).log_prob(data)
    torch.testing.assert_close(truth.log_prob(data), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(truth.log_prob(data.view(-1, 1, 2, 3)), expected, rtol=0, atol=1e-10)


def test_log_prob_equals_scikit_learn_probabilistic_pca(data):
    pca = PCA(n_components=K).fit(data.numpy())
    W = torch.from_numpy(pca.components_.T * (pca.explained_variance_ - pca.noise_variance_) ** 0.5)
    model = PPCA(W=W, mu=torch.from_numpy(pca.mean_), sigma2=float(pca.noise_variance_))
    torch.testing.assert_close(model.log_prob(data), torch.from_numpy(pca.score_samples(data.numpy())),
                               rtol=0, atol=1e-9)


def test_fit_is_the_closed_form_maximum_likelihood_solution(truth, data, fitted):
    centred = data - data.mean(0)
    evals = torch.linalg.eigvalsh(centred.T @ centred / data.shape[0]).flip(0)
    model_evals = torch.linalg.eigvalsh(fitted.W @ fitted.W.T + fitted.sigma2 * torch.eye(D, dtype=torch.float64))
    torch.testing.assert_close(model_evals.flip(0)[:K], evals[:K])  # top-k variances reproduced exactly
    assert fitted.sigma2 == pytest.approx(evals[K:].mean().item())  # σ² = mean discarded variance
    best = fitted.log_prob(data).mean()
    assert best > truth.log_prob(data).mean()  # the ML fit beats the generating parameters on its data
    g = _gen(4)
    for _ in range(5):  # and every nearby model
        nudged = PPCA(fitted.W + 0.02 * torch.randn(D, K, generator=g, dtype=torch.float64),
                      fitted.mu + 0.02 * torch.randn(D, generator=g, dtype=torch.float64),
                      fitted.sigma2 * (1 + 0.05 * torch.randn(1, generator=g).item()))
        assert nudged.log_prob(data).mean() < best
    wtw = fitted.W.T @ fitted.W
    torch.testing.assert_close(wtw, torch.diag(torch.diagonal(wtw)))  # orthogonal columns


def test_fit_recovers_the_noise_level_from_many_samples(truth):
    assert PPCA.fit(truth.sample(20000, generator=_gen(5)), K).sigma2 == pytest.approx(truth.sigma2, rel=0.05)


def test_posterior_satisfies_bayes_rule(fitted, data):
    x = data[:5]
    mean, cov = fitted.posterior(x)
    assert mean.shape == (5, K) and cov.shape == (K, K)
    z = torch.randn(3, 5, K, generator=_gen(6), dtype=torch.float64)
    log_post = MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)  # (3, 5)
    # log p(x) = log p(x, z) − log p(z|x) for every z
    torch.testing.assert_close(fitted.log_joint(x, z) - log_post, fitted.log_prob(x).expand(3, 5),
                               rtol=0, atol=1e-10)


def test_elbo_is_below_log_p_for_random_encoders_with_gap_equal_to_kl(fitted, data):
    x = data[:50]
    log_p = fitted.log_prob(x)
    for seed in range(5):
        q_mean, q_cov = _random_q(50, seed)
        elbo = elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov)
        assert (elbo < log_p).all()
        torch.testing.assert_close(log_p - elbo, kl_to_posterior(fitted, x, q_mean, q_cov), rtol=1e-9, atol=1e-9)


def test_elbo_equals_log_p_at_the_exact_posterior(fitted, data):
    x = data[:50]
    mean, cov = fitted.posterior(x)
    torch.testing.assert_close(elbo_with_gaussian_posterior(fitted, x, mean, cov), fitted.log_prob(x),
                               rtol=0, atol=1e-4)
    assert kl_to_posterior(fitted, x, mean, cov).abs().max() < 1e-10
    estimate, se = mc_elbo_with_gaussian_posterior(fitted, x, mean, cov, 10, generator=_gen(7))
    torch.testing.assert_close(estimate, fitted.log_prob(x), rtol=0, atol=1e-9)  # every log-weight is log p(x)
    assert se.max() < 1e-9


def test_closed_form_elbo_agrees_with_monte_carlo(fitted, data):
    x = data[:8]
    q_mean, q_cov = _random_q(8, 8)
    estimate, se = mc_elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov, 4000, generator=_gen(9))
    exact = elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov)
    assert ((estimate - exact).abs() <= 4 * se).all()
    shared = elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov[0])  # one (K, K) covariance for all rows
    torch.testing.assert_close(shared, elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov[0].expand(8, K, K)))


def test_iwae_with_posterior_climbs_from_the_elbo_to_log_p(fitted, data):
    x, r = data[:3], 400
    post_mean, post_cov = fitted.posterior(x)
    q_mean, q_cov = post_mean + 0.4, 2.0 * post_cov  # a plausible but imperfect encoder
    xs, qm = x.repeat(r, 1), q_mean.repeat(r, 1)
    means, ses = [], []
    for k in (1, 8, 64, 1000):
        draws = iwae_with_posterior(fitted, xs, qm, q_cov, k, generator=_gen(k)).view(r, 3)
        means.append(draws.mean(0))
        ses.append(draws.std(0) / math.sqrt(r))
    elbo, log_p = elbo_with_gaussian_posterior(fitted, x, q_mean, q_cov), fitted.log_prob(x)
    assert ((means[0] - elbo).abs() <= 4 * ses[0]).all()
    for lo, hi, se_lo, se_hi in zip(means[:-1], means[1:], ses[:-1], ses[1:], strict=True):
        assert (hi - lo > -3 * torch.sqrt(se_lo**2 + se_hi**2)).all()
    assert (means[1] - means[0] > 4 * torch.sqrt(ses[0] ** 2 + ses[1] ** 2)).all()
    assert ((means[-1] - log_p).abs() < 0.05).all()
    exact = iwae_with_posterior(fitted, x, post_mean, post_cov, 5, generator=_gen(10))
    torch.testing.assert_close(exact, log_p, rtol=0, atol=1e-9)


def test_sample_has_the_model_covariance(truth):
    x = truth.sample(50000, generator=_gen(11))
    cov = truth.W @ truth.W.T + truth.sigma2 * torch.eye(D, dtype=torch.float64)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.06)
    torch.testing.assert_close(x.mean(0), truth.mu, rtol=0, atol=0.03)


def test_linear_vae_from_ppca_is_the_exact_model_and_posterior(fitted, data):
    vae = linear_vae_from_ppca(fitted, input_shape=(1, 2, 3))
    x = data[:5]
    images = x.float().view(5, 1, 2, 3)
    post = vae.encode(images)
    mean, cov = fitted.posterior(x)
    torch.testing.assert_close(post.mu.double(), mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.diag_embed(post.logvar.double().exp()).expand(5, K, K),
                               cov.expand(5, K, K), rtol=1e-5, atol=1e-7)
    z = torch.randn(5, K, generator=_gen(12))
    torch.testing.assert_close(vae.decode(z).double().view(5, D), z.double() @ fitted.W.T + fitted.mu,
                               rtol=0, atol=1e-5)
    assert vae.likelihood.sigma == pytest.approx(math.sqrt(fitted.sigma2))


def test_linear_vae_needs_orthogonal_columns(truth):
    with pytest.raises(ConfigError) as err:
        linear_vae_from_ppca(truth)
    assert str(err.value) == ("W has non-orthogonal columns, so the exact posterior has a full covariance that a "
                              "VAE's diagonal q(z|x) cannot represent; use PPCA.fit (orthogonal W).")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"W": torch.zeros(6), "mu": torch.zeros(6), "sigma2": 1.0}, "W has shape (6,); it must be (D, k)."),
    ({"W": torch.zeros(6, 2), "mu": torch.zeros(5), "sigma2": 1.0},
     "mu has shape (5,); it must be (6,) to match W."),
    ({"W": torch.zeros(6, 2), "mu": torch.zeros(6), "sigma2": 0.0},
     "sigma2=0.0 is invalid; it must be a number > 0."),
])
def test_invalid_ppca_raises_config_error(kwargs, message):
    with pytest.raises(ConfigError) as err:
        PPCA(**kwargs)
    assert str(err.value) == message


def test_fit_errors_name_the_fix(data):
    with pytest.raises(ConfigError) as err:
        PPCA.fit(data, 6)
    assert str(err.value) == "latent_dim=6 is invalid; it must be an integer in [1, 5]."
    flat = torch.zeros(10, 4, dtype=torch.float64)
    flat[:, 0] = torch.arange(10.0)
    with pytest.raises(DataError) as err:
        PPCA.fit(flat, 1)
    assert str(err.value) == ("pPCA fit on 10 rows of dimension 4: the 3 discarded eigenvalues are all 0, "
                              "so σ² = 0; use fewer latent dimensions or more (varied) data.")
    with pytest.raises(ConfigError) as err:
        mc_elbo_with_gaussian_posterior(PPCA.fit(data, 1), data[:2], torch.zeros(2, 1), torch.eye(1), 1)
    assert str(err.value) == "n_samples=1 is invalid; it must be an integer >= 2."


def _rgb_crops(n: int = 300, side: int = 8) -> torch.Tensor:
    """n random side×side RGB crops of scikit-learn's two sample photos, (n, 3, side, side) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    g = torch.Generator().manual_seed(0)
    crops = []
    for i in range(n):
        p = photos[i % 2]
        r = int(torch.randint(0, p.shape[0] - side, (1,), generator=g))
        c = int(torch.randint(0, p.shape[1] - side, (1,), generator=g))
        crops.append(torch.from_numpy(p[r:r + side, c:c + side].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255.0


@pytest.mark.parametrize("raw_logvar", [-60.0, 25.0])
def test_closed_form_elbo_is_the_models_own_elbo_when_the_encoder_leaves_the_logvar_range(raw_logvar):
    """Issue 17: on 32×32 RGB crops a trained linear VAE's encoder gave log-variances down to −72; the model samples
    and scores q(z|x) with them clamped to [LOGVAR_MIN, LOGVAR_MAX], and the closed form must be that q's ELBO.

    Before the fix the closed form used the raw value, so the model's Monte-Carlo ELBO (elbo_terms) sat far from it
    (≈ +15 nats per image for raw −60, far below for +25) — not Monte-Carlo noise. Here one latent unit's log-variance
    is pushed outside the range on RGB crops; the MC ELBO must match the closed form within 4 standard errors.
    """
    from aestudy.metrics import elbo_per_image
    from aestudy.models import LOGVAR_MAX, LOGVAR_MIN
    from aestudy.ppca import linear_vae_bounds
    from aestudy.series.elbo import MC_Z, bound_order

    x = _rgb_crops()
    vae = linear_vae_from_ppca(PPCA.fit(x[:200], 4), input_shape=(3, 8, 8))
    with torch.no_grad():  # latent unit 0's log-variance head: a constant raw_logvar for every image
        vae.encoder.head.weight[4].zero_()
        vae.encoder.head.bias[4] = raw_logvar
    test = x[200:]
    assert not (LOGVAR_MIN <= raw_logvar <= LOGVAR_MAX)  # the condition that bit on RGB data
    bounds = linear_vae_bounds(vae, test)
    mc = elbo_per_image(vae, test, n_samples=100, generator=_gen(7))["elbo"]
    check = bound_order(mc, torch.tensor(bounds["elbo"].to_numpy()))
    assert abs(check["z_score"]) < MC_Z, check
    # the bound identities still hold for the q the model uses: ELBO ≤ log p(x), gap = KL(q ‖ p(z|x))
    assert (bounds["gap"] >= 0).all()
    torch.testing.assert_close(torch.tensor(bounds["gap"].to_numpy()),
                               torch.tensor(bounds["kl_to_posterior"].to_numpy()), rtol=1e-6, atol=1e-6)


def test_linear_vae_from_ppca_refuses_a_posterior_variance_the_vae_cannot_hold():
    """A direction 1e16 times the noise variance: σ² M⁻¹ ≈ 1e-16 < e^LOGVAR_MIN, which the VAE would clamp."""
    W = torch.zeros(D, K, dtype=torch.float64)
    W[0, 0], W[1, 1] = 1e8, 1.0
    with pytest.raises(DataError) as err:
        linear_vae_from_ppca(PPCA(W=W, mu=torch.zeros(D, dtype=torch.float64), sigma2=1.0))
    assert str(err.value) == ("the exact posterior has log-variance -36.8 < -30.0 (σ² = 1), below what a VAE's q(z|x) "
                              "holds, so the exact-posterior VAE would not be exact; use fewer latent dimensions or "
                              "data whose discarded directions are not ~0 variance.")
