"""AE and VAE from shared encoder/decoder builders (linear, MLP, conv); they differ only in the bottleneck head.

An encoder is features -> [concat one-hot label] -> trunk -> head. The head is one `nn.Linear` with
`latent_dim` outputs for the AE (the code z) and `2 * latent_dim` for the VAE (mean and log-variance),
so for the same config the VAE has exactly `(head_in + 1) * latent_dim` more parameters.
A decoder is [concat one-hot label to z] -> trunk -> (conv: reshape + transposed convs) -> raw output,
which the likelihood's `param` maps to logits (Bernoulli, continuous Bernoulli) or the mean (Gaussian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aestudy.errors import ConfigError
from aestudy.likelihoods import LIKELIHOOD_NAMES, Likelihood, build_likelihood
from aestudy.validate import as_int, is_int, is_number, require

KINDS: tuple[str, ...] = ("ae", "vae")
ARCHS: tuple[str, ...] = ("linear", "mlp", "conv")

# The VAE's q(z|x) has its log-variance in this range, so a runaway encoder gives a large-but-finite loss instead of
# inf/NaN (e^-30 ≈ 1e-13, e^20 ≈ 5e8). `VAE.encode` returns it already clamped: the clamp is part of the model, and
# every reader of `Posterior.logvar` (sampling, KL, the closed-form pPCA bounds, latent statistics) must see the q
# that is sampled and scored. A raw value read elsewhere is another distribution: on 32×32 RGB crops a linear
# encoder gave −72, and the closed-form ELBO of that q sat 55 nats below the model's own (issue 17).
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def clamp_logvar(logvar: Tensor) -> Tensor:
    """log-variance clamped to [LOGVAR_MIN, LOGVAR_MAX]; idempotent, so applying it twice changes nothing."""
    return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def _int_tuple(value: object) -> tuple[int, ...] | None:
    """`value` (a tuple or list of integers >= 1, numpy integers included) as a tuple of plain ints, else None."""
    if not isinstance(value, (tuple, list)) or not all(is_int(v) and v >= 1 for v in value):
        return None
    return tuple(int(v) for v in value)


def _plain_str(value: object) -> object:
    """A str subclass (e.g. numpy.str_) as a plain str; anything else unchanged."""
    return str(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class ModelConfig:
    """An AE/VAE architecture, validated at construction.

    `hidden` (MLP layer widths) is used by arch="mlp" only and `channels` (conv channels, each conv halving
    the image side) by arch="conv" only; the unused one is stored as () so that equal models have equal
    configs (and cache keys). Lists are accepted and stored as tuples (configs round-trip through JSON).
    `sigma` is the Gaussian likelihood's fixed σ (None = learned); it must be None for other likelihoods.
    """

    kind: str = "vae"
    arch: str = "mlp"
    input_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"
    sigma: float | None = None
    num_classes: int = 0
    channels: tuple[int, ...] = (32, 64)

    def __post_init__(self) -> None:
        # Values are stored as plain Python values (numpy scalars converted): configs are hashed into cache keys
        # and stored in checkpoints that torch.load(weights_only=True) must read back.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name, choices in (("kind", KINDS), ("arch", ARCHS), ("likelihood", LIKELIHOOD_NAMES)):
            value = _plain_str(getattr(self, name))
            require(value in choices, name, value, f"valid values: {', '.join(choices)}")
            put(name, value)
        shape = _int_tuple(self.input_shape)
        require(shape is not None and len(shape) == 3, "input_shape", self.input_shape,
                "it must be (C, H, W), three integers >= 1")
        put("input_shape", shape)
        put("latent_dim", as_int(self.latent_dim, "latent_dim", low=1))
        for name, arch, what in (("hidden", "mlp", "layer widths"), ("channels", "conv", "conv channels")):
            widths = _int_tuple(getattr(self, name))
            require(widths is not None and (self.arch != arch or len(widths) >= 1), name, getattr(self, name),
                    f"it must be a non-empty tuple of integers >= 1 ({what}) for arch={arch!r}")
            # the unused one is stored as () so that equal models have equal configs (and cache keys)
            put(name, widths if self.arch == arch else ())
        require(self.sigma is None or (is_number(self.sigma) and self.sigma > 0 and self.likelihood == "gaussian"),
                "sigma", self.sigma, "it must be None (learned) or a number > 0, and only with likelihood='gaussian'")
        put("sigma", None if self.sigma is None else float(self.sigma))
        require(is_int(self.num_classes) and self.num_classes >= 0, "num_classes", self.num_classes,
                "it must be an integer >= 0 (0 = unconditional)")
        put("num_classes", int(self.num_classes))

    @property
    def num_pixels(self) -> int:
        """C * H * W."""
        return math.prod(self.input_shape)


@dataclass
class Posterior:
    """q(z|x) = N(mu, diag(e^logvar)); logvar None is the AE's point mass at mu."""

    mu: Tensor  # (B, D)
    logvar: Tensor | None = None  # (B, D), in [LOGVAR_MIN, LOGVAR_MAX] when it comes from `VAE.encode`

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised draw z = mu + σ ε (the AE returns mu)."""
        if self.logvar is None:
            return self.mu
        if generator is None:  # randn_like draws the same values and traces under torch.compile(dynamic=True)
            eps = torch.randn_like(self.mu)
        else:
            eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + torch.exp(0.5 * clamp_logvar(self.logvar)) * eps


def _conv_sides(side: int, n: int) -> list[int]:
    """Image side after each of n stride-2 convs (kernel 3, padding 1): s -> ceil(s / 2)."""
    sides = [side]
    for _ in range(n):
        sides.append((sides[-1] + 1) // 2)
    return sides


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers between consecutive widths, ReLU after each."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x (B, C, H, W) [+ one-hot y] -> (B, out_features)."""

    def __init__(self, cfg: ModelConfig, out_features: int) -> None:
        super().__init__()
        c, h, w = cfg.input_shape
        if cfg.arch == "conv":
            chans = [c, *cfg.channels]
            hs, ws = _conv_sides(h, len(cfg.channels)), _conv_sides(w, len(cfg.channels))
            layers: list[nn.Module] = []
            for i in range(len(cfg.channels)):  # e.g. 28x28 => 14x14 => 7x7
                layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.ReLU()]
            self.features = nn.Sequential(*layers, nn.Flatten())  # (B, C_last * h * w)
            feat = chans[-1] * hs[-1] * ws[-1]
            self.trunk: nn.Module = nn.Identity()
            head_in = feat + cfg.num_classes
        else:
            self.features = nn.Flatten()  # (B, C*H*W)
            widths = [cfg.num_pixels + cfg.num_classes, *cfg.hidden]
            self.trunk = _mlp(widths)  # empty for arch="linear"
            head_in = widths[-1]
        self.head = nn.Linear(head_in, out_features)

    def forward(self, x: Tensor, y_onehot: Tensor | None = None) -> Tensor:
        """Encoder output before it is split into the bottleneck's parts."""
        h = self.features(x)
        if y_onehot is not None:
            h = torch.cat([h, y_onehot], dim=1)
        return self.head(self.trunk(h))


