"""Datasets by name: IDX reader, checksummed download, decoded cache, seeded splits, binarization.

Where files live: `<data_dir>/<name>/`, with `data_dir` = the argument, else `$AESTUDY_DATA`, else `data/` in
a writable repository checkout, else `~/.cache/aestudy/data`. Fashion-MNIST is looked up there, then in
Debian's `/usr/share/datasets/fashion-mnist/` (package `dataset-fashion-mnist`), then downloaded with SHA-256
verification. The decoded arrays are cached next to it as `.npy` files plus a JSON sidecar whose per-array
SHA-256 is checked on every load, so a damaged cache is rebuilt rather than used.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import aestudy
from aestudy.atomic import FILE_MODE, atomic_write
from aestudy.errors import ConfigError, DataError
from aestudy.validate import as_bool, as_int, as_seed, is_int

DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "mnist", "digits", "photo-patches-32", "photo-patches-64",
                                  "cifar-10")
BINARIZE_MODES: tuple[str | None, ...] = (None, "static", "dynamic")
DATA_ENV = "AESTUDY_DATA"
CACHE_FORMAT = 1
BINARIZE_SEED = 0  # every binarized val/test set (and static train set) is the same sample, whatever `seed`
TEST_SUBSET_SEED = 0  # a `limit`ed test set is the same images for every `seed`, so runs stay comparable
PARTS: tuple[str, ...] = ("train-images", "train-labels", "test-images", "test-labels")
_IDX_MAGIC = {"images": 2051, "labels": 2049}
_CHUNK = 1 << 20

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class IdxFile:
    """One gzipped IDX file: its name and the SHA-256 of the archive and of the decompressed payload."""

    filename: str
    archive_sha256: str
    payload_sha256: str | None = None  # None: unknown, so a file that fails the archive hash is only parsed


@dataclass(frozen=True)
class IdxSpec:
    """Where an IDX dataset comes from: its four files, download mirrors and a local system copy."""

    name: str
    files: Mapping[str, IdxFile]  # keyed by PARTS
    mirrors: tuple[str, ...]
    licence: str
    class_names: tuple[str, ...]
    fix: str  # the one command that makes the data available ({folder}: the dataset's folder in the data dir)
    system_dir: Path | None = None
    system_remedy: str = ""  # what fixes a bad file in system_dir ({it}: "it" or "both files")
    image_shape: tuple[int, int] = (28, 28)


IDX_SPECS: dict[str, IdxSpec] = {
    "fashion-mnist": IdxSpec(
        name="fashion-mnist",
        files={
            "train-images": IdxFile("train-images-idx3-ubyte.gz",
                                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train-labels": IdxFile("train-labels-idx1-ubyte.gz",
                                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "test-images": IdxFile("t10k-images-idx3-ubyte.gz",
                                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "test-labels": IdxFile("t10k-labels-idx1-ubyte.gz",
                                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
        licence="MIT",
        class_names=FASHION_CLASSES,
        fix="sudo apt-get install dataset-fashion-mnist (or, with internet access: aestudy data fetch fashion-mnist)",
        system_dir=Path("/usr/share/datasets/fashion-mnist"),
        system_remedy="reinstall the package with `sudo apt-get install --reinstall dataset-fashion-mnist`",
    ),
    "mnist": IdxSpec(
        name="mnist",
        files={
            "train-images": IdxFile("train-images-idx3-ubyte.gz",
                                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            "train-labels": IdxFile("train-labels-idx1-ubyte.gz",
                                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            "test-images": IdxFile("t10k-images-idx3-ubyte.gz",
                                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            "test-labels": IdxFile("t10k-labels-idx1-ubyte.gz",
                                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
        mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        licence="CC BY-SA 3.0",
        class_names=DIGIT_CLASSES,
        fix="with internet access: aestudy data fetch mnist (or copy the four IDX .gz files into {folder})",
    ),
}
DIGITS_LICENCE = "CC BY 4.0"


def _check_binarize(binarize: object) -> None:
    if binarize not in BINARIZE_MODES:
        raise ConfigError(f"binarize={binarize!r} is not a binarization mode; valid values: None, 'static', "
                          "'dynamic'.")


UNLABELLED = -1  # the label of every image of an unlabelled dataset (DatasetInfo.num_classes == 0)


def has_labels(labels: object) -> bool:
    """Whether `labels` carries class labels: a Dataset whose info is labelled, a Split, or labels (N,) (Tensor,
    array or sequence) that are not all UNLABELLED. An empty label set counts as labelled (nothing to refuse)."""
    if isinstance(labels, Dataset):
        return labels.info.labelled
    if isinstance(labels, Split):
        labels = labels.labels
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return not (values.size and bool((values == UNLABELLED).all()))


def require_labels(labels: object, where: str) -> None:
    """Refuse unlabelled data in a function that needs class labels, before any work starts.

    `labels`: a Dataset, Split or labels (N,). `where`: the function's name, e.g. "probes.knn_accuracy".

    Raises:
        ConfigError: "<where> needs class labels, but the data has none (every label is UNLABELLED = -1) …".
    """
    if not has_labels(labels):
        raise ConfigError(f"{where} needs class labels, but the data has none (every label is {UNLABELLED}, e.g. a "
                          "folder of images without class sub-folders); give it labelled data (class sub-folders, or "
                          "`labels` in the .npz) or skip this step (aestudy.series.shared.has_labels).")


def _split_label(name: str) -> str:
    """How an error message names a split: "the train split", or "Split(images, labels)" when it has no name."""
    return f"the {name} split" if name else "Split(images, labels)"


def check_image_values(images: torch.Tensor, where: str, *, indices: torch.Tensor | None = None) -> None:
    """Raise ConfigError unless every pixel of `images` (N, C, H, W) is finite and in [0, 1].

    One pass over the tensor (`aminmax`: NaN propagates into it and ±inf lies outside [0, 1]); only on failure
    is the first offending image searched for, so the message can name it. `where` names the images
    ("the train split"); `indices` (N,), when the images are a batch of a split, maps them to the split's numbering.
    """
    if images.numel() == 0:
        return
    low, high = (float(v) for v in images.aminmax())
    if low >= 0 and high <= 1:  # False for NaN; ±inf lies outside
        return
    flat = images.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    bad = ~finite if not bool(finite.all()) else (flat.amin(dim=1) < 0) | (flat.amax(dim=1) > 1)
    first = int(bad.nonzero()[0, 0])
    number = first if indices is None else int(indices[first])
    if not bool(finite.all()):
        value = float(flat[first][~torch.isfinite(flat[first])][0])
        raise ConfigError(f"{where} has a non-finite pixel ({value}) in image {number} ({int(bad.sum())} of "
                          f"{len(images)} images hold NaN or ±inf); drop or repair those images.")
    # /255 only when the values look like 8-bit levels (maximum above 2): 1.5 is a float image slightly out of range.
    hint = " (images in 0..255: divide by 255)" if low >= 0 and 2 < high <= 255 else ""
    raise ConfigError(f"{where} has pixel values in [{low:g}, {high:g}] (first outside [0, 1]: image {number}); "
                      f"they must lie in [0, 1]{hint}.")


def _check_split(images: object, labels: object, name: str) -> None:
    """Type, dtype and shape of a split's tensors, then its pixel values (one pass); see `Split`."""
    where = _split_label(name)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ConfigError(f"{where} needs torch tensors for images and labels; got {type(images).__name__} and "
                          f"{type(labels).__name__} (convert numpy arrays with torch.from_numpy).")
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise ConfigError(f"{where} needs images (N, C, H, W) and labels (N,); got {tuple(images.shape)} and "
                          f"{tuple(labels.shape)}.")
    if images.dtype != torch.float32:
        raise ConfigError(f"{where} has images of dtype {images.dtype}; they must be torch.float32 in [0, 1] "
                          "(e.g. images.float() / 255 for uint8 images).")
    if labels.dtype != torch.int64:
        raise ConfigError(f"{where} has labels of dtype {labels.dtype}; they must be torch.int64 class indices "
                          "(convert with labels.long()).")
    unlabelled = bool((labels == UNLABELLED).all())  # an unlabelled dataset: every label is UNLABELLED
    if len(labels) and int(labels.min()) < 0 and not unlabelled:
        raise ConfigError(f"{where} has a negative label ({int(labels.min())}); labels are class indices >= 0 "
                          f"(or all {UNLABELLED} for unlabelled images).")


