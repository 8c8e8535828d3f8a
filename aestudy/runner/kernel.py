"""Executing one notebook with papermill: the kernel's environment and transport, quiet logs, failures described,
an interrupted notebook labelled as such.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aestudy.atomic import atomic_write
from aestudy.claims import METRICS_FILE_ENV
from aestudy.config import PROFILE_ENV
from aestudy.runner.folders import _now
from aestudy.runner.params import notebook_key
from aestudy.runner.thread_budget import THREAD_BUDGET_ENV

DEFAULT_KERNEL = "aestudy"


RUN_DIR_ENV = "AESTUDY_RUN_DIR"


THREAD_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def kernel_threads(jobs: int) -> dict[str, str]:
    """Thread-count variables for each kernel when `jobs` notebooks share the CPU: `cores // jobs` each (at least
    one), so concurrent kernels do not oversubscribe the cores (measured here to slow torch 10-30x). Variables the
    user already set are kept; one job changes nothing. Thread counts change speed, not results beyond float
    rounding order. While they run, the runner can raise a kernel's count (`aestudy.runner.thread_budget`)."""
    if jobs <= 1:
        return {}
    per_kernel = max(1, (os.cpu_count() or 1) // jobs)
    return {var: str(per_kernel) for var in THREAD_VARS if var not in os.environ}


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


def _kernel_manager_with_env(env: Mapping[str, str], base: type | None = None,
                             cwd: str | os.PathLike[str] | None = None) -> type:
    """A kernel manager (a subclass of `base`) whose kernel process gets `env` on top of the inherited environment,
    and starts in `cwd` (None: ours).

    Passing the variables to this one kernel, rather than setting `os.environ` around papermill, lets several
    notebooks run at once (`aestudy run --jobs N`), each kernel with its own ledger file and thread count. With a
    thread budget in `env` the kernel also loads the hook that follows it (`kernel_command`). The working directory
    is the kernel's alone for the same reason: papermill's `cwd=` changes the whole runner process's directory
    (`os.chdir`) while a notebook runs, so with two notebooks at once the runner's relative paths (`--out runs/x`)
    resolved into the notebooks' folder, and a run wrote half its files there.
    """
    from jupyter_client.manager import AsyncKernelManager

    extra = dict(env)
    folder = None if cwd is None else str(Path(cwd).resolve())

    class EnvKernelManager(base or AsyncKernelManager):  # type: ignore[misc, valid-type]
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            kw["env"] = {**(kw.get("env") or os.environ), **extra}
            if folder is not None:
                kw["cwd"] = folder
            kernel_cmd = kernel_command(kernel_cmd, extra)
            await super()._async_launch_kernel(kernel_cmd, **kw)
            pid = getattr(getattr(self, "provisioner", None), "pid", None)
            if pid is not None:
                with _KERNELS_LOCK:
                    _KERNEL_PIDS.add(pid)

    return EnvKernelManager


THREAD_BUDGET_EXTENSION = "aestudy.runner.thread_budget"


def kernel_command(command: list[str], env: Mapping[str, str]) -> list[str]:
    """The kernel's command line: `command`, plus the thread-budget extension when `env` names a budget file
    (`$AESTUDY_THREAD_BUDGET`, given only with `--jobs` > 1) and the kernel is ipykernel.

    The extension registers a `pre_run_cell` hook that follows the budget (`aestudy.runner.thread_budget`); it is
    loaded by ipykernel's own option, so the notebooks stay as they are. Other kernels (which would not know the
    option) start unchanged and keep their first thread count.
    """
    if THREAD_BUDGET_ENV not in env or not any("ipykernel" in word for word in command):
        return list(command)
    return [*command, f"--IPKernelApp.extra_extensions={THREAD_BUDGET_EXTENSION}"]


# Kernel processes this runner started (pids), so an interrupt of the runner alone (SIGTERM, or a Ctrl-C that
# reached only this process) can be passed on to kernels that papermill drives in worker threads.
_KERNEL_PIDS: set[int] = set()
_KERNELS_LOCK = threading.Lock()


def interrupt_kernels() -> None:
    """Send SIGINT to every kernel this process started that still runs: its cell stops with KeyboardInterrupt,
    papermill returns, and the notebook is left resumable like after a Ctrl-C in the terminal."""
    with _KERNELS_LOCK:
        pids = list(_KERNEL_PIDS)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):  # finished (or the pid reused by someone else's process)
            with _KERNELS_LOCK:
                _KERNEL_PIDS.discard(pid)


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
    """Run one notebook with papermill (its kernel's cwd: the notebook's folder; ours unchanged) and return its
    wall time in seconds.

    `kernel_log`: a file for the kernel process's own stdout/stderr (None: inherited, printed with ours).
    """
    import papermill

    _quiet_papermill_parameter_warnings()
    manager = kernel_manager_class()
    if kernel_log is not None:
        manager = _kernel_manager_logging_to(kernel_log, base=manager)
    # The kernel starts in the notebook's folder; papermill's own `cwd=` is not used (see _kernel_manager_with_env).
    manager = _kernel_manager_with_env(env, base=manager, cwd=notebook.parent)
    start = time.perf_counter()
    papermill.execute_notebook(str(notebook.resolve()), str(output.resolve()), parameters=dict(parameters),
                               kernel_name=kernel, progress_bar=progress, kernel_manager_class=manager)
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
