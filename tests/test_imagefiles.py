"""Tests for aestudy.imagefiles: your own images (folders, .npz/.npy) as a Dataset, every bad input, FID-AE.

Every fixture is generated here in tmp_path: grey and RGB PNG folders, labelled (class sub-folders) and not,
and arrays. PNG is lossless, so decoded pixels are compared exactly with what was written.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aestudy import imagefiles
from aestudy.ae_features import (
    FEATURE_DIM,
    METRIC_NAME,
    AEFeatureExtractor,
    feature_extractor_from_autoencoder,
)
from aestudy.anomaly import anomaly_scores
from aestudy.classifier import get_classifier
from aestudy.data import UNLABELLED, default_val_size, load_dataset, split_sizes
from aestudy.errors import ConfigError, DataError
from aestudy.generation import generation_scores
from aestudy.imagefiles import is_path, num_test_images
from aestudy.latent import interpolation_smoothness
from aestudy.metrics import (
    evaluate_elbo,
    evaluate_is_nll,
    psnr,
    reconstruction_metrics,
    sharpness,
    ssim,
)
from aestudy.models import ModelConfig, build_model
from aestudy.objectives import loss_terms
from aestudy.runner.cli import main
from aestudy.train import TrainConfig, train_or_load

FIX_MIXED_MODES = ("Pass channels=3 (grey read as RGB) or channels=1 (colour converted to grey) (aestudy run: "
                   "-p channels 3 or -p channels 1), or convert the files to one mode.")


def pixels(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """`n` random uint8 images of `shape` ((H, W) grey or (H, W, 3) RGB)."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    """Save each image as folder/prefix_###.png (grey: mode L, RGB: mode RGB)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{prefix}_{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def as_rows(images: torch.Tensor) -> list[bytes]:
    """Images in [0, 1] back to uint8 rows, sorted (equal lists = equal multisets of images)."""
    u8 = (images * 255).round().to(torch.uint8).numpy()
    return sorted(map(bytes, u8.reshape(len(u8), -1)))


def all_images(data) -> torch.Tensor:
    return torch.cat([data.train.images, data.val.images, data.test.images])


def all_labels(data) -> torch.Tensor:
    return torch.cat([data.train.labels, data.val.labels, data.test.labels])


def channels_first_rows(images: np.ndarray) -> list[bytes]:
    """uint8 (N, H, W) or (N, H, W, C) as sorted (C, H, W) rows, to compare with `as_rows`."""
    cf = images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)
    return sorted(map(bytes, np.ascontiguousarray(cf).reshape(len(cf), -1)))


