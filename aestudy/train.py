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

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import aestudy
from aestudy import cache, objectives, precision
from aestudy.config import DEVICES, resolve_device
from aestudy.data import Dataset, binarize_images, check_image_values
from aestudy.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig, corrupt
from aestudy.progress import progress as progress_bar
from aestudy.validate import as_bool, as_choice, as_float, as_int, as_seed, require

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "beta", "lr", "train_loss", "train_recon", "train_kl",
    "val_loss", "val_recon", "val_kl", "seconds", "samples_per_s",
)
LR_SCHEDULES: tuple[str | None, ...] = (None, "cosine")
COMPILE_CHOICES: tuple[str | bool, ...] = ("auto", True, False)
NOT_IN_KEY: tuple[str, ...] = ("device", "compile", "progress", "fp32_matmul")  # how it runs, not what it learns
EVAL_BATCH = 1024  # validation chunk: large for speed, small enough for conv activations
PROGRESS_MININTERVAL = 1.0  # seconds between bar refreshes in a terminal or a widget
# Divergence: a training step whose loss is not finite, or exceeds DIVERGENCE_FACTOR x max(1, |L0|), where L0 is the
# loss of the very first training step (the initial weights, before any update); the validation loss is held to the
# same bound. Healthy training lowers the loss from L0; a loss 1000 times above it (e.g. ~3e30 nats for a Gaussian
# VAE at lr=1e6, against L0 ~ 1e3) only comes from an optimiser that has blown the weights up. max(1, .) keeps the
# bound meaningful when L0 is near 0; the loss is only bounded above (a Gaussian's learned σ >= 1e-3 bounds it below).
DIVERGENCE_FACTOR = 1e3


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
        # Every value is stored as a plain Python value: a numpy scalar (a point of a numpy grid) would hash to
        # another cache key and be refused by torch.load(weights_only=True) when the checkpoint is read back.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("epochs", as_int(self.epochs, "epochs", low=0))
        put("batch_size", as_int(self.batch_size, "batch_size", low=1))
        put("lr", as_float(self.lr, "lr", low=0, low_open=True))
        put("seed", as_seed(self.seed))
        device = str(self.device) if isinstance(self.device, str) else self.device
        require(isinstance(device, str) and (device in DEVICES or device.startswith("cuda:")), "device", device,
                f"valid values: {', '.join(DEVICES)} or 'cuda:N'")
        put("device", device)
        put("beta", as_float(self.beta, "beta", low=0))
        put("warmup_epochs", as_float(self.warmup_epochs, "warmup_epochs", low=0))
        put("grad_clip", as_float(self.grad_clip, "grad_clip", low=0, low_open=True, allow_none=True,
                                  none_means="no clipping"))
        put("lr_schedule", as_choice(_plain_str(self.lr_schedule), "lr_schedule", LR_SCHEDULES))
        put("early_stopping_patience", as_int(self.early_stopping_patience, "early_stopping_patience", low=1,
                                              allow_none=True, none_means="never stop early"))
        require(self.noise is None or isinstance(self.noise, NoiseConfig), "noise", self.noise,
                "it must be None or an aestudy.noise.NoiseConfig")
        compile_ = bool(self.compile) if isinstance(self.compile, np.bool_) else _plain_str(self.compile)
        require(any(compile_ is c or compile_ == c == "auto" for c in COMPILE_CHOICES), "compile", self.compile,
                "valid values: 'auto' (CUDA only), True, False")
        put("compile", compile_)
        put("bf16", as_bool(self.bf16, "bf16"))
        put("progress", as_bool(self.progress, "progress"))
        put("fp32_matmul", as_choice(_plain_str(self.fp32_matmul), "fp32_matmul", precision.MODES))

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (everything but device, compile and progress)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in NOT_IN_KEY}


def _plain_str(value: Any) -> Any:
    """A str subclass (e.g. numpy.str_) as a plain str; anything else unchanged."""
    return str(value) if isinstance(value, str) else value


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


def _input_problem(images: Tensor, index: Tensor | None, split: str) -> str | None:
    """What is wrong with the images of one batch (`index` into `images`; None: all), or None if they are fine."""
    try:
        check_image_values(images if index is None else images[index], f"the {split} split", indices=index)
    except ConfigError as err:
        return str(err)
    return None


