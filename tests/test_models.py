"""AE and VAE: shared backbones differing only in the head, exact parameter counts, shapes, conditioning, config."""

from __future__ import annotations

import pytest
import torch

from aestudy.errors import ConfigError
from aestudy.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood, GaussianLikelihood
from aestudy.models import (
    AE,
    VAE,
    ModelConfig,
    Posterior,
    build_model,
    count_parameters,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int) -> int:
    return c_in * c_out * 9 + c_out  # 3x3 kernels


MLP_TRUNKS = _linear(784, 512) + _linear(512, 256) + _linear(16, 256) + _linear(256, 512) + _linear(512, 784)


def test_default_mlp_parameter_counts_match_the_formula():
    ae, vae = build_model(ModelConfig(kind="ae")), build_model(ModelConfig(kind="vae"))
    assert isinstance(ae, AE) and isinstance(vae, VAE)
    assert count_parameters(ae) == MLP_TRUNKS + _linear(256, 16) == 1_075_488
    assert count_parameters(vae) == MLP_TRUNKS + _linear(256, 32) == 1_079_600
    assert count_parameters(vae) - count_parameters(ae) == 256 * 16 + 16


def test_conv_and_linear_parameter_counts_match_the_formula():
    conv_body = _conv(1, 32) + _conv(32, 64) + _linear(16, 64 * 7 * 7) + _conv(64, 32) + _conv(32, 1)
    assert count_parameters(build_model(ModelConfig(kind="ae", arch="conv"))) == conv_body + _linear(3136, 16)
    assert count_parameters(build_model(ModelConfig(kind="vae", arch="conv"))) == conv_body + _linear(3136, 32)
    assert count_parameters(build_model(ModelConfig(kind="ae", arch="linear"))) == (
        _linear(784, 16) + _linear(16, 784))
    assert count_parameters(build_model(ModelConfig(kind="vae", arch="linear"))) == (
        _linear(784, 32) + _linear(16, 784))


def test_class_conditioning_and_learned_sigma_add_exactly_their_parameters():
    base = count_parameters(build_model(ModelConfig()))
    assert count_parameters(build_model(ModelConfig(num_classes=10))) == base + 10 * 512 + 10 * 256
    assert count_parameters(build_model(ModelConfig(likelihood="gaussian"))) == base + 1  # log σ
    assert count_parameters(build_model(ModelConfig(likelihood="gaussian", sigma=0.1))) == base


@pytest.mark.parametrize("arch", ["linear", "mlp", "conv"])
def test_ae_and_vae_share_everything_but_the_head(arch):
    ae = build_model(ModelConfig(kind="ae", arch=arch, latent_dim=5))
    vae = build_model(ModelConfig(kind="vae", arch=arch, latent_dim=5))
    ae_shapes = {k: v.shape for k, v in ae.state_dict().items()}
    vae_shapes = {k: v.shape for k, v in vae.state_dict().items()}
    assert ae_shapes.keys() == vae_shapes.keys()
    differ = {k for k in ae_shapes if ae_shapes[k] != vae_shapes[k]}
    assert differ == {"encoder.head.weight", "encoder.head.bias"}
    assert vae_shapes["encoder.head.bias"] == (10,) and ae_shapes["encoder.head.bias"] == (5,)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 7, 9), (3, 5, 6)])
@pytest.mark.parametrize("arch", ["linear", "mlp", "conv"])
def test_decoder_output_has_the_image_shape_for_any_size(arch, shape):
    model = build_model(ModelConfig(arch=arch, input_shape=shape, latent_dim=3, hidden=(20,)))
    x = torch.rand(2, *shape, generator=_gen())
    post = model.encode(x)
    assert post.mu.shape == post.logvar.shape == (2, 3)
    assert model.decode(post.mu).shape == (2, *shape)


