"""`python -m benchmarks.train_speed`: aestudy's training speed, quality, evaluation cost and scaling vs peers.

One process, one run, Fashion-MNIST (60k train), MLP VAE 784-512-256-16 with a Bernoulli decoder on the [0, 1]
images, batch 128, Adam 1e-3 (issues 7 and 13). Rows, all by default (`--rows` picks some):

1. throughput   steady-state s/epoch and samples/s of aestudy's `fit`, a DataLoader loop and pythae's trainer,
                and the matmul floors (exactly the GEMMs of the same steps, MKL and oneDNN), in interleaved
                rounds; plus variants of aestudy's loop (public options) and a profile of where its step goes;
2. quality      test −ELBO and IS-NLL of the same runs (round r trains with seed r), mean ± sd over seeds;
   batched      5 seeds trained as one batched computation (`aestudy.ensemble.fit_many`) vs one after the other;
   fit_profile  a whole `train_or_load` in a fresh process, cProfile'd: imports, optimizer, epochs, validation, I/O;
3. evaluation   IS-NLL k = 1,000 on the 10k test images: seconds and peak memory, memory vs k, the reference
                estimator and pythae's;
4. scaling      epoch time vs training-set size, batch size and latent size;
5. series       per-notebook wall time of `aestudy run`, cold and warm (`--series-profiles` adds `standard`);
6. gpu          not run on CPU machines.

Rounds interleave the loops (A B C … A B C …) and time the floor after every run, so that slow phases of a
shared machine hit every loop alike; the ratios are the figures to trust. `--threads auto` uses the cores
that are idle at the start (a busy core makes multi-threaded GEMMs stall); the choice is printed and saved.
Writes `benchmarks/results/train_speed.json` and `train_speed.png` and the README's results section
(`--quick`: a tiny subset, written to `runs/bench-quick/`, README untouched).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from aestudy import metrics, precision
from aestudy.data import Dataset, Split, load_dataset
from aestudy.errors import ConfigError
from aestudy.models import ModelConfig
from aestudy.train import TrainConfig, fit
from benchmarks import batched, evaluation, fit_profile, report, series
from benchmarks.gemm_floor import GemmFloor, epoch_batches, epoch_flops
from benchmarks.loops import (
    LOOPS,
    LoopRun,
    LoopSpec,
    bf16_supported,
    onednn_matmul,
    seeded_model,
)

ROWS: tuple[str, ...] = ("throughput", "quality", "batched", "fit_profile", "evaluation", "scaling", "series", "gpu")
DEFAULT_LOOPS: tuple[str, ...] = ("aestudy", "dataloader", "pythae")  # `epochs` each round (throughput, quality)
DEFAULT_VARIANTS: tuple[str, ...] = ("aestudy_mkl",)  # `variant_epochs` each, throughput only
TARGET_RATIO = 0.9  # aestudy's default epoch ≤ 0.9× the MKL fp32 matmul floor of the same run (issue 13)
TARGET_SPEEDUP = 2.0  # ≥ 2× faster than the DataLoader loop and pythae at equal test −ELBO (issue 13)
TARGET_NLL_SECONDS = 90.0  # IS-NLL k = 1,000 on the 10k test images, one thread (issue 13)
REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
QUICK_DIR = REPO / "runs" / "bench-quick"
README = REPO / "benchmarks" / "README.md"
GEMM_OPS = ("aten::mm", "aten::addmm")
OPTIMIZER_OPS = ("aten::_fused_adam_",)
INDEX_OPS = ("aten::index", "aten::randperm")


def _positive_ints(values: tuple[int, ...]) -> bool:
    return len(values) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures and how much; `Settings.quick()` is the seconds-long version."""

    rows: tuple[str, ...] = ROWS
    threads: int = 1
    threads_reason: str = "given"
    rounds: int = 3
    epochs: int = 10  # epochs of every full-loop run (quality is judged after these)
    variant_epochs: int = 2  # epochs of the throughput-only variants (the first is the warm-up/compile)
    train_size: int | None = None  # None: all 60k training images
    quality_nll_images: int = 100
    quality_nll_k: int = 1000
    quality_test_images: int | None = None  # None: all 10k test images for −ELBO
    nll_images: int = 2_000  # IS-NLL cost measured on these test images, reported per 10k (linear in images)
    nll_k: int = 1000
    memory_images: int = 500
    memory_ks: tuple[int, int] = (100, 1000)
    agreement_images: int = 100
    scaling_sizes: tuple[int, ...] = (10_000, 20_000, 40_000, 60_000)
    scaling_batches: tuple[int, ...] = (64, 128, 256, 512, 1024)
    scaling_latents: tuple[int, ...] = (2, 16, 64)
    scaling_subset: int = 20_000
    series_profiles: tuple[str, ...] = ("smoke",)  # the hook for the standard series: --series-profiles
    batched_models: int = 5
    batched_size: int = 20_000  # training images of the batched-seeds row
    batched_epochs: int = 2
    batched_rounds: int = 2
    fit_profile_size: int = 30_000  # training images of the whole-fit profile (plus the 5,000 validation images)
    fit_profile_epochs: int = 2
    loops: tuple[str, ...] = DEFAULT_LOOPS  # trained `epochs` in every round (throughput and quality)
    variants: tuple[str, ...] = DEFAULT_VARIANTS  # throughput-only variants in every round
    profile_steps: int = 60
    quick: bool = False
    out: Path = field(default=RESULTS_DIR)

    def __post_init__(self) -> None:
        bad = [r for r in self.rows if r not in ROWS]
        if bad or not self.rows:
            raise ConfigError(f"rows={','.join(self.rows)!r} is invalid; valid rows (comma-separated): "
                              f"{', '.join(ROWS)}.")
        for name in ("threads", "rounds", "epochs", "variant_epochs", "quality_nll_images", "quality_nll_k",
                     "nll_images", "nll_k", "memory_images", "agreement_images", "scaling_subset", "profile_steps",
                     "batched_models", "batched_size", "batched_epochs", "batched_rounds", "fit_profile_size",
                     "fit_profile_epochs"):
            if not _positive_ints((getattr(self, name),)):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; it must be an integer >= 1.")
        for name in ("memory_ks", "scaling_sizes", "scaling_batches", "scaling_latents"):
            if not _positive_ints(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; it must be a non-empty tuple of "
                                  "integers >= 1.")
        if "aestudy" not in self.loops or any(v not in LOOPS for v in self.loops):
            raise ConfigError(f"loops={self.loops!r} is invalid; it must include 'aestudy' (the baseline) and may "
                              f"add any of {', '.join(n for n in LOOPS if n != 'aestudy')}.")
        if any(v not in LOOPS or v in self.loops for v in self.variants):
            raise ConfigError(f"variants={self.variants!r} is invalid; valid values: any of {', '.join(LOOPS)} "
                              "that is not in loops.")
        for name in ("train_size", "quality_test_images"):
            if getattr(self, name) is not None and not _positive_ints((getattr(self, name),)):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; it must be None (all) or an "
                                  "integer >= 1.")

    @classmethod
    def quick_settings(cls, **overrides: Any) -> Settings:
        """A seconds-long run on a tiny subset (no compile variant, no series): the code paths, not the figures."""
        small = dict(rounds=2, epochs=2, variant_epochs=2, train_size=512, quality_test_images=256,
                     quality_nll_images=8, quality_nll_k=10, nll_images=32, nll_k=20, memory_images=16,
                     memory_ks=(5, 20), agreement_images=3, scaling_sizes=(128, 256, 512), scaling_batches=(64, 256),
                     scaling_latents=(2, 16), scaling_subset=256, series_profiles=(), variants=(), profile_steps=4,
                     batched_models=2, batched_size=256, batched_epochs=2, batched_rounds=1, fit_profile_size=512,
                     fit_profile_epochs=1, quick=True, out=QUICK_DIR)
        return cls(**{**small, **overrides})


