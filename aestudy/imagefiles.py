"""Datasets from your own files: a folder of images or an `.npz`/`.npy` array, served as an `aestudy.data.Dataset`.

`aestudy.data.load_dataset(path)` (and so the notebooks' `dataset` parameter) lands here for anything that is not
a built-in dataset name.

**A folder of images** (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM; read with Pillow). Class labels follow
torchvision's `ImageFolder` convention: when sub-folders hold images, each sub-folder is a class, the sorted
sub-folder names are the classes 0, 1, … (`DatasetInfo.class_names`) and images are found recursively inside them.
Images directly in the folder, with no sub-folder holding images, are unlabelled. A single class sub-folder
carries no label information and is read as unlabelled too. Hidden entries (names starting with ".") and files
with other suffixes are ignored; alpha channels are dropped; palette and CMYK images are read as RGB; 16-bit
grey images keep their 65,536 levels.

**An array file.** `.npy`: one array of images. `.npz`: images under `images` (or `x`, or the only array in the
file), optional `labels` (or `y`: 1-D integers >= 0 or strings; their sorted distinct values are the classes)
and optional `class_names` (then labels must be integers in 0..len(class_names) - 1). Images are (N, H, W) grey or
(N, H, W, C) channels-last with C = 1 or 3, as integers in [0, 255] (uint8 or any integer type) or floats in
[0, 1].

**Output.** Images N×C×H×W float32 in [0, 1], C = 1 (grey) or 3 (RGB), kept as found unless `channels` asks
otherwise. Sizes: `size=None` keeps the images' one size (mixed sizes are an error); `size="auto"` takes the
most common size; `size=(H, W)` or `size=S` resizes every image so it covers the target and center-crops it
(Pillow's `ImageOps.fit` for files, antialiased bilinear `torch.nn.functional.interpolate` for arrays). Whenever
the chosen size would need more than `MEMORY_BUDGET` bytes of float32 pixels, 32×32 (`FALLBACK_SIZE`) is used
instead (with a warning). The budget is a fixed number, not this machine's free memory, so the same files give
the same data on every machine.

**No labels** is explicit: `DatasetInfo.num_classes == 0`, `class_names == ()` and every label is
`aestudy.data.UNLABELLED` (-1), so `Split` keeps its (N,) int64 labels and every split/subset/fingerprint
function works unchanged, while any code that really uses a label (one-hot, bincount, a classifier, a probe)
fails loudly on -1 instead of learning from a made-up class. Check `DatasetInfo.labelled` before such sections.

**Splits.** A fixed test split of `TEST_FRACTION` (20 %, at least one image) is drawn once, stratified by class
when there are labels, with the same seed for every `seed` (like the digits test split), so runs with different
seeds are scored on the same images. The validation split (`val_size` images) is carved from the rest with
`seed`; `limit` then caps every split, exactly as `load_dataset` does for the built-in datasets.

**Fingerprint.** `DatasetInfo.checksum` is the SHA-256 of the decoded pixels (after conversion and resizing),
the labels and the class names; `Dataset.fingerprint` adds every option. The model cache is keyed by it, so an
edited folder retrains and an unchanged one (even moved, or with new file times) reuses its models.

Every bad input raises `DataError` (or `ConfigError` for a bad option) naming the file and the fix before
anything is cached.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aestudy.data import (
    TEST_SUBSET_SEED,
    UNLABELLED,
    Dataset,
    DatasetInfo,
    Split,
    _binarized,
    _check_binarize,
    _fingerprint,
    apply_limit,
    stratified_subset,
)
from aestudy.errors import ConfigError, DataError
from aestudy.progress import progress as progress_bar
from aestudy.validate import as_int

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                                   ".pgm", ".pbm", ".pnm")
ARRAY_SUFFIXES: tuple[str, ...] = (".npz", ".npy")
IMAGE_KEYS: tuple[str, ...] = ("images", "x")  # .npz keys looked up for the images, in order
LABEL_KEYS: tuple[str, ...] = ("labels", "y")
TEST_FRACTION = 0.2  # share of the images in the fixed test split (at least one image)
VAL_FRACTION = 0.1  # default validation share of what remains after the test split (see default_val_size)
TEST_SEED = 5  # stream of data.TEST_SUBSET_SEED that draws the test split (digits uses 4)
FALLBACK_SIZE: tuple[int, int] = (32, 32)
MEMORY_BUDGET = 2 * 2**30  # bytes of float32 pixels above which the fallback size is used
FORMAT = 1  # bump when decoding changes, so fingerprints (and cached models) change with it
SIZE_CHOICES = "None (keep the images' one size), 'auto' (the most common size), an integer S or (H, W)"
# The fewest images the study's notebooks run on (measured at the smoke profile, issue 17): 100 images ran
# notebooks 03 and 04; 60 failed in notebook 03's 10-component full-covariance GMM of the training codes
# (numpy LinAlgError: 44 training codes of 16 dimensions), 5 and 8 when sampling from it (n=0).
STUDY_MIN_IMAGES = 100
_SHOWN = 5  # file names listed in an error before "and N more"

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # 16-bit grey (Pillow reads 16-bit PNGs as I;16)
_UNSUPPORTED_MODES = frozenset({"F"})  # 32-bit float pixels have no agreed range


@dataclass(frozen=True)
class _Pool:
    """Every decoded image before the splits: pixels (N, C, H, W) uint8 (levels 255) or float32 (levels 1)."""

    pixels: np.ndarray
    levels: float
    labels: np.ndarray  # (N,) int64, UNLABELLED (-1) everywhere when there are no classes
    class_names: tuple[str, ...]
    source: str
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------
# Paths


def is_path(value: object) -> bool:
    """Whether a `dataset` value means a file or folder rather than a built-in dataset name.

    True for `os.PathLike` values and for strings that contain a path separator, start with "~" or ".", end in
    .npz/.npy, or name something that exists; a bare word that is none of these is a (possibly misspelt) name.
    """
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str) or not value:
        return False
    if "/" in value or os.sep in value or value.startswith(("~", ".")):
        return True
    return value.lower().endswith(ARRAY_SUFFIXES) or Path(value).exists()


def _resolve(path: str | os.PathLike[str]) -> Path:
    """The absolute path, or a DataError saying what exists instead."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataError(f"{resolved} does not exist; pass a folder of images (optionally one sub-folder per "
                        "class) or an .npz/.npy file of images.")
    if resolved.is_file() and resolved.suffix.lower() not in ARRAY_SUFFIXES:
        raise DataError(f"{resolved} is a file but not an .npz/.npy array; pass the folder that holds your images, "
                        "or save them with numpy.savez(path, images=..., labels=...).")
    return resolved


