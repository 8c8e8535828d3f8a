"""The training loops timed side by side, all on the same layers and the same initial weights per seed.

Every loop trains an aestudy `VAE` (so one evaluator scores them all) and returns its per-epoch wall times:
- `aestudy`: `aestudy.train.fit` with its defaults (fp32 GEMMs on oneDNN where `aestudy.precision` finds them
  exact, tensor-index batches, fused Adam, per-epoch sync);
- `aestudy_mkl`: `fit(fp32_matmul="default")`, fp32 GEMMs on torch's default path (MKL): the default before
  issue 13;
- exploration variants, each one public option of `fit` or torch: `aestudy_compile` (`compile=True`),
  `aestudy_no_mkldnn` (`torch.backends.mkldnn` off), `aestudy_threads1` (one thread). The variants that patched
  private functions of `aestudy.train` (bf16 autocast on CPU, foreach Adam, an eager ragged batch under
  compile) were measured once (README, "What was tried") and dropped: none became a default;
- `dataloader`: a pytorch/examples-style loop (DataLoader over a TensorDataset, shuffle, num_workers=0,
  sigmoid outputs with BCE summed over the batch, analytic KL, `loss.item()` every step);
- `pythae`: pythae 0.1.2's `BaseTrainer` driving its `VAE` (reconstruction_loss="bce") whose encoder and
  decoder wrap the same aestudy modules; its logs, progress bar and checkpoints go to a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from aestudy import precision
from aestudy.data import Dataset
from aestudy.models import VAE, ModelConfig, build_model
from aestudy.train import TrainConfig, fit


@dataclass(frozen=True)
class LoopSpec:
    """What every loop trains: architecture, batch size, learning rate."""

    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 128
    lr: float = 1e-3


@dataclass
class LoopRun:
    """One training run: the trained model (an aestudy VAE), its epoch wall times and final train loss."""

    loop: str
    seed: int
    model: nn.Module
    epoch_seconds: list[float]
    train_loss: float  # per-image loss of the last epoch, nats
    load1: float = float("nan")  # 1-minute load average during the run (mean of start and end), set by the caller


def seeded_model(cfg: ModelConfig, seed: int) -> nn.Module:
    """The model with weights drawn from `seed`, the caller's RNG untouched (same as aestudy's train_or_load)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg)


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 GEMMs natively (oneDNN: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _fit_loop(data: Dataset, spec: LoopSpec, seed: int, epochs: int, name: str, **overrides: object) -> LoopRun:
    """aestudy's fit on CPU; epoch time = the history's `seconds` (training + per-epoch bookkeeping)."""
    cfg = TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, seed=seed, device="cpu",
                      progress=False, **overrides)
    result = fit(seeded_model(spec.model, seed), data, cfg)
    history = result.history
    return LoopRun(name, seed, result.model, history["seconds"].tolist(), float(history["train_loss"].iloc[-1]))