# ------------------------------------------------------------------------------------------------ helpers


def resolve_threads(value: str) -> tuple[int, str]:
    """`auto`: the cores idle at the start (cores − 1-min load average, at least 1); else the given count."""
    cores = os.cpu_count() or 1
    if value == "auto":
        load = os.getloadavg()[0]
        threads = max(1, min(cores, cores - round(load)))
        return threads, f"auto: {cores} cores, load average {load:.2f} at start"
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"threads={value!r} is invalid; valid values: 'auto' or an integer >= 1.")
    return int(value), "given"


def subset(data: Dataset, n: int) -> Dataset:
    """The first n training images (the split is already shuffled and stratified); val/test unchanged."""
    n = min(n, len(data.train))
    train = Split(data.train.images[:n], data.train.labels[:n])
    return dataclasses.replace(data, train=train, fingerprint=f"{data.fingerprint}-first{n}")


def steady_seconds(run: LoopRun) -> float:
    """Median epoch time after the first (warm-up) epoch; the only epoch if there is one."""
    return statistics.median(run.epoch_seconds[1:] or run.epoch_seconds)


def mean_sd(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (0 for one value) and the values."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _uptime() -> str:
    """`uptime`'s line (load averages), '' where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_family() -> str:
    """'family F model M' from /proc/cpuinfo (AMD family 25 = Zen 3/4, 26 = Zen 5), '' where unknown."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return ""
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    amx = " AMX" if "amx_tile" in fields.get("flags", "") else ""
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}{amx}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(settings: Settings, argv: list[str]) -> dict[str, Any]:
    """CPU, torch build, threads, load, date, commit and command of this run."""
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    try:
        pythae_version = importlib.metadata.version("pythae")
    except importlib.metadata.PackageNotFoundError:
        pythae_version = None
    return {
        "cpu": _cpu_model(), "cpu_family": _cpu_family(), "cores": os.cpu_count(), "torch": torch.__version__,
        "matmul_backend": precision.matmul_backend("cpu"), "uptime": _uptime(),
        "capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": bf16_supported(),
        "threads": settings.threads, "threads_reason": settings.threads_reason, "pythae": pythae_version,
        "python": platform.python_version(), "load_start": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else ""),
        "command": "python -m benchmarks.train_speed" + (" " + shlex.join(argv) if argv else ""),
    }


