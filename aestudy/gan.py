"""A small DCGAN (Goodfellow et al. 2014; Radford et al. 2016) to set VAE samples beside: "blurrier than a GAN's?".

Architecture (DCGAN's recipe at small scale): the generator maps z ~ N(0, I) through a linear layer to a
(w·2^(n−1), s, s) map and n stride-2 transposed convolutions (kernel 4) up to (C, H, W), batch norm + ReLU
between and tanh at the end; the discriminator mirrors it with n stride-2 convolutions (kernel 4), LeakyReLU
(0.2), batch norm on all but the first, and a linear layer to one logit. n is the number of halvings that
takes the side to at most 8 (28 → 7: n = 2; 32 → 8: n = 2; 64 → 8: n = 3). Images are scaled from [0, 1] to
[−1, 1] for training; `sample` returns [0, 1].

Training: the non-saturating losses of Goodfellow et al. (2014, §3): d_loss = −log D(x) − log(1 − D(G(z))),
g_loss = −log D(G(z)), one D step then one G step per batch, Adam (lr 2e-4, β1 = 0.5) for both, as in DCGAN.
`fit_gan` loads or trains through `aestudy.cache` (the key covers config, data fingerprint and aestudy version;
device and progress are not in it). A non-finite loss raises TrainingDivergedError and nothing is cached.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import aestudy
from aestudy import cache
from aestudy.config import DEVICES, resolve_device
from aestudy.errors import CheckpointError, DataError, TrainingDivergedError
from aestudy.progress import progress as progress_bar
from aestudy.validate import as_bool, as_float, as_int, require

ARCH_VERSION = 1  # bump when the architecture or the training recipe changes (old checkpoints are not reused)
MAX_START_SIDE = 8
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds", "samples_per_s")
NOT_IN_KEY: tuple[str, ...] = ("device", "progress")


@dataclass(frozen=True)
class GANConfig:
    """How to build and train the GAN; validated at construction (ConfigError names the field and the fix).

    latent_dim: size of z; width: channels of the last hidden layer (doubling towards the coarse end);
    epochs, batch_size: passes over the training split and images per step; lr, beta1, beta2: Adam's (DCGAN:
    2e-4, 0.5, 0.999); seed: weights, batch order and noise; device: "auto", "cpu", "cuda"(:k); progress: a bar.
    """

    latent_dim: int = 64
    width: int = 32
    epochs: int = 2  # 2 passes over Fashion-MNIST's 55k: ~92 s on one thread of the project's CPU
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("latent_dim", "width", "batch_size"):
            object.__setattr__(self, name, as_int(getattr(self, name), name, low=1))
        object.__setattr__(self, "epochs", as_int(self.epochs, "epochs", low=0))
        object.__setattr__(self, "seed", as_int(self.seed, "seed", low=0))
        object.__setattr__(self, "lr", as_float(self.lr, "lr", low=0.0, low_open=True))
        for name in ("beta1", "beta2"):
            object.__setattr__(self, name, as_float(getattr(self, name), name, low=0.0, high=1.0, high_open=True))
        require(self.device in DEVICES or str(self.device).startswith("cuda:"), "device", self.device,
                f"valid values: {', '.join(DEVICES)}")
        object.__setattr__(self, "progress", as_bool(self.progress, "progress"))

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (all but device and progress)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_IN_KEY}


def num_halvings(side: int) -> int:
    """Stride-2 stages between a side of at most 8 and `side` (28 → 2, 32 → 2, 64 → 3, 16 → 1).

    Raises ConfigError when no stage fits (an odd side above 8, or a side of 8 or less).
    """
    n = 0
    while side % 2 ** (n + 1) == 0 and side // 2 ** n > MAX_START_SIDE:
        n += 1
    require(n >= 1 and side // 2 ** n <= MAX_START_SIDE, "image side", side,
            "the GAN needs a square image whose side halves (evenly) to at most 8, e.g. 16, 28, 32 or 64")
    return n


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    require(len(shape) == 3 and shape[1] == shape[2], "image shape", tuple(shape),
            "the GAN needs square (C, H, W) images with H == W")
    num_halvings(int(shape[1]))
    return int(shape[0]), int(shape[1]), int(shape[2])


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W): linear → n × [BN, ReLU, ConvT 4/2] → tanh (training scale)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        c, side, _ = _check_shape(image_shape)
        n = num_halvings(side)
        self.image_shape, self.latent_dim = (c, side, side), latent_dim
        chans = [width * 2 ** (n - 1 - i) for i in range(n)] + [c]  # e.g. w=32, n=2: 64, 32, C
        self.start = (chans[0], side // 2 ** n, side // 2 ** n)
        self.project = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = []
        for i in range(n):  # each stage doubles the side: e.g. 7x7 -> 14x14 -> 28x28
            layers += [nn.BatchNorm2d(chans[i]), nn.ReLU(), nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1)]
        self.upsample = nn.Sequential(*layers, nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        """Images in [−1, 1], (B, C, H, W)."""
        return self.upsample(self.project(z).view(z.shape[0], *self.start))

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n images in [0, 1], (n, C, H, W), from z ~ N(0, I) (eval mode: batch norm's running statistics)."""
        n = as_int(n, "n", low=0)
        was_training = self.training
        self.eval()
        device = self.project.weight.device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        images = (self(z) + 1) / 2
        self.train(was_training)
        return images.clamp_(0.0, 1.0)