@pytest.fixture
def rgb_classes(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An ImageFolder of 8x8 RGB PNGs: classes 'cat' (12), 'dog' (18), plus a non-image file and hidden junk."""
    root = tmp_path / "pets"
    written = {"dog": pixels(18, (8, 8, 3), seed=1), "cat": pixels(12, (8, 8, 3), seed=2)}
    for name, images in written.items():
        write_pngs(root / name, images)
    (root / "README.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.fromarray(pixels(1, (5, 5))[0]).save(root / ".hidden" / "x.png")
    return root, written


# ---------------------------------------------------------------------------------------------------------
# Folders


def test_labelled_rgb_folder_keeps_every_pixel_and_its_class(rgb_classes) -> None:
    root, written = rgb_classes
    data = load_dataset(root, val_size=4, progress=False)
    assert data.info.name == str(root.resolve())
    assert data.info.shape == (3, 8, 8) and data.info.labelled
    assert data.info.num_classes == 2 and data.info.class_names == ("cat", "dog")  # sorted folder names
    images, labels = all_images(data), all_labels(data)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    for index, name in enumerate(("cat", "dog")):  # every image, exactly, in its own class
        assert as_rows(images[labels == index]) == channels_first_rows(written[name])
    assert (len(data.train), len(data.val), len(data.test)) == (20, 4, 6)
    assert num_test_images(30) == 6
    assert torch.bincount(data.test.labels).tolist() in ([2, 4], [3, 3])  # stratified: 12:18 of 6 -> 2.4 : 3.6
    assert data.info.note == "1 non-image file(s) ignored; fixed 20% test split of 6 images"


def test_unlabelled_grey_folder(tmp_path: Path) -> None:
    written = pixels(25, (6, 7))
    write_pngs(tmp_path / "scans", written)
    data = load_dataset(tmp_path / "scans", progress=False)
    info = data.info
    assert info.shape == (1, 6, 7) and info.num_classes == 0 and info.class_names == () and not info.labelled
    assert (all_labels(data) == UNLABELLED).all()
    assert as_rows(all_images(data)) == channels_first_rows(written)
    # default val_size: 10% of the 20 images left after the 5-image test split
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 5)
    assert info.note == "no class sub-folders: unlabelled; fixed 20% test split of 5 images"


def test_one_class_subfolder_is_unlabelled(tmp_path: Path) -> None:
    write_pngs(tmp_path / "root" / "only", pixels(10, (4, 4)))
    data = load_dataset(tmp_path / "root", progress=False)
    assert data.info.num_classes == 0 and (all_labels(data) == UNLABELLED).all()
    assert data.info.note.startswith("one class sub-folder (only): unlabelled")


def test_nested_images_in_class_folders_and_other_suffixes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = pixels(4, (5, 5), seed=3)
    b = pixels(4, (5, 5), seed=4)
    write_pngs(root / "a" / "deep" / "er", a)
    (root / "b").mkdir()
    for i, image in enumerate(b):
        Image.fromarray(image).save(root / "b" / f"{i}.BMP")  # suffixes match in any case
    data = load_dataset(root, val_size=0, progress=False)
    images, labels = all_images(data), all_labels(data)
    assert as_rows(images[labels == 0]) == channels_first_rows(a)
    assert as_rows(images[labels == 1]) == channels_first_rows(b)


def test_sixteen_bit_grey_keeps_its_levels(tmp_path: Path) -> None:
    values = (np.arange(5 * 4 * 4).reshape(5, 4, 4) * 3000).astype(np.uint16)
    (tmp_path / "wide").mkdir()
    for i, image in enumerate(values):
        Image.fromarray(image).save(tmp_path / "wide" / f"{i}.png")
    data = load_dataset(tmp_path / "wide", val_size=0, progress=False)
    got = sorted(all_images(data).reshape(5, -1).double().mul(65535).round().long().tolist())
    assert got == sorted(values.reshape(5, -1).astype(np.int64).tolist())


def test_seeds_move_val_not_test(rgb_classes) -> None:
    root, _ = rgb_classes
    a = load_dataset(root, val_size=5, seed=0, progress=False)
    b = load_dataset(root, val_size=5, seed=0, progress=False)
    c = load_dataset(root, val_size=5, seed=1, progress=False)
    assert torch.equal(a.val.images, b.val.images) and a.fingerprint == b.fingerprint
    assert torch.equal(a.test.images, c.test.images)  # the fixed test split
    assert not torch.equal(a.val.images, c.val.images) and a.fingerprint != c.fingerprint


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), classes=st.integers(0, 5), val_share=st.floats(0, 1), seed=st.integers(0, 3))
def test_split_indices_partition_the_images(n: int, classes: int, val_share: float, seed: int) -> None:
    labels = (np.arange(n) % classes if classes else np.full(n, UNLABELLED)).astype(np.int64)
    n_test = num_test_images(n)
    val_size = int(val_share * (n - n_test - 1))
    train, val, test = imagefiles._split_indices(labels, where=Path("x"), val_size=val_size, limit=None, seed=seed)
    assert (len(test), len(val), len(train)) == (n_test, val_size, n - n_test - val_size)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(n))  # disjoint and complete
    other = imagefiles._split_indices(labels, where=Path("x"), val_size=0, limit=None, seed=seed + 1)[2]
    assert np.array_equal(test, other)  # the test split depends on neither seed nor val_size
    if classes:  # stratified: each class gets its proportional share of the test split, +-1
        share = np.bincount(labels[test], minlength=classes) - np.bincount(labels, minlength=classes) * n_test / n
        assert np.all(np.abs(share) < 1 + 1e-9)


def test_limit_caps_every_split(rgb_classes) -> None:
    root, _ = rgb_classes
    data = load_dataset(root, val_size=6, limit=4, progress=False)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    full = load_dataset(root, val_size=6, progress=False)
    assert set(as_rows(data.test.images)) <= set(as_rows(full.test.images))
    with pytest.raises(ConfigError) as err:
        load_dataset(root, val_size=6, limit=19, progress=False)
    assert str(err.value) == (f"limit=19 is invalid for {root.resolve()}: it must be in 1..18 (the train split after "
                              "the test split and val_size=6), or None for all of it.")


def test_binarize_like_load_dataset(rgb_classes) -> None:
    root, _ = rgb_classes
    data = load_dataset(root, val_size=4, binarize="static", progress=False)
    assert set(all_images(data).unique().tolist()) <= {0.0, 1.0}
    dynamic = load_dataset(root, val_size=4, binarize="dynamic", progress=False)
    assert set(dynamic.test.images.unique().tolist()) <= {0.0, 1.0} and dynamic.train.images.unique().numel() > 2


# ---------------------------------------------------------------------------------------------------------
# Sizes and channels


def band_image(h: int, w: int) -> np.ndarray:
    """Black left and right fifths around a white centre band (uint8 grey)."""
    image = np.zeros((h, w), dtype=np.uint8)
    image[:, w // 5: w - w // 5] = 255
    return image


def test_size_resizes_and_center_crops(tmp_path: Path) -> None:
    write_pngs(tmp_path / "wide", np.stack([band_image(20, 40)] * 3))
    data = load_dataset(tmp_path / "wide", size=10, val_size=0, progress=False)
    # a 20x40 image fitted to 10x10 keeps its centre 20x20 square (columns 10..29, inside the white 8..31): all white
    assert data.info.shape == (1, 10, 10) and bool((all_images(data) == 1).all())
    assert "3 of 3 image(s) resized and center-cropped to 10x10" in data.info.note


def test_array_size_resizes_and_center_crops(tmp_path: Path) -> None:
    np.save(tmp_path / "wide.npy", np.stack([band_image(20, 40)] * 3))
    data = load_dataset(tmp_path / "wide.npy", size=(10, 10), val_size=0)
    assert data.info.shape == (1, 10, 10) and torch.allclose(all_images(data), torch.ones(3, 1, 10, 10))
    same = load_dataset(tmp_path / "wide.npy", size=(20, 40), val_size=0)  # its own size: untouched
    assert as_rows(all_images(same)) == channels_first_rows(np.stack([band_image(20, 40)] * 3))


def test_size_auto_takes_the_most_common_size(tmp_path: Path) -> None:
    write_pngs(tmp_path / "mixed", pixels(6, (8, 8)), prefix="a")
    write_pngs(tmp_path / "mixed", pixels(2, (12, 16)), prefix="b")
    data = load_dataset(tmp_path / "mixed", size="auto", val_size=0, progress=False)
    assert data.info.shape == (1, 8, 8)
    assert "2 of 8 image(s) resized and center-cropped to 8x8" in data.info.note


def test_memory_budget_falls_back_to_32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pngs(tmp_path / "big", pixels(5, (40, 40)))
    monkeypatch.setattr(imagefiles, "MEMORY_BUDGET", 5 * 40 * 40 * 4 - 1)
    with pytest.warns(UserWarning, match=r"5 images of 1x40x40 need more than .* GiB as float32; resized to 32x32"):
        data = load_dataset(tmp_path / "big", val_size=0, progress=False)
    assert data.info.shape == (1, 32, 32)


def test_channels_option_converts(tmp_path: Path) -> None:
    grey = pixels(3, (6, 6), seed=5)
    rgb = pixels(3, (6, 6, 3), seed=6)
    write_pngs(tmp_path / "mix", grey, prefix="g")
    write_pngs(tmp_path / "mix", rgb, prefix="r")
    as_rgb = load_dataset(tmp_path / "mix", channels=3, val_size=0, progress=False)
    images = all_images(as_rgb)
    assert as_rgb.info.shape == (3, 6, 6)
    is_grey = (images[:, 0] == images[:, 1]).flatten(1).all(1) & (images[:, 1] == images[:, 2]).flatten(1).all(1)
    assert int(is_grey.sum()) == 3  # the grey files, repeated over R, G, B
    assert as_rows(images[is_grey][:, :1]) == channels_first_rows(grey)
    as_grey = load_dataset(tmp_path / "mix", channels=1, val_size=0, progress=False)
    pil_luma = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    assert set(channels_first_rows(pil_luma)) <= set(as_rows(all_images(as_grey)))
    assert "3 image(s) converted to grey (channels=1)" in as_grey.info.note


# ---------------------------------------------------------------------------------------------------------
# Arrays


def test_npz_rgb_with_labels(tmp_path: Path) -> None:
    images = pixels(20, (5, 5, 3), seed=7)
    labels = np.repeat([3, 7], 10)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    data = load_dataset(tmp_path / "set.npz", val_size=2)
    assert data.info.shape == (3, 5, 5) and data.info.class_names == ("3", "7")  # sorted values -> 0, 1
    got, got_labels = all_images(data), all_labels(data)
    assert as_rows(got[got_labels == 0]) == channels_first_rows(images[:10])
    assert as_rows(got[got_labels == 1]) == channels_first_rows(images[10:])


def test_npz_string_labels_and_class_names(tmp_path: Path) -> None:
    images = pixels(10, (4, 4), seed=8)
    np.savez(tmp_path / "s.npz", x=images, y=np.array(["pear", "apple"] * 5))
    assert load_dataset(tmp_path / "s.npz", val_size=0).info.class_names == ("apple", "pear")
    np.savez(tmp_path / "n.npz", images=images, labels=np.arange(10) % 3, class_names=np.array(["a", "b", "c", "d"]))
    data = load_dataset(tmp_path / "n.npz", val_size=0)
    assert data.info.num_classes == 4 and data.info.class_names == ("a", "b", "c", "d")
    assert sorted(all_labels(data).tolist()) == sorted((np.arange(10) % 3).tolist())


def test_float_npy_without_labels(tmp_path: Path) -> None:
    images = np.random.default_rng(9).random((12, 6, 6, 1))
    np.save(tmp_path / "f.npy", images)
    data = load_dataset(tmp_path / "f.npy", val_size=1)
    assert data.info.shape == (1, 6, 6) and not data.info.labelled and (all_labels(data) == UNLABELLED).all()
    got = sorted(all_images(data).reshape(12, -1).tolist())
    assert got == sorted(images.astype(np.float32).reshape(12, -1).tolist())
    # other integer types in [0, 255] are accepted as levels
    np.save(tmp_path / "i.npy", (images[..., 0] * 255).astype(np.int32))
    assert load_dataset(tmp_path / "i.npy", val_size=1).info.shape == (1, 6, 6)


# ---------------------------------------------------------------------------------------------------------
# Fingerprint and the model cache


def test_fingerprint_reuses_unchanged_and_retrains_edited(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = write_pngs(root, pixels(12, (6, 6), seed=10))
    cache = tmp_path / "models"
    model_cfg = ModelConfig(kind="ae", arch="mlp", input_shape=(1, 6, 6), latent_dim=2, hidden=(8,))
    train_cfg = TrainConfig(epochs=1, batch_size=8, progress=False)
    first = load_dataset(root, progress=False)
    assert not train_or_load(model_cfg, train_cfg, first, cache_dir=cache).from_cache
    os.utime(paths[0], (1, 1))  # new file times, same content
    shutil.copytree(root, tmp_path / "moved")  # another place, same content
    for same in (load_dataset(root, progress=False), load_dataset(tmp_path / "moved", progress=False)):
        assert same.fingerprint == first.fingerprint and same.info.checksum == first.info.checksum
        assert train_or_load(model_cfg, train_cfg, same, cache_dir=cache).from_cache
    edited = np.asarray(Image.open(paths[3])).copy()
    edited[0, 0] ^= 1  # one pixel, one level
    Image.fromarray(edited).save(paths[3])
    changed = load_dataset(root, progress=False)
    assert changed.fingerprint != first.fingerprint
    assert not train_or_load(model_cfg, train_cfg, changed, cache_dir=cache).from_cache
    assert load_dataset(root, size=3, progress=False).fingerprint != changed.fingerprint  # options count too
    # the same pixels as an array file (in the folder's file order) are the same data
    stacked = np.stack([np.asarray(Image.open(p)) for p in paths])
    np.save(tmp_path / "same.npy", stacked)
    assert load_dataset(tmp_path / "same.npy").fingerprint == changed.fingerprint


# ---------------------------------------------------------------------------------------------------------
# Dispatch, split sizes, CLI


def test_is_path_and_misspelt_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans").mkdir()
    assert is_path("scans") and is_path("./x") and is_path("~/x") and is_path("a/b") and is_path("x.npz")
    assert is_path(tmp_path) and not is_path("fashion_mnist") and not is_path("")
    with pytest.raises(ConfigError) as err:
        load_dataset("fashion_mnist")
    assert str(err.value) == ("name='fashion_mnist' is not a dataset; valid names: fashion-mnist, mnist, digits, "
                              "photo-patches-32, photo-patches-64, cifar-10, or a path to a folder of images or an "
                              ".npz/.npy file.")
    with pytest.raises(ConfigError) as err:
        load_dataset("digits", size=32)
    assert str(err.value) == ("size=32 and channels=None apply to your own image files only; pass size=None, "
                              "channels=None for 'digits'.")


def test_split_sizes_for_files(tmp_path: Path) -> None:
    write_pngs(tmp_path / "f", pixels(50, (4, 4)))
    # 50 images: 10 test, 40 left; default val 4, so a limit >= 36 means all of train
    assert default_val_size(str(tmp_path / "f")) == 4
    assert split_sizes(str(tmp_path / "f"), limit=2000, val_size=500) == {"limit": None, "val_size": 4}
    assert split_sizes(str(tmp_path / "f"), limit=20, val_size=2) == {"limit": 20, "val_size": 2}
    sizes = split_sizes(str(tmp_path / "f"), limit=2000, val_size=5000)
    data = load_dataset(str(tmp_path / "f"), progress=False, **sizes)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 10)
    # arrays are counted from their headers, with the key rule of loading
    np.savez(tmp_path / "a.npz", labels=np.zeros(7), images=pixels(7, (2, 2)))
    np.savez(tmp_path / "b.npz", pixels(9, (2, 2)))
    np.save(tmp_path / "c.npy", pixels(11, (2, 2, 3)))
    assert [imagefiles.count_images(tmp_path / f) for f in ("a.npz", "b.npz", "c.npy")] == [7, 9, 11]
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"d\.npz: not a readable \.npz file"):
        imagefiles.count_images(tmp_path / "d.npz")


def test_cli_data_info_on_a_folder(rgb_classes, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = rgb_classes
    assert main(["data", "info", str(root), "--no-progress", "--size", "4x6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"name:     {root.resolve()}"
    assert out[1:4] == ["splits:   train 22 / val 2 / test 6", "shape:    3x4x6", "classes:  2 (cat, dog)"]
    assert main(["data", "info", str(root / "cat"), "--no-progress"]) == 0
    assert "classes:  0 (unlabelled)" in capsys.readouterr().out
    assert main(["data", "info", str(root), "--size", "4y6"]) == 2
    assert capsys.readouterr().err == ("aestudy: error: --size='4y6' is invalid; valid values: None (the images' one "
                                       "size), 'auto' (the most common size), 'S' (e.g. '32') or 'HxW' (e.g. "
                                       "'32x48').\n")


# ---------------------------------------------------------------------------------------------------------
# Bad input: one clear message naming the file and the fix, nothing written anywhere


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under `folders` with its bytes."""
    return {p.as_posix(): p.read_bytes() for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_error(path: Path, message: str, kind: type[Exception] = DataError, **options) -> None:
    """load_dataset(path) raises `kind` with exactly `message`; nothing changes next to it nor in the model cache."""
    watched = (path.parent, Path(os.environ["AESTUDY_CACHE"]))  # conftest points the cache at a temp folder
    before = snapshot(*watched)
    with pytest.raises(kind) as err:
        load_dataset(path, progress=False, **options)
    assert str(err.value) == message
    assert snapshot(*watched) == before


def test_missing_path(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope", f"{tmp_path / 'nope'} does not exist; pass a folder of images (optionally one "
                 "sub-folder per class) or an .npz/.npy file of images.")


def test_a_file_that_is_not_an_array(tmp_path: Path) -> None:
    path = write_pngs(tmp_path / "d", pixels(1, (3, 3)))[0]
    expect_error(path, f"{path} is a file but not an .npz/.npy array; pass the folder that holds your images, or "
                 "save them with numpy.savez(path, images=..., labels=...).")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    suffixes = ", ".join(imagefiles.IMAGE_SUFFIXES)
    expect_error(tmp_path / "empty", f"{tmp_path / 'empty'}: no image files ({suffixes}) found; put your images in "
                 "it, or in one sub-folder per class.")
    (tmp_path / "empty" / "notes.txt").write_text("x")
    expect_error(tmp_path / "empty", f"{tmp_path / 'empty'}: no image files ({suffixes}) found (it holds 1 other "
                 "file(s): notes.txt); put your images in it, or in one sub-folder per class.")


def test_images_next_to_class_folders(tmp_path: Path) -> None:
    write_pngs(tmp_path / "r" / "a", pixels(2, (3, 3)))
    write_pngs(tmp_path / "r" / "b", pixels(2, (3, 3)))
    write_pngs(tmp_path / "r", pixels(1, (3, 3)), prefix="stray")
    expect_error(tmp_path / "r", f"{tmp_path / 'r'}: 1 image(s) lie next to the class sub-folders a, b: "
                 "stray_000.png; move them into a class sub-folder, or into a folder of their own.")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_or_truncated_image(tmp_path: Path, damage: str) -> None:
    paths = write_pngs(tmp_path / "d", pixels(6, (16, 16, 3)))
    raw = paths[2].read_bytes()
    paths[2].write_bytes(b"this is not a png" if damage == "garbage" else raw[: len(raw) // 2])
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "d", progress=False)
    text = str(err.value)  # the middle is Pillow's own words, which change between its versions
    assert text.startswith(f"{paths[2]}: unreadable or truncated image (")
    assert text.endswith("); replace or delete the file and load again.")
    assert snapshot(tmp_path) == before


def test_mixed_sizes_without_size(tmp_path: Path) -> None:
    write_pngs(tmp_path / "m", pixels(3, (8, 8)), prefix="a")
    write_pngs(tmp_path / "m", pixels(1, (8, 10)), prefix="b")
    expect_error(tmp_path / "m", f"{tmp_path / 'm'}: images have 2 different sizes (HxW): 8x8 (3 image(s), e.g. "
                 "a_000.png, a_001.png and 1 more); 8x10 (1 image(s), e.g. b_000.png). Pass size='auto' (resize and "
                 "center-crop to the most common size, 8x8) or size=(H, W) (aestudy run: -p image_size auto, or -p "
                 "image_size HxW), or make the images one size.")


def test_mixed_grey_and_rgb(tmp_path: Path) -> None:
    write_pngs(tmp_path / "m", pixels(2, (4, 4)), prefix="g")
    write_pngs(tmp_path / "m", pixels(7, (4, 4, 3)), prefix="c")
    expect_error(tmp_path / "m", f"{tmp_path / 'm'}: mixes grey and colour images: 2 grey (L): g_000.png, "
                 "g_001.png; 7 colour (RGB): c_000.png, c_001.png, c_002.png, c_003.png, c_004.png and 2 more. "
                 + FIX_MIXED_MODES)


def test_too_few_images_for_the_splits(tmp_path: Path) -> None:
    write_pngs(tmp_path / "few", pixels(10, (3, 3)))
    where = tmp_path / "few"
    expect_error(where, f"{where}: 10 images are too few for the splits: 2 test (20%) + val_size=8 + at least 1 "
                 "training image. Pass val_size <= 7 (e.g. 0), or add images.", val_size=8)
    for extra in (tmp_path / "few").glob("img_00[1-9].png"):
        extra.unlink()
    expect_error(where, f"{where}: 1 image(s); the splits need at least 2 (one test, one training image). Add images.")


def test_labels_count_differs(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=pixels(10, (4, 4)), labels=np.zeros(9, dtype=np.int64))
    expect_error(tmp_path / "a.npz", f"{tmp_path / 'a.npz'}: 10 images but 9 labels; store one label per image.")


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((5, 4), np.uint8), "images have shape (5, 4) (rank 2); expected a non-empty (N, H, W) grey or "
     "(N, H, W, C) channels-last array with C = 1 or 3."),
    (np.zeros((0, 4, 4), np.uint8), "images have shape (0, 4, 4) (rank 3); expected a non-empty (N, H, W) grey or "
     "(N, H, W, C) channels-last array with C = 1 or 3."),
    (np.zeros((5, 3, 8, 8), np.uint8), "images have shape (5, 3, 8, 8): the last axis must be 1 (grey) or 3 (RGB) "
     "channels in (N, H, W, C). It looks channels-first: pass numpy.moveaxis(images, 1, -1)."),
    (np.zeros((5, 8, 8, 4), np.uint8), "images have shape (5, 8, 8, 4): the last axis must be 1 (grey) or 3 (RGB) "
     "channels in (N, H, W, C). Drop an alpha channel with images[..., :3]."),
    (np.zeros((5, 4, 4), bool), "images have dtype bool; expected integers in [0, 255] (e.g. uint8) or floats in "
     "[0, 1] (for booleans: images.astype(numpy.uint8) * 255)."),
    (np.zeros((5, 4, 4), np.complex64), "images have dtype complex64; expected integers in [0, 255] (e.g. uint8) or "
     "floats in [0, 1]."),
    (np.full((5, 4, 4), 3, np.int16) * np.arange(5, dtype=np.int16)[:, None, None] * 30,
     "integer images must lie in [0, 255]; found values from 0 to 360 (first at image 3). Rescale them to 0..255 "
     "(e.g. 8-bit), or to floats in [0, 1]."),
    (np.full((5, 4, 4), -1, np.int32), "integer images must lie in [0, 255]; found values from -1 to -1 (first at "
     "image 0). Rescale them to 0..255 (e.g. 8-bit), or to floats in [0, 1]."),
    (np.full((5, 4, 4), 0.5) * np.array([1, 1, 400, 1, 1])[:, None, None], "float images must lie in [0, 1]; found "
     "values from 0.5 to 200 (first at image 2). They look like 0..255 levels: divide by 255."),
    (np.full((5, 4, 4), -0.5, np.float32), "float images must lie in [0, 1]; found values from -0.5 to -0.5 (first "
     "at image 0). Clip or rescale them into [0, 1] (e.g. numpy.clip(images, 0, 1))."),
    # issue 17, item 4: a float maximum of 1.5 is not 0..255 levels; dividing by 255 would make the images black
    (np.full((5, 4, 4), 0.25) * np.array([1, 6, 1, 1, 1])[:, None, None], "float images must lie in [0, 1]; found "
     "values from 0.25 to 1.5 (first at image 1). Clip or rescale them into [0, 1] (e.g. numpy.clip(images, 0, 1))."),
    # integral floats are levels whatever their maximum
    (np.full((5, 4, 4), 2.0), "float images must lie in [0, 1]; found values from 2 to 2 (first at image 0). They "
     "look like 0..255 levels: divide by 255."),
    (np.where(np.arange(5)[:, None, None] == 3, np.nan, np.full((5, 4, 4), 0.5)), "images contain NaN (first at "
     "image 3); remove or repair those images."),
    (np.where(np.arange(5)[:, None, None] == 1, np.inf, np.full((5, 4, 4), 0.5)), "images contain infinite values "
     "(first at image 1); remove or repair those images."),
], ids=["rank2", "empty", "channels-first", "rgba", "bool", "complex", "int-over-255", "int-negative",
        "float-0-255", "float-negative", "float-1.5", "float-integral-2", "nan", "inf"])
def test_bad_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    expect_error(tmp_path / "bad.npy", f"{tmp_path / 'bad.npy'}: {message}")


@pytest.mark.parametrize(("members", "message"), [
    ({"train": pixels(3, (2, 2)), "test": pixels(3, (2, 2))}, "no images: the file holds test, train; store the "
     "images under 'images' (numpy.savez(path, images=..., labels=...))."),
    ({"images": pixels(3, (2, 2)), "labels": np.array([0, -2, 1])}, "label -2 at index 1 is negative; labels must be "
     "integers >= 0 or strings (omit 'labels' for unlabelled data)."),
    ({"images": pixels(3, (2, 2)), "labels": np.array([0.0, 1.0, 1.0])}, "labels have dtype float64; expected "
     "integers >= 0 or strings."),
    ({"images": pixels(3, (2, 2)), "labels": np.eye(3)}, "labels have shape (3, 3); expected (N,) class labels (for "
     "one-hot labels store labels.argmax(1))."),
    ({"images": pixels(3, (2, 2)), "class_names": np.array(["a", "b"])}, "has 'class_names' but no 'labels'; store "
     "the labels too, or drop class_names."),
    ({"images": pixels(3, (2, 2)), "labels": np.array([0, 1, 2]), "class_names": np.array(["a", "b"])},
     "with class_names (2 names) the labels must be integers in 0..1; found int64 labels up to 2."),
], ids=["no-images-key", "negative-label", "float-labels", "one-hot", "names-without-labels", "label-out-of-names"])
def test_bad_npz(tmp_path: Path, members: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **members)
    expect_error(tmp_path / "bad.npz", f"{tmp_path / 'bad.npz'}: {message}")


def test_object_and_corrupt_array_files(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: not a readable \.npy file \(ValueError: .*\); save it with "
                                        r"numpy\.save\(path, images\) \(no object arrays\)\."):
        load_dataset(tmp_path / "obj.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz file \(BadZipFile: "):
        load_dataset(tmp_path / "junk.npz")


@pytest.mark.parametrize(("options", "message"), [
    ({"size": 0}, f"size=0 is invalid; valid values: {imagefiles.SIZE_CHOICES}."),
    ({"size": "big"}, f"size='big' is invalid; valid values: {imagefiles.SIZE_CHOICES}."),
    ({"size": (8, 0)}, "size[1]=0 is invalid; it must be an integer >= 1."),
    ({"channels": 2}, "channels=2 is invalid; valid values: None (as found), 1 (grey), 3 (RGB)."),
    ({"val_size": -1}, "val_size=-1 is invalid; it must be an integer >= 0."),
    ({"binarize": "yes"}, "binarize='yes' is not a binarization mode; valid values: None, 'static', 'dynamic'."),
])
def test_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    write_pngs(tmp_path / "ok", pixels(5, (3, 3)))
    expect_error(tmp_path / "ok", message, ConfigError, **options)


# ---------------------------------------------------------------------------------------------------------
# Models, metrics and feature spaces on RGB 32x32


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 24, 40)])
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_models_take_rgb_images(arch: str, shape: tuple[int, int, int], kind: str) -> None:
    cfg = ModelConfig(kind=kind, arch=arch, input_shape=shape, latent_dim=4, hidden=(32,), channels=(8, 16))
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.rand(5, *shape)
    assert model.decode(model.encode(x).mu).shape == (5, *shape)
    recon = model.reconstruct(x)
    assert recon.shape == (5, *shape) and recon.min() >= 0 and recon.max() <= 1
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *shape)
    loss, terms = loss_terms(model, x)
    assert torch.isfinite(loss) and terms["recon"].shape == ()


