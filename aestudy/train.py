"""One training loop for every model (`fit`) and the cached load-or-train (`train_or_load`).

The whole training split lives as one tensor on the device; each epoch draws a seeded permutation and
slices index batches (no per-sample DataLoader). Per-step losses are kept as device tensors and read once
per epoch, so the loop never waits on a `.item()` sync.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import aestudy
from aestudy import cache, objectives, precision
from aestudy.config import DEVICES, resolve_device
from aestudy.data import Dataset, binarize_images
from aestudy.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig, corrupt

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "beta", "lr", "train_loss", "train_recon", "train_kl",
    "val_loss", "val_recon", "val_kl", "seconds", "samples_per_s",
)
LR_SCHEDULES: tuple[str | None, ...] = (None, "cosine")
COMPILE_CHOICES: tuple[str | bool, ...] = ("auto", True, False)
NOT_IN_KEY: tuple[str, ...] = ("device", "compile", "progress", "fp32_matmul")  # how it runs, not what it learns
EVAL_BATCH = 1024  # validation chunk: large for speed, small enough for conv activations
PROGRESS_MININTERVAL = 1.0  # seconds between bar refreshes (keeps papermill logs short)


def _require(cond: bool, name: str, value: Any, valid: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid; {valid}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, schedule, objective weights, stopping, device and speed options."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    beta: float = 1.0
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    lr_schedule: str | None = None
    early_stopping_patience: int | None = None
    noise: NoiseConfig | None = None
    compile: str | bool = "auto"
    bf16: bool = False
    progress: bool = True
    fp32_matmul: str = "auto"  # "auto": oneDNN fp32 GEMMs where exact (aestudy.precision); "default": torch's path

    def __post_init__(self) -> None:
        _require(_is_int(self.epochs) and self.epochs >= 0, "epochs", self.epochs, "it must be an integer >= 0")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size,
                 "it must be an integer >= 1")
        _require(_is_number(self.lr) and self.lr > 0, "lr", self.lr, "it must be a finite number > 0")
        _require(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "it must be an integer >= 0")
        _require(self.device in DEVICES or str(self.device).startswith("cuda:"), "device", self.device,
                 f"valid values: {', '.join(DEVICES)}")
        _require(_is_number(self.beta) and self.beta >= 0, "beta", self.beta, "it must be a finite number >= 0")
        _require(_is_number(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs",
                 self.warmup_epochs, "it must be a number >= 0 (0 = no KL warm-up)")
        _require(self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip > 0), "grad_clip",
                 self.grad_clip, "it must be None (no clipping) or a number > 0")
        _require(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, "valid values: None, 'cosine'")
        _require(self.early_stopping_patience is None
                 or (_is_int(self.early_stopping_patience) and self.early_stopping_patience >= 1),
                 "early_stopping_patience", self.early_stopping_patience, "it must be None or an integer >= 1")
        _require(self.noise is None or isinstance(self.noise, NoiseConfig), "noise", self.noise,
                 "it must be None or an aestudy.noise.NoiseConfig")
        _require(any(self.compile is c for c in COMPILE_CHOICES), "compile", self.compile,
                 "valid values: 'auto' (CUDA only), True, False")
        _require(isinstance(self.bf16, bool), "bf16", self.bf16, "it must be True or False")
        _require(isinstance(self.progress, bool), "progress", self.progress, "it must be True or False")
        _require(self.fp32_matmul in precision.MODES, "fp32_matmul", self.fp32_matmul,
                 "valid values: 'auto' (oneDNN where it is exact fp32), 'default' (torch's default path)")

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (everything but device, compile and progress)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in NOT_IN_KEY}


def _plain(value: Any) -> Any:
    """A dataclass as a dict, anything else unchanged (for hashing and checkpoints)."""
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value


@dataclass
class TrainResult:
    """A trained (or loaded) model with its per-epoch history, cache key and wall time of this call."""

    model: nn.Module
    history: pd.DataFrame
    key: str
    from_cache: bool
    seconds: float


def _key_payload(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    """What determines the weights: model config, training fields, data fingerprint, aestudy version."""
    return {"model": asdict(model_cfg), "train": train_cfg.key_fields(), "data": data.fingerprint,
            "version": aestudy.__version__}


def train_key(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset) -> str:
    """The cache key: SHA-256 of model config, training fields, data fingerprint and aestudy version."""
    return cache.hash_key(_key_payload(model_cfg, train_cfg, data))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU and `device`) inside, and restore the caller's RNG state after."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _generator(seed: int, device: torch.device) -> torch.Generator:
    """A dedicated generator on `device` (permutations, binarization, noise)."""
    return torch.Generator(device=device).manual_seed(seed)


def _make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused (one kernel for all parameters) where this device and torch support it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _use_compile(cfg: TrainConfig, device: torch.device) -> bool:
    """compile="auto" compiles only on CUDA: on CPU the cold compile (~10 s + a ragged-batch recompile) rarely pays."""
    return device.type == "cuda" if cfg.compile == "auto" else bool(cfg.compile)


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bfloat16 autocast on CUDA only (warn once elsewhere instead of silently ignoring it)."""
    if cfg.bf16 and device.type != "cuda":
        warnings.warn(f"bf16=True has no effect on device {device.type!r}: bfloat16 autocast is used on CUDA only.",
                      stacklevel=5)  # fit's caller
    return cfg.bf16 and device.type == "cuda"