def _names(paths: Sequence[Path], root: Path, shown: int = _SHOWN) -> str:
    """Up to `shown` paths relative to `root`, then "and N more"."""
    text = ", ".join(p.relative_to(root).as_posix() for p in paths[:shown])
    return text + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


# ---------------------------------------------------------------------------------------------------------
# Folders: listing, headers, decoding


def _top_level(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, other files, sub-folders) directly in `folder`, hidden skipped, each sorted by name."""
    with os.scandir(folder) as scan:  # DirEntry types come with the listing: no stat per file
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    files = [e for e in entries if e.is_file()]
    images = [Path(e.path) for e in files if e.name.lower().endswith(IMAGE_SUFFIXES)]
    others = [Path(e.path) for e in files if not e.name.lower().endswith(IMAGE_SUFFIXES)]
    return images, others, [Path(e.path) for e in entries if e.is_dir()]


def _walk(folder: Path) -> tuple[list[Path], int]:
    """(image files under `folder`, recursively, sorted by relative path; how many other files), hidden skipped."""
    found, others = [], 0
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(current) / name)
            else:
                others += 1
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix()), others


@dataclass(frozen=True)
class _Listing:
    """The image files of a folder and their class indices (UNLABELLED without classes)."""

    files: list[Path]
    labels: list[int]
    class_names: tuple[str, ...]
    notes: tuple[str, ...]


def _list_folder(root: Path) -> _Listing:
    """Find the images and classes of `root` (ImageFolder convention), or a DataError for an empty/ambiguous one."""
    top, others, folders = _top_level(root)
    walked = [(d, *_walk(d)) for d in folders]
    classes = [(d, files) for d, files, _ in walked if files]
    ignored = len(others) + sum(n for _, _, n in walked)
    skipped = (f"{ignored} non-image file(s) ignored",) if ignored else ()
    if not top and not classes:
        seen = f" (it holds {len(others)} other file(s): {_names(others, root)})" if others else ""
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found{seen}; put your images in it, "
                        "or in one sub-folder per class.")
    if top and classes:
        raise DataError(f"{root}: {len(top)} image(s) lie next to the class sub-folders "
                        f"{', '.join(d.name for d, _ in classes)}: {_names(top, root)}; move them into a class "
                        "sub-folder, or into a folder of their own.")
    if top:
        return _Listing(top, [UNLABELLED] * len(top), (), ("no class sub-folders: unlabelled", *skipped))
    if len(classes) == 1:
        name = classes[0][0].name
        return _Listing(classes[0][1], [UNLABELLED] * len(classes[0][1]), (),
                        (f"one class sub-folder ({name}): unlabelled", *skipped))
    files, labels = [], []
    for index, (_, members) in enumerate(classes):
        files += members
        labels += [index] * len(members)
    return _Listing(files, labels, tuple(d.name for d, _ in classes), skipped)


def _open_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc}); replace or delete "
                     "the file and load again.")


def _headers(files: Sequence[Path]) -> list[tuple[tuple[int, int], str]]:
    """((H, W), Pillow mode) of every file, from its header only (no pixels decoded)."""
    from PIL import Image

    out = []
    for path in files:
        try:
            with Image.open(path) as image:
                out.append(((image.height, image.width), image.mode))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise _open_error(path, exc) from exc
        if image.mode in _UNSUPPORTED_MODES:
            raise DataError(f"{path}: 32-bit float pixels (Pillow mode {image.mode}) have no agreed range; save "
                            "the image as 8-bit or 16-bit, or pass an .npz of floats in [0, 1].")
    return out


def _check_modes(files: Sequence[Path], modes: Sequence[str], root: Path, channels: int | None) -> int:
    """The channel count: `channels` if given, else the files' one count (mixed grey/colour is a DataError)."""
    grey = [f for f, m in zip(files, modes, strict=True) if m in _GREY_MODES]
    colour = [f for f, m in zip(files, modes, strict=True) if m not in _GREY_MODES]
    if channels is not None:
        return channels
    if grey and colour:
        grey_modes = ", ".join(sorted({m for m in modes if m in _GREY_MODES}))
        colour_modes = ", ".join(sorted({m for m in modes if m not in _GREY_MODES}))
        raise DataError(f"{root}: mixes grey and colour images: {len(grey)} grey ({grey_modes}): "
                        f"{_names(grey, root)}; {len(colour)} colour ({colour_modes}): {_names(colour, root)}. Pass "
                        "channels=3 (grey read as RGB) or channels=1 (colour converted to grey) (aestudy run: "
                        "-p channels 3 or -p channels 1), or convert the files to one mode.")
    return 1 if grey else 3


