"""The papermill runner behind `aestudy run`: validate parameters, execute the series, keep it resumable.

A run lives in one folder, `runs/NAME/`:

* the executed notebooks (same file names as in `notebooks/`);
* `metrics/NB.json`: the claims ledger each notebook wrote (`$AESTUDY_METRICS_FILE`, filed under the name each
  notebook gives its `Study`);
* `metrics.json`: every notebook's claims and metrics, its status, wall time and parameters, plus the
  environment (package versions, device, seeds, profile, git commit);
* `state.json`: the parameters, the notebook list and each notebook's status (pending/running/done/failed),
  written atomically after every change, so a failed or interrupted run continues with `--resume`;
* `report.md` and `report.html` (see `aestudy.runner.report`);
* `logs/NB.kernel.log`: the kernel process's own stdout/stderr (kept off the terminal);
* `threads/NB` (with `--jobs` > 1): the torch thread count the runner gives that kernel while it runs
  (`aestudy.runner.thread_budget`); `state.json`'s `thread_changes` lists every change;
* `.aestudy.lock` (+ `.aestudy.owner.json` while held): the claim of the one process working in the folder.

Before any of it exists, every parameter value each notebook will run with is checked by the notebooks' own rules
(`aestudy.parameters`). `runs/latest` (next to the run folder) points at the last run started.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aestudy.claims import load_metrics
from aestudy.config import resolve_device, resolve_profile
from aestudy.errors import ConfigError
from aestudy.parameters import (
    Parameter,
    ParameterError,
    notebook_parameters,
    validate_parameter,
    validate_parameters,
)
from aestudy.runner.environment import environment, kernel_python
from aestudy.runner.folders import (
    STATE_SCHEMA,
    _now,
    check_new_folder,
    claim_folder,
    default_run_dir,
    load_state,
    point_latest,
    remove_unused_folder,
    write_json_atomic,
)
from aestudy.runner.kernel import (
    DEFAULT_KERNEL,
    THREAD_VARS,
    describe_failure,
    execute_notebook,
    format_failure,
    interrupt_kernels,
    kernel_log_path,
    kernel_threads,
    mark_interrupted,
    notebook_env,
)
from aestudy.runner.params import (
    NOTEBOOK_GLOB,
    RUN_LEVEL,
    default_notebooks_dir,
    discover_notebooks,
    effective_parameters,
    notebook_key,
    route_parameters,
)
from aestudy.runner.thread_budget import THREAD_BUDGET_ENV, write_budget
from aestudy.validate import as_int

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class RunResult:
    """How a run ended: `complete`, or `failed` at notebook `failed` (the run folder keeps the rest)."""

    run_dir: Path
    status: str
    failed: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when complete, 1 when a notebook failed."""
        return 0 if self.status == "complete" else EXIT_FAILED


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def merge_metrics(run_dir: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """Gather every notebook's ledger into `metrics.json` with statuses, timings, parameters, environment."""
    notebooks: dict[str, Any] = {}
    for name in state["notebooks"]:
        key = notebook_key(name)
        ledger = load_metrics(run_dir / "metrics" / f"{key}.json")
        for other, entry in ledger["notebooks"].items():
            notebooks.setdefault(other, {"claims": [], "metrics": {}}).update(entry)
        notebooks.setdefault(key, {"claims": [], "metrics": {}})
        notebooks[key].update({
            "file": name, "status": state["status"][name], "wall_s": state["wall_s"].get(name),
            "parameters": state["parameters"][name], "error": state["errors"].get(name),
        })
    merged = {
        "schema": 1, "run": state["name"], "status": state["run_status"], "started": state["started"],
        "finished": state.get("finished"), "profile": state["profile"], "jobs": state.get("jobs"),
        "series_wall_s": state.get("series_wall_s"), "notebooks": notebooks,
        "environment": state["environment"], "thread_changes": list(state.get("thread_changes") or []),
    }
    write_json_atomic(run_dir / "metrics.json", merged)
    return merged


def claims_summary(ledger: Mapping[str, Any]) -> str:
    """`5 claims: 3 hold, 1 does not hold, 1 inconclusive` for a ledger (the run log's per-notebook line)."""
    from aestudy.runner.report import claim_counts

    claims = [c for entry in ledger.get("notebooks", {}).values() for c in entry.get("claims", [])]
    counts = claim_counts(claims)
    holding, failing = counts["holds"], counts["does not hold"]
    parts = [f"{holding} hold{'s' if holding == 1 else ''}", f"{failing} {'does' if failing == 1 else 'do'} not hold"]
    if counts["inconclusive"]:
        parts.append(f"{counts['inconclusive']} inconclusive")
    return f"{len(claims)} claim{'' if len(claims) == 1 else 's'}: {', '.join(parts)}"


def _save(run_dir: Path, state: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "state.json", state)


def _finish(run_dir: Path, state: dict[str, Any], status: str) -> None:
    """Record the run's status, then write metrics.json and the report."""
    from aestudy.runner.report import write_report

    state["run_status"] = status
    state["finished"] = _now() if status == "complete" else None
    _save(run_dir, state)
    merge_metrics(run_dir, state)
    write_report(run_dir)


def default_jobs(device: str) -> int:
    """How many notebooks `aestudy run` executes at once by default: one per CPU core (at most two) on a CPU run,
    one on a GPU run (the notebooks would share one accelerator).

    Each notebook's torch then gets `cores // jobs` threads (`kernel_threads`): measured on the 2-core machine
    this project is built on, two notebooks with one thread each finish the series sooner than one notebook with
    two threads at a time, because much of a notebook (plots, small evaluations, Python overhead) uses one core.
    """
    if device not in ("auto", "cpu"):
        return 1
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, min(2, os.cpu_count() or 1))