# ----------------------------------------------------------------------------------- rows 1 and 2: rounds


FLOOR_LABELS: dict[str, str] = {"fp32": "fp32, torch's default path (MKL)", "fp32_onednn": "fp32 on oneDNN",
                                "bf16": "bf16 operands (oneDNN)"}


def make_floors(model: torch.nn.Module, batches: list[int]) -> dict[str, Callable[[], float]]:
    """Timers for one epoch of the model's GEMMs: torch's default fp32 path, fp32 on oneDNN, bf16 (if native)."""
    fp32, timers = GemmFloor(model, batches), {}
    timers["fp32"] = lambda: fp32.time_batches(batches)

    def onednn() -> float:
        with onednn_matmul():
            return fp32.time_batches(batches)

    timers["fp32_onednn"] = onednn
    if bf16_supported():
        bf16 = GemmFloor(model, batches, dtype=torch.bfloat16)
        timers["bf16"] = lambda: bf16.time_batches(batches)
    return timers


def training_rounds(data: Dataset, spec: LoopSpec, settings: Settings, loops: dict[str, int]
                    ) -> tuple[dict[str, list[LoopRun]], dict[str, list[dict[str, Any]]]]:
    """Round r trains every loop once with seed r (A B C … A B C …); after each run the fp32 floor is timed,
    and the loop's own floor (oneDNN, bf16) when it runs on another one."""
    batches = epoch_batches(len(data.train), spec.batch_size)
    floors = make_floors(seeded_model(spec.model, 0), batches)
    runs: dict[str, list[LoopRun]] = {name: [] for name in loops}
    timings: dict[str, list[dict[str, Any]]] = {kind: [] for kind in floors}
    for round_ in range(settings.rounds):
        for name, epochs in loops.items():
            start, load = time.perf_counter(), os.getloadavg()[0]
            runs[name].append(LOOPS[name].run(data, spec, round_, epochs))
            runs[name][-1].load1 = (load + os.getloadavg()[0]) / 2
            print(f"  round {round_ + 1}/{settings.rounds} {name}: {time.perf_counter() - start:.1f} s, "
                  f"steady {steady_seconds(runs[name][-1]):.2f} s/epoch, load {runs[name][-1].load1:.1f}", flush=True)
            for kind in {"fp32", LOOPS[name].floor}:
                timings[kind].append({"round": round_, "after": name, "seconds": floors[kind](),
                                      "load1": os.getloadavg()[0]})
    return runs, timings


def _floor_summary(kind: str, timings: list[dict[str, Any]], flops: int) -> dict[str, Any]:
    seconds = statistics.median(t["seconds"] for t in timings)
    return {"kind": kind, "label": FLOOR_LABELS[kind], "s_per_epoch": seconds, "gflop_per_epoch": flops / 1e9,
            "gflops_per_s": flops / seconds / 1e9, "rounds": [t["seconds"] for t in timings], "timings": timings}