class Discriminator(nn.Module):
    """images (B, C, H, W) in [−1, 1] -> one logit (B,): n × [Conv 4/2, (BN), LeakyReLU 0.2] → linear."""

    def __init__(self, image_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c, side, _ = _check_shape(image_shape)
        n = num_halvings(side)
        chans = [c] + [width * 2 ** i for i in range(n)]  # e.g. C, 32, 64
        layers: list[nn.Module] = []
        for i in range(n):  # each stage halves the side: e.g. 28x28 -> 14x14 -> 7x7
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1))
            if i > 0:  # DCGAN: no batch norm on the discriminator's input layer
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(chans[-1] * (side // 2 ** n) ** 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of "real", (B,)."""
        return self.head(self.features(x)).squeeze(1)


@dataclass
class GANResult:
    """A trained (or loaded) GAN: both networks (eval mode), per-epoch history, cache key, wall time of the call."""

    generator: Generator
    discriminator: Discriminator
    history: pd.DataFrame
    key: str
    from_cache: bool
    seconds: float
    config: GANConfig

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n generated images in [0, 1], (n, C, H, W)."""
        return self.generator.sample(n, generator=generator)


def _build(image_shape: tuple[int, int, int], cfg: GANConfig) -> tuple[Generator, Discriminator]:
    """Both networks with weights from `cfg.seed` (the caller's global RNG state is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Generator(image_shape, cfg.latent_dim, cfg.width), Discriminator(image_shape, cfg.width)


def _adam(module: nn.Module, cfg: GANConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _diverged(epoch: int, step: int, steps: int, d_loss: float, g_loss: float, cfg: GANConfig) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"GAN training diverged at epoch {epoch}, step {step} of {steps}: d_loss = {d_loss}, g_loss = {g_loss}. "
        f"Nothing was cached. Try a lower learning rate (e.g. lr={cfg.lr / 10:g}, now lr={cfg.lr:g}) or another seed.")


def _gan_step(gen: Generator, disc: Discriminator, opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
              real: Tensor, cfg: GANConfig, noise: torch.Generator) -> Tensor:
    """One D step and one G step on a batch (images in [−1, 1]); returns [d_loss, g_loss, D(x), D(G(z))] (4,)."""
    opt_d, opt_g = opts
    b = real.shape[0]
    z = torch.randn((b, cfg.latent_dim), generator=noise, device=real.device)
    fake = gen(z)
    real_logit, fake_logit = disc(real), disc(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
              + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    gen_logit = disc(fake)  # the updated D judges the same fakes; the non-saturating loss −log D(G(z))
    g_loss = F.binary_cross_entropy_with_logits(gen_logit, torch.ones_like(gen_logit))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return torch.stack([d_loss.detach(), g_loss.detach(), torch.sigmoid(real_logit.detach()).mean(),
                        torch.sigmoid(fake_logit.detach()).mean()])


def _train(gen: Generator, disc: Discriminator, images: Tensor, cfg: GANConfig) -> pd.DataFrame:
    """The epoch loop over seeded permutations; raises TrainingDivergedError on a non-finite loss."""
    device = gen.project.weight.device
    x_all = images.to(device) * 2 - 1  # [0, 1] -> [−1, 1], tanh's range
    order_rng = torch.Generator(device=device).manual_seed(cfg.seed)
    noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    opts = (_adam(disc, cfg), _adam(gen, cfg))
    n, rows = x_all.shape[0], []
    steps = math.ceil(n / cfg.batch_size)
    gen.train()
    disc.train()
    bar = progress_bar(range(1, cfg.epochs + 1), desc="GAN", unit="epoch", enabled=cfg.progress)
    for epoch in bar:
        start = time.perf_counter()
        order = torch.randperm(n, generator=order_rng, device=device)
        stats = torch.stack([_gan_step(gen, disc, opts, x_all[idx], cfg, noise)
                             for idx in order.split(cfg.batch_size)]).cpu()  # (steps, 4)
        bad = (~torch.isfinite(stats[:, :2]).all(dim=1)).nonzero()
        if len(bad):
            step = int(bad[0, 0])
            raise _diverged(epoch, step + 1, steps, float(stats[step, 0]), float(stats[step, 1]), cfg)
        sizes = torch.tensor([len(idx) for idx in order.split(cfg.batch_size)], dtype=torch.float64)
        means = (stats.double() * sizes[:, None]).sum(dim=0) / n
        seconds = time.perf_counter() - start
        rows.append([epoch, *means.tolist(), seconds, n / seconds])
        bar.set_postfix(d_loss=f"{rows[-1][1]:.3f}", g_loss=f"{rows[-1][2]:.3f}", refresh=False)
    gen.eval()
    disc.eval()
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def gan_key(cfg: GANConfig, data: Any) -> str:
    """Cache key: "gan-" + SHA-256 of the config's learning fields, data fingerprint and aestudy version."""
    payload = {"what": "gan", "arch_version": ARCH_VERSION, "config": cfg.key_fields(),
               "data": data.fingerprint, "version": aestudy.__version__}
    return "gan-" + cache.hash_key(payload)


def _load(record: dict[str, Any], path: Any, key: str, image_shape: tuple[int, int, int], cfg: GANConfig,
          device: torch.device, start: float) -> GANResult:
    """The generator and discriminator from a verified checkpoint record, on `device`, in eval mode."""
    gen, disc = _build(image_shape, cfg)
    state = record["state_dict"]
    try:
        gen.load_state_dict({k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")})
        disc.load_state_dict({k[len("discriminator."):]: v for k, v in state.items()
                              if k.startswith("discriminator.")})
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match {cfg} for images {image_shape}: {err}") from err
    return GANResult(gen.to(device).eval(), disc.to(device).eval(), record["history"], key, True,
                     time.perf_counter() - start, cfg)


def fit_gan(cfg: GANConfig, data: Any, *, cache_dir: Any = None) -> GANResult:
    """Load the cached GAN for (cfg, data, aestudy version), or train it on `data.train.images` and cache it.

    data: an `aestudy.data.Dataset` (images (N, C, H, W) in [0, 1], square, side halving to ≤ 8: 16, 28, 32, 64).
    Same seed → same weights, history and samples on CPU. History columns: epoch, d_loss, g_loss (per-image
    means over the epoch, nats), d_real, d_fake (mean D(x) and D(G(z)) before the D step, in [0, 1]), seconds,
    samples_per_s. Raises ConfigError for an unsupported image shape (before training), DataError for an
    empty training split, TrainingDivergedError on a NaN/inf loss (nothing cached). A corrupted checkpoint is
    reported (warning), deleted and retrained. Source: Goodfellow et al. 2014; Radford et al. 2016.
    """
    require(isinstance(cfg, GANConfig), "cfg", type(cfg).__name__, "it must be an aestudy.gan.GANConfig")
    images = data.train.images
    image_shape = _check_shape(tuple(images.shape[1:]))
    if images.shape[0] == 0 and cfg.epochs > 0:
        raise DataError(f"the training split of {data.info.name!r} is empty; nothing to train the GAN on.")
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    key = gan_key(cfg, data)

    def build() -> tuple[GANResult, cache.Checkpoint]:
        gen, disc = _build(image_shape, cfg)
        gen, disc = gen.to(device), disc.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            history = _train(gen, disc, images, cfg)
        state = {**{f"generator.{k}": v for k, v in gen.state_dict().items()},
                 **{f"discriminator.{k}": v for k, v in disc.state_dict().items()}}
        config = {"gan": asdict(cfg), "image_shape": list(image_shape), "data": data.fingerprint}
        result = GANResult(gen, disc, history, key, False, time.perf_counter() - start, cfg)
        return result, cache.Checkpoint(state, config, history)

    result, _ = cache.load_or_build(key, load=lambda record, path: _load(record, path, key, image_shape, cfg, device,
                                                                         start),
                                    build=build, what="the GAN", cache_dir=cache_dir)
    return result