def threads_follow(jobs: int) -> bool:
    """Whether the kernels of a run with `jobs` notebooks at once follow a thread budget the runner changes while
    they run (`aestudy.runner.thread_budget`): when `kernel_threads` split the cores, i.e. `jobs` > 1 and the user
    set none of `THREAD_VARS` (a count the user chose is left alone, as `kernel_threads` leaves it)."""
    return jobs > 1 and not any(var in os.environ for var in THREAD_VARS)


def tail_threads(running: int) -> int:
    """Torch threads for each of `running` kernels once no further notebook will start: `cores // running`, at
    least 1 (speed only: results equal within float rounding order)."""
    return max(1, (os.cpu_count() or 1) // max(1, running))


def _execute_series(run_dir: Path, state: dict[str, Any], *, progress: bool, jobs: int = 1) -> RunResult:
    """Execute every notebook of `state` not yet done; Ctrl-C anywhere leaves it resumable."""
    try:
        return _execute_pending(run_dir, state, progress=progress, jobs=jobs)
    except KeyboardInterrupt:
        interrupt_kernels()  # a SIGTERM reached only this process: stop the kernels' cells too
        running = [name for name in state["notebooks"] if state["status"][name] == "running"]
        for name in running:
            state["status"][name] = "pending"
            mark_interrupted(run_dir / name, run_dir)
        _finish(run_dir, state, "interrupted")
        where = f"during {', '.join(running)}" if running else "between notebooks"
        print(f"\ninterrupted {where}; completed notebooks are kept. Continue with: aestudy run --resume "
              f"{run_dir}", file=sys.stderr)
        raise


def _execute_pending(run_dir: Path, state: dict[str, Any], *, progress: bool, jobs: int = 1) -> RunResult:
    """Execute every notebook of `state` not yet done, in order, up to `jobs` at a time, saving state around each.

    Notebooks start in series order; a notebook that needs a model another one is training waits for it on the
    cache's lock (`aestudy.cache.load_or_build`) and then loads it, so concurrent notebooks never train one model
    twice. After a failure no further notebook starts; those already running finish and are kept.

    With `jobs` > 1 each kernel follows a thread budget (`threads_follow`): once no further notebook will start,
    the kernels still running share the cores a finished one freed (`tail_threads`), each change recorded in
    `state["thread_changes"]`.
    """
    notebooks_dir = Path(state["notebooks_dir"])
    names = state["notebooks"]
    queue = [name for name in names if state["status"][name] != "done"]
    jobs = max(1, min(jobs, len(queue) or 1))
    threads = kernel_threads(jobs)
    state["jobs"], state["kernel_threads"] = jobs, threads or None
    device = state.get("environment", {}).get("device", {})
    if jobs > 1 and device.get("resolved") == "cpu":  # the runner's own thread count is not the kernels'
        per_kernel = threads.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "?"))
        per = "thread" if str(per_kernel) == "1" else "threads"
        device["name"] = f"{device.get('cpu', 'CPU')} ({per_kernel} torch {per} per notebook, {jobs} at a time)"
    total_start = time.perf_counter()
    failed: list[str] = []
    running: dict[Future[float], tuple[str, Path, float]] = {}
    follow = threads_follow(jobs)
    budgets: dict[str, int] = {}  # the thread budget each running kernel was last given

    def budget_file(name: str) -> Path:
        return (run_dir / "threads" / notebook_key(name)).resolve()

    def start(name: str) -> tuple[Path, dict[str, str]]:
        key = notebook_key(name)
        metrics_file = run_dir / "metrics" / f"{key}.json"
        # A retried notebook starts from an empty ledger, so its claims are not recorded twice.
        metrics_file.unlink(missing_ok=True)
        state["status"][name] = "running"
        state["errors"].pop(name, None)
        _save(run_dir, state)
        _say(f"[{names.index(name) + 1}/{len(names)}] {name} (elapsed "
             f"{_elapsed(time.perf_counter() - total_start)})", progress)
        env = notebook_env(notebooks_dir / name, metrics_file=metrics_file, profile=state["profile"],
                           run_dir=run_dir)
        if follow:
            budgets[name] = int(threads["OMP_NUM_THREADS"])
            env[THREAD_BUDGET_ENV] = str(write_budget(budget_file(name), budgets[name]))
        return metrics_file, {**env, **threads}

    def share_freed_cores(still_running: list[str], ended: list[str]) -> None:
        if not follow:
            return
        for name in ended:
            budgets.pop(name, None)
        share = tail_threads(len(still_running))
        changes = [name for name in still_running if budgets.get(name) != share]
        for name in changes:
            write_budget(budget_file(name), share)
            budgets[name] = share
            state.setdefault("thread_changes", []).append({
                "time": _now(), "elapsed_s": round(time.perf_counter() - total_start, 1), "notebook": name,
                "threads": share, "after": ", ".join(ended)})
        if changes:
            _save(run_dir, state)
            _say(f"{', '.join(ended)} ended and no further notebook starts: {', '.join(changes)} now "
                 + (f"use {share} torch threads each" if len(changes) > 1 else f"uses {share} torch threads"),
                 progress)

    def execute(name: str, env: dict[str, str]) -> float:
        return execute_notebook(notebooks_dir / name, run_dir / name, state["parameters"][name],
                                kernel=state["kernel"], env=env, progress=progress and jobs == 1,
                                kernel_log=kernel_log_path(run_dir, name))

    def settle(name: str, metrics_file: Path, wall: float, exc: BaseException | None) -> None:
        state["wall_s"][name] = wall
        if exc is None:
            state["status"][name] = "done"
            _save(run_dir, state)
            merge_metrics(run_dir, state)
            _say(f"[{names.index(name) + 1}/{len(names)}] {name} done in {wall:.1f} s: "
                 f"{claims_summary(load_metrics(metrics_file))}", progress)
            return
        failure = describe_failure(exc)
        if failure["ename"] == "KeyboardInterrupt":  # the kernel got the Ctrl-C first
            raise KeyboardInterrupt from exc
        state["status"][name] = "failed"
        state["errors"][name] = failure
        _save(run_dir, state)
        failed.append(name)
        if jobs > 1 and running:
            _say(f"[{names.index(name) + 1}/{len(names)}] {name} failed after {wall:.1f} s; no further notebook "
                 "starts, the running ones finish", progress)

    if jobs == 1:
        for name in queue:
            metrics_file, env = start(name)
            began = time.perf_counter()
            try:
                execute(name, env)
            except Exception as exc:  # noqa: BLE001 - any failure of a notebook stops the run the same way
                settle(name, metrics_file, time.perf_counter() - began, exc)
                break
            settle(name, metrics_file, time.perf_counter() - began, None)
    else:
        with ThreadPoolExecutor(jobs, thread_name_prefix="aestudy-notebook") as pool:
            try:
                _run_concurrently(pool, queue, running, failed, jobs, start, execute, settle, names,
                                  share_freed_cores)
            except KeyboardInterrupt:
                # Only the main thread sees the interrupt; the kernels papermill drives in the worker threads
                # get it passed on, so their cells stop and the pool's exit does not wait for whole notebooks.
                interrupt_kernels()
                raise
    state["series_wall_s"] = state.get("series_wall_s", 0.0) + (time.perf_counter() - total_start)
    if failed:
        _finish(run_dir, state, "failed")
        for name in failed:
            failure = state["errors"][name]
            print(format_failure(name, failure), file=sys.stderr)
            print(f"The executed notebook (with its traceback) is {run_dir / name}; the kernel's own log is "
                  f"{kernel_log_path(run_dir, name)}. Completed notebooks and their metrics are kept; "
                  + next_step(run_dir, state, name, failure), file=sys.stderr)
        return RunResult(run_dir, "failed", failed[0])
    _finish(run_dir, state, "complete")
    _say(f"run complete in {_elapsed(time.perf_counter() - total_start)}: {run_dir / 'report.md'}", progress)
    return RunResult(run_dir, "complete")