LossFn = Callable[[Tensor, Tensor | None, Tensor, Any], tuple[Tensor, dict[str, Tensor]]]


def _loss_fn(model: nn.Module, cfg: TrainConfig, device: torch.device) -> LossFn:
    """(inputs, labels, targets, beta) -> (loss, terms), under bf16 autocast and torch.compile when enabled."""
    bf16 = _use_bf16(cfg, device)

    def loss(x: Tensor, y: Tensor | None, target: Tensor, beta: Any) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            return objectives.loss_terms(model, x, y, beta=beta, target=target)

    if not _use_compile(cfg, device):
        return loss
    compiled = torch.compile(loss, dynamic=False)  # Posterior.rsample(generator=None) fails with symbolic shapes
    beta_buffer = torch.zeros((), device=device)

    def compiled_loss(x: Tensor, y: Tensor | None, target: Tensor, beta: Any) -> tuple[Tensor, dict[str, Tensor]]:
        # β as a tensor: a new Python float at every warm-up step would make dynamo recompile
        return compiled(x, y, target, beta_buffer.fill_(beta))

    return compiled_loss


@dataclass
class _Tensors:
    """The training and validation splits as device tensors (labels only for class-conditional models)."""

    x_train: Tensor
    y_train: Tensor | None
    x_val: Tensor
    y_val: Tensor | None


def _device_tensors(data: Dataset, device: torch.device, conditional: bool) -> _Tensors:
    """Move the training and validation splits to `device` once (data.py already binarized val once)."""
    return _Tensors(
        x_train=data.train.images.to(device),
        y_train=data.train.labels.to(device) if conditional else None,
        x_val=data.val.images.to(device),
        y_val=data.val.labels.to(device) if conditional else None,
    )


