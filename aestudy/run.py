"""The papermill runner behind `aestudy run`: validate parameters, execute the series, keep it resumable.

A run lives in one folder, `runs/NAME/`:

* the executed notebooks (same file names as in `notebooks/`);
* `metrics/NB.json`: the claims ledger each notebook wrote (`$AESTUDY_METRICS_FILE`, filed under the name each
  notebook gives its `Study`);
* `metrics.json`: every notebook's claims and metrics, its status, wall time and parameters, plus the
  environment (package versions, device, seeds, profile, git commit);
* `state.json`: the parameters, the notebook list and each notebook's status (pending/running/done/failed),
  written atomically after every change, so a failed or interrupted run continues with `--resume`;
* `report.md` and `report.html` (see `aestudy.report`).

`runs/latest` (next to the run folder) points at the last run started.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import yaml

from aestudy.atomic import atomic_write_json
from aestudy.claims import METRICS_FILE_ENV, load_metrics
from aestudy.config import PROFILE_ENV, PROFILES, resolve_device, resolve_profile
from aestudy.errors import ConfigError

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
DEFAULT_KERNEL = "aestudy"
RUN_DIR_ENV = "AESTUDY_RUN_DIR"
STATE_SCHEMA = 1
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")
# Run-level settings: given by --profile/--device, injected only into notebooks that declare them.
RUN_LEVEL: tuple[str, ...] = ("profile", "device")
PACKAGES: tuple[str, ...] = ("aestudy", "torch", "numpy", "scipy", "pandas", "scikit-learn", "matplotlib",
                             "seaborn", "papermill", "nbclient", "ipykernel")
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

# Kernels inherit os.environ; this lock keeps two threads of one process from mixing their variables.
_ENV_LOCK = threading.Lock()
_NONE = type(None)
_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list,
                                "dict": dict, "tuple": tuple, "None": _NONE, "NoneType": _NONE,
                                "List": list, "Dict": dict, "Tuple": tuple}


# ----------------------------------------------------------------------------------------- notebooks


def default_notebooks_dir() -> Path:
    """The repository's `notebooks/` folder."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def notebook_key(notebook: str | os.PathLike[str]) -> str:
    """The name a notebook's records are filed under: its file stem (e.g. `01_autoencoder_basics`)."""
    return Path(notebook).stem


def discover_notebooks(notebooks_dir: str | os.PathLike[str], only: Sequence[str] | None = None) -> list[Path]:
    """The series `NN_*.ipynb` in order, restricted to the prefixes (or stems) in `only`."""
    folder = Path(notebooks_dir)
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    if not found:
        raise ConfigError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}; valid values: a folder holding "
                          "the series (see --notebooks-dir).")
    if not only:
        return found
    valid = [nb.name[:2] for nb in found]
    unknown = [sel for sel in only if not any(_selects(sel, nb) for nb in found)]
    if unknown:
        raise ConfigError(f"--only {','.join(unknown)} selects no notebook; valid values: {', '.join(valid)}.")
    return [nb for nb in found if any(_selects(sel, nb) for sel in only)]


def _selects(selector: str, notebook: Path) -> bool:
    return notebook.name[:2] == selector.zfill(2) or notebook.stem == selector


def parse_only(text: str | None) -> list[str] | None:
    """`"01,03"` -> `["01", "03"]` (None or empty: every notebook)."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


# ----------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Parameter:
    """One name of a notebook's `parameters` cell: its default, declaration and accepted types (None: any)."""

    name: str
    default: Any
    declaration: str
    types: tuple[type, ...] | None

    def accepts(self, value: Any) -> bool:
        """Whether `value` has a type the declaration allows (ints pass for floats, lists for tuples)."""
        if self.types is None:
            return True
        if isinstance(value, bool):
            return bool in self.types
        if isinstance(value, int) and float in self.types:
            return True
        if isinstance(value, list) and tuple in self.types:
            return True
        return isinstance(value, self.types)

    def coerce(self, value: Any) -> Any:
        """The value as the notebook declares it (an int given for a float-only parameter becomes a float)."""
        if (self.types is not None and isinstance(value, int) and not isinstance(value, bool)
                and float in self.types and int not in self.types):
            return float(value)
        return value

    def type_name(self) -> str:
        """The accepted types in words, e.g. `int or None`."""
        if self.types is None:
            return "any type"
        return " or ".join("None" if t is _NONE else t.__name__ for t in self.types)


