"""The Python half of `benchmarks/gpu_check.sh` (issue 18): throughput rows, the series notebook by notebook, summary.

    python -m benchmarks.gpu_check rows    --device cuda --out DIR [sizes]   # DIR/rows.json, written after every row
    python -m benchmarks.gpu_check series  --device cuda --profile full --out DIR --deadline EPOCH_S [--only 01,02]
    python -m benchmarks.gpu_check summary DIR      # prints the table, writes DIR/gpu_check.json; exit 1 on a failure
    python -m benchmarks.gpu_check kernel-env SPEC_DIR NAME=VALUE ...   # pin variables into a kernel.json
    python -m benchmarks.gpu_check aestudy ARGS ...                      # the `aestudy` command, wherever it lives

Every figure is measured on the device given; nothing is assumed. A row or notebook that cannot start before the
deadline is "skipped" (not a failure); one that raises is "failed" and makes `summary` exit 1; a feature the code
does not have yet (`aestudy.ensemble.fit_many`) is "not available". A notebook still running when its time is up
is "stopped" (Ctrl-C; its metrics so far are kept): slow is a finding for the targets, not a failure. Statuses:
ok, failed, skipped, not available (rows); done, failed, stopped, skipped (notebooks).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOK_MIN_S = 20.0  # a notebook is not started with less time left (kernel start + imports alone take ~5 s)
INTERRUPT_GRACE_S = 30.0  # after Ctrl-C the runner writes metrics.json and the report; then it is killed
EPOCH_TARGET_S = 0.050  # issue 18: one VAE epoch on 60k images
SEEDS_TARGET = 3.0  # issue 18: 5 batched seeds >= 3x faster than 5 sequential fits
SERIES_TARGET_S = 300.0  # issue 18: the full series <= 5 min
RUNNER_MODULES = ("aestudy.runner.cli", "aestudy.runner.cli")  # the layout refactor moves cli.py into aestudy/runner/


# ----------------------------------------------------------------------------------------------- small helpers


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON atomically (a half-written file would hide results from the summary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when the file is absent (a step that never ran)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def runner_module() -> str:
    """The module holding aestudy's `main` (before or after the layout refactor)."""
    for name in RUNNER_MODULES:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) and importlib.util.find_spec(name):
            return name
    raise SystemExit(f"gpu_check: none of {', '.join(RUNNER_MODULES)} is importable; is the checkout on PYTHONPATH?")


def aestudy_command(args: Sequence[str]) -> list[str]:
    """argv running `aestudy ARGS` with this interpreter (aestudy comes from PYTHONPATH, not an install)."""
    code = f"import sys; from {runner_module()} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


# ----------------------------------------------------------------------------------------------- kernel