class Decoder(nn.Module):
    """z (B, D) [+ one-hot y] -> raw output (B, C, H, W), before the likelihood's `param`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, h, w = cfg.input_shape
        self.input_shape = cfg.input_shape
        z_in = cfg.latent_dim + cfg.num_classes
        if cfg.arch == "conv":
            n = len(cfg.channels)
            hs, ws = _conv_sides(h, n), _conv_sides(w, n)
            chans = [c, *cfg.channels]
            self.start = (chans[-1], hs[-1], ws[-1])
            self.trunk = nn.Sequential(nn.Linear(z_in, math.prod(self.start)), nn.ReLU())
            layers: list[nn.Module] = []
            for i in reversed(range(n)):  # e.g. 7x7 => 14x14 => 28x28; output_padding hits odd/even sides
                pad = (hs[i] - (2 * hs[i + 1] - 1), ws[i] - (2 * ws[i + 1] - 1))
                layers.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 3, stride=2, padding=1,
                                                 output_padding=pad))
                if i > 0:
                    layers.append(nn.ReLU())
            self.upsample: nn.Module = nn.Sequential(*layers)
        else:
            widths = [z_in, *reversed(cfg.hidden)]
            self.trunk = nn.Sequential(_mlp(widths), nn.Linear(widths[-1], cfg.num_pixels))
            self.start = cfg.input_shape
            self.upsample = nn.Identity()

    def forward(self, z: Tensor, y_onehot: Tensor | None = None) -> Tensor:
        """Raw decoder output shaped like the images."""
        if y_onehot is not None:
            z = torch.cat([z, y_onehot], dim=1)
        h = self.trunk(z).view(z.shape[0], *self.start)
        return self.upsample(h)


class _Autoencoder(nn.Module):
    """Shared body of AE and VAE: encoder, decoder, likelihood, label handling, decode/reconstruct/sample."""

    is_variational: bool = False

    def __init__(self, cfg: ModelConfig, head_outputs: int) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, head_outputs)
        self.decoder = Decoder(cfg)
        # The linear model keeps an unsquashed Gaussian mean so that it is exactly probabilistic PCA.
        self.likelihood: Likelihood = build_likelihood(cfg.likelihood, sigma=cfg.sigma,
                                                       squash=cfg.arch != "linear")

    def _onehot(self, y: Tensor | None, n: int) -> Tensor | None:
        """One-hot labels (B, num_classes), checking that labels are given iff the model is conditional."""
        k = self.config.num_classes
        if k == 0:
            if y is not None:
                raise ConfigError("y was given but the model is unconditional (num_classes=0); pass y=None.")
            return None
        if y is None:
            raise ConfigError(f"y is required: the model is class-conditional (num_classes={k}); "
                              "pass integer labels of shape (n,).")
        if y.shape != (n,):
            raise ConfigError(f"y has shape {tuple(y.shape)}; it must be ({n},) integer labels in [0, {k}).")
        return F.one_hot(y.long(), k).to(self._dtype())

    def _dtype(self) -> torch.dtype:
        return self.encoder.head.weight.dtype

    def _device(self) -> torch.device:
        return self.encoder.head.weight.device

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """q(z|x) (a point mass for the AE)."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The likelihood's parameters (B, C, H, W): logits (Bernoulli, CB) or the mean (Gaussian)."""
        return self.likelihood.param(self.decoder(z, self._onehot(y, z.shape[0])))

    def decode_mean(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoder mean E[x | z] (B, C, H, W) in [0, 1] for codes z (B, D): what a code "looks like"."""
        return self.likelihood.mean(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoder mean at z = mu, an image in [0, 1] (no gradients)."""
        return self.decode_mean(self.encode(x, y).mu, y)

    @torch.no_grad()
    def sample(self, n: int, *, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Decoder means at z ~ N(0, temperature² I), images in [0, 1] (no gradients; the AE too)."""
        z = torch.randn((n, self.config.latent_dim), generator=generator, device=self._device(),
                        dtype=self._dtype())
        return self.decode_mean(temperature * z, y)


class AE(_Autoencoder):
    """Deterministic autoencoder: the head outputs the code z directly."""

    is_variational = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """Posterior(mu=z, logvar=None): a point mass at the code."""
        return Posterior(mu=self.encoder(x, self._onehot(y, x.shape[0])))


class VAE(_Autoencoder):
    """Variational autoencoder: the head outputs mean and log-variance of a diagonal Gaussian q(z|x)."""

    is_variational = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, 2 * cfg.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """Posterior(mu, logvar), each (B, latent_dim); logvar clamped to [LOGVAR_MIN, LOGVAR_MAX].

        The clamp is part of the model's q(z|x): sampling and the KL always used the clamped value (the loss and
        its gradient are unchanged by clamping here), and returning it makes every reader agree with them.
        """
        mu, logvar = self.encoder(x, self._onehot(y, x.shape[0])).chunk(2, dim=1)
        return Posterior(mu=mu, logvar=clamp_logvar(logvar))


def build_model(cfg: ModelConfig) -> AE | VAE:
    """The AE or VAE that `cfg` describes."""
    return VAE(cfg) if cfg.kind == "vae" else AE(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (including a learned Gaussian log σ)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
