"""Atomic file writes: a temp file in the same folder, fsync, then `os.replace`, so no reader ever sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

FILE_MODE = 0o644  # mkstemp makes 0600 files; data, checkpoints, ledgers and runs are meant to be shared


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(handle)` on a temp file beside `path`, fsync it, and rename it onto `path`.

    On any error (or Ctrl-C) the temp file is removed and `path` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself; not every filesystem allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_json(path: str | os.PathLike[str], data: Any, **dump_kwargs: Any) -> Path:
    """Write `data` as JSON (indent 1 unless given) atomically; `dump_kwargs` go to `json.dumps`."""
    text = json.dumps(data, **{"indent": 1, **dump_kwargs})  # serialise first: a bad value leaves no temp file
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
