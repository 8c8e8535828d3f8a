"""Run and sweep folders: claimed atomically by one process, their state read and written atomically, `runs/latest`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from aestudy.atomic import atomic_write_json
from aestudy.errors import ConfigError

STATE_SCHEMA = 1


STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")


LOCK_FILE = ".aestudy.lock"  # held (flock, via filelock) by the process working in a run or sweep folder


OWNER_FILE = ".aestudy.owner.json"  # who holds it: pid, host, since, command (read by the process refused)


_CLAIM_FILES = (LOCK_FILE, OWNER_FILE)


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


STATE_KEYS: dict[str, type] = {"name": str, "started": str, "run_status": str, "notebooks_dir": str,
                               "notebooks": list, "kernel": str, "profile": str, "device": str, "parameters": dict,
                               "status": dict, "wall_s": dict, "errors": dict, "environment": dict}


def _now() -> str:
    """Now, UTC, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
