"""A running kernel's torch thread count, changed by the runner while it runs (`aestudy run --jobs N`).

With `--jobs N` each kernel starts with `cores // N` threads (`aestudy.runner.kernel.kernel_threads`). When fewer
notebooks remain than jobs, the runner rewrites the "thread budget" of each kernel still running (a one-line file,
`<run>/threads/<notebook>`, named to the kernel by `$AESTUDY_THREAD_BUDGET`), and the kernel, before each cell,
follows it with `torch.set_num_threads`. The cores a finished notebook freed then go to the ones still running
instead of idling (issue 13: the cold standard series ran its last notebook alone on one of two cores for ~420 s).

The kernel side is an IPython extension (`load_ipython_extension`), loaded at kernel start through ipykernel's
`--IPKernelApp.extra_extensions` (see `aestudy.runner.kernel`): the notebooks do not change. This module imports
nothing heavy, so a kernel that never imports torch pays nothing for it.

The variable changes SPEED only: a thread count changes the order of float reductions (results equal within
float rounding), not what is computed; it is set by the runner, never by a user.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

THREAD_BUDGET_ENV = "AESTUDY_THREAD_BUDGET"


def read_budget(path: str | os.PathLike[str]) -> int | None:
    """The thread count in budget file `path` (one integer >= 1), or None for a missing, unreadable or garbled file
    (the caller then keeps its current count)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        threads = int(text)
    except (OSError, UnicodeError, ValueError):
        return None
    return threads if threads >= 1 else None


def write_budget(path: str | os.PathLike[str], threads: int) -> Path:
    """Write `threads` (an integer >= 1) to budget file `path` atomically, so a kernel never reads half a file.

    Raises:
        ValueError: for a count below 1 (a runner bug, not a user's input).
    """
    from aestudy.atomic import atomic_write

    if int(threads) < 1:
        raise ValueError(f"thread budget {threads!r} is invalid; it must be an integer >= 1.")
    return atomic_write(path, lambda handle: handle.write(f"{int(threads)}\n".encode("ascii")))


class ThreadBudget:
    """A `pre_run_cell` callback: before each cell, apply the budget in `path` when it changed.

    `applied` is the count the kernel already runs with (from `$OMP_NUM_THREADS` at start). The budget is applied
    only when its value differs from the last one applied, so a notebook that sets its own thread count keeps it
    until the runner changes the budget. Before the notebook imports torch nothing is set (torch then reads
    `$OMP_NUM_THREADS` itself); the budget is applied before the first cell after the import. A change takes effect
    from the next cell: a cell already running keeps its count. Nothing here can fail a cell.
    """

    def __init__(self, path: str | os.PathLike[str], applied: int | None = None) -> None:
        self.path = Path(path)
        self.applied = applied

    def __call__(self, info: Any = None) -> None:
        """Apply the budget (called by IPython with the cell's `ExecutionInfo`, unused)."""
        threads = read_budget(self.path)
        torch = sys.modules.get("torch")
        if threads is None or threads == self.applied or torch is None:
            return
        try:
            torch.set_num_threads(threads)
        except Exception:  # noqa: BLE001 - a thread count is never worth failing a cell for
            return
        self.applied = threads


def _start_count() -> int | None:
    try:
        return int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None


def load_ipython_extension(ipython: Any) -> None:
    """Register `ThreadBudget` before every cell when `$AESTUDY_THREAD_BUDGET` names a budget file (IPython's
    extension entry point; without the variable nothing is registered)."""
    path = os.environ.get(THREAD_BUDGET_ENV)
    if not path:
        return
    ipython.events.register("pre_run_cell", ThreadBudget(path, applied=_start_count()))