def _divergence_message(epoch: int, step: int | None, steps: int, value: float, cfg: TrainConfig,
                        first_loss: float, inputs: str | None) -> str:
    """Name where the loss went non-finite or exploded, and what to change: the data first, then the optimiser."""
    where = f"epoch {epoch}, step {step} of {steps}" if step is not None else f"epoch {epoch}, validation"
    what = f"loss = {value}" if not math.isfinite(value) else (
        f"loss = {value:.4g} nats per image, more than {DIVERGENCE_FACTOR:g} x max(1, |{first_loss:.4g}|) = "
        f"{_bound(first_loss):.4g}, {first_loss:.4g} being the first step's loss (at the initial weights)")
    kept = f"The model keeps the last good weights (those at the start of epoch {epoch})."
    if inputs is not None:
        return f"Training diverged at {where}: {what}. {kept} The inputs are at fault, not the optimiser: {inputs}"
    clip = f"grad_clip={cfg.grad_clip} (try a smaller value)" if cfg.grad_clip else "set grad_clip=1.0"
    return (f"Training diverged at {where}: {what}. {kept} The batch's inputs are finite and in [0, 1], so the "
            f"optimiser is at fault: try a lower learning rate (try lr={cfg.lr / 10:g}, now lr={cfg.lr:g}) or {clip}.")


def _bound(first_loss: float) -> float:
    """The largest loss that is not divergence: DIVERGENCE_FACTOR x max(1, |first step's loss|) (NaN counts as 0)."""
    return DIVERGENCE_FACTOR * max(1.0, abs(first_loss) if math.isfinite(first_loss) else 0.0)


def _run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn,
               tensors: _Tensors, data: Dataset, cfg: TrainConfig, epoch: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor, float, Tensor]:
    """One pass over a seeded permutation: (per-step [loss, recon, kl] (S, 3), batch sizes (S,), last β, order)."""
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
    return rows.cpu(), sizes, beta, order