@dataclass(frozen=True)
class Split:
    """One split: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64 class indices >= 0 (all UNLABELLED
    for unlabelled images).

    Checked at construction: tensor types, shapes, dtypes and labels >= 0; and, for a split with a `name`
    ("train", "val", "test"), finite pixels in [0, 1] (one pass over the images), the message naming it.
    An unnamed split's pixels are checked by the `Dataset` it goes into, which names it by its place there,
    so every pixel is checked once and every message names the split. Raises ConfigError.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = field(default="", compare=False)
    _pixels_checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_split(self.images, self.labels, self.name)
        if self.name:
            check_image_values(self.images, _split_label(self.name))
            object.__setattr__(self, "_pixels_checked", True)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where it came from; `checksum` is SHA-256 over its parts' payload SHA-256s."""

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    class_names: tuple[str, ...]
    source: str
    checksum: str
    licence: str
    note: str = ""

    @property
    def labelled(self) -> bool:
        """Whether the images have class labels (False: num_classes 0, every label UNLABELLED)."""
        return self.num_classes > 0

    def __post_init__(self) -> None:
        shape = self.shape
        if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(is_int(v) and v >= 1 for v in shape)):
            raise ConfigError(f"DatasetInfo shape={shape!r} is invalid; it must be (C, H, W), three integers >= 1.")
        object.__setattr__(self, "shape", tuple(int(v) for v in shape))
        object.__setattr__(self, "num_classes", as_int(self.num_classes, "DatasetInfo num_classes", low=0,
                                                       meaning="0 = unlabelled images"))
        names = tuple(self.class_names) if isinstance(self.class_names, (tuple, list)) else None
        if names is None or len(names) != self.num_classes:
            raise ConfigError(f"DatasetInfo class_names={self.class_names!r} is invalid; it must hold one name per "
                              f"class ({self.num_classes}).")
        object.__setattr__(self, "class_names", names)


@dataclass(frozen=True)
class Dataset:
    """Train / val / test splits, the info record and the binarization mode the trainer must honour.

    Checked at construction (ConfigError naming the split): each split is a `Split` whose images have the
    info's (C, H, W) and whose labels lie in [0, info.num_classes); an unnamed split's pixels (finite, in [0, 1]).
    """

    train: Split
    val: Split
    test: Split
    info: DatasetInfo
    binarize: str | None
    fingerprint: str = ""  # identifies the exact data (a cache-key part); "" = hash the tensors themselves

    def __post_init__(self) -> None:
        _check_binarize(self.binarize)
        k = self.info.num_classes
        for slot in ("train", "val", "test"):
            split = getattr(self, slot)
            if not isinstance(split, Split):
                raise ConfigError(f"Dataset({slot}=...) must be an aestudy.data.Split; got {type(split).__name__}.")
            if tuple(split.images.shape[1:]) != tuple(self.info.shape):
                raise ConfigError(f"the {slot} split has images of shape {tuple(split.images.shape[1:])} (C, H, W) "
                                  f"but the dataset info says {tuple(self.info.shape)}; make them agree.")
            if not split._pixels_checked:
                check_image_values(split.images, _split_label(slot))
            if k == 0 and len(split) and not bool((split.labels == UNLABELLED).all()):
                raise ConfigError(f"the {slot} split has class labels but {self.info.name!r} is unlabelled "
                                  f"(DatasetInfo.num_classes 0); give every image the label {UNLABELLED}.")
            if k and len(split) and int(split.labels.max()) >= k:
                raise ConfigError(f"the {slot} split has label {int(split.labels.max())}; labels must lie in "
                                  f"[0, {k}) for {self.info.name!r} ({k} classes per its DatasetInfo.num_classes).")
        if not self.fingerprint:  # hand-built (e.g. synthetic) data: identify it by content
            digest = hashlib.sha256(f"{self.info.checksum}|{self.binarize}".encode())
            for split in (self.train, self.val, self.test):
                for tensor in (split.images, split.labels):
                    digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            object.__setattr__(self, "fingerprint", digest.hexdigest()[:16])