@pytest.mark.parametrize("likelihood", ["bernoulli", "cbernoulli", "gaussian"])
def test_model_metrics_on_rgb_32(likelihood: str) -> None:
    cfg = ModelConfig(kind="vae", arch="conv", input_shape=(3, 32, 32), latent_dim=4, likelihood=likelihood,
                      channels=(8, 16))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    elbo = evaluate_elbo(model, x, generator=gen)
    nll = evaluate_is_nll(model, x, k=8, generator=gen)
    assert math.isfinite(elbo["elbo"]) and math.isfinite(nll["nll"])
    assert nll["nll"] <= -elbo["elbo"] + 1.0  # IWAE_k >= ELBO, up to Monte-Carlo noise at k = 8
    # bits/dim count every colour value: D = 3 * 32 * 32
    assert nll["bits_per_dim"] == pytest.approx(nll["nll"] / (3 * 32 * 32 * math.log(2)))
    rec = reconstruction_metrics(model, x)
    assert 0 <= rec["mse"] <= 1 and rec["ssim"] <= 1
    for score in ("recon", "neg_elbo", "is_nll"):
        assert anomaly_scores(model, x, score=score, k=4, generator=gen).shape == (6,)
    assert interpolation_smoothness(model, x[:3], x[3:], steps=4) >= 0