def _run_concurrently(pool: ThreadPoolExecutor, queue: list[str], running: dict[Future[float], Any],
                      failed: list[str], jobs: int, start: Any, execute: Any, settle: Any, names: list[str],
                      share_freed_cores: Any = None) -> None:
    """Keep up to `jobs` notebooks of `queue` running in `pool` (none starts after a failure); settle each as it
    ends, in series order when several end together. Once no further notebook will start, each ending passes the
    notebooks still running and those that ended to `share_freed_cores`."""
    while queue or running:
        while queue and len(running) < jobs and not failed:
            name = queue.pop(0)
            metrics_file, env = start(name)
            running[pool.submit(execute, name, env)] = (name, metrics_file, time.perf_counter())
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        ended = []
        for future in sorted(finished, key=lambda f: names.index(running[f][0])):
            name, metrics_file, began = running.pop(future)
            ended.append(name)
            settle(name, metrics_file, time.perf_counter() - began, future.exception())
        if share_freed_cores is not None and running and (failed or not queue):
            share_freed_cores([running[f][0] for f in running], ended)


def next_step(run_dir: Path, state: Mapping[str, Any], name: str, failure: Mapping[str, Any]) -> str:
    """What to do after notebook `name` failed: `--resume`, or how to change the parameter it rejected.

    A ConfigError that names one of the notebook's parameters (`ood_dataset=... is invalid`) would fail again
    on a plain `--resume`, which keeps the saved value; the advice says how to change it instead.
    """
    resume = f"continue with: aestudy run --resume {run_dir}"
    if failure.get("ename") == "DataError":  # the data, not the run, is at fault: resuming reads it again
        return ("the data was refused: fix it as the message above says (or pass another dataset), then start the "
                "run again with the same command; a --resume would read the same data and fail the same way")
    match = re.match(r"^(?:notebook \S+: )?(\w+)=", str(failure.get("evalue") or ""))
    if failure.get("ename") not in ("ConfigError", "ParameterError") or match is None:
        return resume
    parameter = match.group(1)
    if parameter not in state["parameters"][name] and parameter not in _declared(state, name):
        return resume
    return (f"the notebook rejected its parameter {parameter!r}, and a plain --resume keeps the saved value; "
            + change_advice(run_dir, state, parameter))