def test_conv_encoder_halves_the_side_twice_on_28x28():
    model = build_model(ModelConfig(arch="conv"))
    h = torch.zeros(1, 1, 28, 28)
    sides = []
    for layer in model.encoder.features:
        h = layer(h)
        if h.dim() == 4:
            sides.append(tuple(h.shape[1:]))
    assert sides[0] == (32, 14, 14) and sides[-1] == (64, 7, 7)
    assert model.encoder.head.in_features == 64 * 7 * 7


def test_encode_gives_point_mass_for_ae_and_gaussian_for_vae():
    x = torch.rand(4, 1, 28, 28, generator=_gen())
    ae, vae = build_model(ModelConfig(kind="ae")), build_model(ModelConfig(kind="vae"))
    assert not ae.is_variational and vae.is_variational
    p_ae, p_vae = ae.encode(x), vae.encode(x)
    assert isinstance(p_ae, Posterior) and p_ae.logvar is None
    assert p_ae.rsample() is p_ae.mu
    assert p_vae.mu.shape == p_vae.logvar.shape == (4, 16)


def test_rsample_has_the_posterior_moments_and_carries_gradients():
    mu = torch.tensor([[1.5, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, 2 * torch.log(torch.tensor(0.5)).item()]], requires_grad=True)
    post = Posterior(mu=mu.expand(50000, 2), logvar=logvar.expand(50000, 2))
    z = post.rsample(_gen(1))
    assert torch.allclose(z.mean(0), torch.tensor([1.5, -2.0]), atol=4 * 1.0 / 50000**0.5)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.02)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    torch.testing.assert_close(post.rsample(_gen(2)), post.rsample(_gen(2)))


def test_rsample_stays_finite_for_extreme_log_variance():
    post = Posterior(mu=torch.zeros(3, 2), logvar=torch.tensor([[1e4, -1e4]] * 3))
    assert torch.isfinite(post.rsample(_gen())).all()


@pytest.mark.parametrize("raw", [-60.0, 25.0])
def test_encode_returns_the_log_variance_of_the_q_that_is_sampled_and_scored(raw):
    """Issue 17: the encoder's raw log-variance can leave [LOGVAR_MIN, LOGVAR_MAX] (−72 on RGB crops); the model
    samples and scores q(z|x) with it clamped, so `encode` must return that value, not the raw one, to every reader."""
    from aestudy.models import LOGVAR_MAX, LOGVAR_MIN
    from aestudy.objectives import gaussian_kl, loss_terms

    vae = VAE(ModelConfig(kind="vae", arch="linear", input_shape=(3, 4, 4), latent_dim=2, likelihood="gaussian",
                          sigma=0.5))
    with torch.no_grad():  # latent unit 0: a constant raw log-variance outside the range; unit 1 stays in it
        vae.encoder.head.weight[2].zero_()
        vae.encoder.head.bias[2] = raw
    x = torch.rand(20000, 3, 4, 4, generator=_gen(3))
    with torch.no_grad():
        post = vae.encode(x)
    clamped = min(max(raw, LOGVAR_MIN), LOGVAR_MAX)
    assert torch.all(post.logvar[:, 0] == clamped)
    with torch.no_grad():
        raw_out = vae.encoder(x)[:, 2:]
    assert torch.equal(post.logvar[:, 1], raw_out[:, 1])  # in range: unchanged
    # the draws have the variance exp(post.logvar) (checked on the standardised draws, so any scale works)
    z = post.rsample(_gen(4))
    ratio = float(((z[:, 0] - post.mu[:, 0]) ** 2).mean() / post.logvar[:, 0].exp().mean())
    assert abs(ratio - 1.0) < 4 * (2 / len(x)) ** 0.5
    # the KL is that q's: KL(N(μ, e^logvar) ‖ N(0, 1)) from encode's logvar, with nothing clamped a second time
    expected = 0.5 * (post.mu**2 + post.logvar.exp() - 1 - post.logvar).sum(1)
    torch.testing.assert_close(gaussian_kl(post.mu, post.logvar), expected)
    # training is unchanged (cached models stay valid): the loss and its gradients equal the β-ELBO written from the
    # raw encoder output, clamped only where exponentiated as before the fix
    batch, params = x[:64], list(vae.parameters())
    loss, _ = loss_terms(vae, batch, generator=_gen(5))
    mu, lv = vae.encoder(batch).chunk(2, dim=1)
    lv = lv.clamp(LOGVAR_MIN, LOGVAR_MAX)
    eps = torch.randn(mu.shape, generator=_gen(5))
    recon = vae.likelihood.log_prob(batch, vae.decode(mu + torch.exp(0.5 * lv) * eps))
    reference = (-recon + 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(1)).mean()
    torch.testing.assert_close(loss, reference)
    for g, g_ref in zip(torch.autograd.grad(loss, params), torch.autograd.grad(reference, params), strict=True):
        torch.testing.assert_close(g, g_ref)