def test_metrics_on_rgb_are_per_channel_consistent() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(4))
    per_channel = torch.stack([ssim(x[:, c:c + 1], y[:, c:c + 1]) for c in range(3)]).mean(0)
    assert torch.allclose(ssim(x, y), per_channel, atol=1e-6)  # SSIM of RGB = mean over channels
    grey = x[:, :1]
    assert torch.allclose(sharpness(grey.expand(-1, 3, -1, -1)), sharpness(grey))  # 3 equal channels = grey
    assert torch.allclose(psnr(x, y), 10 * torch.log10(1 / (x - y).pow(2).flatten(1).mean(1)))


def test_training_and_classifier_on_an_rgb_folder(rgb_classes, tmp_path: Path) -> None:
    root, _ = rgb_classes
    data = load_dataset(root, val_size=4, size=32, progress=False)
    assert data.info.shape == (3, 32, 32)
    cfg = ModelConfig(kind="vae", arch="conv", input_shape=(3, 32, 32), latent_dim=4, channels=(8, 16))
    result = train_or_load(cfg, TrainConfig(epochs=3, batch_size=8, progress=False), data,
                           cache_dir=tmp_path / "models")
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    classifier = get_classifier(data, epochs=1, cache_dir=str(tmp_path / "models"), progress=False)
    assert classifier.embed(data.test.images).shape == (6, 128)
    assert classifier.predict_proba(data.test.images).shape == (6, 2)