@dataclass(frozen=True)
class DatasetListing:
    """One row of `list_datasets()`: what a dataset is and whether it is on this machine."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    licence: str
    available: bool
    location: str


@dataclass(frozen=True)
class _Raw:
    """Decoded uint8 arrays of one dataset, plus provenance."""

    arrays: dict[str, np.ndarray]  # PARTS -> (N, H, W) images / (N,) labels
    payload_sha256: dict[str, str]
    source: str
    verified: bool


# ---------------------------------------------------------------------------------------------------------
# Locations


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "aestudy" / "__init__.py").is_file()


def _can_write(path: Path) -> bool:
    """Whether `path` is a writable folder, or could be created (its nearest existing parent is writable)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else $AESTUDY_DATA, else `<checkout>/data` if writable, else ~/.cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    checkout = Path(aestudy.__file__).resolve().parents[1]
    if _is_checkout(checkout) and _can_write(checkout / "data"):
        return checkout / "data"
    return Path("~/.cache/aestudy/data").expanduser()


def _writable_reason(folder: Path) -> str | None:
    """None if `folder` exists (created if needed) and accepts files; otherwise why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# ---------------------------------------------------------------------------------------------------------
# IDX reading and verification


def _refetch_hint(name: str) -> str:
    """What fixes a bad file in the data dir, as a template ({it}: "it" or "both files")."""
    return "delete {it} and re-fetch with `aestudy data fetch " + name + "`"


def _gunzip(raw: bytes, path: Path, remedy: str) -> bytes:
    """Decompress a whole .gz file, naming the file when it is truncated or not gzip at all."""
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file; {remedy}.") from exc


def parse_idx(payload: bytes, path: Path, kind: str, remedy: str) -> np.ndarray:
    """Decode an IDX payload of `kind` "images" (N, H, W) or "labels" (N,) as uint8, checking every byte."""
    expected_magic = _IDX_MAGIC[kind]
    ndim = 3 if kind == "images" else 1
    if len(payload) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header is {len(payload)} bytes, shorter than the {4 + 4 * ndim} an IDX "
                        f"{kind} header needs; the file is truncated — {remedy}.")
    magic = int.from_bytes(payload[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number {magic} (expected {expected_magic} for {kind}); "
                        f"not an IDX {kind} file — {remedy}.")
    dims = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(payload) != expected:
        dims_text = "x".join(map(str, dims))
        raise DataError(f"{path}: IDX payload is {len(payload)} bytes but its header ({dims_text}) needs "
                        f"{expected}; the file is truncated or corrupt — {remedy}.")
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one gzipped IDX images or labels file as a uint8 array (kind taken from its magic number)."""
    path = Path(path)
    payload = _gunzip(path.read_bytes(), path, "delete it and fetch it again")
    kind = "images" if payload[:4] == _IDX_MAGIC["images"].to_bytes(4, "big") else "labels"
    return parse_idx(payload, path, kind, "delete it and fetch it again")


def _idx_header(array: np.ndarray) -> bytes:
    """The IDX header that precedes `array`'s bytes (so header + bytes = the decompressed file)."""
    magic = _IDX_MAGIC["images" if array.ndim == 3 else "labels"]
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)


def _payload_sha256(array: np.ndarray) -> str:
    """SHA-256 of the decompressed IDX file that `array` was decoded from."""
    digest = hashlib.sha256(_idx_header(array))
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _read_part(path: Path, spec: IdxSpec, part: str, remedy: str) -> tuple[np.ndarray, str, bool]:
    """Read and check one IDX file: (array, payload SHA-256, whether a known checksum matched)."""
    expected = spec.files[part]
    raw = path.read_bytes()
    payload = _gunzip(raw, path, remedy)
    array = parse_idx(payload, path, part.split("-")[1], remedy)
    archive_sha, payload_sha = hashlib.sha256(raw).hexdigest(), hashlib.sha256(payload).hexdigest()
    verified = archive_sha == expected.archive_sha256 or payload_sha == expected.payload_sha256
    if not verified and expected.payload_sha256 is not None:
        raise DataError(f"{path}: checksum mismatch: SHA-256 {archive_sha} matches neither the upstream archive "
                        f"({expected.archive_sha256}) nor, decompressed ({payload_sha}), the upstream IDX "
                        f"payload ({expected.payload_sha256}); {remedy}.")
    if array.ndim == 3 and array.shape[1:] != spec.image_shape:
        raise DataError(f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected "
                        f"{spec.image_shape[0]}x{spec.image_shape[1]} for {spec.name}; {remedy}.")
    return array, payload_sha, verified


def _read_idx_folder(folder: Path, spec: IdxSpec, source: str, remedy: str) -> _Raw:
    """Decode and check the four IDX files of `spec` in `folder` (`remedy`: a template, see _refetch_hint)."""
    arrays, hashes, verified = {}, {}, True
    for part in PARTS:
        path = folder / spec.files[part].filename
        arrays[part], hashes[part], ok = _read_part(path, spec, part, remedy.format(it="it"))
        verified = verified and ok
    for split in ("train", "test"):
        images, labels = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        images_path = folder / spec.files[f"{split}-images"].filename
        labels_path = folder / spec.files[f"{split}-labels"].filename
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                            f"the {split} files do not belong together — {remedy.format(it='both files')}.")
        if len(labels) and int(labels.max()) >= len(spec.class_names):
            raise DataError(f"{labels_path}: label {int(labels.max())} is out of range 0..{len(spec.class_names) - 1}"
                            f" for {spec.name}; {remedy.format(it='it')}.")
    return _Raw(arrays, hashes, source, verified)