def _paired_ratios(name: str, runs: list[LoopRun], timings: list[dict[str, Any]]) -> float:
    """Median over runs of the steady epoch over the floor timed right after that run."""
    after = [t["seconds"] for t in timings if t["after"] == name]
    return statistics.median(steady_seconds(r) / s for r, s in zip(runs, after, strict=True))


def throughput_row(runs: dict[str, list[LoopRun]], timings: dict[str, list[dict[str, Any]]], n: int,
                   spec: LoopSpec) -> dict[str, Any]:
    """Row 1 from the rounds: per loop the median steady epoch, its range, samples/s and × floors."""
    flops = epoch_flops(seeded_model(spec.model, 0), n, spec.batch_size)
    floors = {kind: _floor_summary(kind, t, flops) for kind, t in timings.items() if t}
    base = statistics.median(steady_seconds(r) for r in runs["aestudy"])
    loops = []
    for name, loop_runs in runs.items():
        steady = [steady_seconds(r) for r in loop_runs]
        median = statistics.median(steady)
        own = LOOPS[name].floor
        loops.append({
            "loop": name, "label": LOOPS[name].label, "s_per_epoch": median, "rounds": steady,
            "range": f"{min(steady):.2f}–{max(steady):.2f}", "samples_per_s": n / median,
            "x_floor": _paired_ratios(name, loop_runs, timings["fp32"]), "own_floor": own,
            "x_own_floor": _paired_ratios(name, loop_runs, timings[own]),
            "aestudy_speedup": median / base, "first_epoch_s": statistics.median(r.epoch_seconds[0] for r in loop_runs),
            "epochs_per_round": len(loop_runs[0].epoch_seconds),
            "load1": statistics.fmean(r.load1 for r in loop_runs),
        })
    measured = next(r["x_floor"] for r in loops if r["loop"] == "aestudy")
    peers = {r["loop"]: r["aestudy_speedup"] for r in loops if r["loop"] in ("dataloader", "pythae")}
    return {"loops": loops, "floor": floors["fp32"], "floors": floors, "samples": n, "batch_size": spec.batch_size,
            "matmul_backend": precision.matmul_backend("cpu"),
            "target": {"ratio": TARGET_RATIO, "measured": measured, "met": measured <= TARGET_RATIO,
                       "speedup": TARGET_SPEEDUP, "peers": peers,
                       "speedup_met": bool(peers) and all(v >= TARGET_SPEEDUP for v in peers.values())}}