def test_decode_returns_the_likelihood_parameter():
    z = torch.randn(64, 16, generator=_gen()) * 30
    bern = build_model(ModelConfig(likelihood="bernoulli"))
    gauss = build_model(ModelConfig(likelihood="gaussian"))
    assert isinstance(bern.likelihood, BernoulliLikelihood)
    assert isinstance(build_model(ModelConfig(likelihood="cbernoulli")).likelihood, ContinuousBernoulliLikelihood)
    assert isinstance(gauss.likelihood, GaussianLikelihood) and gauss.likelihood.squash
    torch.nn.init.normal_(bern.decoder.trunk[-1].weight, std=1.0)
    logits = bern.decode(z)
    assert logits.min() < 0 and logits.max() > 1  # logits, not probabilities
    mean = gauss.decode(z)
    assert mean.min() >= 0 and mean.max() <= 1  # σ(raw): a mean in [0, 1]
    linear = build_model(ModelConfig(arch="linear", likelihood="gaussian", sigma=0.5))
    assert not linear.likelihood.squash  # so the linear-Gaussian model is exactly pPCA


def test_reconstruct_is_the_decoder_mean_at_mu_without_gradients():
    model = build_model(ModelConfig(likelihood="cbernoulli", latent_dim=4, hidden=(32,)))
    x = torch.rand(3, 1, 28, 28, generator=_gen())
    rec = model.reconstruct(x)
    expected = model.likelihood.mean(model.decode(model.encode(x).mu))
    torch.testing.assert_close(rec, expected)
    assert not rec.requires_grad and rec.min() >= 0 and rec.max() <= 1


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_sample_decodes_prior_draws_scaled_by_temperature(kind):
    model = build_model(ModelConfig(kind=kind, latent_dim=4, hidden=(32,)))
    imgs = model.sample(6, generator=_gen(3))
    assert imgs.shape == (6, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1 and not imgs.requires_grad
    torch.testing.assert_close(imgs, model.sample(6, generator=_gen(3)))
    z = torch.randn((6, 4), generator=_gen(3))
    with torch.no_grad():
        torch.testing.assert_close(model.sample(6, generator=_gen(3), temperature=0.5),
                                   model.likelihood.mean(model.decode(0.5 * z)))
        cold = model.sample(6, generator=_gen(4), temperature=0.0)
        torch.testing.assert_close(cold, model.likelihood.mean(model.decode(torch.zeros(6, 4))))


@pytest.mark.parametrize("arch", ["linear", "mlp", "conv"])
def test_class_conditional_model_uses_the_label(arch):
    cfg = ModelConfig(arch=arch, num_classes=3, latent_dim=2, hidden=(16,), input_shape=(1, 8, 8))
    model = build_model(cfg)
    x = torch.rand(4, 1, 8, 8, generator=_gen())
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(model.encode(x, y0).mu, model.encode(x, y1).mu)
    z = torch.randn(4, 2, generator=_gen(1))
    assert not torch.allclose(model.decode(z, y0), model.decode(z, y1))
    assert model.sample(4, y=y1, generator=_gen(2)).shape == (4, 1, 8, 8)


def test_label_errors_are_config_errors_with_the_fix():
    cond = build_model(ModelConfig(num_classes=10, latent_dim=2, hidden=(8,)))
    plain = build_model(ModelConfig(latent_dim=2, hidden=(8,)))
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"^y is required: the model is class-conditional \(num_classes=10\); "
                                          r"pass integer labels of shape \(n,\)\.$"):
        cond.encode(x)
    with pytest.raises(ConfigError, match=r"^y was given but the model is unconditional \(num_classes=0\); "
                                          r"pass y=None\.$"):
        plain.sample(2, y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"^y has shape \(3,\); it must be \(2,\) integer labels in \[0, 10\)\.$"):
        cond.encode(x, torch.zeros(3, dtype=torch.long))


