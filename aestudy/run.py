"""The papermill runner behind `aestudy run`: validate parameters, execute the series, keep it resumable.

A run lives in one folder, `runs/NAME/`:

* the executed notebooks (same file names as in `notebooks/`);
* `metrics/NB.json`: the claims ledger each notebook wrote (`$AESTUDY_METRICS_FILE`, filed under the name each
  notebook gives its `Study`);
* `metrics.json`: every notebook's claims and metrics, its status, wall time and parameters, plus the
  environment (package versions, device, seeds, profile, git commit);
* `state.json`: the parameters, the notebook list and each notebook's status (pending/running/done/failed),
  written atomically after every change, so a failed or interrupted run continues with `--resume`;
* `report.md` and `report.html` (see `aestudy.report`);
* `logs/NB.kernel.log`: the kernel process's own stdout/stderr (kept off the terminal);
* `.aestudy.lock` (+ `.aestudy.owner.json` while held): the claim of the one process working in the folder.

Before any of it exists, every parameter value each notebook will run with is checked by the notebooks' own rules
(`aestudy.parameters`). `runs/latest` (next to the run folder) points at the last run started.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
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

import yaml
from filelock import FileLock, Timeout

from aestudy.atomic import atomic_write, atomic_write_json
from aestudy.claims import METRICS_FILE_ENV, load_metrics
from aestudy.config import PROFILE_ENV, resolve_device, resolve_profile
from aestudy.errors import ConfigError
from aestudy.parameters import (
    Parameter,
    ParameterError,
    notebook_parameters,
    parse_text,
    read_yaml,
    validate_parameter,
    validate_parameters,
)

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
    """`"01,03"` -> `["01", "03"]` (None: every notebook; a text that names nothing is an error)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"--only {text!r} names no notebook; valid values: number prefixes such as 01,03 "
                          "(or leave --only out to run every notebook).")
    return parts


# ----------------------------------------------------------------------------------------- parameters


def load_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping of parameter names to values (read by `parameters.read_yaml`: YAML 1.2, `None` = null)."""
    file = Path(path)
    try:
        data = read_yaml(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--params {file}: cannot read it ({exc.strerror}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--params {file} is not UTF-8 text ({exc.reason}); save it as UTF-8 YAML.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--params {file} is not valid YAML ({' '.join(str(exc).split())}).") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--params {file} must be a YAML mapping of parameter names to values "
                          "(e.g. `latent_dim: 8`).")
    return data


def collect_params(pairs: Sequence[Sequence[str]] | None = None,
                   params_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Merge `--params FILE` with `-p NAME VALUE` pairs (the pairs win); `-p` values read as papermill does.

    Raises ConfigError when one name is given twice with `-p`.
    """
    params = load_params_file(params_file) if params_file else {}
    seen: dict[str, str] = {}
    for name, text in pairs or []:
        if name in seen:
            raise ConfigError(f"-p {name} is given twice ({seen[name]!r}, then {text!r}); give it once.")
        seen[name] = text
        params[name] = parse_text(text)
    return params


