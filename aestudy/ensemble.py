"""Several models of one architecture trained as one batched computation (`fit_many`).

The seeds of a protocol, a β sweep or an lr grid train M models that differ only in seed, β and lr. Their
weights are stacked along a leading model axis and every `nn.Linear` runs as one batched GEMM
(`torch.baddbmm` on (M, B, in) @ (M, in, out)), so the M models cost one forward/backward/Adam pass per step
instead of M, each model keeping its own data order, binarization, noise, reparameterisation draws, β and lr.

Semantics are those of separate `train_or_load(model_cfg, cfg, data)` calls, one per config:
- the same per-model randomness: weights initialised from `cfg.seed`, the epoch permutations, dynamic
  binarization and input noise from a generator seeded `cfg.seed`, the reparameterisation draws from a stream
  seeded `cfg.seed` (what `fit` draws from torch's global RNG), validation draws seeded `cfg.seed + 1`; hence the
  same weights and history as sequential training up to float rounding (batched vs single GEMMs, and the
  vectorised Adam of an lr grid);
- each model cached under its own key (`train.train_key`); cached ones are loaded, only the missing ones train;
- a NaN/inf loss stops only that model (its weights go back to the start of the failing epoch, as in `fit`);
  the others finish and are cached, then `TrainingDivergedError` is raised naming every failed model with
  `fit`'s usual message; its `results` attribute holds the list of TrainResults with None for the failed ones.
- `TrainResult.seconds` and the history's `seconds` / `samples_per_s` are each model's share of the batched
  wall time (the batched time divided by the number of models trained together).

Configs that differ in anything else than seed, β and lr, early stopping, `compile`/`bf16`, and architectures
other than MLP/linear with a Bernoulli, continuous-Bernoulli or fixed-σ Gaussian decoder are trained one after
the other with `train_or_load` (`stack_plan` says why). On a CPU the batched path is used only where it was
measured to pay (see `batched="auto"` in `fit_many` and benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aestudy import cache, objectives, precision, train
from aestudy.config import resolve_device
from aestudy.data import Dataset
from aestudy.errors import ConfigError, TrainingDivergedError
from aestudy.models import ModelConfig, clamp_logvar
from aestudy.noise import corrupt
from aestudy.progress import progress as progress_bar
from aestudy.train import HISTORY_COLUMNS, TrainConfig, TrainResult

STACKABLE_FIELDS: tuple[str, ...] = ("seed", "beta", "lr")  # what may differ between the stacked models
RUN_FIELDS: tuple[str, ...] = ("progress",)  # how a model runs, free to differ
BATCHED_CHOICES: tuple[str | bool, ...] = ("auto", True, False)
# batched="auto" on a CPU: at least this many models to stack. Measured with one thread on the project's
# 2-core AMD EPYC (benchmarks/README.md, "batched seeds"): see the figures there before changing it.
CPU_MIN_MODELS = 2
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as `fit` uses them


# ----------------------------------------------------------------------------------------------- planning


def stack_plan(model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig]) -> str | None:
    """None when these configs can be trained as one batched computation, else the reason why not."""
    if not train_cfgs:
        return "no configs"
    first = train_cfgs[0]
    neutral = {name: getattr(first, name) for name in (*STACKABLE_FIELDS, *RUN_FIELDS)}
    for i, cfg in enumerate(train_cfgs[1:], start=1):
        if replace(cfg, **neutral) != first:
            differing = [f for f in cfg.key_fields() if f not in STACKABLE_FIELDS
                         and getattr(cfg, f) != getattr(first, f)] or ["device/compile/fp32_matmul"]
            return (f"train_cfgs[{i}] differs from train_cfgs[0] in {', '.join(differing)}; only "
                    f"{', '.join(STACKABLE_FIELDS)} may differ between batched models")
    if first.early_stopping_patience is not None:
        return "early stopping stops models at different epochs"
    if first.compile is True or first.bf16:
        return "compile=True and bf16=True run through fit's own loss"
    if model_cfg.arch not in ("mlp", "linear"):
        return f"arch={model_cfg.arch!r}: only MLP and linear models are stacked (their layers are nn.Linear)"
    if model_cfg.likelihood == "gaussian" and model_cfg.sigma is None:
        return "a Gaussian decoder with a learned sigma (a per-model scalar parameter) is not stacked"
    return None


def _use_batched(batched: str | bool, reason: str | None, n_missing: int, device: torch.device) -> bool:
    if reason is not None or n_missing < 2:
        return False
    if batched == "auto":
        return device.type == "cuda" or n_missing >= CPU_MIN_MODELS
    return bool(batched)


# ------------------------------------------------------------------------------------------ stacked model


def _linear_chain(module: nn.Module) -> list[nn.Module]:
    """The Linear and ReLU layers of a (nested) Sequential, in order (Flatten/Identity dropped)."""
    out: list[nn.Module] = []
    for m in module.modules() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(m, (nn.Linear, nn.ReLU)):
            out.append(m)
        elif not isinstance(m, (nn.Sequential, nn.Flatten, nn.Identity)):
            raise ConfigError(f"{type(m).__name__} layers are not stacked; use arch='mlp' or 'linear'.")
    return out


class _Stacked:
    """M models of one MLP/linear architecture as stacked tensors: Linear weights (M, in, out), biases (M, 1, out).

    Weights are stored transposed so that the weight gradient of `baddbmm(b, h, W)`, hᵀ g, lands in the
    parameter's own layout (no copy when autograd accumulates it).
    """

    def __init__(self, models: list[nn.Module], device: torch.device) -> None:
        self.template = models[0]
        self.cfg: ModelConfig = models[0].config
        self.names = [name for name, m in models[0].named_modules() if isinstance(m, nn.Linear)]
        self.params: dict[str, Tensor] = {}
        for name in self.names:
            layers = [m.get_submodule(name) for m in models]
            self.params[f"{name}.weight"] = torch.stack([lin.weight.detach().t() for lin in layers]).to(
                device).contiguous().requires_grad_()
            self.params[f"{name}.bias"] = torch.stack([lin.bias.detach()[None] for lin in layers]).to(
                device).contiguous().requires_grad_()
        self.encoder = [self._op(m) for m in _linear_chain(models[0].encoder.trunk)] + [
            self._op(models[0].encoder.head)]
        self.decoder = [self._op(m) for m in _linear_chain(models[0].decoder.trunk)]
        self.likelihood = models[0].likelihood
        self.variational = models[0].is_variational

    def _op(self, module: nn.Module) -> str:
        if isinstance(module, nn.ReLU):
            return "relu"
        return next(name for name in self.names if self.template.get_submodule(name) is module)

    def _run(self, ops: list[str], h: Tensor) -> Tensor:
        for op in ops:
            h = torch.relu(h) if op == "relu" else torch.baddbmm(self.params[f"{op}.bias"], h,
                                                                   self.params[f"{op}.weight"])
        return h

    def _onehot(self, y: Tensor | None) -> Tensor | None:
        if self.cfg.num_classes == 0:
            return None
        assert y is not None
        return F.one_hot(y.long(), self.cfg.num_classes).to(self.params[f"{self.names[0]}.weight"].dtype)

    def loss_rows(self, x: Tensor, y: Tensor | None, target: Tensor, eps: Tensor | None,
                  beta: Tensor) -> tuple[Tensor, Tensor]:
        """Per-model (loss (M,), rows (M, 3) = [loss, recon, kl]) for inputs (M, B, C, H, W): `loss_terms`' maths.

        `eps` (M, B, D) are the reparameterisation draws (None for the AE); `beta` (M,) the KL weights.
        """
        m, b = x.shape[:2]
        onehot = self._onehot(y)
        h = x.flatten(2)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=2)
        enc = self._run(self.encoder, h)  # (M, B, E)
        if self.variational:
            mu, logvar = enc.chunk(2, dim=2)
            z = mu + torch.exp(0.5 * clamp_logvar(logvar)) * eps
        else:
            z = enc
        if onehot is not None:
            z = torch.cat([z, onehot], dim=2)
        raw = self._run(self.decoder, z)  # (M, B, P)
        out = self.likelihood.param(raw.reshape(m * b, *self.cfg.input_shape))
        recon_nll = -self.likelihood.log_prob(target.reshape(m * b, *self.cfg.input_shape), out).view(m, b)
        if self.variational:
            kl = objectives.gaussian_kl(mu.reshape(m * b, -1), logvar.reshape(m * b, -1)).view(m, b)
            loss = (recon_nll + beta[:, None] * kl).mean(dim=1)
        else:
            kl = torch.zeros_like(recon_nll)
            loss = recon_nll.mean(dim=1)
        rows = torch.stack([loss.detach(), recon_nll.mean(dim=1).detach(), kl.mean(dim=1).detach()], dim=1)
        return loss, rows

    def state_dict(self, i: int) -> dict[str, Tensor]:
        """Model i's weights in `nn.Module.state_dict` layout (detached copies)."""
        state = {}
        for name in self.names:
            state[f"{name}.weight"] = self.params[f"{name}.weight"][i].detach().t().contiguous().clone()
            state[f"{name}.bias"] = self.params[f"{name}.bias"][i, 0].detach().clone()
        return state

    def snapshot(self) -> dict[str, Tensor]:
        return {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def restore(self, snapshot: dict[str, Tensor], i: int) -> None:
        """Put model i's weights back to `snapshot`'s."""
        for name, p in self.params.items():
            p[i].copy_(snapshot[name][i])


class _StackedAdam:
    """Adam on stacked parameters with one learning rate per model (torch's fused Adam when they are equal)."""

    def __init__(self, params: list[Tensor], lrs: list[float], schedule_steps: int | None) -> None:
        self.params, self.base = params, torch.tensor(lrs, dtype=torch.float64)
        self.schedule_steps = schedule_steps
        self.fused = len(set(lrs)) == 1
        self.t = 0
        if self.fused:
            try:  # fused, as `fit`'s optimizer: elementwise, so stacking changes nothing in its maths
                self.opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lrs[0], fused=True)
            except (RuntimeError, TypeError, ValueError):
                self.opt = torch.optim.Adam(params, lr=lrs[0])
            self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=schedule_steps)
                              if schedule_steps else None)
        else:
            self.m = [torch.zeros_like(p) for p in params]
            self.v = [torch.zeros_like(p) for p in params]

    def lrs(self) -> list[float]:
        """Each model's current learning rate."""
        if self.fused:
            return [self.opt.param_groups[0]["lr"]] * len(self.base)
        factor = 1.0 if not self.schedule_steps else 0.5 * (1 + math.cos(math.pi * self.t / self.schedule_steps))
        return (self.base * factor).tolist()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.fused:
            self.opt.step()
            if self.scheduler is not None:
                self.scheduler.step()
            return
        lrs = torch.tensor(self.lrs(), dtype=self.params[0].dtype, device=self.params[0].device)
        self.t += 1
        (b1, b2), t = ADAM_BETAS, self.t
        step_size = lrs / (1 - b1 ** t)
        root = math.sqrt(1 - b2 ** t)
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / root).add_(ADAM_EPS)
            p.sub_(m / denom * step_size.view(-1, *([1] * (p.dim() - 1))))