def _declared(state: Mapping[str, Any], name: str) -> dict[str, Parameter]:
    notebook = Path(state["notebooks_dir"]) / name
    return notebook_parameters(notebook) if notebook.exists() else {}


def change_advice(run_dir: Path, state: Mapping[str, Any], parameter: str) -> str:
    """How to change `parameter` of a stopped run: on `--resume` when only notebooks not yet done use it,
    else in a new run (the command line to start it, with every other setting of the run)."""
    users = [name for name in state["notebooks"] if parameter in _declared(state, name)]
    done = [name for name in users if state["status"][name] == "done"]
    if parameter not in RUN_LEVEL and not done:
        return f"change it as you resume: aestudy run --resume {run_dir} -p {parameter} VALUE"
    why = (f"it is the run's --{parameter}" if parameter in RUN_LEVEL
           else f"{', '.join(notebook_key(n) for n in done)} already ran with it")
    return f"{why}, so start a new run with it changed: {rerun_command(state, parameter)}"


def rerun_command(state: Mapping[str, Any], parameter: str) -> str:
    """The `aestudy run` command line that repeats a run's settings with `parameter` set to VALUE."""
    words = ["aestudy", "run", "--profile", state["profile"]]
    if state.get("device") not in (None, "auto") and parameter != "device":
        words += ["--device", state["device"]]
    folder = Path(state["notebooks_dir"])
    series = sorted(folder.glob(NOTEBOOK_GLOB)) if folder.is_dir() else []
    if [nb.name for nb in series] != list(state["notebooks"]):
        words += ["--only", ",".join(name[:2] for name in state["notebooks"])]
    if folder.resolve() != default_notebooks_dir().resolve():
        words += ["--notebooks-dir", str(folder)]
    for name, value in (state.get("user_parameters") or {}).items():
        if name != parameter:
            words += ["-p", name, "None" if value is None else str(value)]
    command = shlex.join(words)
    return f"{command} --{parameter} VALUE" if parameter in RUN_LEVEL else f"{command} -p {parameter} VALUE"