def _decode(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (C, H, W): uint8, or float32 in [0, 1] for 16-bit grey; resized + center-cropped to `size`."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here with its name
            if image.mode in _WIDE_MODES:
                converted = image.convert("F")  # exact for 0..65535
                scale = 65535.0
            else:
                converted = image.convert("L" if channels == 1 else "RGB")  # drops alpha; P/CMYK -> RGB
                scale = None
            if size is not None and (converted.height, converted.width) != size:
                converted = ImageOps.fit(converted, (size[1], size[0]), method=Image.Resampling.BILINEAR)
            array = np.asarray(converted)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _open_error(path, exc) from exc
    if scale is None:
        return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if array.min() < 0 or array.max() > scale:
        raise DataError(f"{path}: 32-bit integer pixels outside 0..65535 (min {array.min():g}, max "
                        f"{array.max():g}); save the image as 8-bit or 16-bit.")
    grey = (array / scale).astype(np.float32)[None]
    return np.repeat(grey, 3, axis=0) if channels == 3 else grey


def _stack(images: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(N, C, H, W) uint8 when every image is 8-bit (levels 255), else float32 in [0, 1] (levels 1)."""
    if all(a.dtype == np.uint8 for a in images):
        return np.stack(images), 255.0
    return np.stack([a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in images]), 1.0


def _load_folder(root: Path, size: str | tuple[int, int] | None, channels: int | None, progress: bool) -> _Pool:
    """Decode every image of `root` after checking headers (sizes, modes) for the whole folder first."""
    listing = _list_folder(root)
    headers = _headers(listing.files)
    c = _check_modes(listing.files, [m for _, m in headers], root, channels)
    sizes = [s for s, _ in headers]
    target, size_notes = _target_size(sizes, c, size, where=root, files=listing.files)
    bar = progress_bar(listing.files, desc=f"decoding {root.name}", unit="image", enabled=progress, mininterval=1.0)
    pixels, levels = _stack([_decode(path, c, target) for path in bar])
    labels = np.asarray(listing.labels, dtype=np.int64)
    converted = sum(1 for _, m in headers if (1 if m in _GREY_MODES else 3) != c)
    channel_notes = (f"{converted} image(s) converted to {'grey' if c == 1 else 'RGB'} (channels={c})",) \
        if converted else ()
    return _Pool(pixels, levels, labels, listing.class_names, f"{len(listing.files):,} image files in {root}",
                 listing.notes + size_notes + channel_notes)


# ---------------------------------------------------------------------------------------------------------
# Sizes


def _check_size(size: object) -> str | tuple[int, int] | None:
    """`size` as None, "auto" or (H, W) with sides >= 1."""
    if size is None or size == "auto":
        return size  # type: ignore[return-value]
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (as_int(size[0], "size[0]", low=1), as_int(size[1], "size[1]", low=1))  # type: ignore[return-value]
    if isinstance(size, str) or not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size={size!r} is invalid; valid values: {SIZE_CHOICES}.")
    return (int(size), int(size))


def parse_size(text: object, *, name: str = "image_size") -> str | tuple[int, int] | None:
    """The `image_size` parameter (`aestudy run -p image_size 32x48`) as `load_files`' `size`.

    None, "auto", "S" (e.g. "32") or "HxW" (e.g. "32x48"); an int S is taken too (YAML reads `-p image_size 32` as
    one). Raises ConfigError naming `name` and the valid forms.
    """
    if text is None or text == "auto":
        return text  # type: ignore[return-value]
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool) and text >= 1:
        return (int(text), int(text))
    parts = text.lower().split("x") if isinstance(text, str) else []
    if not parts or len(parts) > 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"{name}={text!r} is invalid; valid values: None (the images' one size), 'auto' (the most "
                          "common size), 'S' (e.g. '32') or 'HxW' (e.g. '32x48').")
    return (int(parts[0]), int(parts[-1]))


def _fits(n: int, channels: int, size: tuple[int, int]) -> bool:
    return n * channels * size[0] * size[1] * 4 <= MEMORY_BUDGET


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _target_size(sizes: Sequence[tuple[int, int]], channels: int, size: str | tuple[int, int] | None, *,
                 where: Path, files: Sequence[Path] | None) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    """The common (H, W) to resize to (None: keep), and a note on what was done; mixed sizes need `size`."""
    counts = Counter(sizes)
    # most common first; ties go to the smaller image, then the shorter one (deterministic)
    ranked = sorted(counts, key=lambda s: (-counts[s], s[0] * s[1], s))
    if size is None and len(counts) > 1:
        groups = []
        for s in ranked[:_SHOWN]:
            members = [f for f, fs in zip(files or [], sizes, strict=False) if fs == s]
            example = f", e.g. {_names(members, where, 2)}" if members else ""
            groups.append(f"{_hw(s)} ({counts[s]} image(s){example})")
        more = f" and {len(counts) - _SHOWN} more sizes" if len(counts) > _SHOWN else ""
        raise DataError(f"{where}: images have {len(counts)} different sizes (HxW): {'; '.join(groups)}{more}. Pass "
                        f"size='auto' (resize and center-crop to the most common size, {_hw(ranked[0])}) or "
                        "size=(H, W) (aestudy run: -p image_size auto, or -p image_size HxW), or make the images one "
                        "size.")
    chosen = ranked[0] if size in (None, "auto") else size
    assert isinstance(chosen, tuple)
    notes: tuple[str, ...] = ()
    if size in (None, "auto") and not _fits(len(sizes), channels, chosen):
        message = (f"{where}: {len(sizes):,} images of {channels}x{_hw(chosen)} need more than "
                   f"{MEMORY_BUDGET / 2**30:g} GiB as float32; resized to {_hw(FALLBACK_SIZE)} "
                   "(pass size=(H, W) to choose)")
        warnings.warn(message, stacklevel=4)
        chosen = FALLBACK_SIZE
        notes = (f"resized to {_hw(chosen)} (the data at its own size exceeds the memory budget)",)
    if len(counts) == 1 and ranked[0] == chosen:
        return None, notes
    resized = sum(n for s, n in counts.items() if s != chosen)
    return chosen, notes + (f"{resized} of {len(sizes)} image(s) resized and center-cropped to {_hw(chosen)}",)


def _fit_tensor(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Center-crop (N, C, H, W) to the aspect ratio of `size`, then antialiased bilinear resize to `size`."""
    h, w = images.shape[-2:]
    if h * size[1] > w * size[0]:  # too tall for the target aspect: crop rows
        keep = max(1, round(w * size[0] / size[1]))
        top = (h - keep) // 2
        images = images[..., top:top + keep, :]
    elif h * size[1] < w * size[0]:  # too wide: crop columns
        keep = max(1, round(h * size[1] / size[0]))
        left = (w - keep) // 2
        images = images[..., :, left:left + keep]
    if tuple(images.shape[-2:]) == size:
        return images
    resized = torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Array files


def _npz_members(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickles), or a DataError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); save it with "
                        "numpy.savez(path, images=..., labels=...) (no object arrays).") from exc


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """(images, labels or None, class_names or None, the key the images came from)."""
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False), None, None, "the array"
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc}); save it with "
                            "numpy.save(path, images) (no object arrays).") from exc
    members = _npz_members(path)
    key = next((k for k in IMAGE_KEYS if k in members), None)
    if key is None and len(members) == 1:
        key = next(iter(members))
    if key is None:
        raise DataError(f"{path}: no images: the file holds {', '.join(sorted(members)) or 'no arrays'}; store the "
                        "images under 'images' (numpy.savez(path, images=..., labels=...)).")
    label_key = next((k for k in LABEL_KEYS if k in members), None)
    labels = members[label_key] if label_key is not None else None
    return members[key], labels, members.get("class_names"), repr(key)


