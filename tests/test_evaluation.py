"""Measurements leave the caller's model as they found it: train/eval mode, device, weights, gradient flags.

Every measurement runs through `aestudy.evaluation` (eval mode and no gradients inside, the previous mode
restored after), so a notebook can measure a model in the middle of training it, or measure it twice, and get
the same model back. Each public measurement is called here on models left in *train* mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aestudy import anomaly, denoising, evaluation, generation, latent, metrics
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig
from aestudy.ppca import linear_vae_bounds
from aestudy.series import applications as s04
from aestudy.series import comparison as s03
from aestudy.series import elbo as s02
from aestudy.train import TrainConfig

SHAPE = (1, 8, 8)


class _Classifier(nn.Module):
    """A stand-in domain classifier: confidence grows with mean brightness."""

    def predict_proba(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        p = images.flatten(1).mean(dim=1, keepdim=True).clamp(0.01, 0.99)
        return torch.cat([p, 1 - p], dim=1)


def _model(kind: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, arch="mlp", latent_dim=3, hidden=(16,), input_shape=SHAPE, **kw)
    return build_model(cfg).train()  # the caller's state: training


def _images(n: int = 24) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def _state(model: nn.Module) -> tuple:
    return (model.training, [m.training for m in model.modules()], next(model.parameters()).device,
            [(p.requires_grad, p.detach().clone()) for p in model.parameters()])


x = _images()
MEASUREMENTS = {
    "reconstruction_metrics": lambda ae, vae: metrics.reconstruction_metrics(ae, x),
    "elbo_per_image": lambda ae, vae: metrics.elbo_per_image(vae, x.bernoulli()),
    "evaluate_elbo": lambda ae, vae: metrics.evaluate_elbo(vae, x),
    "evaluate_is_nll": lambda ae, vae: metrics.evaluate_is_nll(vae, x[:4], k=8),
    "kl_per_dim": lambda ae, vae: metrics.kl_per_dim(vae, x),
    "active_units": lambda ae, vae: metrics.active_units(ae, x),
    "encode_means": lambda ae, vae: evaluation.encode_means(vae, x),
    "reconstruct": lambda ae, vae: evaluation.reconstruct(ae, x),
    "aggregate_posterior_sample": lambda ae, vae: latent.aggregate_posterior_sample(vae, x),
    "latent_path_images": lambda ae, vae: latent.latent_path_images(ae, x[0], x[1], steps=4),
    "interpolation_smoothness": lambda ae, vae: latent.interpolation_smoothness(vae, x[:3], x[3:6], steps=4),
    "path_realism": lambda ae, vae: latent.path_realism(ae, _Classifier(), x[:3], x[3:6], steps=4),
    "prior_holes": lambda ae, vae: latent.prior_holes(vae, _Classifier(), n=10),
    "posterior_variance": lambda ae, vae: latent.posterior_variance(vae, x),
    "anomaly_scores recon": lambda ae, vae: anomaly.anomaly_scores(ae, x, score="recon"),
    "anomaly_scores is_nll": lambda ae, vae: anomaly.anomaly_scores(vae, x[:4], score="is_nll", k=8),
    "neg_elbo": lambda ae, vae: anomaly.neg_elbo(vae, x),
    "likelihood_ratio": lambda ae, vae: anomaly.likelihood_ratio(vae, _model("vae"), x[:4], k=4),
    "decoder_fn": lambda ae, vae: generation.decoder_fn(ae)(torch.randn(5, 3)),
    "generation_sources": lambda ae, vae: generation.generation_sources(ae, 6, fit_inputs=x, n_components=2),
    "denoising_table": lambda ae, vae: denoising.denoising_table({"AE": ae}, x, [NoiseConfig("gaussian", 0.1)]),
    "iwae_curve": lambda ae, vae: s02.iwae_curve(vae, x[:4], (1, 4), repeats=2),
    "gradient_variance": lambda ae, vae: s02.gradient_variance(vae, x[:1], (2,), repeats=3),
    "ae_distortion": lambda ae, vae: s02.ae_distortion(ae, x),
    "own_loss": lambda ae, vae: s03.own_loss(vae, x, TrainConfig(epochs=1, device="cpu")),
    "uncertainty_table": lambda ae, vae: s04.uncertainty_table(vae, {"test": (x, x.bernoulli())}),
    "recon_error": lambda ae, vae: anomaly.recon_error(ae, x.bernoulli(), x),
    "iwae_gap_table": lambda ae, vae: s02.iwae_gap_table(vae, x[:4], torch.zeros(4), (1, 4), repeats=2),
    "nll_protocol": lambda ae, vae: s02.nll_protocol(vae, x[:4], (1, 4)),
}


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_a_measurement_leaves_the_callers_model_as_it_was(name):
    ae, vae = _model("ae"), _model("vae")
    before = [_state(ae), _state(vae)]
    MEASUREMENTS[name](ae, vae)
    for (training, modes, device, params), model in zip(before, (ae, vae), strict=True):
        after = _state(model)
        assert after[0] is training and after[1] == modes, f"{name} changed the model's train/eval mode"
        assert after[2] == device, f"{name} moved the model to {after[2]}"
        for (grad_flag, value), (grad_after, value_after) in zip(params, after[3], strict=True):
            assert grad_flag == grad_after and torch.equal(value, value_after), f"{name} changed the weights"


def test_the_linear_vae_bounds_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", arch="linear", latent_dim=2, likelihood="gaussian", sigma=0.5,
                                    input_shape=SHAPE)).train()
    before = _state(model)
    linear_vae_bounds(model, x)
    after = _state(model)
    assert after[0] is before[0] and after[2] == before[2]


def test_evaluating_restores_the_mode_even_when_the_measurement_fails():
    model = _model("vae")
    with pytest.raises(RuntimeError, match="boom"), evaluation.evaluating(model):
        assert not model.training and not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert model.training and torch.is_grad_enabled()


def test_batched_is_batch_size_invariant_and_checks_lengths():
    model = _model("ae")
    whole = evaluation.batched(model, lambda b: model.encode(b).mu, x, batch_size=100)
    torch.testing.assert_close(evaluation.batched(model, lambda b: model.encode(b).mu, x, batch_size=7), whole)
    with pytest.raises(Exception, match="every tensor needs one length"):
        evaluation.batched(model, lambda a, b: a, x, x[:3])


def test_a_part_frozen_in_eval_mode_stays_frozen():
    model = _model("vae")
    model.likelihood.eval()  # the caller froze one part (as one freezes a BatchNorm)
    metrics.reconstruction_metrics(model, x)
    assert model.training and not model.likelihood.training and model.encoder.training