def plan_run(notebooks_dir: str | os.PathLike[str] | None = None, *, profile: str | None = None,
             device: str | None = None, only: Sequence[str] | None = None,
             params: Mapping[str, Any] | None = None, kernel: str = DEFAULT_KERNEL
             ) -> tuple[list[Path], dict[str, dict[str, Any]], str, str]:
    """Validate everything a run needs before it executes: notebooks, parameters, profile, device, kernel.

    Every value each notebook will run with is checked by the notebooks' own rules (`aestudy.parameters`).
    Returns the notebooks, each one's routed parameters (plain values), the resolved profile and the device.
    """
    params = dict(params or {})
    for name, flag in (("profile", profile), ("device", device)):
        if name in params and flag is not None and params[name] != flag:
            raise ConfigError(f"{name} is given twice ({params[name]!r} as a parameter, {flag!r} as --{name}); "
                              "give it once.")
    profile = resolve_profile(validate_parameter("profile", params.pop("profile", profile)))
    device = validate_parameter("device", params.pop("device", device) or "auto")
    resolve_device(device)
    notebooks = discover_notebooks(notebooks_dir or default_notebooks_dir(), only)
    routed = route_parameters(notebooks, params, run_level={"profile": profile, "device": device})
    kernel_python(kernel)
    return notebooks, routed, profile, device