def _dataset_checksum(payload_sha256: Mapping[str, str]) -> str:
    """SHA-256 over the parts' payload SHA-256s in PARTS order: one id for the data whatever its packaging."""
    return hashlib.sha256(" ".join(payload_sha256[part] for part in PARTS).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Decoded cache


def _cache_paths(folder: Path) -> tuple[dict[str, Path], Path]:
    return {part: folder / f"{part}.npy" for part in PARTS}, folder / "decoded.json"


def _stamps(folder: Path, spec: IdxSpec) -> dict[str, list[int]]:
    """Size and mtime of the IDX files present in `folder` (to notice files replaced after caching)."""
    stamps = {}
    for part in PARTS:
        path = folder / spec.files[part].filename
        if path.is_file():
            stat = path.stat()
            stamps[path.name] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def _read_cache(folder: Path, spec: IdxSpec) -> tuple[_Raw | None, str | None]:
    """The decoded cache in `folder` if present and intact: (raw, None), else (None, why it was rejected)."""
    npy_paths, sidecar = _cache_paths(folder)
    if not sidecar.is_file():
        return None, None
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("name") != spec.name:
            return None, f"{sidecar} is from another format or dataset"
        recorded_stamps = meta["stamps"]
        if any(recorded_stamps.get(name) != stamp for name, stamp in _stamps(folder, spec).items()):
            return None, f"the IDX files in {folder} changed after the cache was built"
        arrays, hashes = {}, {}
        for part in PARTS:
            recorded = meta["parts"][part]
            known = spec.files[part].payload_sha256
            if known is not None and recorded["payload_sha256"] != known:
                return None, f"{sidecar} records a checksum for {part} that is not {spec.name}'s"
            array = np.load(npy_paths[part], mmap_mode="r", allow_pickle=False)
            if list(array.shape) != recorded["shape"] or array.dtype != np.uint8:
                return None, f"{npy_paths[part]} has shape {array.shape} / {array.dtype}, not as recorded"
            if _payload_sha256(array) != recorded["payload_sha256"]:
                return None, f"{npy_paths[part]} does not match its recorded SHA-256"
            arrays[part], hashes[part] = array, recorded["payload_sha256"]
        source = f"{folder} (decoded cache of {meta['source']})"
        return _Raw(arrays, hashes, source, bool(meta["verified"])), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{folder} holds an unreadable decoded cache ({exc})"


def _write_cache(folder: Path, spec: IdxSpec, raw: _Raw) -> None:
    """Save the decoded arrays and then the sidecar (its presence marks a complete cache), each atomically."""
    npy_paths, sidecar = _cache_paths(folder)
    for part in PARTS:
        atomic_write(npy_paths[part], lambda handle, a=raw.arrays[part]: np.save(handle, a, allow_pickle=False))
    meta = {
        "format": CACHE_FORMAT, "name": folder.name, "source": raw.source, "verified": raw.verified,
        "checksum": _dataset_checksum(raw.payload_sha256), "stamps": _stamps(folder, spec),
        "parts": {part: {"shape": list(raw.arrays[part].shape), "payload_sha256": raw.payload_sha256[part]}
                  for part in PARTS},
    }
    atomic_write(sidecar, lambda handle: handle.write(json.dumps(meta, indent=1).encode()))


# ---------------------------------------------------------------------------------------------------------
# Download


def _download_one(url: str, target: Path, expected: IdxFile, progress: bool) -> str | None:
    """Download `url` to `target` via a temp file; keep it only if a checksum matches. None, or why it failed."""
    from aestudy.progress import progress as progress_bar

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=target.name, enabled=progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        got = digest.hexdigest()
        if got != expected.archive_sha256 and not _payload_matches(Path(tmp), expected):
            return f"checksum mismatch (SHA-256 {got}, expected {expected.archive_sha256}); the download was deleted"
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
        return None
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        return f"download failed ({exc})"
    finally:
        Path(tmp).unlink(missing_ok=True)


def _payload_matches(path: Path, expected: IdxFile) -> bool:
    """Whether the decompressed content of `path` has the expected payload SHA-256 (False if unknown/corrupt)."""
    if expected.payload_sha256 is None:
        return False
    try:
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == expected.payload_sha256
    except (EOFError, OSError, zlib.error):
        return False


def _download(spec: IdxSpec, folder: Path, mirrors: tuple[str, ...], progress: bool, tried: list[str]) -> str | None:
    """Download the files missing from `folder`; the mirror used, or None (reasons appended to `tried`)."""
    if not mirrors:
        tried.append("download: no mirrors configured")
        return None
    reason = _writable_reason(folder)
    if reason is not None:
        tried.append(f"download into {folder}: not writable ({reason})")
        return None
    used = mirrors[0]
    for part in PARTS:
        expected = spec.files[part]
        if (folder / expected.filename).is_file():
            continue
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + expected.filename
            failure = _download_one(url, folder / expected.filename, expected, progress)
            if failure is None:
                used = mirror
                break
            tried.append(f"{url}: {failure}")
        else:
            return None
    return used


def _missing(folder: Path, spec: IdxSpec) -> list[str]:
    return [spec.files[part].filename for part in PARTS if not (folder / spec.files[part].filename).is_file()]


def _locate_and_decode(spec: IdxSpec, folder: Path, mirrors: tuple[str, ...], progress: bool) -> _Raw:
    """Decode the dataset from the data dir, else the system copy, else a download; one error if all fail."""
    tried: list[str] = []
    for place, remedy in ((folder, _refetch_hint(spec.name)), (spec.system_dir, spec.system_remedy)):
        if place is None:
            continue
        missing = _missing(place, spec)
        if not missing:
            return _read_idx_folder(place, spec, str(place), remedy)
        tried.append(f"{place}: does not exist" if not place.is_dir() else f"{place}: missing {', '.join(missing)}")
    used = _download(spec, folder, mirrors, progress, tried)
    if used is not None:
        return _read_idx_folder(folder, spec, used, _refetch_hint(spec.name))
    places = "; ".join(f"({i}) {entry}" for i, entry in enumerate(tried, 1))
    raise DataError(f"{spec.name} is not available. Tried: {places}. Fix: {spec.fix.format(folder=folder)}")


def _load_idx(spec: IdxSpec, root: Path, *, mirrors: tuple[str, ...] | None, progress: bool,
              require_cache: bool) -> tuple[_Raw, Path]:
    """The decoded dataset (from the cache, else decoded and cached) and the folder holding its cache."""
    folder = root / spec.name
    raw, rejected = _read_cache(folder, spec)
    if raw is not None:
        return raw, folder
    if rejected is not None:
        warnings.warn(f"ignoring the decoded cache: {rejected}; rebuilding it", stacklevel=3)
    unwritable = _writable_reason(folder)
    if unwritable is not None and require_cache:
        raise DataError(f"data dir {folder} is not writable ({unwritable}); set $AESTUDY_DATA to a writable "
                        f"folder (e.g. `export {DATA_ENV}=~/.cache/aestudy/data`) and run again.")
    raw = _locate_and_decode(spec, folder, spec.mirrors if mirrors is None else tuple(mirrors), progress)
    if unwritable is None:
        _write_cache(folder, spec, raw)
    else:
        warnings.warn(f"data dir {folder} is not writable ({unwritable}); decoded {spec.name} from {raw.source} "
                      f"without caching it (set ${DATA_ENV} to a writable folder to cache it)", stacklevel=3)
    return raw, folder


# ---------------------------------------------------------------------------------------------------------
# Digits (scikit-learn, always offline)


def _digits_source() -> str:
    from importlib.resources import files

    return str(files("sklearn.datasets.data") / "digits.csv.gz")


def _load_digits_raw() -> tuple[np.ndarray, np.ndarray, str]:
    """scikit-learn's 8x8 digits as (N, 8, 8) uint8 levels 0..16, (N,) labels, and their SHA-256."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # (1797, 8, 8), integer levels 0..16
    labels = bunch.target.astype(np.uint8)
    checksum = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return images, labels, checksum


DIGITS_TEST_SIZE = 360  # a fixed stratified 20% test split (scikit-learn ships no official one)


def default_val_size(name: str) -> int:
    """A sensible validation size for `name`: 5,000 for the 70k-image sets, 10% of train for digits and files,
    the fixed sizes of the colour sets."""
    from aestudy import imagefiles  # imported here: it builds on this module's classes

    if name in COLOUR_VAL_SIZES:
        return COLOUR_VAL_SIZES[name]
    if name not in DATASET_NAMES and imagefiles.is_path(name):
        return imagefiles.default_val_size(name)
    return 140 if name == "digits" else 5000


TRAIN_POOL_SIZES = {"fashion-mnist": 60000, "mnist": 60000, "digits": 1437, "photo-patches-32": 10000,
                    "photo-patches-64": 4000, "cifar-10": 50000}  # images before the val carve


def split_sizes(name: str, *, limit: int | None, val_size: int) -> dict[str, int | None]:
    """A profile's `limit` and `val_size` scaled down to what dataset `name` holds (digits has 1,437 train images).

    The validation split never exceeds the dataset's default, and a `limit` that would take the whole (remaining)
    training split becomes None, so one profile table serves every dataset.
    """
    from aestudy import imagefiles

    if name not in TRAIN_POOL_SIZES and imagefiles.is_path(name):
        pool = imagefiles.train_pool_size(name)
    elif name not in TRAIN_POOL_SIZES:
        raise ConfigError(f"name={name!r} is not a dataset; valid names: {', '.join(DATASET_NAMES)}, or a path to "
                          "a folder of images or an .npz/.npy file.")
    else:
        pool = TRAIN_POOL_SIZES[name]
    val = min(val_size, default_val_size(name))
    train_pool = pool - val
    return {"limit": None if limit is None or limit >= train_pool else limit, "val_size": val}


# ---------------------------------------------------------------------------------------------------------
# Colour datasets: photo patches (scikit-learn's two sample photos, always offline) and CIFAR-10 (download)
#
# Images come out as (N, 3, H, W) float32 in [0, 1] like every other dataset. The raw arrays here are uint8
# (N, 3, H, W); `_to_split` keeps a channel axis that is already there.

PHOTO_SIDES = {"photo-patches-32": 32, "photo-patches-64": 64}
PHOTO_COUNTS = {32: (10000, 2000), 64: (4000, 1000)}  # patches per dataset: (train pool, test), half per photo
PHOTO_TEST_FROM_COLUMN = 512  # columns 512..639 of both 427x640 photos are the test region, 0..511 train/val
PHOTO_SEED = 0  # the patch positions are fixed: every user gets the same dataset
PHOTO_CLASSES = ("china", "flower")  # the label is the photo a patch comes from
PHOTO_LICENCE = "CC BY 2.0"  # china.jpg: danielbuechele, flower.jpg: vultilion (Flickr), per scikit-learn


@dataclass(frozen=True)
class ArchiveSpec:
    """A dataset shipped as one archive: file name, download URLs, SHA-256, licence, classes, the fix."""

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str
    licence: str
    class_names: tuple[str, ...]
    fix: str


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_SPECS: dict[str, ArchiveSpec] = {
    "cifar-10": ArchiveSpec(
        name="cifar-10",
        filename="cifar-10-python.tar.gz",  # 170,498,071 bytes (upstream publishes only its MD5, c58f3010…)
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        licence="none stated; cite Krizhevsky 2009",
        class_names=CIFAR10_CLASSES,
        fix="with internet access: aestudy data fetch cifar-10 (or copy cifar-10-python.tar.gz into {folder})",
    ),
}
CIFAR10_MEMBERS = {"train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                   "test": ("cifar-10-batches-py/test_batch",)}
COLOUR_VAL_SIZES = {"photo-patches-32": 1000, "photo-patches-64": 500, "cifar-10": 5000}
COLOUR_SHAPES = {"photo-patches-32": (3, 32, 32), "photo-patches-64": (3, 64, 64), "cifar-10": (3, 32, 32)}


def _photo_patches_raw(name: str) -> tuple[tuple[np.ndarray, ...], DatasetInfo]:
    """(train_x, train_y, test_x, test_y) uint8 patches (N, 3, s, s) / labels, and the info record.

    Each photo contributes half of each split. Positions are uniform (seeded by PHOTO_SEED) with the whole patch
    inside the region: train/val patches lie in columns 0..511, test patches in columns 512..639, so no test
    pixel is in any train or val patch. Train patches overlap one another (and val patches overlap train
    patches: val is carved from the same pool); test patches overlap one another only.
    """
    from sklearn.datasets import load_sample_images

    side = PHOTO_SIDES[name]
    bunch = load_sample_images()
    photos = [np.ascontiguousarray(image, dtype=np.uint8) for image in bunch.images]  # 2 x (427, 640, 3)
    rng = np.random.default_rng([PHOTO_SEED, side])
    parts: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for label, photo in enumerate(photos):
        height, width, _ = photo.shape
        windows = np.lib.stride_tricks.sliding_window_view(photo, (side, side), axis=(0, 1))  # (.., .., 3, s, s)
        for split, (first, last), count in (("train", (0, PHOTO_TEST_FROM_COLUMN), PHOTO_COUNTS[side][0]),
                                            ("test", (PHOTO_TEST_FROM_COLUMN, width), PHOTO_COUNTS[side][1])):
            n = count // 2
            tops = rng.integers(0, height - side + 1, n)
            lefts = rng.integers(first, last - side + 1, n)  # the whole patch stays inside [first, last)
            parts[f"{split}_x"].append(windows[tops, lefts])
            parts[f"{split}_y"].append(np.full(n, label, dtype=np.uint8))
    arrays = tuple(np.ascontiguousarray(np.concatenate(parts[k])) for k in ("train_x", "train_y", "test_x", "test_y"))
    digest = hashlib.sha256(f"{name}|{PHOTO_SEED}|{PHOTO_TEST_FROM_COLUMN}".encode())
    for array in arrays:
        digest.update(array.tobytes())
    note = (f"{side}x{side} patches at seeded positions from scikit-learn's china.jpg and flower.jpg (label = "
            f"photo); train/val from columns 0..{PHOTO_TEST_FROM_COLUMN - 1}, test from columns "
            f"{PHOTO_TEST_FROM_COLUMN}..639 (disjoint: no test pixel is in a train patch)")
    source = str(Path(bunch.filenames[0]).parent)
    return arrays, DatasetInfo(name, (3, side, side), 2, PHOTO_CLASSES, source, digest.hexdigest(), PHOTO_LICENCE,
                               note)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, numbers, bytes and numpy arrays (CIFAR's batches), never arbitrary code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # Python 3's protocol-2 pickles spell raw bytes as _codecs.encode(str, latin1)

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _archive_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cifar_batches(path: Path, members: tuple[str, ...], remedy: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 from the named pickled batches inside the tarball."""
    import tarfile

    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in members:
                handle = tar.extractfile(member)
                if handle is None:
                    raise KeyError(member)
                batch = _ArrayUnpickler(handle, encoding="bytes").load()
                x, y = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
                if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y) or (len(y) and
                                                                                    not 0 <= y.min() <= y.max() < 10):
                    raise ValueError(f"{member} holds {x.shape} images and {y.shape} labels")
                images.append(x.reshape(-1, 3, 32, 32))
                labels.append(y.astype(np.uint8))
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError, tarfile.TarError) as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 python archive ({type(exc).__name__}: {exc}); "
                        f"{remedy}.") from exc
    return np.concatenate(images), np.concatenate(labels)


