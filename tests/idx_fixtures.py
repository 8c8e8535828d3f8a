"""Tiny IDX datasets written on the fly (MNIST-like files, a `file://` mirror, matching checksum specs)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np

from aestudy.data import IDX_SPECS, PARTS, IdxFile, IdxSpec

FILENAMES = {part: IDX_SPECS["mnist"].files[part].filename for part in PARTS}
MAGIC = {"images": 2051, "labels": 2049}


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
    """The decompressed IDX file for a uint8 array (images (N, H, W) or labels (N,)); `magic` overrides."""
    if magic is None:
        magic = MAGIC["images" if array.ndim == 3 else "labels"]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def gz(payload: bytes) -> bytes:
    """Deterministic gzip (mtime 0), so fixture hashes are stable."""
    return gzip.compress(payload, mtime=0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fixture_arrays(n_train: int = 20, n_test: int = 10, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-byte 28x28 images with labels cycling 0..9 (every class present)."""
    rng = np.random.default_rng(seed)
    return {
        "train-images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test-images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test-labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray] | None = None,
                     payloads: dict[str, bytes] | None = None) -> dict[str, IdxFile]:
    """Write the four .gz files into `folder` (payload overrides per part); their IdxFile records (both hashes)."""
    arrays = fixture_arrays() if arrays is None else arrays
    payloads = payloads or {}
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for part in PARTS:
        payload = payloads.get(part, idx_bytes(arrays[part]))
        archive = gz(payload)
        (folder / FILENAMES[part]).write_bytes(archive)
        files[part] = IdxFile(FILENAMES[part], sha256(archive), sha256(payload))
    return files


def fixture_spec(name: str, files: dict[str, IdxFile], *, mirrors: tuple[str, ...] = (),
                 system_dir: Path | None = None, payload_known: bool = False) -> IdxSpec:
    """The real spec of `name` with the fixtures' checksums, mirrors and system folder swapped in."""
    if not payload_known:
        files = {part: dataclasses.replace(f, payload_sha256=None) for part, f in files.items()}
    return dataclasses.replace(IDX_SPECS[name], files=files, mirrors=mirrors, system_dir=system_dir)


def leftovers(root: Path) -> list[Path]:
    """Temp or partial files anywhere under `root` (there must be none after any failure)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and (p.name.startswith(".")
                                                                 or p.suffix in (".tmp", ".part")))