def run_study(notebooks_dir: str | os.PathLike[str] | None = None, *, out: str | os.PathLike[str] | None = None,
              profile: str | None = None, device: str | None = None, only: Sequence[str] | None = None,
              params: Mapping[str, Any] | None = None, kernel: str = DEFAULT_KERNEL,
              progress: bool = True, jobs: int | None = None) -> RunResult:
    """Validate, then execute the series into `out` (default `runs/<timestamp>`); see the module docstring.

    `jobs`: notebooks executed at once (None: `default_jobs(device)`; each kernel then gets `cores // jobs`
    threads, see `kernel_threads`).

    Nothing is written before every parameter is valid; the run folder is then claimed atomically
    (`claim_folder`), so a second run into the same `--out` stops before doing any work. A failing notebook
    stops the run (RunResult.status == "failed"); Ctrl-C saves a resumable state and re-raises
    KeyboardInterrupt.
    """
    notebooks, routed, profile, device = plan_run(notebooks_dir, profile=profile, device=device, only=only,
                                                  params=params, kernel=kernel)
    jobs = resolve_jobs(jobs, device)
    run_dir = Path(out) if out is not None else default_run_dir()
    created = out is None or not run_dir.exists()
    check_new_folder(run_dir, option="--out", marker="state.json", resume_hint=True, claimed=False)
    try:
        with claim_folder(run_dir, option="--out"):
            check_new_folder(run_dir, option="--out", marker="state.json", resume_hint=True)
            state = _new_state(run_dir, notebooks, routed, profile=profile, device=device, kernel=kernel,
                               params=params)
            _save(run_dir, state)
            point_latest(run_dir)
            _say(f"run {run_dir}: {len(notebooks)} notebook(s), profile {profile}, device {device}, "
                 f"kernel {kernel}, {jobs} at a time", progress)
            return _execute_series(run_dir, state, progress=progress, jobs=jobs)
    except BaseException:  # refused (or Ctrl-C) before the first file: leave no empty folder behind
        if created:
            remove_unused_folder(run_dir)
        raise


