"""Issue 14's latent-space measurement fixes, each with the behaviour that the old measure got wrong:
one MMD kernel for every model (fixed by the prior), a path metric that ranks a pixel cross-fade as less
realistic than a path through real images, and a collapse criterion that ignores the code's scale."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import spy_on_mmd
from torch import nn

from aestudy import latent, metrics
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig, Posterior, build_model

# --- (1) one MMD kernel for every model ------------------------------------------------------------------


def test_prior_bandwidths_are_the_prior_distance_scale():
    h = math.sqrt(2 * 16)
    assert metrics.prior_bandwidths(16) == pytest.approx((h / 2, h, 2 * h))
    z = torch.randn((4000, 16), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # ‖a − b‖² of two prior draws has mean 2D: the middle bandwidth is the root of that mean
    assert float((z[::2] - z[1::2]).pow(2).sum(1).mean()) == pytest.approx(h**2, rel=0.03)
    with pytest.raises(ConfigError, match="dim"):
        metrics.prior_bandwidths(0)


def test_the_default_kernel_follows_the_sample_so_fixed_bandwidths_are_needed_to_compare():
    gen = torch.Generator().manual_seed(1)
    prior = torch.randn((300, 4), generator=gen, dtype=torch.float64)
    wide = 10 * torch.randn((300, 4), generator=gen, dtype=torch.float64)
    # the old statistic: the pooled median grows with the codes' scale, so a wide code is measured with a
    # wider kernel than a matched one — two different statistics
    pooled = torch.cat([wide[:500], prior[:500]])
    assert float(torch.pdist(pooled).median()) > 3 * math.sqrt(8)


def test_mmd_to_prior_uses_the_prior_kernel_whatever_the_codes_scale(monkeypatch):
    seen = spy_on_mmd(latent, monkeypatch)
    gen = torch.Generator().manual_seed(0)
    matched = torch.randn((400, 3), generator=gen)
    scaled = 50 * torch.randn((400, 3), generator=gen)  # an AE's code of arbitrary scale
    near = latent.mmd_to_prior(matched, generator=torch.Generator().manual_seed(1))
    far = latent.mmd_to_prior(scaled, generator=torch.Generator().manual_seed(1))
    assert seen == [metrics.prior_bandwidths(3)] * 2
    assert abs(near) < 0.01 < far
    with pytest.raises(ConfigError, match="mmd_to_prior needs codes"):
        latent.mmd_to_prior(torch.zeros(1, 3))


# --- (2) a path metric that a pixel cross-fade cannot win ------------------------------------------------

SIDE = 16


def _blob(position: float) -> torch.Tensor:
    """A 1×16×16 image of a Gaussian blob centred at column `position` (a 1-D manifold of 'real' images)."""
    cols = torch.arange(SIDE, dtype=torch.float64)
    row = torch.exp(-0.5 * ((cols - position) / 1.2) ** 2)
    return (torch.exp(-0.5 * ((cols[:, None] - SIDE / 2) / 1.2) ** 2) * row[None, :])[None]


def test_a_pixel_cross_fade_is_off_the_manifold_while_a_real_interpolation_is_on_it():
    reference = torch.stack([_blob(p) for p in torch.arange(2.0, 14.01, 0.25)]).flatten(1)  # real images
    held_out = torch.stack([_blob(p + 0.125) for p in torch.arange(2.0, 13.9, 0.5)]).flatten(1)
    scale = latent.reference_scale(reference, held_out)
    steps = 10
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    a, b = 3.0, 12.0
    moving = torch.stack([_blob(float((1 - s) * a + s * b)) for s in t])[None]  # the blob travels: realistic
    fade = ((1 - t)[:, None, None, None] * _blob(a) + t[:, None, None, None] * _blob(b))[None]  # ghosting
    off_moving = latent.off_manifold_distance(moving.flatten(2), reference, scale=scale)
    off_fade = latent.off_manifold_distance(fade.flatten(2), reference, scale=scale)
    assert off_moving < 1.5 < 5 < off_fade  # the real path stays as close to the data as real images are

    # The old metric (pixel roughness, second differences) ranks them the other way round: a cross-fade is
    # linear in pixels and scores its best value, 0.
    def roughness(path):
        second = path[:, 2:] - 2 * path[:, 1:-1] + path[:, :-2]
        return float(second.pow(2).flatten(2).sum(2).mean() / (path[:, -1] - path[:, 0]).pow(2).sum())

    assert roughness(fade) < 1e-12 < 0.01 < roughness(moving)


class _PathModel(nn.Module):
    """A 1-D code (the blob's position); decoding draws the blob there: its latent paths are real interpolations."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def encode(self, x, y=None):
        cols = torch.arange(SIDE, dtype=x.dtype)
        mass = x.sum(dim=(1, 2))  # (N, W): column profile
        return Posterior(mu=((mass * cols).sum(1) / mass.sum(1))[:, None])

    def decode_mean(self, z):
        return torch.stack([_blob(float(p)) for p in z[:, 0]]).float()


def test_path_off_manifold_decodes_the_models_paths_in_the_given_features():
    reference = torch.stack([_blob(p) for p in torch.arange(2.0, 14.01, 0.25)]).flatten(1).float()
    x_a = torch.stack([_blob(3.0), _blob(4.0)]).float()
    x_b = torch.stack([_blob(12.0), _blob(10.0)]).float()
    score = latent.path_off_manifold(_PathModel(), lambda images: images.flatten(1), x_a, x_b, reference,
                                     scale=0.1, steps=6)
    assert 0 <= score < 1.0
    with pytest.raises(ConfigError, match="scale"):
        latent.off_manifold_distance(torch.zeros(1, 4, 3), torch.zeros(2, 3), scale=0.0)


# --- (7) a collapse criterion that ignores the code's scale ---------------------------------------------

def _ae(scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="ae", arch="mlp", latent_dim=4, hidden=(16,), input_shape=(1, 8, 8)))
    with torch.no_grad():  # shrink the code: the decoder could undo it exactly, so nothing the AE computes changes
        model.encoder.head.weight.mul_(scale)
        model.encoder.head.bias.mul_(scale)
    return model.eval()


def test_relative_active_units_do_not_depend_on_the_codes_scale():
    x = torch.rand((200, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    big, small = _ae(1.0), _ae(1e-3)
    assert latent.relative_active_units(big, x) == latent.relative_active_units(small, x) == 4
    torch.testing.assert_close(latent.relative_activity(big, x), latent.relative_activity(small, x), rtol=1e-3,
                               atol=1e-6)
    # the old criterion, Burda's absolute 0.01, calls the shrunk code collapsed
    assert metrics.active_units(small, x)[0] == 0


def test_relative_activity_is_burdas_criterion_for_a_prior_scaled_code():
    class _Codes(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def encode(self, x, y=None):
            g = torch.Generator().manual_seed(0)
            z = torch.randn((x.shape[0], 3), generator=g) * torch.tensor([1.0, 0.5, 0.01])
            return Posterior(mu=z, logvar=torch.zeros_like(z))

    x = torch.zeros(4000, 1, 2, 2)
    rel = latent.relative_activity(_Codes(), x)
    assert rel[0] == 1 and rel[1] == pytest.approx(0.25, rel=0.1) and rel[2] < 0.01
    assert latent.relative_active_units(_Codes(), x) == 2 == metrics.active_units(_Codes(), x)[0]
