"""Checkpoint cache: hashed keys, atomic + locked writes, corruption detection.

A checkpoint is one file `<cache>/<key>.pt` holding only tensors and plain Python values
(`state_dict`, config dict, history as a dict of lists, aestudy version, key) plus a SHA-256 digest
of that content, so a truncated, garbled or hand-edited file is detected on load instead of used.
Location: the `cache_dir` argument, else `$AESTUDY_CACHE`, else `~/.cache/aestudy/models`.

A file that `torch.load(weights_only=True)` refuses because it holds a type outside the safe set (e.g. a numpy
scalar that an older aestudy stored in a config) is not damaged, only not loadable safely: `load_checkpoint`
raises `CheckpointRefusedError` naming the types, and `discard` moves such a file aside to `<name>.refused`
(never deleting it) so that the caller can retrain, while damaged files are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from filelock import FileLock

import aestudy
from aestudy.atomic import atomic_write
from aestudy.errors import CheckpointError, CheckpointRefusedError

CACHE_ENV = "AESTUDY_CACHE"
DEFAULT_CACHE = Path("~/.cache/aestudy/models")
FORMAT = 1
_FIELDS = ("format", "version", "key", "config", "history", "state_dict", "sha256")


def cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint folder: the argument, else `$AESTUDY_CACHE`, else `~/.cache/aestudy/models`."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def hash_key(payload: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a JSON-able mapping (key order and tuple/list spelling do not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_path(key: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the checkpoint for `key` lives."""
    return cache_dir(directory) / f"{key}.pt"


@contextlib.contextmanager
def lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an inter-process lock `<path minus .pt>.lock` (creating the folder) for check-train-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        yield