def _new_state(run_dir: Path, notebooks: Sequence[Path], routed: Mapping[str, dict[str, Any]], *, profile: str,
               device: str, kernel: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    names = [nb.name for nb in notebooks]
    effective = {nb.name: effective_parameters(nb, routed[notebook_key(nb)]) for nb in notebooks}
    user = {name: value for key in routed for name, value in routed[key].items() if name in (params or {})}
    state: dict[str, Any] = {
        "schema": STATE_SCHEMA, "name": run_dir.name, "started": _now(), "finished": None,
        "run_status": "running", "notebooks_dir": str(notebooks[0].parent.resolve()), "notebooks": names,
        "kernel": kernel, "profile": profile, "device": device, "user_parameters": user,
        "parameters": {nb.name: routed[notebook_key(nb)] for nb in notebooks},
        "status": dict.fromkeys(names, "pending"), "wall_s": {}, "errors": {},
        "environment": environment(profile=profile, device=device, kernel=kernel,
                                   notebooks_dir=notebooks[0].parent.resolve(),
                                   seeds={notebook_key(n): p.get("seed") for n, p in effective.items()}),
    }
    state["environment"]["parameters"] = {notebook_key(n): p for n, p in effective.items()}
    return state


def _is_complete(state: Mapping[str, Any]) -> bool:
    return state["run_status"] == "complete" and all(state["status"][n] == "done" for n in state["notebooks"])


def resolve_jobs(jobs: int | None, device: str) -> int:
    """`jobs` checked (an integer >= 1), or the default for `device` when None (`default_jobs`).

    Raises:
        ConfigError: naming --jobs, for a value that is not a positive integer.
    """
    if jobs is None:
        return default_jobs(device)
    return as_int(jobs, "--jobs", low=1, meaning="notebooks executed at once")


def resume_study(run_dir: str | os.PathLike[str], *, kernel: str | None = None,
                 params: Mapping[str, Any] | None = None, progress: bool = True,
                 jobs: int | None = None) -> RunResult:
    """Continue a failed or interrupted run from its first notebook not done, with the saved parameters.

    `params` (from `-p`/`--params`) change parameters that only notebooks not yet done declare (a parameter a
    finished notebook used cannot change within one run). A complete run is left untouched ("nothing to
    resume"). Every parameter of the notebooks still to run is validated first: a saved value that cannot
    succeed is refused with the way to change it.
    Raises ConfigError (no state.json, a damaged one, the folder in use, an invalid or unchangeable parameter).
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink():  # runs/latest: work in (and report) the run it points at
        run_dir = run_dir.parent / os.readlink(run_dir)
    if _is_complete(load_state(run_dir)):
        if params:  # a complete run is never changed: say so instead of dropping the values silently
            raise ConfigError(f"nothing to resume: the run is complete ({run_dir}), so -p/--params "
                              f"({', '.join(sorted(params))}) cannot change it; start a new run with them "
                              "(aestudy run ... --out NEW_FOLDER).")
        print(f"nothing to resume: the run is complete ({run_dir}; report: {run_dir / 'report.md'}).",
              file=sys.stderr)
        return RunResult(run_dir, "complete")
    if kernel is not None:
        kernel_python(kernel)
    with claim_folder(run_dir, option="--resume"):
        state = load_state(run_dir)  # again, now that no one else can change it
        if _is_complete(state):
            print(f"nothing to resume: the run is complete ({run_dir}).", file=sys.stderr)
            return RunResult(run_dir, "complete")
        missing = [name for name in state["notebooks"] if not (Path(state["notebooks_dir"]) / name).exists()]
        if missing:
            raise ConfigError(f"--resume {run_dir}: notebook(s) {', '.join(missing)} no longer exist in "
                              f"{state['notebooks_dir']}.")
        _change_parameters(run_dir, state, dict(params or {}))
        if kernel is not None:
            state["kernel"] = kernel
        pending = [name for name in state["notebooks"] if state["status"][name] != "done"]
        state.setdefault("resumed", []).append(_now())
        jobs = resolve_jobs(jobs, state.get("device", "auto"))
        _say(f"resuming {run_dir} at {pending[0]} ({len(pending)} notebook(s) left, {jobs} at a time)", progress)
        point_latest(run_dir.resolve())
        return _execute_series(run_dir, state, progress=progress, jobs=jobs)


def _change_parameters(run_dir: Path, state: dict[str, Any], params: dict[str, Any]) -> None:
    """Apply `--resume -p` changes to the notebooks not yet done, then validate all their parameters."""
    for name, value in params.items():
        users = [nb for nb in state["notebooks"] if name in _declared(state, nb)]
        if not users:
            pending = sorted({p for nb in state["notebooks"] if state["status"][nb] != "done"
                              for p in _declared(state, nb)} - set(RUN_LEVEL))
            raise ConfigError(f"--resume {run_dir} -p {name}: no notebook of this run declares {name!r}; valid "
                              f"names: {', '.join(pending)}.")
        if name in RUN_LEVEL or any(state["status"][nb] == "done" for nb in users):
            raise ConfigError(f"--resume {run_dir} -p {name}: cannot change {name!r} within this run: "
                              + change_advice(run_dir, state, name))
        for nb in users:
            state["parameters"][nb][name] = value
    for nb in state["notebooks"]:
        if state["status"][nb] == "done":
            continue
        declared = _declared(state, nb)
        effective = {**{n: p.default for n, p in declared.items()}, **state["parameters"][nb]}
        try:
            checked = validate_parameters(effective, notebook=notebook_key(nb),
                                          declared={n: p.annotation for n, p in declared.items()})
        except ParameterError as exc:
            raise ConfigError(f"--resume {run_dir} cannot succeed: {exc} A plain --resume keeps the saved value; "
                              + change_advice(run_dir, state, exc.parameter)) from None
        state["parameters"][nb] = {n: checked[n] for n in state["parameters"][nb]}
        state["environment"].setdefault("parameters", {})[notebook_key(nb)] = checked
    if params:
        state.setdefault("user_parameters", {}).update(
            {n: v for nb in state["notebooks"] for n, v in state["parameters"][nb].items() if n in params})
        state.setdefault("changed_on_resume", []).append({"time": _now(), "parameters": params})


# ----------------------------------------------------------------------------------------- command line


