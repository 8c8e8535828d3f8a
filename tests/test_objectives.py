"""The objectives are the maths they claim: KL against torch and Monte Carlo, ELBO ≤ IWAE_k ≤ log p(x) with
exact pPCA ground truth, unbiased reparameterised gradients, and loss/bound bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, Posterior, build_model
from aestudy.objectives import (
    ElboTerms,
    bits_per_dim,
    chunked_log_mean_exp,
    elbo_terms,
    gaussian_kl,
    gaussian_kl_per_dim,
    is_nll,
    iwae_bound,
    kl_warmup,
    loss_terms,
    mc_kl,
)
from aestudy.ppca import PPCA, elbo_with_gaussian_posterior, kl_to_posterior, linear_vae_from_ppca


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny(kind: str = "vae", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, input_shape=(1, 2, 3), latent_dim=2, hidden=(8,), **kw))


def _binary(n: int, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 2, 3), 0.4), generator=_gen(seed))


# --- KL ---------------------------------------------------------------------------------------------------

def test_analytic_kl_equals_torch_kl_divergence():
    mu = torch.randn(7, 5, generator=_gen(), dtype=torch.float64) * 2
    logvar = torch.randn(7, 5, generator=_gen(1), dtype=torch.float64) * 2
    q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl_per_dim(mu, logvar), kl_divergence(q, p), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p).sum(1), rtol=1e-12, atol=1e-12)


def test_analytic_kl_is_within_four_standard_errors_of_monte_carlo():
    mu = torch.tensor([[0.0, 0.0], [1.0, -0.5], [-2.0, 0.3], [0.2, 0.1]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, 0.0], [-1.0, 0.5], [0.3, -2.0], [1.5, -0.2]], dtype=torch.float64)
    estimate, se = mc_kl(mu, logvar, 20000, generator=_gen(2))
    exact = gaussian_kl(mu, logvar)
    assert (se[1:] > 0).all()
    assert ((estimate - exact).abs() <= 4 * se + 1e-12).all()
    assert estimate[0] == 0 and se[0] == 0  # q = p: log q(z) − log p(z) is 0 for every draw


@pytest.mark.parametrize("delta", [1e-3, 0.1, 3.0])
def test_kl_is_zero_if_and_only_if_q_equals_the_prior(delta):
    zero = torch.zeros(1, 3, dtype=torch.float64)
    assert gaussian_kl(zero, zero).item() == 0.0
    for i in range(3):
        for sign in (1.0, -1.0):
            moved = zero.clone()
            moved[0, i] = sign * delta
            assert gaussian_kl(moved, zero).item() > 0  # mean differs
            assert gaussian_kl(zero, moved).item() > 0  # variance differs


def test_kl_stays_finite_for_extreme_log_variance():
    logvar = torch.tensor([[1e4, -1e4]], requires_grad=True)
    kl = gaussian_kl(torch.zeros(1, 2), logvar)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logvar.grad).all()


# --- reparameterisation ---------------------------------------------------------------------------------

def test_reparameterised_gradient_equals_score_function_gradient_and_has_lower_variance():
    # d/dμ E_{N(μ, σ²)}[z²] = d/dμ (μ² + σ²) = 2μ
    n, mu0, sigma = 20000, 1.3, 0.8
    mu = torch.full((n, 1), mu0, dtype=torch.float64, requires_grad=True)
    logvar = torch.full((n, 1), 2 * math.log(sigma), dtype=torch.float64)
    z = Posterior(mu=mu, logvar=logvar).rsample(_gen(3))
    (z**2).sum().backward()
    reparam = mu.grad.squeeze(1).clone()  # per-sample estimates 2z
    mu.grad = None
    z_fixed = Posterior(mu=mu.detach(), logvar=logvar).rsample(_gen(4))
    surrogate = (z_fixed**2 * Normal(mu, sigma).log_prob(z_fixed)).sum()
    surrogate.backward()
    score = mu.grad.squeeze(1)  # per-sample estimates z² ∂μ log q(z) = z² (z − μ) / σ²
    for est in (reparam, score):
        assert abs(est.mean().item() - 2 * mu0) < 4 * est.std().item() / math.sqrt(n)
    se_diff = math.sqrt((reparam.var() + score.var()).item() / n)
    assert abs(reparam.mean().item() - score.mean().item()) < 4 * se_diff
    assert reparam.var().item() == pytest.approx(4 * sigma**2, rel=0.05)  # Var(2z) = 4σ²
    assert score.var().item() > 5 * reparam.var().item()


# --- ELBO terms and training loss ----------------------------------------------------------------------

def test_elbo_terms_property_and_shapes():
    terms = ElboTerms(recon=torch.tensor([-3.0, -5.0]), kl=torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(terms.elbo, torch.tensor([-4.0, -5.5]))
    vae, x = _tiny(), _binary(5)
    terms = elbo_terms(vae, x, n_samples=3, generator=_gen())
    assert terms.recon.shape == terms.kl.shape == (5,)
    torch.testing.assert_close(terms.kl, gaussian_kl(vae.encode(x).mu, vae.encode(x).logvar))
    assert (terms.recon <= 0).all()  # binary data: log p(x|z) ≤ 0


def test_vae_loss_is_the_beta_elbo_with_the_same_draw():
    vae, x = _tiny(), _binary(6)
    for beta in (0.0, 1.0, 4.0):
        loss, parts = loss_terms(vae, x, beta=beta, generator=_gen(5))
        terms = elbo_terms(vae, x, generator=_gen(5))
        torch.testing.assert_close(loss, (-terms.recon + beta * terms.kl).mean())
        torch.testing.assert_close(parts["recon"], -terms.recon.mean())
        torch.testing.assert_close(parts["kl"], terms.kl.mean())
        torch.testing.assert_close(parts["loss"], parts["recon"] + beta * parts["kl"])
        assert not parts["loss"].requires_grad and loss.requires_grad


def test_ae_loss_is_the_reconstruction_nll_of_the_target():
    ae, x = _tiny("ae"), _binary(6)
    clean = _binary(6, seed=7)
    loss, parts = loss_terms(ae, x, beta=3.0, target=clean)
    expected = -ae.likelihood.log_prob(clean, ae.decode(ae.encode(x).mu)).mean()
    torch.testing.assert_close(loss, expected)
    assert parts["kl"].item() == 0.0
    torch.testing.assert_close(parts["loss"], parts["recon"])
    loss.backward()
    assert all(p.grad is not None for p in ae.parameters())


def test_denoising_vae_scores_the_target_not_the_input():
    vae, x, clean = _tiny(), _binary(6), _binary(6, seed=8)
    loss, _ = loss_terms(vae, x, target=clean, generator=_gen(9))
    post = vae.encode(x)
    out = vae.decode(post.rsample(_gen(9)))
    expected = (-vae.likelihood.log_prob(clean, out) + gaussian_kl(post.mu, post.logvar)).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize(("progress", "warmup", "factor"), [
    (0.0, 0.0, 1.0), (5.0, 0.0, 1.0), (0.0, 4.0, 0.0), (1.0, 4.0, 0.25), (2.0, 4.0, 0.5), (4.0, 4.0, 1.0),
    (9.0, 4.0, 1.0), (0.25, 0.5, 0.5),
])
def test_kl_warmup_is_a_linear_ramp(progress, warmup, factor):
    assert kl_warmup(progress, warmup) == pytest.approx(factor)


def test_bits_per_dim_converts_nats_per_image():
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    torch.testing.assert_close(bits_per_dim(torch.tensor([0.0, 2 * 6 * math.log(2.0)]), 6),
                               torch.tensor([0.0, 2.0]))


# --- IWAE -------------------------------------------------------------------------------------------------

def test_chunked_log_mean_exp_equals_logsumexp_for_any_chunk_size():
    w = torch.randn(37, 4, generator=_gen(), dtype=torch.float64) * 30
    expected = torch.logsumexp(w, 0) - math.log(37)
    for chunk in (1, 5, 36, 37, 100):
        pos = iter(range(0, 37, chunk))
        got = chunked_log_mean_exp(lambda c, pos=pos: w[(s := next(pos)):s + c], 37, chunk)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_chunked_iwae_equals_unchunked_with_the_same_generator():
    vae = _tiny(likelihood="cbernoulli")
    x = torch.rand(8, 1, 2, 3, generator=_gen())  # 8 images x 2 latents: whole blocks of torch's 16-wide randn
    full = iwae_bound(vae, x, 50, chunk_size=50, generator=_gen(11))
    for chunk in (1, 7, 16):
        torch.testing.assert_close(iwae_bound(vae, x, 50, chunk_size=chunk, generator=_gen(11)), full)


def test_iwae_with_k_1_equals_the_elbo_in_expectation_on_a_real_vae():
    vae, x = _tiny(), _binary(3)
    r = 20000
    with torch.no_grad():
        draws = iwae_bound(vae, x.repeat(r, 1, 1, 1), 1, generator=_gen(12)).view(r, 3)
        single = elbo_terms(vae, x.repeat(r, 1, 1, 1), generator=_gen(13)).elbo.view(r, 3)
        reference = elbo_terms(vae, x, n_samples=r, generator=_gen(14)).elbo
    for est in (draws, single):
        se = est.std(0) / math.sqrt(r)
        assert ((est.mean(0) - reference).abs() <= 4 * se).all()
    # L_1 has the same mean as the analytic-KL estimator but more variance (it also samples the KL)
    assert (draws.var(0) >= single.var(0)).all()


@pytest.fixture(scope="module")
def ppca_vae():
    """A fitted pPCA, 4 points, and a linear VAE whose encoder is the exact posterior pushed off it."""
    true = PPCA(torch.randn(6, 2, generator=_gen(20), dtype=torch.float64),
                torch.rand(6, generator=_gen(21), dtype=torch.float64), 0.2)
    ppca = PPCA.fit(true.sample(500, generator=_gen(22)), 2)
    x = ppca.sample(4, generator=_gen(23))
    vae = linear_vae_from_ppca(ppca)
    with torch.no_grad():
        vae.encoder.head.bias[:2] += 0.3  # shift the mean
        vae.encoder.head.bias[2:] += 0.5  # inflate the variance
    return ppca, x, vae


def test_iwae_increases_with_k_towards_exact_log_likelihood(ppca_vae):
    ppca, x, vae = ppca_vae
    r, log_p = 300, ppca.log_prob(x)
    xi = x.float().view(4, 1, 1, 6).repeat(r, 1, 1, 1)
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 4, 16, 64, 256, 1024):
            draws = iwae_bound(vae, xi, k, chunk_size=256, generator=_gen(k)).double().view(r, 4)
            means.append(draws.mean(0))
            ses.append(draws.std(0) / math.sqrt(r))
    post = vae.encode(x.float().view(4, 1, 1, 6))
    q_mean, q_cov = post.mu.double(), torch.diag_embed(post.logvar.double().exp())
    elbo = elbo_with_gaussian_posterior(ppca, x, q_mean, q_cov)
    assert ((means[0] - elbo).abs() <= 4 * ses[0]).all()  # L_1 = ELBO
    torch.testing.assert_close(log_p - elbo, kl_to_posterior(ppca, x, q_mean, q_cov))
    for lo, hi, se_lo, se_hi in zip(means[:-1], means[1:], ses[:-1], ses[1:], strict=True):
        assert (hi - lo >= -3 * torch.sqrt(se_lo**2 + se_hi**2)).all()  # non-decreasing within noise
        assert (hi <= log_p + 4 * se_hi).all()  # a lower bound
    assert (means[2] - means[0] > 4 * torch.sqrt(ses[0] ** 2 + ses[2] ** 2)).all()  # and it really grows
    assert ((means[-1] - log_p).abs() < 0.05).all()


def test_iwae_of_the_exact_posterior_is_log_p_for_every_draw(ppca_vae):
    ppca, x, _ = ppca_vae
    exact = linear_vae_from_ppca(ppca)
    xi = x.float().view(4, 1, 1, 6)
    for k in (1, 10):
        torch.testing.assert_close(iwae_bound(exact, xi, k, generator=_gen(k)).double(), ppca.log_prob(x),
                                   rtol=0, atol=1e-4)


def _train_tiny_vae(steps: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """A 4x4 binary VAE fitted to noisy copies of 4 prototypes (the minimal loop, not train.py)."""
    g = _gen(30)
    protos = (torch.rand(4, 1, 4, 4, generator=g) < 0.5).float()

    def data(n: int) -> torch.Tensor:
        flips = (torch.rand(n, 1, 4, 4, generator=g) < 0.1).float()
        return (protos[torch.randint(0, 4, (n,), generator=g)] - flips).abs()

    torch.manual_seed(0)
    model = build_model(ModelConfig(input_shape=(1, 4, 4), latent_dim=2, hidden=(32,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = data(2048)
    for _ in range(steps):
        loss, _ = loss_terms(model, train[torch.randint(0, 2048, (64,), generator=g)], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, data(64)


def test_is_nll_of_a_trained_vae_is_below_its_negative_elbo():
    model, test = _train_tiny_vae(200)
    with torch.no_grad():
        nll = is_nll(model, test, k=500, batch_size=32, generator=_gen(31))
        neg_elbo = -elbo_terms(model, test, n_samples=500, generator=_gen(32)).elbo
    assert nll.shape == (64,) and nll.device.type == "cpu"
    assert nll.mean() < neg_elbo.mean() - 0.05
    assert (nll <= neg_elbo + 0.05).all()  # per image too, up to Monte-Carlo noise
    assert neg_elbo.mean() < 16 * math.log(2.0)  # it learned something: better than a uniform coin per pixel


def test_is_nll_is_minus_iwae_over_batches():
    vae, x = _tiny(), _binary(6)
    with torch.no_grad():
        torch.testing.assert_close(is_nll(vae, x, k=20, batch_size=6, generator=_gen(40)),
                                   -iwae_bound(vae, x, 20, generator=_gen(40)))
        cond = _tiny(num_classes=3)
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        batched = is_nll(cond, x, k=5, batch_size=4, labels=labels, generator=_gen(41))
        assert batched.shape == (6,) and torch.isfinite(batched).all()


def _small_mlp_vae(likelihood: str = "bernoulli", num_classes: int = 0) -> torch.nn.Module:
    torch.manual_seed(5)
    return build_model(ModelConfig(input_shape=(1, 6, 6), latent_dim=3, hidden=(16, 8), likelihood=likelihood,
                                   num_classes=num_classes)).eval()


@pytest.mark.parametrize(("likelihood", "num_classes"), [("bernoulli", 0), ("bernoulli", 3), ("cbernoulli", 0)])
def test_fused_is_nll_equals_the_reference_estimator_on_the_same_draws(likelihood, num_classes):
    model = _small_mlp_vae(likelihood, num_classes)
    x = torch.rand(10, 1, 6, 6, generator=_gen(50))
    x = torch.bernoulli(x, generator=_gen(51)) if likelihood == "bernoulli" else x
    labels = torch.arange(10) % 3 if num_classes else None
    fused = is_nll(model, x, k=60, batch_size=4, chunk_size=7, labels=labels, generator=_gen(52))
    reference = is_nll(model, x, k=60, batch_size=4, chunk_size=7, labels=labels, generator=_gen(52), fused=False)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-4)


def test_fused_is_nll_agrees_with_the_reference_within_monte_carlo_error_on_independent_draws():
    model = _small_mlp_vae()
    x = torch.bernoulli(torch.rand(40, 1, 6, 6, generator=_gen(53)), generator=_gen(54))
    k, reps = 20, 30
    fused = torch.stack([is_nll(model, x, k=k, generator=_gen(100 + r)) for r in range(reps)]).double()
    reference = torch.stack([is_nll(model, x, k=k, generator=_gen(500 + r), fused=False)
                             for r in range(reps)]).double()
    diff = fused.mean(1) - reference.mean(1)  # (reps,) paired by replicate, independent draws
    se = diff.std() / math.sqrt(reps)
    assert abs(float(diff.mean())) <= 4 * float(se)
    assert float(se) > 0


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("fused", [True, False])
def test_is_nll_memory_is_bounded_by_the_chunk_not_by_k_or_the_number_of_images(fused):
    model = _small_mlp_vae()
    pixels, batch, chunk = 36, 5, 4
    largest = {}
    for k, n in ((8, 10), (200, 10), (200, 40)):
        x = torch.bernoulli(torch.rand(n, 1, 6, 6, generator=_gen(55)), generator=_gen(56))
        with _LargestTensor() as spy:
            is_nll(model, x, k=k, batch_size=batch, chunk_size=chunk, generator=_gen(57), fused=fused)
        largest[(k, n)] = spy.largest
    # the biggest tensor is one chunk of logits, (chunk · batch, pixels), whatever k and the image count
    # (every weight matrix, at most 36 × 16, is smaller)
    assert set(largest.values()) == {chunk * batch * pixels}


# --- errors -----------------------------------------------------------------------------------------------

AE_MESSAGE = ("{} needs a variational model (a VAE, config kind='vae'); this model is an AE, whose encoder is a "
              "point mass, so q(z|x) has no density and the bound is undefined.")


@pytest.mark.parametrize(("call", "name"), [
    (lambda m, x: elbo_terms(m, x), "elbo_terms"),
    (lambda m, x: iwae_bound(m, x, 5), "iwae_bound"),
    (lambda m, x: is_nll(m, x, k=5), "is_nll"),
])
def test_bounds_on_an_autoencoder_raise_config_error(call, name):
    with pytest.raises(ConfigError) as err:
        call(_tiny("ae"), _binary(2))
    assert str(err.value) == AE_MESSAGE.format(name)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x: mc_kl(torch.zeros(1, 2), torch.zeros(1, 2), 1),
     "n_samples=1 is invalid; it must be an integer >= 2."),
    (lambda m, x: elbo_terms(m, x, n_samples=0), "n_samples=0 is invalid; it must be an integer >= 1."),
    (lambda m, x: iwae_bound(m, x, 0), "k=0 is invalid; it must be an integer >= 1."),
    (lambda m, x: iwae_bound(m, x, 3, chunk_size=0), "chunk_size=0 is invalid; it must be an integer >= 1."),
    (lambda m, x: is_nll(m, x, k=3, batch_size=0), "batch_size=0 is invalid; it must be an integer >= 1."),
    (lambda m, x: kl_warmup(0.5, -1.0), "warmup_epochs=-1.0 is invalid; it must be a number >= 0."),
])
def test_invalid_arguments_raise_config_error_naming_the_parameter(call, message):
    with pytest.raises(ConfigError) as err:
        call(_tiny(), _binary(2))
    assert str(err.value) == message