def pin_kernel_env(spec_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Add `env` to the kernelspec in `spec_dir` (its kernel then finds the prefix and the checkout whoever starts it).

    Raises FileNotFoundError when `spec_dir/kernel.json` is missing (the kernel was not installed there).
    """
    path = spec_dir / "kernel.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["env"] = {**spec.get("env", {}), **env}
    write_json(path, spec)
    return spec


# ----------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class RowSizes:
    """Sizes of the throughput rows (the GPU defaults are the issue's; the dry run passes tiny ones)."""

    images: int = 60000
    epochs: int = 3
    batch_sizes: tuple[int, ...] = (128, 1024)
    compile_batch_sizes: tuple[int, ...] = (128,)
    seeds: int = 5
    seed_epochs: int = 2
    nll_images: int = 10000
    nll_k: int = 5000
    nll_batch: int = 100
    nll_chunk: int = 5000
    compile_backend: str = "inductor"


# (label, TF32 matmuls, bf16 autocast, torch.compile); the CUDA-graph step is its own loop (graph_epochs)
FIT_VARIANTS: tuple[tuple[str, bool, bool, bool], ...] = (
    ("fp32", False, False, False),
    ("tf32", True, False, False),
    ("bf16 autocast", True, True, False),
    ("torch.compile", True, False, True),
    ("torch.compile + bf16", True, True, True),
)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _matmul_precision(tf32: bool) -> None:
    """TF32 tensor cores for fp32 matmuls on CUDA ("high") or exact fp32 ("highest"); no effect on CPU here."""
    import torch

    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def seeded_vae(seed: int) -> Any:
    """The benchmark's MLP VAE 784-512-256-16 (Bernoulli decoder), initialised from `seed`."""
    import torch

    from aestudy.models import ModelConfig, build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(ModelConfig())


def steady_epoch(seconds: Sequence[float]) -> float:
    """Median of the epochs after the first (which holds compilation and warm-up); the only one if there is one."""
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def epoch_row(name: str, batch: int, seconds: Sequence[float], images: int, loss: float, **extra: Any) -> dict:
    """A throughput row: steady s/epoch scaled to 60k images, samples/s, first epoch, last training loss."""
    steady = steady_epoch(seconds)
    finite = math.isfinite(loss)
    return {"row": name, "batch": batch, "status": "ok" if finite else "failed", "images": images,
            "s_per_epoch": steady, "s_per_60k": steady * 60000 / images, "samples_per_s": images / steady,
            "first_epoch_s": seconds[0], "epochs": len(seconds), "seconds": sum(seconds), "train_loss": loss,
            **({} if finite else {"error": f"training loss is {loss}"}), **extra}


@contextlib.contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    """Make `torch.compile` use `backend` inside (aestudy's `fit` calls it with the default, inductor).

    The dry run passes "eager": dynamo still traces aestudy's loss (graph breaks, guards, recompiles show up), but
    no code is generated, which on a CPU would cost a minute of C++ compilation per variant.
    """
    import torch

    if backend == "inductor":
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def fit_epochs(data: Any, device: Any, batch: int, epochs: int, *, tf32: bool, bf16: bool, compile: bool,
               seed: int = 0, backend: str = "inductor") -> tuple[Any, list[float], float]:
    """Train with aestudy's `fit` as the study does; (model, per-epoch seconds, last epoch's training loss)."""
    from aestudy.train import TrainConfig, fit

    _matmul_precision(tf32)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, seed=seed, device=str(device), compile=compile, bf16=bf16,
                      progress=False)
    with compile_backend(backend):
        result = fit(seeded_vae(seed), data, cfg)
    history = result.history
    return result.model, [float(s) for s in history["seconds"]], float(history["train_loss"].iloc[-1])


def _graph_optimizer(model: Any, cuda: bool) -> Any:
    """Adam whose step can be captured in a CUDA graph (its state lives on the device)."""
    import torch

    if not cuda:
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    try:
        return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)


def graph_step(model: Any, x_static: Any, cuda: bool) -> tuple[Callable[[], None], Any]:
    """One whole training step (forward, backward, Adam) replayed from a CUDA graph; (replay, static loss).

    On CUDA the step is warmed up on a side stream, then captured (PyTorch docs, "CUDA Graphs", whole-network
    capture); the reparameterisation noise comes from the default CUDA generator, which graphs support. On a CPU
    (the dry run) the same step runs eagerly through the same static buffers, so everything but the capture runs.
    """
    import torch

    from aestudy import objectives

    optimizer = _graph_optimizer(model, cuda)
    loss_box: list[Any] = [None]

    def step() -> None:
        loss, _ = objectives.loss_terms(model, x_static)
        loss.backward()
        optimizer.step()
        loss_box[0] = loss.detach()

    if not cuda:
        def eager() -> None:
            optimizer.zero_grad(set_to_none=True)
            step()
        return eager, loss_box
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up: cuBLAS handles, Adam state, allocator pools
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    return graph.replay, loss_box