def profile_breakdown(data: Dataset, spec: LoopSpec, steps: int) -> dict[str, Any]:
    """Where aestudy's training step goes: torch.profiler over one epoch of `steps` steps of `fit`."""
    small = subset(data, steps * spec.batch_size)
    cfg = TrainConfig(epochs=1, batch_size=spec.batch_size, lr=spec.lr, device="cpu", progress=False)
    fit(seeded_model(spec.model, 0), subset(data, 4 * spec.batch_size), cfg)  # warm-up
    model = seeded_model(spec.model, 0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fit(model, small, cfg)
        wall = time.perf_counter() - start
    parts = {"GEMMs (mm, addmm)": 0.0, "optimizer (fused Adam)": 0.0, "batch gather (index, randperm)": 0.0,
             "other ops (activations, loss, KL, autograd glue)": 0.0}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        seconds = event.self_cpu_time_total / 1e6
        key = ("GEMMs (mm, addmm)" if event.key in GEMM_OPS else "optimizer (fused Adam)" if event.key in OPTIMIZER_OPS
               else "batch gather (index, randperm)" if event.key in INDEX_OPS
               else "other ops (activations, loss, KL, autograd glue)")
        parts[key] += seconds
    parts["Python, dispatch, autograd engine (wall − ops)"] = max(0.0, wall - sum(parts.values()))
    gemm_flops = epoch_flops(model, len(small.train), spec.batch_size)
    return {"steps": steps, "wall_s": wall,
            "parts": [{"part": k, "ms_per_step": v / steps * 1e3, "share": 100 * v / wall} for k, v in parts.items()],
            "gemm_gflops_per_s": gemm_flops / parts["GEMMs (mm, addmm)"] / 1e9}


def _within_noise(a: list[float], b: list[float]) -> str:
    """'diff ± s.e. (verdict)' for mean(b) − mean(a), s.e. from the two seed spreads."""
    if len(a) < 2 or len(b) < 2:
        return f"{statistics.fmean(b) - statistics.fmean(a):+.2f}"
    diff = statistics.fmean(b) - statistics.fmean(a)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    verdict = "within noise" if abs(diff) <= 2 * se else ("aestudy better" if diff > 0 else "aestudy worse")
    return f"{diff:+.2f} ± {se:.2f} ({verdict})"


def quality_row(runs: dict[str, list[LoopRun]], data: Dataset, settings: Settings) -> dict[str, Any]:
    """Row 2: test −ELBO (all test images, fixed noise) and IS-NLL (a subset) of every full-loop run."""
    images = data.test.images[:settings.quality_test_images]
    loops = []
    for name in [n for n in settings.loops if n in runs]:
        elbos, nlls = [], []
        for run in runs[name]:
            elbo = metrics.evaluate_elbo(run.model, images, generator=torch.Generator().manual_seed(0))
            elbos.append(-elbo["elbo"])
            nll = metrics.evaluate_is_nll(run.model, images[:settings.quality_nll_images], k=settings.quality_nll_k,
                                          generator=torch.Generator().manual_seed(0))
            nlls.append(nll["nll"])
        loops.append({"loop": name, "label": LOOPS[name].label, "neg_elbo": mean_sd(elbos), "is_nll": mean_sd(nlls),
                      "train_loss": statistics.fmean(r.train_loss for r in runs[name])})
    base = next((r for r in loops if r["loop"] == "aestudy"), None)
    for r in loops:
        if base is not None and r is not base:
            r["vs_aestudy"] = _within_noise(base["neg_elbo"]["values"], r["neg_elbo"]["values"])
    return {"epochs": settings.epochs, "seeds": settings.rounds, "test_images": len(images),
            "is_nll_k": settings.quality_nll_k,
            "is_nll_images": min(settings.quality_nll_images, len(images)), "loops": loops}


# ------------------------------------------------------------------------------------ rows 3, 4, 5, 6


def evaluation_row(model: torch.nn.Module, data: Dataset, settings: Settings) -> dict[str, Any]:
    """Row 3: IS-NLL cost on test images (per 10k: linear in images) with `is_nll`'s defaults and the reference
    (unfused, MKL) estimator on the same draws, memory at two k, pythae's get_nll."""
    images = data.test.images
    jobs = [(settings.memory_images, k, "default") for k in settings.memory_ks]
    jobs += [(settings.nll_images, settings.nll_k, "default"), (settings.nll_images, settings.nll_k, "reference")]
    costs = evaluation.is_nll_costs(model, images, jobs, threads=settings.threads)
    for cost in costs:
        cost["seconds_per_10k"] = cost["seconds"] * 10_000 / cost["images"]
    whats = ["memory vs k"] * len(settings.memory_ks) + [
        "test images, is_nll defaults (fused, oneDNN where exact)",
        "test images, reference (unfused, MKL: the estimator before issue 13)"]
    runs = [{"what": what, **c} for what, c in zip(whats, costs, strict=True)]
    default, reference = runs[-2], runs[-1]
    diff = torch.tensor(default["nll_values"], dtype=torch.float64) - torch.tensor(reference["nll_values"],
                                                                                   dtype=torch.float64)
    for r in runs:
        r.pop("nll_values")
    agreement = evaluation.pythae_agreement(model, images[:settings.agreement_images], k=settings.nll_k)
    return {"runs": runs, "memory_ks": list(settings.memory_ks),
            "memory_ratio": runs[1]["peak_extra_mib"] / max(runs[0]["peak_extra_mib"], 1e-9),
            "vs_reference": {"mean_diff": float(diff.mean()), "max_abs_diff": float(diff.abs().max()),
                             "diff_sem": float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else 0.0,
                             "nll_sem": default["nll_sem"], "speedup": reference["seconds"] / default["seconds"]},
            "target": {"k": settings.nll_k, "images": 10_000, "seconds": TARGET_NLL_SECONDS,
                       "measured_on": default["images"], "measured": default["seconds_per_10k"],
                       "met": default["seconds_per_10k"] <= TARGET_NLL_SECONDS},
            "pythae": agreement}


def _scaling_point(axis: str, value: int, data: Dataset, spec: LoopSpec) -> dict[str, Any]:
    """Steady epoch (2nd of 2) of aestudy's fit, scaled to 60k images, with its fp32 floor."""
    run = LOOPS["aestudy"].run(data, spec, 0, 2)
    n = len(data.train)
    floor = GemmFloor(seeded_model(spec.model, 0), epoch_batches(n, spec.batch_size))
    floor_s = floor.time_batches(epoch_batches(n, spec.batch_size))
    seconds = steady_seconds(run)
    return {"axis": axis, "value": value, "samples": n, "s_per_epoch": seconds, "s_per_60k": seconds * 60_000 / n,
            "floor_s": floor_s, "x_floor": seconds / floor_s}


def scaling_row(data: Dataset, settings: Settings) -> dict[str, Any]:
    """Row 4: epoch time vs training-set size (all images), batch size and latent size (on a subset)."""
    points = [_scaling_point("size", n, subset(data, n), LoopSpec()) for n in settings.scaling_sizes]
    small = subset(data, settings.scaling_subset)
    points += [_scaling_point("batch", b, small, LoopSpec(batch_size=b)) for b in settings.scaling_batches]
    points += [_scaling_point("latent", d, small, LoopSpec(model=ModelConfig(latent_dim=d)))
               for d in settings.scaling_latents]
    sizes = np.array([p["samples"] for p in points if p["axis"] == "size"], dtype=float)
    secs = np.array([p["s_per_epoch"] for p in points if p["axis"] == "size"])
    slope, intercept = np.polyfit(sizes, secs, 1) if len(sizes) > 1 else (secs[0] / sizes[0], 0.0)
    resid = secs - (slope * sizes + intercept)
    r2 = 1 - float((resid ** 2).sum() / max(((secs - secs.mean()) ** 2).sum(), 1e-12))
    return {"points": points, "subset": len(small.train),
            "size_fit": {"slope_s_per_10k": float(slope) * 10_000, "intercept_s": float(intercept), "r2": r2}}


def gpu_row() -> dict[str, Any]:
    """Row 6: the GPU table is not implemented here; say why it did not run."""
    if not torch.cuda.is_available():
        return {"status": "not run: no device lent (no CUDA device on this machine)"}
    return {"status": "not run: a CUDA device is present, but the GPU rows (bf16 autocast, torch.compile, CUDA "
                      "graphs, batched models) are not implemented in this benchmark yet"}


# ----------------------------------------------------------------------------------------------- main


def _other_row(name: str, model: torch.nn.Module | None, data: Dataset, settings: Settings) -> dict[str, Any]:
    """The rows after throughput and quality, by name."""
    if name == "batched":
        return batched.batched_speedup(subset(data, settings.batched_size), LoopSpec(), models=settings.batched_models,
                                       epochs=settings.batched_epochs, rounds=settings.batched_rounds)
    if name == "fit_profile":
        return fit_profile.fit_profile(size=settings.fit_profile_size, epochs=settings.fit_profile_epochs,
                                       threads=settings.threads)
    if name == "evaluation":
        assert model is not None
        return evaluation_row(model, data, settings)
    if name == "scaling":
        return scaling_row(data, settings)
    if name == "series":
        if not settings.series_profiles:
            return {"status": "not run (no profile selected)"}
        return series.series_wall_time(settings.series_profiles, threads=settings.threads)
    return gpu_row()


def run(settings: Settings, argv: list[str] | None = None) -> dict[str, Any]:
    """Measure the selected rows and write JSON, plot and (full runs) the README section; returns the results."""
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {"meta": machine_info(settings, argv or []), "settings": dataclasses.asdict(settings),
                               "rows": {}}
    print(f"benchmark: {settings.threads} thread(s) ({settings.threads_reason}); rows {', '.join(settings.rows)}",
          flush=True)
    data = load_dataset("fashion-mnist", val_size=0, progress=False)
    if settings.train_size is not None:
        data = subset(data, settings.train_size)
    spec = LoopSpec()
    rows, seconds = results["rows"], results["meta"].setdefault("row_seconds", {})
    first_model = None
    if {"throughput", "quality"} & set(settings.rows):
        tic = time.perf_counter()
        full_epochs = settings.epochs if "quality" in settings.rows else settings.variant_epochs + 1
        variants = settings.variants if "throughput" in settings.rows else ()
        usable = [n for n in (*settings.loops, *variants) if not LOOPS[n].needs_bf16 or bf16_supported()]
        loops = {name: full_epochs if name in settings.loops else settings.variant_epochs for name in usable}
        runs, timings = training_rounds(data, spec, settings, loops)
        first_model = runs["aestudy"][0].model
        seconds["rounds"] = time.perf_counter() - tic
        if "throughput" in settings.rows:
            tic = time.perf_counter()
            rows["throughput"] = throughput_row(runs, timings, len(data.train), spec)
            rows["throughput"]["profile"] = profile_breakdown(data, spec, settings.profile_steps)
            seconds["profile"] = time.perf_counter() - tic
        if "quality" in settings.rows:
            tic = time.perf_counter()
            rows["quality"] = quality_row(runs, data, settings)
            seconds["quality_eval"] = time.perf_counter() - tic
    for name in ("batched", "fit_profile", "evaluation", "scaling", "series", "gpu"):
        if name in settings.rows:
            tic = time.perf_counter()
            if name == "evaluation" and first_model is None:
                first_model = LOOPS["aestudy"].run(data, spec, 0, 2).model
            rows[name] = _other_row(name, first_model, data, settings)
            seconds[name] = time.perf_counter() - tic
            print(f"  {name}: {seconds[name]:.1f} s", flush=True)
    results["meta"]["load_end"] = list(os.getloadavg())
    results["meta"]["uptime_end"] = _uptime()
    results["meta"]["wall_s"] = time.perf_counter() - start
    write_outputs(results, settings)
    return results


def write_outputs(results: dict[str, Any], settings: Settings) -> str:
    """JSON, plot, printed tables and (a full run into the results folder) the README section."""
    markdown = report.summary_md(results)
    report.write_json(settings.out / "train_speed.json", results)
    report.plot(results, settings.out / "train_speed.png")
    if not settings.quick and settings.out.resolve() == RESULTS_DIR.resolve() and README.exists():
        report.update_readme(README, markdown)
    print(markdown, flush=True)
    return markdown


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.train_speed`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long check on a tiny subset")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--threads", default="auto", help="torch threads: 'auto' (idle cores at start) or N")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds = seeds (default 3)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every full-loop run, quality judged after them (default 10)")
    parser.add_argument("--series-profiles", default=None,
                        help="profiles for the series row, comma-separated (default: smoke; e.g. smoke,standard)")
    parser.add_argument("--loops", default=None,
                        help=f"loops trained for the full epochs in every round, comma-separated (default: "
                             f"{','.join(DEFAULT_LOOPS)}; any of {','.join(LOOPS)})")
    parser.add_argument("--variants", default=None,
                        help=f"throughput-only variants of aestudy's fit, comma-separated, 'none' or 'all' "
                             f"(default: {','.join(DEFAULT_VARIANTS)}; all: every loop not in --loops)")
    parser.add_argument("--nll-images", type=int, default=None, help="test images for the IS-NLL cost (10000)")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: "
                                                    "runs/bench-quick)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments (quick preset first, then explicit flags)."""
    threads, reason = resolve_threads(args.threads)
    overrides: dict[str, Any] = {"rows": tuple(r.strip() for r in args.rows.split(",") if r.strip()),
                                 "threads": threads, "threads_reason": reason}
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.series_profiles is not None:
        overrides["series_profiles"] = tuple(p.strip() for p in args.series_profiles.split(",") if p.strip())
    if args.nll_images is not None:
        overrides["nll_images"] = args.nll_images
    if args.loops is not None:
        overrides["loops"] = tuple(v.strip() for v in args.loops.split(",") if v.strip())
    if args.variants is not None:
        loops = overrides.get("loops", DEFAULT_LOOPS)
        chosen = {"all": tuple(n for n in LOOPS if n not in loops), "none": ()}.get(args.variants)
        overrides["variants"] = chosen if chosen is not None else tuple(
            v.strip() for v in args.variants.split(",") if v.strip())
    if args.out is not None:
        overrides["out"] = Path(args.out)
    return Settings.quick_settings(**overrides) if args.quick else Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print; invalid settings exit 2 with one line."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = settings_from_args(build_parser().parse_args(argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(settings, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
