"""`aestudy sweep`: a parameter grid over notebooks, one papermill execution per point, run in parallel.

Points run in a local process pool by default, or on an existing Dask cluster (`--scheduler tcp://HOST:PORT`;
each task is one point; the workers must see the same filesystem, and should run one thread each, since a
kernel inherits its worker's environment variables). A failed point is reported and the others go on.

Output, in `runs/NAME/`: `points/<id>/` (executed notebooks, the point's `metrics.json` ledger, `point.json`),
`sweep.json` (grid, every point's values, status, error, wall time), `sweep.csv` (tidy: one row per point ×
notebook × metric; claims appear as metric `claim:<id>` with value 1/0) and `sweep_<metric>.png` (each
metric against each swept parameter, mean ± sd over the other parameters).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aestudy.claims import load_metrics
from aestudy.errors import ConfigError
from aestudy.parameters import parse_text
from aestudy.runner.folders import check_new_folder, claim_folder, remove_unused_folder, write_json_atomic
from aestudy.runner.kernel import (
    DEFAULT_KERNEL,
    THREAD_VARS,
    describe_failure,
    execute_notebook,
    format_failure,
    kernel_log_path,
    notebook_env,
)
from aestudy.runner.params import RUN_LEVEL, notebook_key, route_parameters
from aestudy.runner.run import plan_run

TIDY_COLUMNS: tuple[str, ...] = ("point", "notebook", "metric", "value")


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    """`["latent_dim=2,8", "beta=0.5,1"]` -> `{"latent_dim": [2, 8], "beta": [0.5, 1]}`.

    Each value is read as `-p` reads it (`parameters.parse_text`, papermill's rules: `None`, `True`, `1e-3`...).
    Raises ConfigError for a malformed item, a name given twice, a run-level name, an empty or repeated value.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ConfigError(f"grid item {spec!r} is invalid; it must look like NAME=V1,V2,... "
                              "(e.g. latent_dim=2,8,32).")
        if name in grid:
            raise ConfigError(f"grid parameter {name!r} is given twice; give all its values once: {name}=V1,V2.")
        if name in RUN_LEVEL:
            raise ConfigError(f"grid parameter {name!r} cannot be swept; valid values: a notebook parameter "
                              f"(run one sweep per --{name}).")
        texts = [v.strip() for v in values.split(",")]
        if "" in texts:
            raise ConfigError(f"grid item {spec!r} has an empty value; valid values: NAME=V1,V2,... with no empty "
                              "item (write None for None).")
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise ConfigError(f"grid item {spec!r} repeats {', '.join(repeated)}; give each value once (a repeated "
                              "value runs the same point twice).")
        grid[name] = [parse_text(t) for t in texts]
    if not grid:
        raise ConfigError("the grid is empty; give at least one NAME=V1,V2,... item.")
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in order (the last parameter varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


@dataclass(frozen=True)
class PointTask:
    """One grid point: its swept values and, per notebook, the full parameters it runs with."""

    point_id: str
    values: dict[str, Any]
    notebooks: tuple[tuple[str, dict[str, Any]], ...]
    point_dir: str
    kernel: str
    profile: str
    threads: int | None = None


@dataclass(frozen=True)
class PointResult:
    """How a point ended: `done` with its ledger, or `failed` at `failed_notebook` with `error`."""

    point_id: str
    values: dict[str, Any]
    status: str
    wall_s: float
    ledger: dict[str, Any] = field(default_factory=dict)
    failed_notebook: str | None = None
    error: dict[str, Any] | None = None


def execute_point(task: PointTask) -> PointResult:
    """Execute a point's notebooks in order into its folder; failures are returned, never raised."""
    point_dir = Path(task.point_dir)
    point_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = point_dir / "metrics.json"
    start = time.perf_counter()
    failed, error = None, None
    for path, parameters in task.notebooks:
        notebook = Path(path)
        env = notebook_env(notebook, metrics_file=metrics_file, profile=task.profile, run_dir=point_dir)
        if task.threads is not None:
            env.update({var: str(task.threads) for var in THREAD_VARS if var not in os.environ})
        try:
            execute_notebook(notebook, point_dir / notebook.name, parameters, kernel=task.kernel, env=env,
                             progress=False, kernel_log=kernel_log_path(point_dir, notebook))
        except Exception as exc:  # noqa: BLE001 - a failed point is data for the report, not a crash
            failed, error = notebook.name, describe_failure(exc)
            break
    result = PointResult(task.point_id, task.values, "failed" if failed else "done", time.perf_counter() - start,
                         load_metrics(metrics_file) if metrics_file.exists() else {}, failed, error)
    write_json_atomic(point_dir / "point.json", {k: v for k, v in asdict(result).items() if k != "ledger"})
    return result


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def tidy_results(results: Iterable[PointResult], swept: Sequence[str]) -> pd.DataFrame:
    """One row per (point, notebook, metric) of the points that finished: numeric metrics and claims (1/0)."""
    rows = []
    for result in results:
        if result.status != "done":
            continue
        for notebook, entry in result.ledger.get("notebooks", {}).items():
            base = {"point": result.point_id, **{name: result.values[name] for name in swept}, "notebook": notebook}
            for metric, value in entry.get("metrics", {}).items():
                number = _number(value)
                if number is not None:
                    rows.append({**base, "metric": metric, "value": number})
            for claim in entry.get("claims", []):
                rows.append({**base, "metric": f"claim:{claim.get('id')}", "value": 1.0 if claim.get("holds") else 0.0})
    columns = ["point", *swept, "notebook", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def plot_sweep(frame: pd.DataFrame, swept: Sequence[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """`sweep_<metric>.png`: each metric against each swept parameter (one panel per parameter)."""
    from matplotlib.figure import Figure

    from aestudy.plots import line_vs, set_theme

    set_theme()
    written = []
    for metric, rows in frame.groupby("metric", sort=True):
        hue = "notebook" if rows["notebook"].nunique() > 1 else None
        figure = Figure(figsize=(4.0 * len(swept), 3.2), layout="constrained")
        axes = figure.subplots(1, len(swept), squeeze=False)[0]
        for ax, name in zip(axes, swept, strict=True):
            line_vs(rows, name, "value", hue, ax=ax, ylabel=str(metric))
        figure.suptitle(str(metric))
        path = Path(out_dir) / f"sweep_{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(metric))}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


@dataclass(frozen=True)
class SweepResult:
    """The sweep folder, every point's result and the tidy table's path."""

    out_dir: Path
    results: tuple[PointResult, ...]
    table: Path

    @property
    def failed(self) -> list[PointResult]:
        """The points that did not finish."""
        return [r for r in self.results if r.status != "done"]

    @property
    def exit_code(self) -> int:
        """0 when every point finished, 1 otherwise."""
        return 1 if self.failed else 0


def plan_sweep(grid: Mapping[str, Sequence[Any]], notebooks_dir: str | os.PathLike[str] | None = None, *,
               only: Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
               profile: str | None = None, device: str | None = None, kernel: str = DEFAULT_KERNEL,
               out_dir: Path, threads: int | None = None) -> list[PointTask]:
    """Validate the grid and fixed parameters against the notebooks (before anything runs); one task per point."""
    params = dict(params or {})
    both = sorted(set(grid) & set(params))
    if both:
        raise ConfigError(f"parameter(s) {', '.join(both)} are both swept and fixed (-p/--params); give each once.")
    notebooks, _, profile, device = plan_run(notebooks_dir, profile=profile, device=device, only=only,
                                             params=params, kernel=kernel)
    params.pop("profile", None)
    params.pop("device", None)
    points = grid_points(grid)
    width = max(3, len(str(len(points) - 1)))
    tasks = []
    for index, values in enumerate(points):
        routed = route_parameters(notebooks, {**params, **values}, run_level={"profile": profile, "device": device})
        point_id = f"p{index:0{width}d}"
        tasks.append(PointTask(point_id, values, tuple((str(nb), routed[notebook_key(nb)]) for nb in notebooks),
                               str(out_dir / "points" / point_id), kernel, profile, threads))
    return tasks


def _describe(result: PointResult) -> str:
    values = ", ".join(f"{k}={v!r}" for k, v in result.values.items())
    if result.status == "done":
        return f"{result.point_id} ({values}) done in {result.wall_s:.1f} s"
    return f"{result.point_id} ({values}) FAILED: {format_failure(result.failed_notebook or '?', result.error or {})}"


def _run_local(tasks: Sequence[PointTask], workers: int) -> Iterable[PointResult]:
    # spawn: a fresh interpreter per worker (no forked threads or CUDA state from the parent).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(execute_point, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            yield _collect(futures[future], future.result)


def _run_dask(tasks: Sequence[PointTask], scheduler: str) -> Iterable[PointResult]:
    from dask.distributed import Client, as_completed

    with Client(scheduler) as client:
        futures = client.map(execute_point, tasks, pure=False)
        by_key = {future.key: task for future, task in zip(futures, tasks, strict=True)}
        for future in as_completed(futures):
            yield _collect(by_key[future.key], future.result)


def _collect(task: PointTask, get: Callable[[], PointResult]) -> PointResult:
    """A task's result, or a failed result when its worker itself died (the point's notebooks did not report)."""
    try:
        return get()
    except Exception as exc:  # noqa: BLE001 - e.g. a killed worker: report the point, keep the others
        return PointResult(task.point_id, task.values, "failed", 0.0, {}, None,
                           {"cell": None, "cell_index": None, "source": None, "ename": type(exc).__name__,
                            "evalue": str(exc)})


def run_sweep(grid: Mapping[str, Sequence[Any]], notebooks_dir: str | os.PathLike[str] | None = None, *,
              only: Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
              profile: str | None = None, device: str | None = None, kernel: str = DEFAULT_KERNEL,
              out: str | os.PathLike[str] | None = None, scheduler: str | None = None,
              workers: int | None = None, progress: bool = True) -> SweepResult:
    """Run every grid point (process pool, or the Dask cluster at `scheduler`), then write the table and plots."""
    if scheduler is not None and workers is not None:
        raise ConfigError("--workers sizes the local process pool; with --scheduler the Dask cluster decides. "
                          "Give one of them.")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} is invalid; it must be an integer >= 1.")
    out_dir = Path(out) if out is not None else Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")
    n_points = len(grid_points(grid))
    pool_size = min(workers or (os.cpu_count() or 1), n_points)
    threads = None if scheduler else max(1, (os.cpu_count() or 1) // pool_size)
    tasks = plan_sweep(grid, notebooks_dir, only=only, params=params, profile=profile, device=device,
                       kernel=kernel, out_dir=out_dir, threads=threads)
    created = not out_dir.exists()
    check_new_folder(out_dir, option="--out", marker="sweep.json", resume_hint=False, claimed=False)
    try:
        with claim_folder(out_dir, option="--out"):
            check_new_folder(out_dir, option="--out", marker="sweep.json", resume_hint=False)
            return _run_points(tasks, grid, out_dir, scheduler=scheduler, pool_size=pool_size, progress=progress)
    except BaseException:  # refused (or Ctrl-C) before the first file: leave no empty folder behind
        if created:
            remove_unused_folder(out_dir)
        raise


def _run_points(tasks: Sequence[PointTask], grid: Mapping[str, Sequence[Any]], out_dir: Path, *,
                scheduler: str | None, pool_size: int, progress: bool) -> SweepResult:
    where = f"Dask scheduler {scheduler}" if scheduler else f"{pool_size} local process(es)"
    if progress:
        print(f"sweep {out_dir}: {len(tasks)} point(s) on {where}", file=sys.stderr, flush=True)
    stream = _run_dask(tasks, scheduler) if scheduler else _run_local(tasks, pool_size)
    results = []
    for done, result in enumerate(stream, start=1):
        results.append(result)
        if progress or result.status != "done":
            print(f"[{done}/{len(tasks)}] {_describe(result)}", file=sys.stderr, flush=True)
    order = {task.point_id: i for i, task in enumerate(tasks)}
    results.sort(key=lambda r: order[r.point_id])
    return _write_outputs(out_dir, grid, results, progress=progress)


def _write_outputs(out_dir: Path, grid: Mapping[str, Sequence[Any]], results: Sequence[PointResult], *,
                   progress: bool) -> SweepResult:
    """sweep.json, sweep.csv and the plots."""
    swept = list(grid)
    write_json_atomic(out_dir / "sweep.json", {
        "schema": 1, "grid": {k: list(v) for k, v in grid.items()},
        "points": [{k: v for k, v in asdict(r).items() if k != "ledger"} for r in results],
    })
    frame = tidy_results(results, swept)
    table = out_dir / "sweep.csv"
    frame.to_csv(table, index=False)
    plots = plot_sweep(frame, swept, out_dir) if len(frame) else []
    failed = [r for r in results if r.status != "done"]
    if progress or failed:
        print(f"sweep done: {len(results) - len(failed)}/{len(results)} point(s) finished; {table} "
              f"({len(frame)} rows), {len(plots)} plot(s)"
              + (f"; failed: {', '.join(r.point_id for r in failed)}" if failed else ""), file=sys.stderr)
    return SweepResult(out_dir, tuple(results), table)