def graph_epochs(data: Any, device: Any, batch: int, epochs: int, seed: int = 0) -> tuple[list[float], float, int]:
    """Epochs of the captured step over seeded permutations: (seconds per epoch, last loss, images per epoch).

    Only full batches run (a graph has fixed shapes): n // batch steps per epoch; the ragged rest is left out and
    the row is scaled to 60k images by the images actually trained.
    """
    import torch

    _matmul_precision(True)
    cuda = device.type == "cuda"
    x_train = data.train.images.to(device)  # (N, 1, 28, 28)
    steps = x_train.shape[0] // batch
    model = seeded_vae(seed).to(device).train()
    x_static = torch.empty((batch, *x_train.shape[1:]), device=device)
    replay, loss_box = graph_step(model, x_static, cuda)
    generator = torch.Generator(device=device).manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(x_train.shape[0], generator=generator, device=device)
        for step in range(steps):
            torch.index_select(x_train, 0, order[step * batch:(step + 1) * batch], out=x_static)
            replay()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, float(loss_box[0]), steps * batch


def fit_many_call(model_cfg: Any, train_cfgs: list[Any], data: Any) -> tuple[list[Any] | None, str | None]:
    """Train the configs as one batched computation with `aestudy.ensemble.fit_many` (issue 13), in a fresh
    temporary cache (so nothing is loaded from an earlier run), or say why it is not available.

    Returns (one TrainResult per config, None), or (None, why). Errors raised while training propagate.
    """
    try:
        ensemble = importlib.import_module("aestudy.ensemble")
    except ImportError as err:
        return None, f"aestudy.ensemble is not importable ({err})"
    with tempfile.TemporaryDirectory(prefix="aestudy-fit-many-") as cache_dir:
        return list(ensemble.fit_many(model_cfg, train_cfgs, data, cache_dir=cache_dir, batched=True)), None


def seed_rows(data: Any, device: Any, sizes: RowSizes) -> list[dict]:
    """`sizes.seeds` fits sequentially vs one batched `fit_many` call, same configs (eager, TF32)."""
    from aestudy.models import ModelConfig
    from aestudy.train import TrainConfig, fit

    _matmul_precision(True)
    cfgs = [TrainConfig(epochs=sizes.seed_epochs, seed=s, device=str(device), compile=False, progress=False)
            for s in range(sizes.seeds)]
    _sync(device)
    start = time.perf_counter()
    sequential = [fit(seeded_vae(c.seed), data, c) for c in cfgs]
    _sync(device)
    seq_s = time.perf_counter() - start
    label = f"{sizes.seeds} seeds x {sizes.seed_epochs} epochs"
    rows = [{"row": f"{label}, sequential fit", "batch": 128, "status": "ok", "seconds": seq_s,
             "per_fit_s": seq_s / len(cfgs), "images": len(data.train)}]
    start = time.perf_counter()
    results, why = fit_many_call(ModelConfig(), cfgs, data)
    _sync(device)
    if results is None:
        rows.append({"row": f"{label}, batched fit_many", "batch": 128, "status": "not available", "note": why})
        return rows
    batched_s = time.perf_counter() - start
    gap = max(abs(float(a.history["train_loss"].iloc[-1]) - float(b.history["train_loss"].iloc[-1]))
              for a, b in zip(sequential, results, strict=True))
    rows.append({"row": f"{label}, batched fit_many", "batch": 128, "status": "ok", "seconds": batched_s,
                 "speedup": seq_s / batched_s, "max_train_loss_gap": gap, "target_speedup": SEEDS_TARGET})
    return rows