def _locate_archive(spec: ArchiveSpec, root: Path, progress: bool) -> Path:
    """The verified archive in `<root>/<name>/`, downloaded (SHA-256 checked, atomic) when it is missing."""
    folder = root / spec.name
    path = folder / spec.filename
    remedy = f"delete it and re-fetch with `aestudy data fetch {spec.name}`"
    if not path.is_file():
        tried = []
        reason = _writable_reason(folder)
        if reason is not None:
            tried.append(f"download into {folder}: not writable ({reason})")
        else:
            for url in spec.urls:
                failure = _download_one(url, path, IdxFile(spec.filename, spec.sha256), progress)
                if failure is None:
                    break
                tried.append(f"{url}: {failure}")
        if not path.is_file():
            places = "; ".join(f"({i}) {entry}" for i, entry in enumerate([f"{path}: does not exist", *tried], 1))
            raise DataError(f"{spec.name} is not available. Tried: {places}. Fix: {spec.fix.format(folder=folder)}")
    got = _archive_sha256(path)
    if got != spec.sha256:
        raise DataError(f"{path}: checksum mismatch: SHA-256 {got}, expected {spec.sha256}; {remedy}.")
    return path


def _archive_raw(name: str, root: Path, progress: bool) -> tuple[tuple[np.ndarray, ...], DatasetInfo]:
    """CIFAR-10 as (train_x, train_y, test_x, test_y) uint8 arrays and its info (decoded from the archive)."""
    spec = ARCHIVE_SPECS[name]
    path = _locate_archive(spec, root, progress)
    remedy = f"delete it and re-fetch with `aestudy data fetch {spec.name}`"
    train_x, train_y = _read_cifar_batches(path, CIFAR10_MEMBERS["train"], remedy)
    test_x, test_y = _read_cifar_batches(path, CIFAR10_MEMBERS["test"], remedy)
    note = "32x32 colour images decoded from the SHA-256-verified python archive (Krizhevsky 2009)"
    return (train_x, train_y, test_x, test_y), DatasetInfo(name, (3, 32, 32), 10, spec.class_names, str(path),
                                                           spec.sha256, spec.licence, note)