def route_parameters(notebooks: Sequence[Path], params: Mapping[str, Any], *,
                     run_level: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Validate `params` against the notebooks; give each notebook only the names it declares, as plain values.

    Every parameter a notebook will run with (its defaults overridden by `params`) is checked with
    `aestudy.parameters.validate_parameters` (the notebooks' own rules, and each notebook's annotation), so a
    value no notebook could run with is refused here, before any folder or kernel exists. `run_level` values
    (profile, device) go to the notebooks that declare them and are never "unknown".
    Raises ConfigError for a name no selected notebook declares (listing the valid names) or an invalid value
    (naming the notebook, the parameter and what is valid).
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
        mine = {name: value for name, value in given.items() if name in names}
        effective = {**{name: p.default for name, p in names.items()}, **mine}
        checked = validate_parameters(effective, notebook=key,
                                      declared={name: p.annotation for name, p in names.items()})
        routed[key] = {name: _injectable(checked[name]) for name in mine}
    return routed


def _injectable(value: Any) -> Any:
    """A value papermill injects as itself: tuples become lists (papermill's Python translator writes a tuple
    as the *string* of its repr, e.g. `lrs = "(0.001, 0.003)"`; a list is written as a list literal)."""
    if isinstance(value, (list, tuple)):
        return [_injectable(v) for v in value]
    return value


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
    """A fresh `runs/YYYYmmdd-HHMMSS`, created here (suffixed `-2`, `-3`... when that name is taken).

    The folder is made with an exclusive `mkdir`, so two runs started in the same second get two folders.
    """
    base = Path(runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
            continue
        return candidate


LOCK_FILE = ".aestudy.lock"  # held (flock, via filelock) by the process working in a run or sweep folder
OWNER_FILE = ".aestudy.owner.json"  # who holds it: pid, host, since, command (read by the process refused)
_CLAIM_FILES = (LOCK_FILE, OWNER_FILE)


def _owner(folder: Path) -> str:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        return (f"pid {owner['pid']} on {owner['host']}, since {owner['since']}: "
                f"{owner['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def claim_folder(folder: Path, *, option: str) -> Iterator[Path]:
    """Hold `folder` for this process until the block ends: an exclusive lock on `folder/.aestudy.lock`.

    The lock (`filelock`, an OS-level lock the kernel drops when the process dies, even on `kill -9`) makes the
    claim atomic: of two runs started into one `--out` together, exactly one gets it. The holder writes who it
    is to `.aestudy.owner.json`, removed again on release.

    Raises:
        ConfigError: naming the holder (pid, host, start, command) and what to do, when another process holds
            the folder; or when `folder` is a file.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"{option} {folder} is a file; valid values: a folder.") from exc
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{option} {folder} is in use by another aestudy process ({_owner(folder)}). Wait for "
                          f"it to finish (or stop it), or choose another folder.") from None
    try:
        write_json_atomic(folder / OWNER_FILE, {"pid": os.getpid(), "host": platform.node(), "since": _now(),
                                                "command": shlex.join(sys.argv)})
        yield folder
    finally:
        (folder / OWNER_FILE).unlink(missing_ok=True)
        lock.release()


def remove_unused_folder(folder: Path) -> None:
    """Remove a folder this process created when it holds nothing but the claim files (an aborted start)."""
    if folder.is_dir() and all(entry.name in _CLAIM_FILES for entry in folder.iterdir()):
        for name in _CLAIM_FILES:
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_new_folder(folder: Path, *, option: str, marker: str, resume_hint: bool, claimed: bool = True) -> None:
    """Refuse to start a run (or sweep) in a folder that holds an earlier one (`marker`) or other files.

    Called before claiming (`claimed=False`: only a folder no aestudy process ever claimed is checked, so no
    lock file is ever written into someone else's folder) and again once the folder is held.
    """
    if not claimed and (not folder.is_dir() or (folder / LOCK_FILE).exists()):
        return  # new, or claimed before: claim it first, so a busy folder names its holder
    if (folder / marker).exists():
        hint = f", or continue it with --resume {folder}" if resume_hint else ""
        raise ConfigError(f"{option} {folder} already holds a {'run' if resume_hint else 'sweep'}; valid values: "
                          f"a new folder{hint}.")
    others = sorted(entry.name for entry in folder.iterdir() if entry.name not in _CLAIM_FILES)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ConfigError(f"{option} {folder} already holds other files ({shown}); valid values: a new or empty "
                          "folder (a run writes executed notebooks under their own names).")


STATE_KEYS: dict[str, type] = {"name": str, "started": str, "run_status": str, "notebooks_dir": str,
                               "notebooks": list, "kernel": str, "profile": str, "device": str, "parameters": dict,
                               "status": dict, "wall_s": dict, "errors": dict, "environment": dict}


def load_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved `state.json` of a run folder, checked for the keys and statuses the runner needs.

    Raises:
        ConfigError: when there is no state.json, or it is damaged (naming the file and what can be done).
    """
    file = Path(run_dir) / "state.json"
    if not file.exists():
        raise ConfigError(f"--resume {run_dir}: no state.json there; valid values: a run folder written by "
                          "`aestudy run` (e.g. runs/latest).")

    def damaged(why: str) -> ConfigError:
        return ConfigError(f"--resume {run_dir}: {file} is damaged ({why}), so this run cannot be resumed. "
                           f"aestudy writes it atomically, so something else changed it: put back a copy if you "
                           f"have one, or start a new run (aestudy run ... --out NEW_FOLDER); the executed "
                           f"notebooks in {run_dir} are kept, and trained models load from the model cache.")

    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(f"not valid JSON: {exc}") from None
    if not isinstance(state, dict):
        raise damaged("not a JSON object")
    if state.get("schema") != STATE_SCHEMA:
        raise ConfigError(f"--resume {run_dir}: state.json has schema {state.get('schema')!r}, expected "
                          f"{STATE_SCHEMA}.")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise damaged(f"{key!r} is missing or not a JSON {'array' if kind is list else kind.__name__}")
    for name in state["notebooks"]:
        if state["status"].get(name) not in STATUSES or not isinstance(state["parameters"].get(name), dict):
            raise damaged(f"notebook {name!r} has no valid status or parameters")
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


def _kernel_manager_logging_to(log: Path, base: type | None = None) -> type:
    """A jupyter_client kernel manager (a subclass of `base`, default AsyncKernelManager) whose kernel writes its
    stdout/stderr to `log`, not to our terminal.

    The kernel process inherits the runner's stderr by default, so its own logging (start-up warnings, and on
    Ctrl-C a `ZMQError` traceback as its sockets close under it) would land between the runner's messages. Its
    notebook output travels over ZMQ and is unaffected; the log keeps the rest for a post-mortem (e.g. after a
    DeadKernelError).
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggingKernelManager(base or AsyncKernelManager):  # type: ignore[misc, valid-type]
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as handle:  # the kernel keeps its own copy of the descriptor
                kw.setdefault("stdout", handle)
                kw.setdefault("stderr", handle)
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggingKernelManager


def kernel_log_path(folder: Path, notebook: str | os.PathLike[str]) -> Path:
    """Where the kernel of `notebook` logs its own stdout/stderr: `folder/logs/<key>.kernel.log`."""
    return folder / "logs" / f"{notebook_key(notebook)}.kernel.log"


def execute_notebook(notebook: Path, output: Path, parameters: Mapping[str, Any], *, kernel: str,
                     env: Mapping[str, str], progress: bool = True, kernel_log: Path | None = None) -> float:
    """Run one notebook with papermill (cwd: its own folder) and return its wall time in seconds.

    `kernel_log`: a file for the kernel process's own stdout/stderr (None: inherited, printed with ours).
    """
    import papermill

    _quiet_papermill_parameter_warnings()
    manager = kernel_manager_class()
    if kernel_log is not None:
        manager = _kernel_manager_logging_to(kernel_log, base=manager)
    start = time.perf_counter()
    with _environ(env):
        papermill.execute_notebook(str(notebook.resolve()), str(output.resolve()), parameters=dict(parameters),
                                   kernel_name=kernel, progress_bar=progress, cwd=str(notebook.parent.resolve()),
                                   kernel_manager_class=manager)
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
            mark_interrupted(run_dir / name, run_dir)
        _finish(run_dir, state, "interrupted")
        where = f"during {running[0]}" if running else "between notebooks"
        print(f"\ninterrupted {where}; completed notebooks are kept. Continue with: aestudy run --resume "
              f"{run_dir}", file=sys.stderr)
        raise


INTERRUPTED_TAG = "aestudy-interrupted"


def mark_interrupted(executed: Path, run_dir: Path) -> None:
    """Label the partial output of a notebook stopped by Ctrl-C, so it cannot pass for a finished one.

    papermill's clean-up marks even the cells that never started as "completed"; this sets those back to
    "pending", records `metadata.aestudy.status = "interrupted"` and puts a note on top. A file papermill left
    half-written (not readable as a notebook) is removed. The next `--resume` overwrites the file.
    """
    import nbformat

    if not executed.exists():
        return
    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # noqa: BLE001 - any unreadable file is a half-written one
        executed.unlink(missing_ok=True)
        return
    for cell in nb.cells:
        meta = cell.metadata.get("papermill")
        if meta is not None and meta.get("end_time") is None:
            meta["status"] = "pending"
    note = nbformat.v4.new_markdown_cell(
        f"**Interrupted** (Ctrl-C) at {_now()}: this execution stopped part-way; cells marked pending did not "
        f"run. Continue with `aestudy run --resume {run_dir}`.")
    note.metadata["tags"] = [INTERRUPTED_TAG]
    nb.cells.insert(0, note)
    nb.metadata.setdefault("aestudy", {})["status"] = "interrupted"
    text = nbformat.writes(nb)
    atomic_write(executed, lambda handle: handle.write(text.encode("utf-8")))


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
                             env=env, progress=progress, kernel_log=kernel_log_path(run_dir, name))
        except Exception as exc:  # noqa: BLE001 - any failure of a notebook stops the run the same way
            failure = describe_failure(exc)
            if failure["ename"] == "KeyboardInterrupt":  # the kernel got the Ctrl-C first
                raise KeyboardInterrupt from exc
            state["status"][name] = "failed"
            state["errors"][name] = failure
            state["wall_s"][name] = time.perf_counter() - start
            _finish(run_dir, state, "failed")
            print(format_failure(name, failure), file=sys.stderr)
            print(f"The executed notebook (with its traceback) is {run_dir / name}; the kernel's own log is "
                  f"{kernel_log_path(run_dir, name)}. Completed notebooks and their metrics are kept; "
                  + next_step(run_dir, state, name, failure), file=sys.stderr)
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


def next_step(run_dir: Path, state: Mapping[str, Any], name: str, failure: Mapping[str, Any]) -> str:
    """What to do after notebook `name` failed: `--resume`, or how to change the parameter it rejected.

    A ConfigError that names one of the notebook's parameters (`ood_dataset=... is invalid`) would fail again
    on a plain `--resume`, which keeps the saved value; the advice says how to change it instead.
    """
    resume = f"continue with: aestudy run --resume {run_dir}"
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
              progress: bool = True) -> RunResult:
    """Validate, then execute the series into `out` (default `runs/<timestamp>`); see the module docstring.

    Nothing is written before every parameter is valid; the run folder is then claimed atomically
    (`claim_folder`), so a second run into the same `--out` stops before doing any work. A failing notebook
    stops the run (RunResult.status == "failed"); Ctrl-C saves a resumable state and re-raises
    KeyboardInterrupt.
    """
    notebooks, routed, profile, device = plan_run(notebooks_dir, profile=profile, device=device, only=only,
                                                  params=params, kernel=kernel)
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
                 f"kernel {kernel}", progress)
            return _execute_series(run_dir, state, progress=progress)
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


def resume_study(run_dir: str | os.PathLike[str], *, kernel: str | None = None,
                 params: Mapping[str, Any] | None = None, progress: bool = True) -> RunResult:
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
        _say(f"resuming {run_dir} at {pending[0]} ({len(pending)} notebook(s) left)", progress)
        point_latest(run_dir.resolve())
        return _execute_series(run_dir, state, progress=progress)


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


def run_main(args: argparse.Namespace) -> int:
    """`aestudy run`: 0 complete, 1 a notebook failed, 130 interrupted (invalid options raise ConfigError)."""
    try:
        params = collect_params(args.parameters, args.params)
        if args.resume is not None:
            given = [flag for flag, value in (("--profile", args.profile), ("--device", args.device),
                                              ("--only", args.only), ("--out", args.out),
                                              ("--notebooks-dir", args.notebooks_dir)) if value]
            if given:
                raise ConfigError(f"--resume continues with the run's saved settings; drop {', '.join(given)} "
                                  "(-p/--params may change parameters of the notebooks not yet done).")
            result = resume_study(args.resume, kernel=args.kernel, params=params, progress=not args.quiet)
        else:
            result = run_study(args.notebooks_dir, out=args.out, profile=args.profile, device=args.device,
                               only=parse_only(args.only), params=params,
                               kernel=args.kernel or DEFAULT_KERNEL, progress=not args.quiet)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return result.exit_code