def test_classifier_refuses_unlabelled_data(tmp_path: Path) -> None:
    write_pngs(tmp_path / "u", pixels(10, (8, 8, 3)))
    data = load_dataset(tmp_path / "u", progress=False)
    with pytest.raises(ConfigError, match=r"^classifier.get_classifier \(the domain classifier behind FID-FMNIST\) "
                                          r"needs class labels, but the data has none"):
        get_classifier(data, epochs=1, cache_dir=str(tmp_path / "models"), progress=False)


def test_fid_ae_features_for_unlabelled_data(tmp_path: Path) -> None:
    write_pngs(tmp_path / "u", pixels(30, (8, 8, 3)))
    data = load_dataset(tmp_path / "u", progress=False)
    cache = str(tmp_path / "models")
    extractor = feature_extractor_from_autoencoder(data, epochs=1, cache_dir=cache, progress=False)
    assert isinstance(extractor, AEFeatureExtractor) and extractor.metric_name == METRIC_NAME == "FID-AE"
    assert "not comparable with FID-FMNIST" in extractor.description
    features = extractor.embed(data.test.images, batch_size=4)
    assert features.shape == (6, FEATURE_DIM) and features.dtype == torch.float32
    assert torch.allclose(features, extractor.features(data.test.images).detach(), atol=1e-6)  # batching
    again = feature_extractor_from_autoencoder(data, epochs=1, cache_dir=cache, progress=False)  # from the cache
    assert torch.equal(again.embed(data.test.images, batch_size=4), features)
    assert len(list(Path(cache).glob("*.pt"))) == 1  # one autoencoder, trained once
    real = torch.cat([data.train.images, data.val.images])
    same = generation_scores(extractor, real, real)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["precision"] == same["recall"] == 1.0
    assert np.isnan(same["confidence"])  # no classes, no confidence
    noise = generation_scores(extractor, real, torch.rand(len(real), 3, 8, 8, generator=torch.Generator()
                                                          .manual_seed(0)).round())
    assert noise["fid"] > same["fid"]
    with pytest.raises(ConfigError, match=r"epochs=0 is invalid; it must be None \(default 5\) or an integer >= 1\."):
        feature_extractor_from_autoencoder(data, epochs=0, cache_dir=cache)