def test_config_normalises_unused_widths_and_lists():
    assert ModelConfig(arch="linear").hidden == () and ModelConfig(arch="linear").channels == ()
    assert ModelConfig(arch="mlp").channels == () and ModelConfig(arch="conv").hidden == ()
    cfg = ModelConfig(input_shape=[1, 8, 8], hidden=[64, 32])
    assert cfg.input_shape == (1, 8, 8) and cfg.hidden == (64, 32) and cfg.num_pixels == 64
    assert cfg == ModelConfig(input_shape=(1, 8, 8), hidden=(64, 32))
    with pytest.raises(AttributeError):
        cfg.latent_dim = 3  # frozen


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "gan"}, "kind='gan' is invalid; valid values: ae, vae."),
    ({"arch": "resnet"}, "arch='resnet' is invalid; valid values: linear, mlp, conv."),
    ({"input_shape": (28, 28)}, "input_shape=(28, 28) is invalid; it must be (C, H, W), three integers >= 1."),
    ({"input_shape": (1, 0, 28)}, "input_shape=(1, 0, 28) is invalid; it must be (C, H, W), three integers >= 1."),
    ({"latent_dim": 0}, "latent_dim=0 is invalid; it must be an integer >= 1."),
    ({"latent_dim": 2.0}, "latent_dim=2.0 is invalid; it must be an integer >= 1."),
    ({"hidden": ()}, "hidden=() is invalid; it must be a non-empty tuple of integers >= 1 (layer widths) "
                     "for arch='mlp'."),
    ({"hidden": (512, -1)}, "hidden=(512, -1) is invalid; it must be a non-empty tuple of integers >= 1 "
                            "(layer widths) for arch='mlp'."),
    ({"arch": "conv", "channels": ()}, "channels=() is invalid; it must be a non-empty tuple of integers >= 1 "
                                       "(conv channels) for arch='conv'."),
    ({"likelihood": "bce"}, "likelihood='bce' is invalid; valid values: bernoulli, cbernoulli, gaussian."),
    ({"likelihood": "gaussian", "sigma": 0.0}, "sigma=0.0 is invalid; it must be None (learned) or a number > 0, "
                                               "and only with likelihood='gaussian'."),
    ({"sigma": 0.1}, "sigma=0.1 is invalid; it must be None (learned) or a number > 0, "
                     "and only with likelihood='gaussian'."),
    ({"num_classes": -1}, "num_classes=-1 is invalid; it must be an integer >= 0 (0 = unconditional)."),
    ({"latent_dim": True}, "latent_dim=True is invalid; it must be an integer >= 1."),
    ({"hidden": (512, True)}, "hidden=(512, True) is invalid; it must be a non-empty tuple of integers >= 1 "
                              "(layer widths) for arch='mlp'."),
    ({"likelihood": "gaussian", "sigma": float("inf")}, "sigma=inf is invalid; it must be None (learned) or a "
                                                        "number > 0, and only with likelihood='gaussian'."),
    ({"kind": ["vae"]}, "kind=['vae'] is invalid; valid values: ae, vae."),
])
def test_invalid_config_raises_config_error_naming_parameter_and_valid_values(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**kwargs)
    assert str(err.value) == message