def run_aestudy(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """`aestudy.train.fit` with its defaults."""
    return _fit_loop(data, spec, seed, epochs, "aestudy")


def run_aestudy_compile(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """`fit(compile=True)`; dynamo's cache is reset first so that every run pays the same (warm-disk) compile."""
    torch._dynamo.reset()
    return _fit_loop(data, spec, seed, epochs, "aestudy_compile", compile=True)


@contextlib.contextmanager
def onednn_matmul() -> Iterator[None]:
    """fp32 matmul precision "medium" inside: torch routes fp32 mm/addmm to oneDNN (allowed bf16 math)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def run_aestudy_mkl(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """`fit(fp32_matmul="default")`: fp32 GEMMs on torch's default path (MKL on CPUs), everything else unchanged."""
    return _fit_loop(data, spec, seed, epochs, "aestudy_mkl", fp32_matmul="default")


def run_aestudy_no_mkldnn(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """`fit` with `torch.backends.mkldnn` disabled (no oneDNN at all: fp32 GEMMs go to MKL)."""
    # set_flags with None leaves the other flags alone (setting allow_tf32 at all warns on CPU builds)
    enabled = torch.backends.mkldnn.set_flags(False, None, None, None)[0]
    try:
        return _fit_loop(data, spec, seed, epochs, "aestudy_no_mkldnn")
    finally:
        torch.backends.mkldnn.set_flags(enabled, None, None, None)


def run_aestudy_threads1(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """`fit` on one thread (the benchmark's thread count restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_loop(data, spec, seed, epochs, "aestudy_threads1")
    finally:
        torch.set_num_threads(threads)


def examples_loss(model: VAE, x: Tensor) -> Tensor:
    """pytorch/examples' VAE loss: BCE of sigmoid outputs summed over batch and pixels, plus the analytic KL."""
    mu, logvar = model.encoder(x).chunk(2, dim=1)  # (B, D) each
    std = torch.exp(0.5 * logvar)
    recon = torch.sigmoid(model.decoder(mu + std * torch.randn_like(std)))  # (B, 1, 28, 28)
    bce = F.binary_cross_entropy(recon.view(len(x), -1), x.view(len(x), -1), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def run_dataloader(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """A pytorch/examples-style loop: DataLoader(TensorDataset, shuffle, num_workers=0), default Adam."""
    model = seeded_model(spec.model, seed)
    images = data.train.images
    seconds: list[float] = []
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = DataLoader(TensorDataset(images), batch_size=spec.batch_size, shuffle=True, num_workers=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
        model.train()
        for _ in range(epochs):
            start = time.perf_counter()
            total = 0.0
            for (x,) in loader:
                optimizer.zero_grad()
                loss = examples_loss(model, x)
                loss.backward()
                total += loss.item()
                optimizer.step()
            seconds.append(time.perf_counter() - start)
    model.eval()
    return LoopRun("dataloader", seed, model, seconds, total / len(images))


def _pythae_classes() -> tuple[type, type]:
    """pythae encoder/decoder wrappers around aestudy's modules (imported lazily: pythae is the bench extra)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class WrappedEncoder(BaseEncoder):
        """aestudy's MLP encoder as a pythae encoder: (embedding, log_covariance)."""

        def __init__(self, encoder: nn.Module) -> None:
            BaseEncoder.__init__(self)
            self.net = encoder

        def forward(self, x: Tensor) -> ModelOutput:
            mu, logvar = self.net(x).chunk(2, dim=1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class WrappedDecoder(BaseDecoder):
        """aestudy's MLP decoder as a pythae decoder: sigmoid outputs, as pythae's "bce" loss expects."""

        def __init__(self, decoder: nn.Module) -> None:
            BaseDecoder.__init__(self)
            self.net = decoder

        def forward(self, z: Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    return WrappedEncoder, WrappedDecoder


def pythae_vae(model: VAE) -> nn.Module:
    """A pythae VAE (reconstruction_loss="bce") sharing `model`'s encoder and decoder modules."""
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig

    encoder_cls, decoder_cls = _pythae_classes()
    cfg = VAEConfig(input_dim=tuple(model.config.input_shape), latent_dim=model.config.latent_dim,
                    reconstruction_loss="bce")
    return PythaeVAE(cfg, encoder=encoder_cls(model.encoder), decoder=decoder_cls(model.decoder))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence logging, stdout and stderr (pythae's console logger and tqdm bar)."""
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _epoch_timer() -> tuple[object, list[float]]:
    """A pythae callback recording each epoch's wall time (train_step + its per-epoch bookkeeping)."""
    from pythae.trainers.training_callbacks import TrainingCallback

    seconds: list[float] = []

    class EpochTimer(TrainingCallback):
        def on_epoch_begin(self, training_config: object, **kwargs: object) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, training_config: object, **kwargs: object) -> None:
            seconds.append(time.perf_counter() - self.start)

    return EpochTimer(), seconds


def run_pythae(data: Dataset, spec: LoopSpec, seed: int, epochs: int) -> LoopRun:
    """pythae 0.1.2's BaseTrainer (its DataLoader, Adam, per-step `.item()`), output in a temporary folder."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    model = seeded_model(spec.model, seed)
    vae = pythae_vae(model)
    timer, seconds = _epoch_timer()
    losses: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pythae-") as out, quiet(), torch.random.fork_rng(devices=[]):
        cfg = BaseTrainerConfig(output_dir=out, per_device_train_batch_size=spec.batch_size, num_epochs=epochs,
                                learning_rate=spec.lr, seed=seed, no_cuda=True)
        trainer = BaseTrainer(vae, BaseDataset(data.train.images, data.train.labels), None, cfg,
                              callbacks=[timer])
        original = trainer.train_step

        def train_step(epoch: int) -> float:
            losses.append(original(epoch))
            return losses[-1]

        trainer.train_step = train_step
        trainer.train()
    model.eval()
    return LoopRun("pythae", seed, model, seconds, losses[-1] if losses else float("nan"))


LoopFn = Callable[[Dataset, LoopSpec, int, int], LoopRun]


def default_floor() -> str:
    """The GEMM floor `fit`'s defaults run on here: oneDNN fp32 where `aestudy.precision` chose it, else MKL."""
    return "fp32_onednn" if precision.matmul_backend("cpu")["precision"] == "medium" else "fp32"


@dataclass(frozen=True)
class Loop:
    """A loop in the registry: how to run it, its label, which GEMM floor it runs on, whether it needs bf16."""

    run: LoopFn
    label: str
    floor: str = "fp32"  # "fp32" (torch's default, MKL), "fp32_onednn" or "bf16"
    needs_bf16: bool = False


LOOPS: dict[str, Loop] = {
    "aestudy": Loop(run_aestudy, "(a) aestudy fit, defaults", default_floor()),
    "dataloader": Loop(run_dataloader, "(b) DataLoader loop (pytorch/examples)"),
    "pythae": Loop(run_pythae, "(c) pythae 0.1.2 BaseTrainer"),
    "aestudy_mkl": Loop(run_aestudy_mkl, "aestudy fit, fp32_matmul='default' (MKL; the old default)"),
    "aestudy_compile": Loop(run_aestudy_compile, "aestudy fit, compile=True"),
    "aestudy_no_mkldnn": Loop(run_aestudy_no_mkldnn, "aestudy fit, mkldnn off"),
    "aestudy_threads1": Loop(run_aestudy_threads1, "aestudy fit, 1 thread"),
}