def nll_row(model: Any, data: Any, device: Any, sizes: RowSizes) -> dict:
    """IS-NLL (k = sizes.nll_k) of the fp32-trained VAE on the first test images, timed, checked against −ELBO.

    Burda et al. (2016): E[L_k] >= E[L_1] = ELBO, so the mean IS-NLL must not exceed the mean −ELBO by more than
    Monte-Carlo noise (3 standard errors of the per-image difference); the row fails otherwise.
    """
    import torch

    from aestudy import objectives

    _matmul_precision(False)
    images = data.test.images[:sizes.nll_images]
    generator = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    nll = objectives.is_nll(model, images, k=sizes.nll_k, batch_size=sizes.nll_batch, chunk_size=sizes.nll_chunk,
                            generator=generator)
    _sync(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        neg_elbo = torch.cat([-objectives.elbo_terms(model, x.to(device), generator=generator).elbo.cpu()
                              for x in images.split(1000)])
    diff = (nll - neg_elbo).double()
    slack = 3 * float(diff.std()) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    ok = bool(torch.isfinite(nll).all()) and float(diff.mean()) <= slack
    return {"row": f"IS-NLL k={sizes.nll_k:,} on {len(images):,} test images", "batch": sizes.nll_batch,
            "chunk": sizes.nll_chunk, "status": "ok" if ok else "failed", "seconds": seconds,
            "s_per_10k": seconds * 10000 / len(images), "is_nll": float(nll.mean()),
            "neg_elbo": float(neg_elbo.mean()), "nll_minus_neg_elbo": float(diff.mean()),
            **({} if ok else {"error": f"IS-NLL {float(nll.mean()):.3f} exceeds -ELBO {float(neg_elbo.mean()):.3f} "
                                       f"by more than 3 s.e. ({slack:.3f}), or is not finite"})}


class Rows:
    """The rows run so far, saved after each one (a later hang or kill keeps the earlier figures)."""

    def __init__(self, out: Path, deadline: float, header: dict[str, Any]) -> None:
        self.out, self.deadline, self.header, self.rows = out, deadline, header, []

    def run(self, name: str, make: Callable[[], dict | list[dict]], *, need_s: float = 5.0) -> Any:
        """Run `make` unless the deadline is within `need_s`; a raise becomes a failed row, not an abort."""
        if time.time() + need_s > self.deadline:
            self.add([{"row": name, "status": "skipped", "note": "the time budget was spent"}])
            return None
        print(f"gpu_check rows: {name} ...", file=sys.stderr, flush=True)
        try:
            made = make()
        except Exception as exc:  # noqa: BLE001 - any error of one row is recorded, the next rows still run
            self.add([{"row": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}])
            return None
        self.add(made if isinstance(made, list) else [made])
        return made

    def add(self, rows: list[dict]) -> None:
        """Append rows and rewrite rows.json."""
        self.rows.extend(rows)
        write_json(self.out / "rows.json", {**self.header, "rows": self.rows})


def machine(device: Any) -> dict[str, Any]:
    """What ran the rows: device name, torch and CUDA versions, CPU threads."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "threads": torch.get_num_threads()}


def row_plan(sizes: RowSizes) -> list[tuple[str, int, tuple[str, bool, bool, bool] | None]]:
    """(kind, batch, fit variant) in order of value per second: the eager variants, the graph step, seeds and
    IS-NLL at the first batch size, then the other batch sizes, and the compiled variants (the slow cold compile)
    last, so a spent budget skips those first."""
    first, *rest = sizes.batch_sizes
    eager = [v for v in FIT_VARIANTS if not v[3]]
    compiled = [v for v in FIT_VARIANTS if v[3]]
    plan: list[tuple[str, int, tuple[str, bool, bool, bool] | None]] = [("fit", first, v) for v in eager]
    plan += [("graph", first, None), ("seeds", first, None), ("nll", first, None)]
    for batch in rest:
        plan += [("fit", batch, v) for v in eager] + [("graph", batch, None)]
    plan += [("fit", b, v) for b in sizes.batch_sizes if b in sizes.compile_batch_sizes for v in compiled]
    return plan


def run_rows(out: Path, device_name: str, sizes: RowSizes, deadline: float) -> list[dict]:
    """Every throughput row in `row_plan` order; rows.json in `out` after each one."""
    from aestudy.config import resolve_device
    from aestudy.data import load_dataset

    device = resolve_device(device_name)
    data = load_dataset("fashion-mnist", val_size=0, limit=None if sizes.images >= 60000 else sizes.images,
                        progress=False)
    rows = Rows(out, deadline, {"machine": machine(device), "sizes": sizes.__dict__})
    kept: dict[Any, Any] = {}

    def fit_row(batch: int, label: str, tf32: bool, bf16: bool, compiled: bool) -> dict:
        model, seconds, loss = fit_epochs(data, device, batch, sizes.epochs, tf32=tf32, bf16=bf16,
                                          compile=compiled, backend=sizes.compile_backend)
        kept.setdefault((label, batch), model)
        note = ({"note": f"torch.compile backend {sizes.compile_backend!r}"}
                if compiled and sizes.compile_backend != "inductor" else {})
        return epoch_row(f"VAE epoch, fit, {label}", batch, seconds, len(data.train), loss, **note)

    for kind, batch, variant in row_plan(sizes):
        if kind == "fit":
            rows.run(f"VAE epoch, fit, {variant[0]}, batch {batch}",
                     lambda b=batch, v=variant: fit_row(b, *v), need_s=10.0 + 20.0 * variant[3])
        elif kind == "graph":
            rows.run(f"VAE epoch, CUDA graph step, batch {batch}",
                     lambda b=batch: _graph_row(data, device, b, sizes.epochs))
        elif kind == "seeds":
            rows.run("seeds", lambda: seed_rows(data, device, sizes), need_s=15.0)
        else:
            rows.run("IS-NLL", lambda b=batch: nll_row(_trained(kept, b, device), data, device, sizes))
    return rows.rows


def _trained(kept: dict[Any, Any], batch: int, device: Any) -> Any:
    """The fp32-trained VAE of the first batch size (an untrained one if that row failed), in eval mode."""
    model = kept.get(("fp32", batch)) or seeded_vae(0)
    return model.to(device).eval()


def _graph_row(data: Any, device: Any, batch: int, epochs: int) -> dict:
    seconds, loss, images = graph_epochs(data, device, batch, epochs)
    note = None if device.type == "cuda" else "not captured on a CPU: the same static-buffer step, run eagerly"
    return epoch_row("VAE epoch, CUDA graph step (tf32)", batch, seconds, images, loss,
                     **({"note": note} if note else {}))


# ----------------------------------------------------------------------------------------------- series


def _stop(process: subprocess.Popen) -> None:
    """Ctrl-C the runner (it saves state, metrics.json and the report), then kill it if it lingers."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def notebook_record(name: str, status: str, wall_s: float | None, run_dir: Path) -> dict[str, Any]:
    """One notebook's outcome with its claims (id, kind, holds, enforced) from the run's metrics.json."""
    metrics = read_json(run_dir / "metrics.json") or {}
    entries = metrics.get("notebooks", {})
    entry = next((e for key, e in entries.items() if Path(name).stem == key), {})
    claims = [{"id": c.get("id"), "kind": c.get("kind"), "holds": bool(c.get("holds")),
               "enforced": bool(c.get("enforced"))} for e in entries.values() for c in e.get("claims", [])]
    error = entry.get("error") or None
    return {"notebook": name, "status": status, "wall_s": entry.get("wall_s") or wall_s, "run_dir": str(run_dir),
            "claims": claims, "error": error.get("evalue") if isinstance(error, dict) else error}


def run_notebook(name: str, run_dir: Path, *, profile: str, device: str, kernel: str, timeout_s: float,
                 params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`aestudy run --only NN` into its own run folder, stopped (Ctrl-C) after `timeout_s`; its record."""
    args = ["run", "--profile", profile, "--device", device, "--only", name[:2], "--out", str(run_dir),
            "--kernel", kernel, "--quiet"]
    for key, value in params:
        args += ["-p", key, value]
    start = time.perf_counter()
    process = subprocess.Popen(aestudy_command(args))
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(process)
        code = None
    wall = time.perf_counter() - start
    status = {0: "done", None: "stopped"}.get(code, "stopped" if code == 130 else "failed")
    return notebook_record(name, status, wall, run_dir)


def run_series(out: Path, *, profile: str, device: str, kernel: str, only: Sequence[str], deadline: float,
               params: Sequence[tuple[str, str]] = (), notebook_cap: float = math.inf) -> dict[str, Any]:
    """The selected notebooks one by one, each in `out/runs/NN`, each given what is left of the budget (at most
    `notebook_cap` seconds).

    A notebook is skipped when less than NOTEBOOK_MIN_S remain; then `out` gets the merged metrics.json and
    report of the notebooks that ran, plus series.json.
    """
    notebooks = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")
                       if p.name[:2] in only)
    record: dict[str, Any] = {"profile": profile, "device": device, "notebooks": []}
    for name in notebooks:
        left = deadline - time.time()
        if left < NOTEBOOK_MIN_S:
            record["notebooks"].append({"notebook": name, "status": "skipped", "wall_s": None, "claims": [],
                                        "error": f"{max(left, 0):.0f} s of the budget left"})
            continue
        print(f"gpu_check series ({profile}, {device}): {name}, {left:.0f} s left", file=sys.stderr, flush=True)
        record["notebooks"].append(run_notebook(name, out / "runs" / name[:2], profile=profile, device=device,
                                                kernel=kernel, timeout_s=min(left, notebook_cap), params=params))
        write_json(out / "series.json", record)
    merge_runs(out, record)
    write_json(out / "series.json", record)
    return record


def merge_runs(out: Path, record: dict[str, Any]) -> None:
    """One metrics.json and report for the whole series from the per-notebook run folders."""
    merged: dict[str, Any] | None = None
    for item in record["notebooks"]:
        metrics = read_json(Path(item.get("run_dir", "")) / "metrics.json") if item.get("run_dir") else None
        if metrics is None:
            continue
        if merged is None:
            merged = {**metrics, "run": out.name, "notebooks": {}}
        merged["notebooks"].update(metrics.get("notebooks", {}))
    if merged is None:
        return
    statuses = {item["status"] for item in record["notebooks"]}
    merged["status"] = "complete" if statuses == {"done"} else "incomplete"
    write_json(out / "metrics.json", merged)
    report = importlib.import_module(_report_module())
    try:
        report.write_report(out)
    except Exception as exc:  # noqa: BLE001 - the per-notebook reports exist; say why the merged one does not
        record["report_error"] = f"{type(exc).__name__}: {exc}"


def _report_module() -> str:
    return "aestudy.runner.report" if importlib.util.find_spec("aestudy.runner") else "aestudy.report"


# ----------------------------------------------------------------------------------------------- summary


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def row_figure(row: dict[str, Any]) -> str:
    """The figure column of a throughput row."""
    if "s_per_60k" in row:
        return (f"{row['s_per_60k'] * 1000:.1f} ms/epoch per 60k ({row['samples_per_s']:,.0f} img/s), "
                f"1st epoch {row['first_epoch_s']:.2f} s")
    if "speedup" in row:
        return f"{row['seconds']:.2f} s, {row['speedup']:.2f}x vs sequential (target >= {SEEDS_TARGET:g}x)"
    if "per_fit_s" in row:
        return f"{row['per_fit_s']:.2f} s per fit"
    if "is_nll" in row:
        return (f"{row['seconds']:.2f} s ({row['s_per_10k']:.1f} s per 10k), IS-NLL {row['is_nll']:.2f} "
                f"<= -ELBO {row['neg_elbo']:.2f}")
    return row.get("note") or row.get("error") or ""


def targets(rows: list[dict], phases: list[dict]) -> list[dict[str, Any]]:
    """The issue's targets against what was measured (met / missed / not measured)."""
    epochs = [r for r in rows if r.get("status") == "ok" and "s_per_60k" in r]
    best = min(epochs, key=lambda r: r["s_per_60k"], default=None)
    speed = next((r for r in rows if r.get("status") == "ok" and "speedup" in r), None)
    full = next((p for p in phases if p["profile"] == "full"), None)
    done = full is not None and all(n["status"] == "done" for n in full["notebooks"])
    total = sum(n["wall_s"] or 0 for n in full["notebooks"]) if done else None

    def verdict(value: float | None, ok: bool) -> str:
        return "not measured" if value is None else ("met" if ok else "missed")

    return [
        {"target": f"VAE epoch on 60k images <= {EPOCH_TARGET_S * 1000:.0f} ms",
         "measured": None if best is None else f"{best['s_per_60k'] * 1000:.1f} ms ({best['row']}, "
                                               f"batch {best['batch']})",
         "verdict": verdict(best and best["s_per_60k"], bool(best) and best["s_per_60k"] <= EPOCH_TARGET_S)},
        {"target": f"5 batched seeds >= {SEEDS_TARGET:g}x faster than sequential",
         "measured": None if speed is None else f"{speed['speedup']:.2f}x",
         "verdict": verdict(speed and speed["speedup"], bool(speed) and speed["speedup"] >= SEEDS_TARGET)},
        {"target": f"full series <= {SERIES_TARGET_S:.0f} s",
         "measured": None if total is None else f"{total:.0f} s",
         "verdict": verdict(total, total is not None and total <= SERIES_TARGET_S)},
    ]


def read_setup(out: Path) -> list[dict[str, Any]]:
    """The shell's setup steps from setup.tsv (step, status, seconds, note)."""
    path = out / "setup.tsv"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        step, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        steps.append({"step": step, "status": status, "seconds": float(seconds or 0), "note": note})
    return steps


def collect(out: Path) -> dict[str, Any]:
    """Everything the check wrote under `out`, as one record, with failures counted."""
    rows_file = read_json(out / "rows.json") or {}
    phases = [read_json(p) for p in sorted(out.glob("series-*/series.json"))]
    rows = rows_file.get("rows", [])
    setup = read_setup(out)
    failures = ([f"setup: {s['step']}" for s in setup if s["status"] != "ok"]
                + [f"row: {r['row']}" for r in rows if r.get("status") == "failed"]
                + [f"notebook {p['profile']}/{n['notebook']}: {n['status']}" for p in phases for n in p["notebooks"]
                   if n["status"] == "failed"])
    meta = read_json(out / "meta.json") or {}
    goals = targets(rows, phases)
    if meta.get("mode") == "dry-run":  # tiny sizes on a CPU: the targets are the GPU's, not judged here
        goals = [{**goal, "verdict": "not judged (dry run)"} for goal in goals]
    stopped = [f"{p['profile']}/{n['notebook']}" for p in phases for n in p["notebooks"] if n["status"] == "stopped"]
    return {**meta, "machine": rows_file.get("machine"), "setup": setup, "rows": rows, "series": phases,
            "targets": goals, "failures": failures, "stopped": stopped, "ok": not failures}


def table(record: dict[str, Any]) -> str:
    """The summary table: setup steps, notebooks, throughput rows, targets, then the verdict line."""
    lines = [f"gpu_check summary: mode {record.get('mode', '?')}, device {record.get('device', '?')}"
             + (f" ({record['machine']['device_name']}, torch {record['machine']['torch']})"
                if record.get("machine") else ""),
             f"{'what':<58} {'status':<21} {'seconds':>8}  figure"]

    def add(what: str, status: str, seconds: Any, figure: str = "") -> None:
        lines.append(f"{what:<58} {status:<21} {_fmt(seconds, '.1f'):>8}  {figure}".rstrip())

    for s in record["setup"]:
        add(f"setup: {s['step']}", s["status"], s["seconds"], s["note"])
    for phase in record["series"]:
        for n in phase["notebooks"]:
            held = sum(c["holds"] for c in n["claims"])
            figure = f"claims {held}/{len(n['claims'])} hold" if n["claims"] else (n.get("error") or "")
            add(f"series {phase['profile']}/{phase['device']}: {n['notebook']}", n["status"], n["wall_s"], figure)
    for r in record["rows"]:
        add(f"row: {r['row']}" + (f", batch {r['batch']}" if r.get("batch") and "batch" not in r["row"] else ""),
            r["status"], r.get("seconds"), row_figure(r))
    for t in record["targets"]:
        add(f"target: {t['target']}", t["verdict"], None, t["measured"] or "")
    if record.get("stopped"):
        lines.append(f"stopped at their time limit (not failures): {', '.join(record['stopped'])}")
    verdict = "OK" if record["ok"] else f"FAILED ({len(record['failures'])}): " + "; ".join(record["failures"])
    lines.append(f"result: {verdict}")
    return "\n".join(lines)


def summarize(out: Path) -> int:
    """Print the table, write gpu_check.json and summary.txt in `out`; 0 when nothing failed, else 1."""
    record = collect(out)
    text = table(record)
    write_json(out / "gpu_check.json", record)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if record["ok"] else 1


# ----------------------------------------------------------------------------------------------- command line


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _rows_parser(sub: Any) -> None:
    rows = sub.add_parser("rows", help="throughput rows into OUT/rows.json")
    rows.add_argument("--device", required=True)
    rows.add_argument("--out", type=Path, required=True)
    rows.add_argument("--deadline", type=float, default=math.inf, help="epoch seconds after which rows are skipped")
    defaults = RowSizes()
    for name, value in defaults.__dict__.items():
        kind = _ints if isinstance(value, tuple) else type(value)
        rows.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)


def build_parser() -> argparse.ArgumentParser:
    """The subcommands of this module (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _rows_parser(sub)
    series = sub.add_parser("series", help="the notebooks one by one into OUT (runs/NN, metrics.json, report)")
    series.add_argument("--device", required=True)
    series.add_argument("--profile", required=True)
    series.add_argument("--out", type=Path, required=True)
    series.add_argument("--kernel", default="aestudy")
    series.add_argument("--only", default="01,02,03,04")
    series.add_argument("--deadline", type=float, required=True)
    series.add_argument("--notebook-cap", type=float, default=math.inf, help="seconds at most per notebook")
    series.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), dest="params")
    summary = sub.add_parser("summary", help="print the table, write OUT/gpu_check.json; exit 1 on a failure")
    summary.add_argument("out", type=Path)
    kernel = sub.add_parser("kernel-env", help="pin NAME=VALUE variables into SPEC_DIR/kernel.json")
    kernel.add_argument("spec_dir", type=Path)
    kernel.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    sub.add_parser("aestudy", help="run the aestudy command with the remaining arguments", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["aestudy"]:
        return subprocess.call(aestudy_command(argv[1:]))
    args = build_parser().parse_args(argv)
    if args.command == "rows":
        sizes = RowSizes(**{name: getattr(args, name) for name in RowSizes().__dict__})
        rows = run_rows(args.out, args.device, sizes, args.deadline)
        return 0 if all(r["status"] != "failed" for r in rows) else 1
    if args.command == "series":
        record = run_series(args.out, profile=args.profile, device=args.device, kernel=args.kernel,
                            only=[s.strip().zfill(2) for s in args.only.split(",") if s.strip()],
                            deadline=args.deadline, params=[tuple(p) for p in args.params],
                            notebook_cap=args.notebook_cap)
        return 0 if all(n["status"] != "failed" for n in record["notebooks"]) else 1
    if args.command == "summary":
        return summarize(args.out)
    pin_kernel_env(args.spec_dir, dict(pair.split("=", 1) for pair in args.pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