def _channels_last(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) with C in {1, 3} as (N, C, H, W); a DataError names the shape and the fix."""
    shape = tuple(images.shape)
    if images.ndim == 4 and shape[-1] not in (1, 3):
        hint = (" It looks channels-first: pass numpy.moveaxis(images, 1, -1)." if shape[1] in (1, 3) else
                " Drop an alpha channel with images[..., :3]." if shape[-1] == 4 else "")
        raise DataError(f"{path}: images have shape {shape}: the last axis must be 1 (grey) or 3 (RGB) channels in "
                        f"(N, H, W, C).{hint}")
    if images.ndim not in (3, 4) or 0 in shape:
        raise DataError(f"{path}: images have shape {shape} (rank {images.ndim}); expected a non-empty (N, H, W) "
                        "grey or (N, H, W, C) channels-last array with C = 1 or 3.")
    return images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)


LEVELS_ABOVE = 2.0  # a float maximum above this (or integral values) reads as 0..255 levels


def _array_pixels(images: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """Check dtype and range: integers in [0, 255] -> (uint8, 255); floats in [0, 1] -> (float32, 1)."""
    kind = images.dtype.kind
    if kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            bad = int(np.flatnonzero(((images < 0) | (images > 255)).reshape(len(images), -1).any(1))[0])
            raise DataError(f"{path}: integer images must lie in [0, 255]; found values from {low} to {high} (first "
                            f"at image {bad}). Rescale them to 0..255 (e.g. 8-bit), or to floats in [0, 1].")
        return images.astype(np.uint8, copy=False), 255.0
    if kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            bad = int(np.flatnonzero(~finite.reshape(len(images), -1).all(1))[0])
            what = "NaN" if np.isnan(images).any() else "infinite values"
            raise DataError(f"{path}: images contain {what} (first at image {bad}); remove or repair those images.")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            bad = int(np.flatnonzero(((images < 0) | (images > 1)).reshape(len(images), -1).any(1))[0])
            # /255 only when the values really look like 8-bit levels: a maximum of 1.5 is a float image gone
            # slightly out of range (dividing it by 255 would darken it to near black), not 0..255 levels.
            levels = low >= 0 and high <= 255 and (high > LEVELS_ABOVE or bool(np.all(images == np.round(images))))
            hint = (" They look like 0..255 levels: divide by 255." if levels else
                    " Clip or rescale them into [0, 1] (e.g. numpy.clip(images, 0, 1)).")
            raise DataError(f"{path}: float images must lie in [0, 1]; found values from {low:g} to {high:g} (first "
                            f"at image {bad}).{hint}")
        return images.astype(np.float32, copy=False), 1.0
    raise DataError(f"{path}: images have dtype {images.dtype}; expected integers in [0, 255] (e.g. uint8) or "
                    "floats in [0, 1]" + (" (for booleans: images.astype(numpy.uint8) * 255)." if kind == "b" else "."))


def _array_labels(labels: np.ndarray | None, names: np.ndarray | None, n: int,
                  path: Path) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(labels (N,) int64, class names, notes); no `labels` -> UNLABELLED everywhere."""
    if labels is None:
        if names is not None:
            raise DataError(f"{path}: has 'class_names' but no 'labels'; store the labels too, or drop class_names.")
        return np.full(n, UNLABELLED, dtype=np.int64), (), ("no labels: unlabelled",)
    if labels.ndim != 1:
        raise DataError(f"{path}: labels have shape {tuple(labels.shape)}; expected (N,) class labels (for one-hot "
                        "labels store labels.argmax(1)).")
    if len(labels) != n:
        raise DataError(f"{path}: {n} images but {len(labels)} labels; store one label per image.")
    if labels.dtype.kind not in "iuU":
        raise DataError(f"{path}: labels have dtype {labels.dtype}; expected integers >= 0 or strings.")
    if labels.dtype.kind in "iu" and n and int(labels.min()) < 0:
        raise DataError(f"{path}: label {int(labels.min())} at index {int(labels.argmin())} is negative; labels must "
                        "be integers >= 0 or strings (omit 'labels' for unlabelled data).")
    if names is not None:
        names = np.asarray(names).astype(str)
        if labels.dtype.kind == "U" or names.ndim != 1 or (n and int(labels.max()) >= len(names)):
            raise DataError(f"{path}: with class_names ({names.size} names) the labels must be integers in "
                            f"0..{names.size - 1}; found {labels.dtype} labels up to {labels.max()}.")
        return labels.astype(np.int64), tuple(names.tolist()), ()
    values, index = np.unique(labels, return_inverse=True)
    if len(values) < 2:
        note = f"one class ({values[0]}): unlabelled" if len(values) else "no labels"
        return np.full(n, UNLABELLED, dtype=np.int64), (), (note,)
    return index.astype(np.int64).reshape(n), tuple(str(v) for v in values.tolist()), ()