def _clip_per_model(params: list[Tensor], max_norm: float) -> None:
    """`nn.utils.clip_grad_norm_` applied to each model's slice: one total norm per model."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (layers, M)
    total = torch.linalg.vector_norm(norms, dim=0)  # (M,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


# ----------------------------------------------------------------------------------------------- training


@dataclass
class _Model:
    """One stacked model's config, generators and fate."""

    cfg: TrainConfig
    data_gen: torch.Generator
    eps_gen: torch.Generator
    rows: list[dict[str, float]]
    error: str | None = None
    first_loss: float = math.nan  # the first step's loss, the divergence yardstick (as in `fit`)


def _draw_eps(b: int, d: int, gens: list[torch.Generator], device: torch.device) -> Tensor:
    """(M, b, d) standard normal draws, model i's from its own generator (what `randn_like(mu)` draws in `fit`)."""
    return torch.stack([torch.randn((b, d), generator=g, device=device) for g in gens])


@torch.no_grad()
def _validate(stack: _Stacked, x_val: Tensor, y_val: Tensor | None, models: list[_Model],
              device: torch.device) -> Tensor:
    """Per-model (M, 3) validation [loss, recon, kl] at the full β with `fit`'s fixed randomness (seed + 1)."""
    n, d = x_val.shape[0], stack.cfg.latent_dim
    sums = torch.zeros(len(models), 3, device=device)
    if n == 0:
        return torch.full((len(models), 3), math.nan)
    eps_gens = [train._generator(m.cfg.seed + 1, device) for m in models]
    noise_gens = [train._generator(m.cfg.seed + 1, device) for m in models]
    beta = torch.tensor([m.cfg.beta for m in models], device=device)
    for start in range(0, n, train.EVAL_BATCH):
        x = x_val[start:start + train.EVAL_BATCH]
        y = None if y_val is None else y_val[start:start + train.EVAL_BATCH].expand(len(models), -1)
        inputs = torch.stack([x if m.cfg.noise is None else corrupt(x, m.cfg.noise, generator=g)
                              for m, g in zip(models, noise_gens, strict=True)])
        eps = _draw_eps(x.shape[0], d, eps_gens, device) if stack.variational else None
        _, rows = stack.loss_rows(inputs, y, x.expand(len(models), *x.shape), eps, beta)
        sums += rows * x.shape[0]
    return (sums / n).cpu()