def _check_divergence(rows: Tensor, epoch: int, cfg: TrainConfig, first_loss: float, order: Tensor,
                      tensors: _Tensors) -> None:
    """Raise TrainingDivergedError at the first step whose loss is NaN/inf or above the bound (DIVERGENCE_FACTOR)."""
    loss = rows[:, 0]
    bad = (~torch.isfinite(loss) | (loss > _bound(first_loss))).nonzero()
    if len(bad):
        step = int(bad[0, 0])
        index = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        inputs = _input_problem(tensors.x_train, index, "train")
        raise TrainingDivergedError(_divergence_message(epoch, step + 1, len(rows), float(loss[step]), cfg,
                                                        first_loss, inputs))


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
    first_loss = math.nan  # the loss of the first training step, at the initial weights (the divergence yardstick)
    with progress_bar(range(1, cfg.epochs + 1), desc="train", unit="epoch", enabled=cfg.progress,
                      mininterval=PROGRESS_MININTERVAL) as bar:
        for epoch in bar:
            start = time.perf_counter()
            last_good = _clone_state(model)
            lr = optimizer.param_groups[0]["lr"]
            steps, sizes, beta, order = _run_epoch(model, optimizer, scheduler, loss_fn, tensors, data, cfg, epoch,
                                                   generator)
            train_seconds = time.perf_counter() - start  # _run_epoch's .cpu() waited for the device
            if epoch == 1 and math.isfinite(float(steps[0, 0])):
                first_loss = float(steps[0, 0])
            try:
                _check_divergence(steps, epoch, cfg, first_loss, order, tensors)
                val = _evaluate(model, tensors, cfg, loss_fn, device)
                if len(tensors.x_val) and not (math.isfinite(val[0]) and val[0] <= _bound(first_loss)):
                    inputs = _input_problem(tensors.x_val, None, "val")
                    raise TrainingDivergedError(_divergence_message(epoch, None, len(steps), val[0], cfg,
                                                                    first_loss, inputs))
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
    """Fail before training on bad pixels (NaN/inf or outside [0, 1]; one pass over each split, on the device),
    an empty training split, or early stopping without a validation split.

    `Dataset` checked the pixels when it was built; this catches tensors changed in place since.
    """
    if cfg.epochs > 0:
        check_image_values(tensors.x_train, "the train split")
        check_image_values(tensors.x_val, "the val split")
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
    epoch with the lowest validation loss are restored. fp32 GEMMs run on the backend
    `aestudy.precision.matmul_backend(device)` chose (oneDNN where it is exact fp32) unless
    `cfg.fp32_matmul="default"`; the caller's matmul setting is restored after.

    Raises:
        ConfigError: before training, when a split's pixels are not finite or not in [0, 1] (naming the split
            and the image), or early stopping is asked for without a validation split.
        DataError: when the training split is empty.
        TrainingDivergedError: when a step's loss is NaN/inf or exceeds DIVERGENCE_FACTOR (1e3) x max(1, |L0|),
            L0 being the first step's loss (the same bound for the validation loss); the message checks the
            failing batch's inputs before it blames the learning rate. The model keeps the weights from the end
            of the last good epoch.
    """
    _check_fit_args(getattr(model, "config", None), data, cfg)
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    with _seeded(cfg.seed, device), precision.fp32_matmul(device, cfg.fp32_matmul):
        history = _train(model, data, cfg, device)
    model.eval()
    key = train_key(model.config, cfg, data)
    return TrainResult(model=model, history=history, key=key, from_cache=False,
                       seconds=time.perf_counter() - start)


def _check_fit_args(model_cfg: Any, data: Any, cfg: Any) -> None:
    """The types of fit's/train_or_load's arguments, and a model that fits the data's images and classes."""
    require(isinstance(cfg, TrainConfig), "cfg", type(cfg).__name__, "it must be an aestudy.train.TrainConfig")
    require(isinstance(data, Dataset), "data", type(data).__name__, "it must be an aestudy.data.Dataset")
    require(isinstance(model_cfg, ModelConfig), "model.config", type(model_cfg).__name__,
            "the model must come from aestudy.models.build_model(ModelConfig(...))")
    if tuple(model_cfg.input_shape) != tuple(data.info.shape):
        raise ConfigError(f"input_shape={model_cfg.input_shape} of the model does not match the images of "
                          f"{data.info.name!r}, {tuple(data.info.shape)}; use ModelConfig(input_shape="
                          f"{tuple(data.info.shape)}).")
    if model_cfg.num_classes not in (0, data.info.num_classes):
        raise ConfigError(f"num_classes={model_cfg.num_classes} of the class-conditional model does not match the "
                          f"{data.info.num_classes} classes of {data.info.name!r}; use num_classes="
                          f"{data.info.num_classes} (or 0 for an unconditional model).")


def _build(model_cfg: ModelConfig, seed: int) -> nn.Module:
    """The model with weights initialised from `seed` (caller's RNG state untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg)


def _load(record: dict[str, Any], path: Any, key: str, model_cfg: ModelConfig, train_cfg: TrainConfig,
          start: float) -> TrainResult:
    """Rebuild the model from a verified checkpoint record, on the configured device, in eval mode."""
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
    or mismatching checkpoint is reported (a warning naming the file), deleted and retrained; an intact one
    that `torch.load(weights_only=True)` refuses (e.g. numpy values in an old config) is moved aside to
    `<file>.refused`, never deleted, and retrained. A diverged training (TrainingDivergedError) stores nothing.
    `seconds` is the wall time of this call (loading, or training); the history keeps training times.
    """
    _check_fit_args(model_cfg, data, train_cfg)
    if progress is not None:
        train_cfg = replace(train_cfg, progress=progress)
    start = time.perf_counter()
    payload = _key_payload(model_cfg, train_cfg, data)
    key = cache.hash_key(payload)

    def load(record: dict[str, Any], path: Any) -> TrainResult:
        return _load(record, path, key, model_cfg, train_cfg, start)

    def build() -> tuple[TrainResult, cache.Checkpoint]:
        result = fit(_build(model_cfg, train_cfg.seed), data, train_cfg)
        return result, cache.Checkpoint(result.model.state_dict(), {**payload, "train": _plain_config(train_cfg)},
                                        result.history)

    result, _ = cache.load_or_build(key, load=load, build=build, cache_dir=cache_dir)
    result.seconds = time.perf_counter() - start
    return result


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """Every TrainConfig field as plain Python values."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg)}