def _convert_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    """Grey -> RGB by repetition, RGB -> grey by ITU-R 601-2 luma (Pillow's "L"), as the same dtype."""
    if channels is None or channels == pixels.shape[1]:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=1)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
    grey = (pixels.astype(np.float32) * weights).sum(axis=1, keepdims=True)
    return np.round(grey).clip(0, 255).astype(np.uint8) if pixels.dtype == np.uint8 else grey


def _load_array(path: Path, size: str | tuple[int, int] | None, channels: int | None) -> _Pool:
    """Read and check an .npz/.npy file into a pool."""
    images, labels, names, key = _read_arrays(path)
    pixels, levels = _array_pixels(_channels_last(images, path), path)
    converted = _convert_channels(pixels, channels)
    label_array, class_names, notes = _array_labels(labels, names, len(pixels), path)
    if converted.shape[1] != pixels.shape[1]:
        notes += (f"converted to {'grey' if channels == 1 else 'RGB'} (channels={channels})",)
    pixels = converted
    n, c, h, w = pixels.shape
    target, size_notes = _target_size([(h, w)] * n, c, size, where=path, files=None)
    if target is not None:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).div_(levels)
        pixels, levels = _fit_tensor(x, target).numpy(), 1.0
    return _Pool(np.ascontiguousarray(pixels), levels, label_array, class_names,
                 f"{path} ({key}, {n:,} images)", notes + size_notes)