def _train_stacked(model_cfg: ModelConfig, cfgs: list[TrainConfig], data: Dataset,
                   device: torch.device) -> tuple[list[nn.Module], list[pd.DataFrame], list[str | None]]:
    """Train the stacked models; per model: the trained module (eval mode), history, divergence message or None."""
    first = cfgs[0]
    modules = [train._build(model_cfg, c.seed) for c in cfgs]
    conditional = model_cfg.num_classes > 0
    tensors = train._device_tensors(data, device, conditional)
    train._check_splits(tensors, data, first)
    stack = _Stacked(modules, device)
    n, bs = tensors.x_train.shape[0], first.batch_size
    steps = math.ceil(n / bs) if n else 0
    params = list(stack.params.values())
    optimizer = _StackedAdam(params, [c.lr for c in cfgs],
                             first.epochs * steps if first.lr_schedule == "cosine" and first.epochs * steps else None)
    models = [_Model(c, train._generator(c.seed, device), train._generator(c.seed, device), []) for c in cfgs]
    sizes = torch.full((steps,), float(bs))
    if steps:
        sizes[-1] = n - (steps - 1) * bs
    progress = any(c.progress for c in cfgs)
    with progress_bar(range(1, first.epochs + 1), desc=f"train ×{len(cfgs)}", unit="epoch", enabled=progress,
                      mininterval=train.PROGRESS_MININTERVAL) as bar:
        for epoch in bar:
            live = [i for i, m in enumerate(models) if m.error is None]
            if not live:
                break
            start = time.perf_counter()
            last_good = stack.snapshot()
            lrs = optimizer.lrs()
            orders = [torch.randperm(n, generator=m.data_gen, device=device) for m in models]
            rows = torch.empty(steps, len(models), 3, device=device)
            betas = [m.cfg.beta for m in models]
            for step in range(steps):
                xs, ts, ys = [], [], []
                for m, order in zip(models, orders, strict=True):
                    index = order[step * bs:(step + 1) * bs]
                    inputs, target = train._prepare(tensors.x_train[index], data, m.cfg, m.data_gen)
                    xs.append(inputs)
                    ts.append(target)
                    if tensors.y_train is not None:
                        ys.append(tensors.y_train[index])
                factor = objectives.kl_warmup(epoch - 1 + (step + 1) / steps, first.warmup_epochs)
                betas = [m.cfg.beta * factor for m in models]
                eps = (_draw_eps(xs[0].shape[0], model_cfg.latent_dim, [m.eps_gen for m in models], device)
                       if stack.variational else None)
                loss, rows[step] = stack.loss_rows(torch.stack(xs), torch.stack(ys) if ys else None,
                                                   torch.stack(ts), eps, torch.tensor(betas, device=device))
                optimizer.zero_grad()
                loss.sum().backward()  # model i's gradient is that of its own loss alone
                if first.grad_clip is not None:
                    _clip_per_model(params, first.grad_clip)
                optimizer.step()
                for i, m in enumerate(models):
                    if m.error is not None:  # a stopped model keeps its last good weights
                        stack.restore(last_good, i)
            rows_cpu = rows.cpu()
            train_seconds = time.perf_counter() - start
            val = _validate(stack, tensors.x_val, tensors.y_val, models, device)
            share = len(live)
            for i in live:
                m = models[i]
                loss = rows_cpu[:, i, 0]
                if epoch == 1 and math.isfinite(float(loss[0])):
                    m.first_loss = float(loss[0])
                bound = train._bound(m.first_loss)
                bad = (~torch.isfinite(loss) | (loss > bound)).nonzero()
                if len(bad):  # `fit`'s check, message and input diagnosis, per model
                    s = int(bad[0, 0])
                    inputs = train._input_problem(tensors.x_train, orders[i][s * bs:(s + 1) * bs], "train")
                    m.error = train._divergence_message(epoch, s + 1, steps, float(loss[s]), m.cfg, m.first_loss,
                                                        inputs)
                elif len(tensors.x_val) and not (math.isfinite(float(val[i, 0])) and float(val[i, 0]) <= bound):
                    inputs = train._input_problem(tensors.x_val, None, "val")
                    m.error = train._divergence_message(epoch, None, steps, float(val[i, 0]), m.cfg, m.first_loss,
                                                        inputs)
                if m.error is not None:
                    stack.restore(last_good, i)
                    continue
                tr = ((rows_cpu[:, i] * sizes[:, None]).sum(0) / n).tolist()
                seconds = (time.perf_counter() - start) / share
                m.rows.append(dict(zip(HISTORY_COLUMNS, (
                    epoch, betas[i], lrs[i], *tr, *val[i].tolist(), seconds, n / (train_seconds / share),
                ), strict=True)))
            bar.set_postfix(models=len([m for m in models if m.error is None]), refresh=False)
    out_models = []
    for i, module in enumerate(modules):
        module.load_state_dict(stack.state_dict(i))
        out_models.append(module.to(device).eval())
    histories = [pd.DataFrame(m.rows, columns=list(HISTORY_COLUMNS)) for m in models]
    return out_models, histories, [m.error for m in models]