def _colour_raw(name: str, root: Path, progress: bool) -> tuple[tuple[np.ndarray, ...], DatasetInfo]:
    """The raw arrays and info of a colour dataset (photo patches or an archive dataset)."""
    return _photo_patches_raw(name) if name in PHOTO_SIDES else _archive_raw(name, root, progress)


def _colour_where(name: str, root: Path) -> str:
    """Where a colour dataset is on this machine without reading it (empty if nowhere)."""
    if name in PHOTO_SIDES:
        return "bundled with scikit-learn"
    path = root / name / ARCHIVE_SPECS[name].filename
    return str(path.parent) if path.is_file() else ""


def _colour_licence(name: str) -> str:
    return PHOTO_LICENCE if name in PHOTO_SIDES else ARCHIVE_SPECS[name].licence


# ---------------------------------------------------------------------------------------------------------
# Splits and binarization


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `n` items drawn without replacement, each class getting its proportional share (±1)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / max(len(labels), 1)
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders get the leftover items; ties (e.g. balanced classes) are broken at random.
    order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
    quota[order[: n - int(quota.sum())]] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
             for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)


def binarize_images(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Bernoulli(x) sample of images in [0, 1] (float32 zeros and ones, same shape)."""
    return torch.bernoulli(x.to(torch.float32), generator=generator)


def apply_limit(train_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray, train_labels: np.ndarray,
                test_labels: np.ndarray, *, limit: int | None, seed: int, where: str,
                what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stratified `limit` on every split: `limit` training images, at most `limit` validation and test images.

    `train_labels` are indexed by the train and val indices, `test_labels` by the test indices. Train and val
    draws depend on `seed`; the test draw does not, so every seed scores the same test images. `what` names the
    training split in the error ("the train split after carving val_size=5000").

    Raises:
        ConfigError: when `limit` is not in 1..len(train_idx).
    """
    if limit is None:
        return train_idx, val_idx, test_idx
    if not 1 <= limit <= len(train_idx):
        raise ConfigError(f"limit={limit} is invalid for {where}: it must be in 1..{len(train_idx)} ({what}), or "
                          "None for all of it.")
    train_idx = train_idx[stratified_subset(train_labels[train_idx], limit, np.random.default_rng([seed, 1]))]
    val_idx = val_idx[stratified_subset(train_labels[val_idx], min(limit, len(val_idx)),
                                        np.random.default_rng([seed, 2]))]
    test_idx = test_idx[stratified_subset(test_labels[test_idx], min(limit, len(test_idx)),
                                          np.random.default_rng([TEST_SUBSET_SEED, 3]))]
    return train_idx, val_idx, test_idx


def _to_split(images: np.ndarray, labels: np.ndarray, index: np.ndarray, levels: int, name: str) -> Split:
    """Index uint8 arrays (N, H, W) or (N, C, H, W) into a float32 [0, 1] (N, C, H, W) / int64 split called `name`."""
    chosen = torch.from_numpy(np.ascontiguousarray(images[index])).to(torch.float32).div_(levels)
    return Split(chosen.unsqueeze(1) if chosen.ndim == 3 else chosen,
                 torch.from_numpy(labels[index].astype(np.int64)), name)


def _check_args(name: str, val_size: int, limit: int | None, binarize: str | None, seed: int,
                upscale: bool = True, progress: bool = True) -> tuple[str, int, int | None, int]:
    """Check `load_dataset`'s arguments; return (name, val_size, limit, seed) as plain Python values.

    A numpy integer (a point of a numpy grid) is accepted and converted, because these values enter the
    data fingerprint and so the model cache keys. `limit`'s upper bound depends on the dataset (checked later).
    """
    name = str(name) if isinstance(name, str) else name
    if name not in DATASET_NAMES:
        raise ConfigError(f"name={name!r} is not a dataset; valid names: {', '.join(DATASET_NAMES)}, or a path to "
                          "a folder of images or an .npz/.npy file.")
    _check_binarize(binarize)
    val_size = as_int(val_size, "val_size", low=0)
    limit = as_int(limit, "limit", allow_none=True, none_means="all images")  # its range is checked per dataset
    seed = as_seed(seed)
    as_bool(upscale, "upscale")
    as_bool(progress, "progress")
    return name, val_size, limit, seed


def _make_splits(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 name: str, levels: int, val_size: int, limit: int | None, seed: int) -> tuple[Split, Split, Split]:
    """Carve a seeded stratified val split from train, then apply the stratified `limit` to every split."""
    n_full = len(train_y)
    if val_size >= n_full:
        raise ConfigError(f"val_size={val_size} is invalid for {name}: it must be in 0..{n_full - 1} (the training "
                          f"set has {n_full:,} images; e.g. val_size={default_val_size(name)}).")
    val_idx = stratified_subset(train_y, val_size, np.random.default_rng([seed, 0]))
    train_idx = np.setdiff1d(np.arange(n_full), val_idx, assume_unique=True)
    train_idx, val_idx, test_idx = apply_limit(train_idx, val_idx, np.arange(len(test_y)), train_y, test_y,
                                               limit=limit, seed=seed, where=name,
                                               what=f"the train split after carving val_size={val_size}")
    return (_to_split(train_x, train_y, train_idx, levels, "train"),
            _to_split(train_x, train_y, val_idx, levels, "val"), _to_split(test_x, test_y, test_idx, levels, "test"))


def _binarized(splits: tuple[Split, Split, Split], mode: str | None) -> tuple[Split, Split, Split]:
    """Apply the binarization protocol: static = every split once; dynamic = val/test once, train left grey."""
    if mode is None:
        return splits
    out = []
    for k, split in enumerate(splits):
        if k == 0 and mode == "dynamic":
            out.append(split)
            continue
        generator = torch.Generator().manual_seed(BINARIZE_SEED + k)
        out.append(Split(binarize_images(split.images, generator), split.labels, split.name))
    return out[0], out[1], out[2]


def _upscaled(split: Split, size: tuple[int, int]) -> Split:
    """Bilinear upscaling of a split's images to `size` (values stay in [0, 1])."""
    if len(split) == 0:
        return Split(split.images.new_zeros((0, 1, *size)), split.labels, split.name)
    images = torch.nn.functional.interpolate(split.images, size=size, mode="bilinear", align_corners=False)
    return Split(images.clamp_(0.0, 1.0), split.labels, split.name)


def _fingerprint(**fields: object) -> str:
    """A short stable id of everything that determines the data."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(name: str | os.PathLike[str] = "fashion-mnist", *, val_size: int | None = None,
                 limit: int | None = None, binarize: str | None = None, seed: int = 0,
                 data_dir: str | os.PathLike[str] | None = None, upscale: bool = True, progress: bool = True,
                 size: str | int | tuple[int, int] | None = None, channels: int | None = None) -> Dataset:
    """Load `name` as seeded train/val/test splits of float32 images in [0, 1] with int64 labels.

    `name` is one of DATASET_NAMES, or a path to your own images (a folder, optionally one sub-folder per class,
    or an .npz/.npy file), read by `aestudy.imagefiles.load_files` with the options `size` and `channels` (paths
    only; `data_dir` and `upscale` do not apply to them). `val_size` None means 5,000 for a named dataset and 10% of
    the non-test images for files. Unlabelled files have `info.num_classes == 0` and every label UNLABELLED.
    """
    from aestudy import imagefiles

    if name not in DATASET_NAMES and imagefiles.is_path(name):
        return imagefiles.load_files(name, size=size, channels=channels, val_size=val_size, limit=limit,
                                     binarize=binarize, seed=seed, progress=progress)
    if size is not None or channels is not None:
        raise ConfigError(f"size={size!r} and channels={channels!r} apply to your own image files only; pass "
                          f"size=None, channels=None for {name!r}.")
    val_size = 5000 if val_size is None else val_size
    name, val_size, limit, seed = _check_args(name, val_size, limit, binarize, seed, upscale, progress)
    if name == "digits":
        images, labels, checksum = _load_digits_raw()
        test_idx = stratified_subset(labels, DIGITS_TEST_SIZE, np.random.default_rng([TEST_SUBSET_SEED, 4]))
        train_idx = np.setdiff1d(np.arange(len(labels)), test_idx, assume_unique=True)
        splits = _make_splits(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], name=name,
                              levels=16, val_size=val_size, limit=limit, seed=seed)
        size = (28, 28) if upscale else (8, 8)
        if upscale:
            splits = (_upscaled(splits[0], size), _upscaled(splits[1], size), _upscaled(splits[2], size))
        note = ("UCI optdigits via scikit-learn: 8x8 levels 0..16 scaled to [0, 1], "
                + ("upscaled 8x8->28x28 (bilinear)" if upscale else "kept at 8x8")
                + f"; fixed stratified test split of {DIGITS_TEST_SIZE} images")
        info = DatasetInfo(name, (1, *size), 10, DIGIT_CLASSES, _digits_source(), checksum, DIGITS_LICENCE, note)
    elif name in COLOUR_SHAPES:
        (train_x, train_y, test_x, test_y), info = _colour_raw(name, resolve_data_dir(data_dir), progress)
        splits = _make_splits(train_x, train_y, test_x, test_y, name=name, levels=255, val_size=val_size,
                              limit=limit, seed=seed)
    else:
        spec = IDX_SPECS[name]
        raw, _ = _load_idx(spec, resolve_data_dir(data_dir), mirrors=None, progress=progress, require_cache=False)
        splits = _make_splits(raw.arrays["train-images"], raw.arrays["train-labels"], raw.arrays["test-images"],
                              raw.arrays["test-labels"], name=name, levels=255, val_size=val_size, limit=limit,
                              seed=seed)
        note = "" if raw.verified else "checksum not verified: the files match no known upstream SHA-256"
        info = DatasetInfo(name, (1, *spec.image_shape), len(spec.class_names), spec.class_names, raw.source,
                           _dataset_checksum(raw.payload_sha256), spec.licence, note)
    train, val, test = _binarized(splits, binarize)
    fingerprint = _fingerprint(name=name, checksum=info.checksum, limit=limit, val_size=val_size, seed=seed,
                               binarize=binarize, upscale=upscale if name == "digits" else None)
    return Dataset(train, val, test, info, binarize, fingerprint)


def fetch_dataset(name: str, *, data_dir: str | os.PathLike[str] | None = None,
                  mirrors: tuple[str, ...] | None = None, progress: bool = True) -> Path:
    """Make `name` available offline (verified files + decoded cache in the data dir); the folder holding it."""
    _check_args(name, 0, None, None, 0)
    if name == "digits":
        return Path(_digits_source()).parent
    if name in PHOTO_SIDES:
        return Path(_photo_patches_raw(name)[1].source)
    if name in ARCHIVE_SPECS:
        return _locate_archive(ARCHIVE_SPECS[name], resolve_data_dir(data_dir), progress).parent
    _, folder = _load_idx(IDX_SPECS[name], resolve_data_dir(data_dir), mirrors=mirrors, progress=progress,
                          require_cache=True)
    return folder


def _where(name: str, root: Path) -> str:
    """Where `name` is on this machine without reading it (empty if nowhere)."""
    if name == "digits":
        return "bundled with scikit-learn"
    if name in COLOUR_SHAPES:
        return _colour_where(name, root)
    spec = IDX_SPECS[name]
    folder = root / name
    if _cache_paths(folder)[1].is_file() or not _missing(folder, spec):
        return str(folder)
    if spec.system_dir is not None and not _missing(spec.system_dir, spec):
        return str(spec.system_dir)
    return ""


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetListing]:
    """One row per dataset: shape, classes, licence and whether (and where) it is available locally."""
    root = resolve_data_dir(data_dir)
    rows = []
    for name in DATASET_NAMES:
        where = _where(name, root)
        if name in COLOUR_SHAPES:
            rows.append(DatasetListing(name, COLOUR_SHAPES[name], 2 if name in PHOTO_SIDES else 10,
                                       _colour_licence(name), bool(where), where))
            continue
        licence = DIGITS_LICENCE if name == "digits" else IDX_SPECS[name].licence
        rows.append(DatasetListing(name, (1, 28, 28), 10, licence, bool(where), where))
    return rows