# ---------------------------------------------------------------------------------------------------------
# Splits, fingerprint, entry points


def num_test_images(n: int) -> int:
    """Images in the fixed test split of an `n`-image set: round(TEST_FRACTION * n), at least 1."""
    return max(1, round(TEST_FRACTION * n))


def _split_indices(labels: np.ndarray, *, where: Path, val_size: int, limit: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: fixed stratified test split, seeded val carve, then `limit` on each."""
    n = len(labels)
    if n < 2:
        raise DataError(f"{where}: {n} image(s); the splits need at least 2 (one test, one training image). Add "
                        "images.")
    n_test = num_test_images(n)
    pool = n - n_test
    if val_size > pool - 1:
        raise DataError(f"{where}: {n} images are too few for the splits: {n_test} test ({TEST_FRACTION:.0%}) + "
                        f"val_size={val_size} + at least 1 training image. Pass val_size <= {pool - 1} (e.g. "
                        f"{default_val_size_for(n)}), or add images.")
    test_idx = stratified_subset(labels, n_test, np.random.default_rng([TEST_SUBSET_SEED, TEST_SEED]))
    rest = np.setdiff1d(np.arange(n), test_idx, assume_unique=True)
    val_idx = rest[stratified_subset(labels[rest], val_size, np.random.default_rng([seed, 0]))]
    train_idx = np.setdiff1d(rest, val_idx, assume_unique=True)
    return apply_limit(train_idx, val_idx, test_idx, labels, labels, limit=limit, seed=seed, where=str(where),
                       what=f"the train split after the test split and val_size={val_size}")


def default_val_size_for(n: int) -> int:
    """The default validation size of an `n`-image set: VAL_FRACTION of what the test split leaves."""
    return int(VAL_FRACTION * max(n - num_test_images(n), 0))


def _checksum(pool: _Pool) -> str:
    """SHA-256 of the decoded pixels (dtype, shape, bytes), the labels and the class names."""
    digest = hashlib.sha256(f"aestudy-files|{FORMAT}|{pool.pixels.dtype}|{pool.pixels.shape}|".encode())
    digest.update(np.ascontiguousarray(pool.pixels).data)
    digest.update(np.ascontiguousarray(pool.labels, dtype=np.int64).data)
    digest.update("\n".join(pool.class_names).encode())
    return digest.hexdigest()


def _read_pool(path: Path, size: str | tuple[int, int] | None, channels: int | None, progress: bool) -> _Pool:
    return _load_folder(path, size, channels, progress) if path.is_dir() else _load_array(path, size, channels)


def load_files(path: str | os.PathLike[str], *, size: str | int | tuple[int, int] | None = None,
               channels: int | None = None, val_size: int | None = None, limit: int | None = None,
               binarize: str | None = None, seed: int = 0, progress: bool = True) -> Dataset:
    """A folder of images or an .npz/.npy file as seeded train/val/test splits (see the module docstring).

    Args:
        path: the folder (one sub-folder per class, or images directly inside for unlabelled data) or array file.
        size: None (keep the images' one size; mixed sizes raise), "auto" (the most common size), S or (H, W)
            (resize to cover, then center-crop). With None/"auto", data above MEMORY_BUDGET falls back to 32×32.
        channels: None (as found; mixed grey/colour raises), 1 (grey, ITU-R 601-2 luma) or 3 (RGB).
        val_size: validation images carved from what the test split leaves; None = `default_val_size_for(N)`
            (10 % of it).
        limit, binarize, seed: as in `aestudy.data.load_dataset`.

    Returns:
        A `Dataset`: images (N, C, H, W) float32 in [0, 1]; labels (N,) int64, all `UNLABELLED` (-1) with
        `info.num_classes == 0` when there are no classes; `info.name` is the absolute path.

    Raises:
        DataError: naming the file and the fix, for a missing path, an empty folder, an unreadable or truncated
            image, mixed sizes (without `size`) or mixed grey/colour (without `channels`), too few images for
            the splits, a labels/images count mismatch, an array of the wrong rank or dtype, values out of range,
            NaN or inf. Nothing is cached before every check has passed.
        ConfigError: an invalid option.
    """
    target = _check_size(size)
    if channels is not None and channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} is invalid; valid values: None (as found), 1 (grey), 3 (RGB).")
    val_given = val_size is not None
    if val_given:
        val_size = as_int(val_size, "val_size", low=0)
    limit = as_int(limit, "limit", low=1, allow_none=True, none_means="all images")
    _check_binarize(binarize)
    seed = as_int(seed, "seed", low=0)
    where = _resolve(path)
    pool = _read_pool(where, target, channels, progress)
    n = len(pool.labels)
    val = val_size if val_given else default_val_size_for(n)
    index = _split_indices(pool.labels, where=where, val_size=val, limit=limit, seed=seed)
    splits = tuple(Split(torch.from_numpy(pool.pixels[i]).to(torch.float32).div_(pool.levels),
                         torch.from_numpy(pool.labels[i])) for i in index)
    train, val_split, test = _binarized(splits, binarize)  # type: ignore[arg-type]
    checksum = _checksum(pool)
    notes = (*pool.notes, f"fixed {TEST_FRACTION:.0%} test split of {num_test_images(n)} images")
    info = DatasetInfo(str(where), tuple(pool.pixels.shape[1:]), len(pool.class_names), pool.class_names,
                       pool.source, checksum, "your own data (licence not recorded)", "; ".join(notes))
    fingerprint = _fingerprint(kind="files", format=FORMAT, checksum=checksum, size=target, shape=info.shape,
                               channels=channels, val_size=val, limit=limit, seed=seed, binarize=binarize,
                               test_fraction=TEST_FRACTION)
    return Dataset(train, val_split, test, info, binarize, fingerprint)


def count_images(path: str | os.PathLike[str]) -> int:
    """How many images `path` holds, without decoding them (folder listing, or the array file's header/shape)."""
    where = _resolve(path)
    if where.is_dir():
        return len(_list_folder(where).files)
    if where.suffix.lower() == ".npy":
        try:
            shape = np.load(where, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{where}: not a readable .npy file ({type(exc).__name__}: {exc}); save it with "
                            "numpy.save(path, images).") from exc
    else:
        shape = _npz_images_shape(where)
    return int(shape[0]) if len(shape) else 0


def _npz_images_shape(path: Path) -> tuple[int, ...]:
    """The images' shape from the .npy header inside the .npz (the same key rule as loading), without reading them."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            key = next((k for k in IMAGE_KEYS if k in members), None)
            key = next(iter(members)) if key is None and len(members) == 1 else key
            if key is not None:
                with archive.open(members[key]) as handle:
                    version = np.lib.format.read_magic(handle)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    return tuple(read(handle)[0])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        pass
    images, _, _, _ = _read_arrays(path)  # the full read names what is wrong with the file
    return tuple(images.shape)


def study_size_problem(n: int, where: str | os.PathLike[str]) -> str | None:
    """Why `n` images at `where` are too few for the study's notebooks (STUDY_MIN_IMAGES), or None when enough."""
    if n >= STUDY_MIN_IMAGES:
        return None
    test = num_test_images(STUDY_MIN_IMAGES)
    val = default_val_size_for(STUDY_MIN_IMAGES)
    return (f"{where}: {n} image(s) are fewer than the split sizes need: the study needs at least {STUDY_MIN_IMAGES} "
            f"({test} test, {val} validation and {STUDY_MIN_IMAGES - test - val} training images; notebook 03 fits a "
            "10-component Gaussian mixture to the training codes). Add images to reach "
            f"{STUDY_MIN_IMAGES} or more, then check them with: aestudy data info {where}")


def check_study_size(path: str | os.PathLike[str]) -> int:
    """The image count of `path` (no decoding), or a DataError when the study cannot run on so few.

    Raises:
        DataError: fewer than STUDY_MIN_IMAGES images (the message names the count, the minimum and the fix), or
            whatever `count_images` raises for a missing or unreadable path.
    """
    n = count_images(path)
    problem = study_size_problem(n, _resolve(path))
    if problem is not None:
        raise DataError(problem)
    return n


def inspect_for_study(path: str | os.PathLike[str], *, size: str | int | tuple[int, int] | None = None,
                      channels: int | None = None) -> Dataset:
    """Load `path` once as the study will (every check of `load_files`) after the study's minimum size check.

    What `aestudy run` calls before any notebook starts, so that bad data stops the run with the data layer's own
    message instead of failing inside a notebook. Nothing is cached: `load_files` writes nothing.

    Raises:
        DataError: as `check_study_size` and `load_files`.
        ConfigError: an invalid `size` or `channels`.
    """
    check_study_size(path)
    return load_files(path, size=size, channels=channels, progress=False)


def default_val_size(path: str | os.PathLike[str]) -> int:
    """The default validation size for the files at `path` (10 % of what the 20 % test split leaves)."""
    return default_val_size_for(count_images(path))


def train_pool_size(path: str | os.PathLike[str]) -> int:
    """Images left for train + val once the fixed test split is taken (what `split_sizes` scales against)."""
    n = count_images(path)
    return n - num_test_images(n) if n >= 2 else 0