def _prepare(x: Tensor, data: Dataset, cfg: TrainConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(model input, reconstruction target) for one batch: dynamic binarization, then corruption if denoising."""
    if data.binarize == "dynamic":
        x = binarize_images(x, generator=generator)
    if cfg.noise is None:
        return x, x
    return corrupt(x, cfg.noise, generator=generator), x


def _terms_row(loss: Tensor, terms: dict[str, Tensor]) -> Tensor:
    """(3,) tensor [loss, recon, kl] of a batch, without leaving the device."""
    return torch.stack([loss.detach().float(), terms["recon"].detach().float(), terms["kl"].detach().float()])


@torch.no_grad()
def _evaluate(model: nn.Module, tensors: _Tensors, cfg: TrainConfig, loss_fn: LossFn,
              device: torch.device) -> tuple[float, float, float]:
    """Per-image mean (loss, recon, kl) on the validation split at the full β, with fixed randomness."""
    n = tensors.x_val.shape[0]
    if n == 0:
        return math.nan, math.nan, math.nan
    model.eval()
    sums = torch.zeros(3, device=device)
    generator = _generator(cfg.seed + 1, device)
    with _seeded(cfg.seed + 1, device):
        for start in range(0, n, EVAL_BATCH):
            x = tensors.x_val[start:start + EVAL_BATCH]
            y = None if tensors.y_val is None else tensors.y_val[start:start + EVAL_BATCH]
            inputs = x if cfg.noise is None else corrupt(x, cfg.noise, generator=generator)
            loss, terms = loss_fn(inputs, y, x, cfg.beta)
            sums += _terms_row(loss, terms) * x.shape[0]
    model.train()
    loss, recon, kl = (sums / n).tolist()
    return loss, recon, kl


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's weights."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _divergence_message(epoch: int, step: int | None, steps: int, value: float, cfg: TrainConfig) -> str:
    """Name where the loss went non-finite and what to change."""
    where = f"epoch {epoch}, step {step} of {steps}" if step is not None else f"epoch {epoch}, validation"
    clip = f"grad_clip={cfg.grad_clip} (try a smaller value)" if cfg.grad_clip else "set grad_clip=1.0"
    return (f"Training diverged at {where}: loss = {value}. The model keeps the last good weights "
            f"(those at the start of epoch {epoch}). Try a lower learning rate (try lr={cfg.lr / 10:g}, "
            f"now lr={cfg.lr:g}) or {clip}.")


def _run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn,
               tensors: _Tensors, data: Dataset, cfg: TrainConfig, epoch: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """One pass over a seeded permutation: (per-step [loss, recon, kl] (S, 3), batch sizes (S,), last β)."""
    n = tensors.x_train.shape[0]
    steps = math.ceil(n / cfg.batch_size)
    device = tensors.x_train.device
    order = torch.randperm(n, generator=generator, device=device)
    rows = torch.empty(steps, 3, device=device)
    sizes = torch.full((steps,), float(cfg.batch_size))
    sizes[-1] = n - (steps - 1) * cfg.batch_size  # the ragged last batch
    params = [p for p in model.parameters() if p.requires_grad]
    beta = cfg.beta
    for step in range(steps):
        index = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        inputs, target = _prepare(tensors.x_train[index], data, cfg, generator)
        labels = None if tensors.y_train is None else tensors.y_train[index]
        # β follows training progress after this step, so the epoch ending the warm-up trains at full β
        beta = cfg.beta * objectives.kl_warmup(epoch - 1 + (step + 1) / steps, cfg.warmup_epochs)
        loss, terms = loss_fn(inputs, labels, target, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        rows[step] = _terms_row(loss, terms)
    return rows.cpu(), sizes, beta


def _check_finite(rows: Tensor, epoch: int, cfg: TrainConfig) -> None:
    """Raise TrainingDivergedError at the first step whose loss is NaN/inf."""
    bad = (~torch.isfinite(rows[:, 0])).nonzero()
    if len(bad):
        step = int(bad[0, 0])
        raise TrainingDivergedError(_divergence_message(epoch, step + 1, len(rows), float(rows[step, 0]), cfg))


class _EarlyStopping:
    """Tracks the best validation loss; `stop` after `patience` epochs without improvement (None: never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None

    def stop(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Record this epoch's validation loss; True when training should stop."""
        if self.patience is None:
            return False
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_state = val_loss, epoch, _clone_state(model)
            return False
        return epoch - self.best_epoch >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights back into `model` (no-op without early stopping)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def _train(model: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device) -> pd.DataFrame:
    """The epoch loop: train, check for divergence, validate, early-stop, record; returns the history."""
    conditional = getattr(model.config, "num_classes", 0) > 0
    tensors = _device_tensors(data, device, conditional)
    _check_splits(tensors, data, cfg)
    n = tensors.x_train.shape[0]
    model.to(device).train()
    optimizer = _make_optimizer(model, cfg.lr)
    scheduler = _make_scheduler(optimizer, cfg, n)
    loss_fn = _loss_fn(model, cfg, device)
    generator = _generator(cfg.seed, device)
    stopping = _EarlyStopping(cfg.early_stopping_patience)
    rows: list[dict[str, float]] = []
    with tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=not cfg.progress,
              mininterval=PROGRESS_MININTERVAL) as bar:
        for epoch in bar:
            start = time.perf_counter()
            last_good = _clone_state(model)
            lr = optimizer.param_groups[0]["lr"]
            steps, sizes, beta = _run_epoch(model, optimizer, scheduler, loss_fn, tensors, data, cfg, epoch,
                                            generator)
            train_seconds = time.perf_counter() - start  # _run_epoch's .cpu() waited for the device
            try:
                _check_finite(steps, epoch, cfg)
                val = _evaluate(model, tensors, cfg, loss_fn, device)
                if len(tensors.x_val) and not math.isfinite(val[0]):
                    raise TrainingDivergedError(_divergence_message(epoch, None, len(steps), val[0], cfg))
            except TrainingDivergedError:
                model.load_state_dict(last_good)
                raise
            train = ((steps * sizes[:, None]).sum(0) / n).tolist()
            rows.append(dict(zip(HISTORY_COLUMNS, (
                epoch, beta, lr, *train, *val, time.perf_counter() - start, n / train_seconds,
            ), strict=True)))
            bar.set_postfix(loss=f"{train[0]:.2f}", kl=f"{train[2]:.2f}",
                            samples_per_s=f"{n / train_seconds:.0f}", refresh=False)
            if stopping.stop(epoch, val[0], model):
                break
    stopping.restore_best(model)
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def _check_splits(tensors: _Tensors, data: Dataset, cfg: TrainConfig) -> None:
    """Fail early on an empty training split, or early stopping without a validation split."""
    if tensors.x_train.shape[0] == 0 and cfg.epochs > 0:
        raise DataError(f"the training split of {data.info.name!r} is empty; nothing to train on.")
    if cfg.early_stopping_patience is not None and tensors.x_val.shape[0] == 0:
        raise ConfigError("early_stopping_patience needs a validation split, but data.val is empty; "
                          "load the data with val_size > 0 or set early_stopping_patience=None.")


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, n: int) -> Any:
    """Per-step cosine annealing from lr to 0 over all planned steps, or None."""
    total_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    if cfg.lr_schedule != "cosine" or total_steps == 0:
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def fit(model: nn.Module, data: Dataset, cfg: TrainConfig) -> TrainResult:
    """Train `model` on `data` per `cfg` (same seed → same history and weights on CPU); model is left in eval mode.

    History columns: epoch, beta (KL weight at the epoch's last step), lr (at the epoch's first step),
    train_loss/recon/kl (per-image means in nats over the epoch, at the β of each step), val_loss/recon/kl
    (per-image means at the full β, fixed randomness; NaN without a validation split), seconds (epoch wall
    time incl. validation), samples_per_s (training steps only). With early stopping, the weights of the
    epoch with the lowest validation loss are restored. A NaN/inf loss raises TrainingDivergedError and
    leaves the weights from the end of the last good epoch. fp32 GEMMs run on the backend
    `aestudy.precision.matmul_backend(device)` chose (oneDNN where it is exact fp32) unless
    `cfg.fp32_matmul="default"`; the caller's matmul setting is restored after.
    """
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    with _seeded(cfg.seed, device), precision.fp32_matmul(device, cfg.fp32_matmul):
        history = _train(model, data, cfg, device)
    model.eval()
    key = train_key(model.config, cfg, data)
    return TrainResult(model=model, history=history, key=key, from_cache=False,
                       seconds=time.perf_counter() - start)


def _build(model_cfg: ModelConfig, seed: int) -> nn.Module:
    """The model with weights initialised from `seed` (caller's RNG state untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg)


def _load(path: Any, key: str, model_cfg: ModelConfig, train_cfg: TrainConfig, start: float) -> TrainResult:
    """Rebuild the model from a verified checkpoint, on the configured device, in eval mode."""
    record = cache.load_checkpoint(path, version=aestudy.__version__, key=key)
    model = _build(model_cfg, 0)  # the seed is irrelevant (weights are loaded); it keeps the caller's RNG intact
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as err:  # shapes/names differ: the file does not belong to this config
        raise CheckpointError(f"checkpoint {path} does not match {model_cfg}: {err}") from err
    model.to(resolve_device(train_cfg.device)).eval()
    return TrainResult(model=model, history=record["history"], key=key, from_cache=True,
                       seconds=time.perf_counter() - start)


def train_or_load(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset, *,
                  cache_dir: Any = None, progress: bool | None = None) -> TrainResult:
    """Load the cached model for (model_cfg, train_cfg, data, version), or train and cache it.

    The cache folder is `cache_dir`, else `$AESTUDY_CACHE`, else `~/.cache/aestudy/models`. A file lock
    makes a second process training the same key wait and then load the first one's result. A corrupted
    or mismatching checkpoint is reported (a warning naming the file), deleted and retrained.
    `seconds` is the wall time of this call (loading, or training); the history keeps training times.
    """
    if progress is not None:
        train_cfg = replace(train_cfg, progress=progress)
    start = time.perf_counter()
    payload = _key_payload(model_cfg, train_cfg, data)
    key = cache.hash_key(payload)
    path = cache.checkpoint_path(key, cache_dir)
    with cache.lock(path):
        if path.exists():
            try:
                return _load(path, key, model_cfg, train_cfg, start)
            except CheckpointError as err:
                warnings.warn(f"{err} Deleting {path} and retraining.", stacklevel=2)
                path.unlink(missing_ok=True)
        result = fit(_build(model_cfg, train_cfg.seed), data, train_cfg)
        cache.save_checkpoint(
            path, state_dict=result.model.state_dict(), history=result.history, version=aestudy.__version__,
            key=key, config={**payload, "train": _plain_config(train_cfg)},
        )
    result.seconds = time.perf_counter() - start
    return result


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """Every TrainConfig field as plain Python values."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg)}