def _content_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 over the record's metadata (canonical JSON) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    meta = {name: record[name] for name in ("format", "version", "key", "config", "history")}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(record["state_dict"]):
        tensor = record["state_dict"][name].detach().cpu().contiguous()
        digest.update(f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _history_to_lists(history: pd.DataFrame) -> dict[str, list[Any]]:
    """A DataFrame as {column: list of plain Python values} (loadable with weights_only=True)."""
    return {str(column): history[column].tolist() for column in history.columns}


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _plain_values(value: Any, where: str) -> Any:
    """`value` with numpy scalars turned into Python ones (dicts, lists, tuples walked); TypeError for the rest.

    Only these load back with `torch.load(weights_only=True)` (numpy scalars are refused by it).
    """
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain_values(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_values(v, f"{where}[{i}]") for i, v in enumerate(value)) \
            if type(value) in (list, tuple) else [_plain_values(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar or 0-d array
        return _plain_values(value.item(), where)
    for plain in (bool, int, float, str):  # a subclass (e.g. an IntEnum): its plain value
        if isinstance(value, plain):
            return plain(value)
    raise TypeError(f"checkpoint {where} is a {type(value).__module__}.{type(value).__qualname__}; only plain "
                    "Python values (str, int, float, bool, None, lists and dicts of them) can be stored.")


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    history: pd.DataFrame,
    version: str,
    key: str | None = None,
) -> Path:
    """Write a checksummed checkpoint atomically (tensors moved to CPU); return its path.

    `config` and `history` are stored as plain Python values (numpy scalars converted, tuples as lists), so the
    file always loads with `weights_only=True`. Raises TypeError (before writing) for values that cannot be.
    """
    path = Path(path)
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": str(version),
        "key": key,
        "config": _plain_values(dict(config), "config"),
        "history": _plain_values(_history_to_lists(history), "history"),
        "state_dict": {name: tensor.detach().cpu().clone() for name, tensor in state_dict.items()},
    }
    record["sha256"] = _content_digest(record)
    atomic_write(path, lambda handle: torch.save(record, handle))
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, version: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """Load and verify a checkpoint (weights_only); history comes back as a DataFrame.

    Raises CheckpointError naming the file when it is missing, unreadable, truncated, fails its
    checksum, or was written for another aestudy `version` or `key` than the ones asked for;
    CheckpointRefusedError (a CheckpointError) when it is intact but holds types the weights-only unpickler
    refuses (`.types` lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_types(path, err)
        if unsafe:
            raise CheckpointRefusedError(
                f"checkpoint {path} was refused by torch.load(weights_only=True): it contains type "
                f"{', '.join(unsafe)}, which the weights-only unpickler does not load (the file is not damaged; "
                "an older aestudy stored such values in its config). Delete it to retrain, or load it yourself "
                "with torch.load(..., weights_only=False) only if you trust where it came from.",
                unsafe) from err
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupted; torch.load raised {type(err).__name__})."
        ) from err
    except Exception as err:  # torch raises many types for bad bytes (RuntimeError, EOFError, UnpicklingError…)
        # torch's own text (kept in __cause__) may advise weights_only=False, which is wrong for a damaged file
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupted; torch.load raised {type(err).__name__})."
        ) from err
    if not isinstance(record, dict) or set(record) != set(_FIELDS) or record["format"] != FORMAT:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(f"checkpoint {path} is not an aestudy checkpoint (format {FORMAT}); found {found}.")
    if _content_digest(record) != record["sha256"]:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 checksum (corrupted).")
    if version is not None and record["version"] != str(version):
        raise CheckpointError(
            f"checkpoint {path} was written by aestudy {record['version']}, this is aestudy {version}."
        )
    if key is not None and record["key"] != key:
        raise CheckpointError(f"checkpoint {path} holds key {record['key']}, expected {key}.")
    record["history"] = pd.DataFrame(record["history"])
    return record


def _unsafe_types(path: Path, err: Exception) -> list[str]:
    """The globals in `path` that `weights_only=True` refuses ([] when the file cannot be scanned: damaged).

    torch >= 2.5 lists them all; older versions name the first one in the error text ("Unsupported global: GLOBAL X").
    """
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is not None:
        try:
            return sorted(scan(path))  # a set inside torch: sorted, so messages are reproducible
        except Exception:  # noqa: BLE001 - a damaged file cannot be scanned; it is then reported as damaged
            return []
    return re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err))[:1]


def discard(path: str | os.PathLike[str], err: CheckpointError) -> str:
    """Get a checkpoint that failed to load (`err`) out of the way of a retrain; say what was done (no full stop).

    A refused (intact) file is moved aside to `<name>.refused` (`.refused-2`, ... if taken), never deleted;
    a damaged or mismatching one is deleted. Call it while holding `lock(path)`.
    """
    path = Path(path)
    if isinstance(err, CheckpointRefusedError):
        aside = path.with_name(path.name + ".refused")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.refused-{n}")
        os.replace(path, aside)
        return f"Moved it to {aside} (kept: it is not damaged)"
    path.unlink(missing_ok=True)
    return f"Deleting {path}"


T = TypeVar("T")


@dataclass(frozen=True)
class Checkpoint:
    """What a builder stores for its artefact: tensors (`state_dict`), a plain config and a per-epoch history."""

    state_dict: Mapping[str, torch.Tensor]
    config: Mapping[str, Any]
    history: pd.DataFrame


def load_or_build(key: str, *, load: Callable[[dict[str, Any], Path], T], build: Callable[[], tuple[T, Checkpoint]],
                  what: str = "", cache_dir: str | os.PathLike[str] | None = None) -> tuple[T, bool]:
    """The one load-or-build of every cached artefact (autoencoders, the domain classifier, the GAN, M2).

    Under the key's inter-process lock (a second process building the same key waits, then loads): a verified
    checkpoint is turned into the artefact by `load(record, path)`; one that is damaged, refused or does not
    fit (`load` raising CheckpointError, or RuntimeError from `load_state_dict`) is reported in a warning naming
    the file and what was done with it (`discard`), then rebuilt. `build()` returns the artefact and the
    `Checkpoint` to store, written atomically for this aestudy version; when it raises (e.g. a diverged
    training) nothing is stored. Returns (artefact, loaded from the cache).
    """
    path = checkpoint_path(key, cache_dir)
    with lock(path):
        if path.exists():
            try:
                record = load_checkpoint(path, version=aestudy.__version__, key=key)
                try:
                    return load(record, path), True
                except RuntimeError as err:  # shapes/names differ: the file does not belong to this artefact
                    raise CheckpointError(f"checkpoint {path} does not match what it was loaded for: "
                                          f"{str(err).rstrip('.')}.") from err
            except CheckpointError as err:
                rebuilding = "and retraining" + (f" {what}" if what else "") + "."
                warnings.warn(f"{err} {discard(path, err)} {rebuilding}", stacklevel=3)
        artefact, stored = build()
        save_checkpoint(path, state_dict=dict(stored.state_dict), config=dict(stored.config),
                        history=stored.history, version=aestudy.__version__, key=key)
    return artefact, False