def fit_many(model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig], data: Dataset, *,
             cache_dir: Any = None, batched: str | bool = "auto") -> list[TrainResult]:
    """`[train_or_load(model_cfg, cfg, data, cache_dir=cache_dir) for cfg in train_cfgs]`, the missing models
    trained as one batched computation where `stack_plan` allows it (see the module docstring).

    batched: "auto" (batched on CUDA, and on a CPU for ≥ `CPU_MIN_MODELS` missing models), True (batched
    whenever `stack_plan` allows), False (one after the other, as `train_or_load`). When the configs cannot be
    stacked the models train one after the other and a warning names the reason (only with batched=True).

    Returns one TrainResult per config, in order (duplicates: the first trains, later ones load its checkpoint).
    Raises ConfigError for an empty list or a bad `batched`; TrainingDivergedError after all others finished
    and were cached when some model's loss went NaN/inf (message per failed model; `.results` attribute).
    Source: stacked weights with batched GEMMs, as `torch.func.stack_module_state` + `vmap` would give.
    """
    cfgs = list(train_cfgs)
    if not cfgs or not all(isinstance(c, TrainConfig) for c in cfgs):
        raise ConfigError(f"train_cfgs={train_cfgs!r} is invalid; it must be a non-empty sequence of TrainConfig.")
    if not any(batched is c for c in BATCHED_CHOICES):
        raise ConfigError(f"batched={batched!r} is invalid; valid values: 'auto', True, False.")
    for cfg in cfgs:  # bad input fails here, before any model trains
        train._check_fit_args(model_cfg, data, cfg)
    start = time.perf_counter()
    keys = [train.train_key(model_cfg, c, data) for c in cfgs]
    paths = [cache.checkpoint_path(k, cache_dir) for k in keys]
    results: list[TrainResult | None] = [None] * len(cfgs)
    errors: dict[int, str] = {}
    unique = list(dict.fromkeys(keys))
    first_index = {k: keys.index(k) for k in unique}
    with contextlib.ExitStack() as locks:
        for key in sorted(unique):  # one order everywhere: no deadlock between two fit_many calls
            locks.enter_context(cache.lock(paths[first_index[key]]))
        missing = []
        for key in unique:
            i = first_index[key]
            loaded = _try_load(key, model_cfg, cfgs[i], start, cache_dir)
            if loaded is None:
                missing.append(i)
            else:
                results[i] = loaded
        reason = stack_plan(model_cfg, [cfgs[i] for i in missing]) if missing else None
        device = resolve_device(cfgs[0].device)
        if _use_batched(batched, reason, len(missing), device):
            tic = time.perf_counter()
            with precision.fp32_matmul(device, cfgs[0].fp32_matmul):
                modules, histories, failed = _train_stacked(model_cfg, [cfgs[i] for i in missing], data, device)
            share = (time.perf_counter() - tic) / len(missing)
            for i, module, history, error in zip(missing, modules, histories, failed, strict=True):
                if error is not None:
                    errors[i] = error
                    continue
                _save(keys[i], model_cfg, cfgs[i], data, module, history, cache_dir)
                results[i] = TrainResult(model=module, history=history, key=keys[i], from_cache=False, seconds=share)
        else:
            if batched is True and reason is not None and len(missing) > 1:
                warnings.warn(f"fit_many trains these models one after the other: {reason}.", stacklevel=2)
            for i in missing:
                tic = time.perf_counter()
                try:
                    result = train.fit(train._build(model_cfg, cfgs[i].seed), data, cfgs[i])
                except TrainingDivergedError as err:
                    errors[i] = str(err)
                    continue
                _save(keys[i], model_cfg, cfgs[i], data, result.model, result.history, cache_dir)
                result.seconds = time.perf_counter() - tic
                results[i] = result
    for i, key in enumerate(keys):  # duplicates load what their first occurrence wrote
        if results[i] is None and i not in errors and first_index[key] not in errors:
            with cache.lock(paths[i]):
                results[i] = _try_load(key, model_cfg, cfgs[i], time.perf_counter(), cache_dir)
        elif results[i] is None and first_index[key] in errors:
            errors[i] = errors[first_index[key]]
    if errors:
        lines = [f"train_cfgs[{i}] (seed={cfgs[i].seed}, beta={cfgs[i].beta:g}, lr={cfgs[i].lr:g}): {errors[i]}"
                 for i in sorted(errors)]
        err = TrainingDivergedError(f"{len(errors)} of {len(cfgs)} models diverged (the others are trained and "
                                    "cached):\n" + "\n".join(lines))
        err.results = results  # type: ignore[attr-defined]
        raise err
    return [r for r in results if r is not None]


def _try_load(key: str, model_cfg: ModelConfig, cfg: TrainConfig, start: float,
              cache_dir: Any) -> TrainResult | None:
    """The cached result, or None (missing; a damaged file is reported and discarded: `cache.load_cached`)."""
    return cache.load_cached(key, lambda record, path: train._load(record, path, key, model_cfg, cfg, start),
                             cache_dir=cache_dir)


def _save(key: str, model_cfg: ModelConfig, cfg: TrainConfig, data: Dataset, model: nn.Module,
          history: pd.DataFrame, cache_dir: Any) -> None:
    """The checkpoint `train_or_load` would write for this config (`cache.store`)."""
    payload = train._key_payload(model_cfg, cfg, data)
    cache.store(key, cache.Checkpoint(model.state_dict(), {**payload, "train": train._plain_config(cfg)}, history),
                cache_dir=cache_dir)