def _annotation_types(node: ast.expr | None) -> tuple[type, ...] | None:
    """Types named by an annotation (`int`, `float | None`, `Optional[str]`, `list[int]`); None when unknown."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _annotation_types(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Constant) and node.value is None:
        return (_NONE,)
    if isinstance(node, ast.Name):
        return (_TYPE_NAMES[node.id],) if node.id in _TYPE_NAMES else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_types(node.left), _annotation_types(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if node.value.id == "Optional":
            types = _annotation_types(inner[0])
            return None if types is None else types + (_NONE,)
        if node.value.id == "Union":
            parts = [_annotation_types(part) for part in inner]
            return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)  # type: ignore[union-attr]
        return _annotation_types(node.value)
    return None


def _parameter(node: ast.stmt, source: str) -> Parameter | None:
    """The Parameter declared by one statement of a parameters cell (None for anything else)."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        name, annotation, value = node.target.id, node.annotation, node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name, annotation, value = node.targets[0].id, None, node.value
    else:
        return None
    try:
        default = ast.literal_eval(value)
    except ValueError:
        default = None  # not a literal: only the annotation (if any) can type it
        types = _annotation_types(annotation)
    else:
        types = _annotation_types(annotation)
        if types is None and annotation is None and default is not None:
            types = (type(default),)
    declaration = (ast.get_source_segment(source, node) or name).splitlines()[0]
    return Parameter(name, default, declaration, types)


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, Parameter]:
    """The names, defaults and types declared in a notebook's cell tagged `parameters` (empty if none)."""
    nb = nbformat.read(str(notebook), as_version=4)
    cell = next((c for c in nb.cells
                 if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise ConfigError(f"the parameters cell of {Path(notebook).name} is not plain Python ({exc.msg}, line "
                          f"{exc.lineno}); it must hold literal assignments only.") from exc
    found = (_parameter(node, cell.source) for node in tree.body)
    return {p.name: p for p in found if p is not None}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads `1e-3` as a float (YAML 1.2 style), as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A command-line value as YAML: `3` -> 3, `1e-3` -> 0.001, `null` -> None, `mnist` -> "mnist"."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping of parameter names to values."""
    file = Path(path)
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except OSError as exc:
        raise ConfigError(f"--params {file}: cannot read it ({exc.strerror}).") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--params {file} is not valid YAML ({exc}).") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--params {file} must be a YAML mapping of parameter names to values.")
    return data


def collect_params(pairs: Sequence[Sequence[str]] | None = None,
                   params_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Merge `--params FILE` with `-p NAME VALUE` pairs (the pairs win), values parsed as YAML."""
    params = load_params_file(params_file) if params_file else {}
    for name, text in pairs or []:
        params[name] = parse_value(text)
    return params


def route_parameters(notebooks: Sequence[Path], params: Mapping[str, Any], *,
                     run_level: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Validate `params` against the notebooks' parameters cells; give each notebook only the names it has.

    `run_level` values (profile, device) go to the notebooks that declare them and are never "unknown".
    Raises ConfigError for a name no notebook declares (listing the valid names) or a value of the wrong
    type (naming the notebook and the parameter).
    """
    declared = {notebook_key(nb): notebook_parameters(nb) for nb in notebooks}
    valid = sorted({name for names in declared.values() for name in names})
    unknown = [name for name in params if not any(name in names for names in declared.values())]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ConfigError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {listed}: not in the parameters "
                          f"cell of any selected notebook ({', '.join(declared)}); valid names: "
                          f"{', '.join(valid) or '(none)'}.")
    given = {**dict(run_level or {}), **dict(params)}
    routed: dict[str, dict[str, Any]] = {}
    for key, names in declared.items():
        routed[key] = {}
        for name, value in given.items():
            if name not in names:
                continue
            parameter = names[name]
            if not parameter.accepts(value):
                raise ConfigError(f"parameter {name!r} of notebook {key} must be {parameter.type_name()} "
                                  f"(declared `{parameter.declaration}`), got {value!r} "
                                  f"({type(value).__name__}).")
            routed[key][name] = parameter.coerce(value)
    return routed


def effective_parameters(notebook: Path, routed: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter the notebook runs with: its defaults overridden by the routed values."""
    defaults = {name: p.default for name, p in notebook_parameters(notebook).items()}
    return {**defaults, **routed}


# ----------------------------------------------------------------------------------------- files


def write_json_atomic(path: Path, data: Any) -> None:
    """Write run files (state, metrics) as JSON atomically; unknown types are written as their str()."""
    atomic_write_json(path, data, default=str)


def point_latest(run_dir: Path) -> None:
    """Make `latest` next to `run_dir` a symlink to it (replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError as exc:  # e.g. `latest` is a real folder, or symlinks are not allowed here
        tmp.unlink(missing_ok=True)
        print(f"note: could not point {link} at {run_dir.name} ({exc})", file=sys.stderr)


def default_run_dir(runs_dir: str | os.PathLike[str] = "runs") -> Path:
    """A fresh `runs/YYYYmmdd-HHMMSS` (suffixed `-2`, `-3`... when that second is taken)."""
    base = Path(runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def load_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved `state.json` of a run folder."""
    file = Path(run_dir) / "state.json"
    if not file.exists():
        raise ConfigError(f"--resume {run_dir}: no state.json there; valid values: a run folder written by "
                          "`aestudy run` (e.g. runs/latest).")
    state = json.loads(file.read_text(encoding="utf-8"))
    if state.get("schema") != STATE_SCHEMA:
        raise ConfigError(f"--resume {run_dir}: state.json has schema {state.get('schema')!r}, expected "
                          f"{STATE_SCHEMA}.")
    return state


# ----------------------------------------------------------------------------------------- environment


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit(folder: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_info(device: str) -> dict[str, Any]:
    """The requested device, what it resolves to on this machine, and the hardware's name."""
    import torch

    from aestudy.watermark import cpu_name, device_name

    resolved = resolve_device(device)
    return {"requested": device, "resolved": str(resolved), "name": device_name(resolved), "cpu": cpu_name(),
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}


def kernel_python(kernel: str) -> str:
    """The executable a Jupyter kernel runs (ConfigError listing the installed kernels if it is unknown)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(kernel)
    except NoSuchKernel as exc:
        names = ", ".join(sorted(manager.find_kernel_specs()))
        raise ConfigError(f"--kernel {kernel!r} is not an installed Jupyter kernel; valid values: {names} "
                          "(`make setup` registers 'aestudy').") from exc
    return spec.argv[0] if spec.argv else ""


def environment(*, profile: str, device: str, kernel: str, notebooks_dir: Path,
                seeds: Mapping[str, Any]) -> dict[str, Any]:
    """Where and with what the run executed: versions, device, kernel, seeds, profile, git commit."""
    return {
        "python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
        "packages": _package_versions(), "device": device_info(device), "profile": profile,
        "kernel": {"name": kernel, "python": kernel_python(kernel)}, "seeds": dict(seeds),
        "git": _git_commit(notebooks_dir), "notebooks_dir": str(notebooks_dir),
    }


# ----------------------------------------------------------------------------------------- execution


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the kernel subprocess inherits them), then restore."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old


def notebook_env(notebook: Path, *, metrics_file: Path, profile: str, run_dir: Path) -> dict[str, str]:
    """The variables a notebook's kernel gets: its ledger file, the profile, the run folder (each notebook names
    itself through its `Study`, under its file stem)."""
    return {METRICS_FILE_ENV: str(metrics_file.resolve()), PROFILE_ENV: profile, RUN_DIR_ENV: str(run_dir.resolve())}


class _DropUnknownParameterWarnings(logging.Filter):
    """Papermill's parameter inspection cannot read `x: int | None = ...`; our own validation already ran."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


class _DropUnparsableLineWarnings(logging.Filter):
    """Papermill's line-based inspection of the parameters cell skips (and warns about) every line with a second
    `=`, such as `beta: float = 1.0  # KL weight (1 = the ELBO)`. It only feeds papermill's "unknown parameter"
    warning; `notebook_parameters` reads the same cell with `ast` and validated every value before execution."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to parse line")


def _quiet_papermill_parameter_warnings() -> None:
    for name, kind in (("papermill", _DropUnknownParameterWarnings),
                       ("papermill.translators", _DropUnparsableLineWarnings)):
        logger = logging.getLogger(name)  # a filter applies to its own logger's records only, not children's
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


@functools.cache
def kernel_manager_class() -> type:
    """The kernel manager papermill starts kernels with: IPC transport (Unix sockets) where ZeroMQ has it.

    Over TCP every kernel warns "Kernel is running over TCP without encryption" (ipykernel ≥ 7): any local
    user could read the loopback traffic. Unix sockets are private files, so that warning's cause goes away.
    The socket path must be absolute and unique: papermill runs kernels of parallel sweep points in the same
    notebooks folder, and jupyter_client's default IPC path (`kernel-ipc`) is relative to it. jupyter_client
    deletes the socket files when the kernel shuts down. The manager also skips jupyter_client's interrupt
    before shutdown (see `_async_interrupt_kernel`). Without IPC (Windows) this is the stock TCP manager.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    if not zmq.has("ipc"):
        return AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        """An AsyncKernelManager whose kernels talk over Unix sockets in the temp folder."""

        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(tempfile.gettempdir(), f"aestudy-kernel-{uuid.uuid4().hex[:12]}")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client sends SIGINT to every kernel before asking it to shut down. After a notebook has
            # run the kernel is idle, but the signal can land while it finishes its last reply, and ipykernel
            # then logs "ERROR | KeyboardInterrupt caught in kernel." (often, over fast IPC). An idle kernel
            # needs no interrupt; a busy one (Ctrl-C during a cell) does not answer the shutdown request and
            # jupyter_client terminates it after half of `shutdown_wait_time`. Other interrupts go through.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


def execute_notebook(notebook: Path, output: Path, parameters: Mapping[str, Any], *, kernel: str,
                     env: Mapping[str, str], progress: bool = True) -> float:
    """Run one notebook with papermill (cwd: its own folder) and return its wall time in seconds."""
    import papermill

    _quiet_papermill_parameter_warnings()
    start = time.perf_counter()
    with _environ(env):
        papermill.execute_notebook(str(notebook.resolve()), str(output.resolve()), parameters=dict(parameters),
                                   kernel_name=kernel, progress_bar=progress, cwd=str(notebook.parent.resolve()),
                                   kernel_manager_class=kernel_manager_class())
    return time.perf_counter() - start


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The failing cell and error of a notebook execution, as plain data."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return {"cell": exc.exec_count, "cell_index": exc.cell_index, "source": exc.source,
                "ename": exc.ename, "evalue": exc.evalue}
    return {"cell": None, "cell_index": None, "source": None, "ename": type(exc).__name__, "evalue": str(exc)}


def format_failure(notebook: str, failure: Mapping[str, Any]) -> str:
    """A readable account of a failure: the notebook, the failing cell's source, the error."""
    lines = [f"notebook {notebook} failed"
             + (f" in cell [{failure['cell']}] (index {failure['cell_index']})" if failure.get("source") else "")
             + ":"]
    if failure.get("source"):
        lines += ["    " + line for line in str(failure["source"]).splitlines()]
    lines.append(f"{failure['ename']}: {failure['evalue']}")
    return "\n".join(lines)


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        "finished": state.get("finished"), "profile": state["profile"], "notebooks": notebooks,
        "environment": state["environment"],
    }
    write_json_atomic(run_dir / "metrics.json", merged)
    return merged


def claims_summary(ledger: Mapping[str, Any]) -> str:
    """`5 claims: 3 hold, 1 does not hold, 1 inconclusive` for a ledger (the run log's per-notebook line)."""
    from aestudy.report import claim_counts

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
    from aestudy.report import write_report

    state["run_status"] = status
    state["finished"] = _now() if status == "complete" else None
    _save(run_dir, state)
    merge_metrics(run_dir, state)
    write_report(run_dir)


def _execute_series(run_dir: Path, state: dict[str, Any], *, progress: bool) -> RunResult:
    """Execute every notebook of `state` not yet done, in order; Ctrl-C anywhere leaves it resumable."""
    try:
        return _execute_pending(run_dir, state, progress=progress)
    except KeyboardInterrupt:
        running = [name for name in state["notebooks"] if state["status"][name] == "running"]
        for name in running:
            state["status"][name] = "pending"
        _finish(run_dir, state, "interrupted")
        where = f"during {running[0]}" if running else "between notebooks"
        print(f"\ninterrupted {where}; completed notebooks are kept. Continue with: aestudy run --resume "
              f"{run_dir}", file=sys.stderr)
        raise


def _execute_pending(run_dir: Path, state: dict[str, Any], *, progress: bool) -> RunResult:
    """Execute every notebook of `state` not yet done, in order, saving state around each one."""
    notebooks_dir = Path(state["notebooks_dir"])
    names = state["notebooks"]
    total_start = time.perf_counter()
    for position, name in enumerate(names, start=1):
        if state["status"][name] == "done":
            continue
        notebook = notebooks_dir / name
        key = notebook_key(name)
        metrics_file = run_dir / "metrics" / f"{key}.json"
        # A retried notebook starts from an empty ledger, so its claims are not recorded twice.
        metrics_file.unlink(missing_ok=True)
        state["status"][name] = "running"
        state["errors"].pop(name, None)
        _save(run_dir, state)
        _say(f"[{position}/{len(names)}] {name} (elapsed {_elapsed(time.perf_counter() - total_start)})",
             progress)
        env = notebook_env(notebook, metrics_file=metrics_file, profile=state["profile"], run_dir=run_dir)
        start = time.perf_counter()
        try:
            execute_notebook(notebook, run_dir / name, state["parameters"][name], kernel=state["kernel"],
                             env=env, progress=progress)
        except Exception as exc:  # noqa: BLE001 - any failure of a notebook stops the run the same way
            failure = describe_failure(exc)
            if failure["ename"] == "KeyboardInterrupt":  # the kernel got the Ctrl-C first
                raise KeyboardInterrupt from exc
            state["status"][name] = "failed"
            state["errors"][name] = failure
            state["wall_s"][name] = time.perf_counter() - start
            _finish(run_dir, state, "failed")
            print(format_failure(name, failure), file=sys.stderr)
            print(f"The executed notebook (with its traceback) is {run_dir / name}. Completed notebooks and "
                  f"their metrics are kept; continue with: aestudy run --resume {run_dir}", file=sys.stderr)
            return RunResult(run_dir, "failed", name)
        state["status"][name] = "done"
        state["wall_s"][name] = time.perf_counter() - start
        _save(run_dir, state)
        merge_metrics(run_dir, state)
        _say(f"[{position}/{len(names)}] {name} done in {state['wall_s'][name]:.1f} s: "
             f"{claims_summary(load_metrics(metrics_file))}", progress)
    _finish(run_dir, state, "complete")
    _say(f"run complete in {_elapsed(time.perf_counter() - total_start)}: {run_dir / 'report.md'}", progress)
    return RunResult(run_dir, "complete")


def plan_run(notebooks_dir: str | os.PathLike[str] | None = None, *, profile: str | None = None,
             device: str | None = None, only: Sequence[str] | None = None,
             params: Mapping[str, Any] | None = None, kernel: str = DEFAULT_KERNEL
             ) -> tuple[list[Path], dict[str, dict[str, Any]], str, str]:
    """Validate everything a run needs before it executes: notebooks, parameters, profile, device, kernel.

    Returns the notebooks, each one's routed parameters, the resolved profile and the device.
    """
    params = dict(params or {})
    for name, flag in (("profile", profile), ("device", device)):
        if name in params and flag is not None and params[name] != flag:
            raise ConfigError(f"{name} is given twice ({params[name]!r} as a parameter, {flag!r} as --{name}); "
                              "give it once.")
    profile = resolve_profile(params.pop("profile", profile))
    device = params.pop("device", device) or "auto"
    resolve_device(device)
    notebooks = discover_notebooks(notebooks_dir or default_notebooks_dir(), only)
    routed = route_parameters(notebooks, params, run_level={"profile": profile, "device": device})
    kernel_python(kernel)
    return notebooks, routed, profile, device


def run_study(notebooks_dir: str | os.PathLike[str] | None = None, *, out: str | os.PathLike[str] | None = None,
              profile: str | None = None, device: str | None = None, only: Sequence[str] | None = None,
              params: Mapping[str, Any] | None = None, kernel: str = DEFAULT_KERNEL,
              progress: bool = True) -> RunResult:
    """Validate, then execute the series into `out` (default `runs/<timestamp>`); see the module docstring.

    A failing notebook stops the run (RunResult.status == "failed"); Ctrl-C saves a resumable state and
    re-raises KeyboardInterrupt.
    """
    notebooks, routed, profile, device = plan_run(notebooks_dir, profile=profile, device=device, only=only,
                                                  params=params, kernel=kernel)
    run_dir = Path(out) if out is not None else default_run_dir()
    if (run_dir / "state.json").exists():
        raise ConfigError(f"--out {run_dir} already holds a run; valid values: a new folder, or continue it with "
                          f"--resume {run_dir}.")
    run_dir.mkdir(parents=True, exist_ok=True)
    names = [nb.name for nb in notebooks]
    effective = {nb.name: effective_parameters(nb, routed[notebook_key(nb)]) for nb in notebooks}
    state: dict[str, Any] = {
        "schema": STATE_SCHEMA, "name": run_dir.name, "started": _now(), "finished": None,
        "run_status": "running", "notebooks_dir": str(notebooks[0].parent.resolve()), "notebooks": names,
        "kernel": kernel, "profile": profile, "device": device, "user_parameters": dict(params or {}),
        "parameters": {nb.name: routed[notebook_key(nb)] for nb in notebooks},
        "status": dict.fromkeys(names, "pending"), "wall_s": {}, "errors": {},
        "environment": environment(profile=profile, device=device, kernel=kernel,
                                   notebooks_dir=notebooks[0].parent.resolve(),
                                   seeds={notebook_key(n): p.get("seed") for n, p in effective.items()}),
    }
    state["environment"]["parameters"] = {notebook_key(n): p for n, p in effective.items()}
    _save(run_dir, state)
    point_latest(run_dir)
    _say(f"run {run_dir}: {len(names)} notebook(s), profile {profile}, device {device}, kernel {kernel}", progress)
    return _execute_series(run_dir, state, progress=progress)


def resume_study(run_dir: str | os.PathLike[str], *, kernel: str | None = None,
                 progress: bool = True) -> RunResult:
    """Continue a failed or interrupted run from its first notebook not done, with the saved parameters."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():  # runs/latest: work in (and report) the run it points at
        run_dir = run_dir.parent / os.readlink(run_dir)
    state = load_state(run_dir)
    if kernel is not None:
        kernel_python(kernel)
        state["kernel"] = kernel
    missing = [name for name in state["notebooks"] if not (Path(state["notebooks_dir"]) / name).exists()]
    if missing:
        raise ConfigError(f"--resume {run_dir}: notebook(s) {', '.join(missing)} no longer exist in "
                          f"{state['notebooks_dir']}.")
    pending = [name for name in state["notebooks"] if state["status"][name] != "done"]
    state.setdefault("resumed", []).append(_now())
    if pending:
        _say(f"resuming {run_dir} at {pending[0]} ({len(pending)} notebook(s) left)", progress)
    point_latest(run_dir.resolve())
    return _execute_series(run_dir, state, progress=progress)


# ----------------------------------------------------------------------------------------- command line


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `aestudy run`."""
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="size of every computation (default: $AESTUDY_PROFILE or standard)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None,
                        help="device for the notebooks that take one (default: auto = CUDA when present)")
    parser.add_argument("--only", metavar="NN,NN", default=None,
                        help="run only these notebooks, by number prefix (e.g. 01,03)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        dest="parameters", help="set a notebook parameter (VALUE parsed as YAML); repeatable")
    parser.add_argument("--params", metavar="FILE.yaml", default=None,
                        help="YAML mapping of parameters (-p wins over it)")
    parser.add_argument("--out", metavar="runs/NAME", default=None,
                        help="run folder (default: runs/<timestamp>)")
    parser.add_argument("--kernel", default=None, help=f"Jupyter kernel to execute with (default: {DEFAULT_KERNEL})")
    parser.add_argument("--resume", metavar="runs/NAME", nargs="?", const="runs/latest", default=None,
                        help="continue a failed or interrupted run (default: runs/latest) with its parameters")
    parser.add_argument("--notebooks-dir", metavar="DIR", default=None,
                        help="folder holding the NN_*.ipynb series (default: the repository's notebooks/)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run_main(args: argparse.Namespace) -> int:
    """`aestudy run`: 0 complete, 1 a notebook failed, 130 interrupted (invalid options raise ConfigError)."""
    try:
        if args.resume is not None:
            given = [flag for flag, value in (("--profile", args.profile), ("--device", args.device),
                                              ("--only", args.only), ("-p", args.parameters),
                                              ("--params", args.params), ("--out", args.out),
                                              ("--notebooks-dir", args.notebooks_dir)) if value]
            if given:
                raise ConfigError(f"--resume continues with the run's saved parameters; drop {', '.join(given)}.")
            result = resume_study(args.resume, kernel=args.kernel, progress=not args.quiet)
        else:
            result = run_study(args.notebooks_dir, out=args.out, profile=args.profile, device=args.device,
                               only=parse_only(args.only), params=collect_params(args.parameters, args.params),
                               kernel=args.kernel or DEFAULT_KERNEL, progress=not args.quiet)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return result.exit_code
