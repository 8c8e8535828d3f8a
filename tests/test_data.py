"""Tests for aestudy.data and `aestudy data …`: real Fashion-MNIST, digits, IDX fixtures, every bad input."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from idx_fixtures import (
    FILENAMES,
    fixture_arrays,
    fixture_spec,
    gz,
    idx_bytes,
    leftovers,
    sha256,
    write_idx_folder,
)

from aestudy import data
from aestudy.data import (
    DATASET_NAMES,
    IDX_SPECS,
    PARTS,
    binarize_images,
    fetch_dataset,
    list_datasets,
    load_dataset,
    resolve_data_dir,
    stratified_subset,
)
from aestudy.errors import ConfigError, DataError
from aestudy.runner.cli import main

REPO = Path(__file__).resolve().parents[1]
FMNIST = IDX_SPECS["fashion-mnist"]
FMNIST_FILES = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, " \
               "t10k-labels-idx1-ubyte.gz"
MNIST_FIX = "with internet access: aestudy data fetch mnist (or copy the four IDX .gz files into {})"


def combined_checksum(payload_sha256: list[str]) -> str:
    """The documented dataset checksum: SHA-256 of the four payload SHA-256s, space-separated, in PARTS order."""
    return hashlib.sha256(" ".join(payload_sha256).encode()).hexdigest()


def row_keys(images_u8: np.ndarray) -> list[bytes]:
    """The images' bytes, sorted: equal lists mean equal multisets of images."""
    return sorted(map(bytes, images_u8.reshape(len(images_u8), -1)))


def as_u8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).squeeze(1).numpy()


# ---------------------------------------------------------------------------------------------------------
# Real Fashion-MNIST, decoded once per module into a temp data dir


@dataclasses.dataclass
class RealFashion:
    root: Path
    source: Path
    data: data.Dataset


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory):
    """Fashion-MNIST from Debian's package (or the checkout's data/), cached in a temp dir, never downloaded."""
    candidates = [FMNIST.system_dir, REPO / "data" / "fashion-mnist"]
    source = next((d for d in candidates if d and all((d / f.filename).is_file() for f in FMNIST.files.values())),
                  None)
    if source is None:
        pytest.skip("Fashion-MNIST .gz files not found: `sudo apt-get install dataset-fashion-mnist`")
    root = tmp_path_factory.mktemp("fmnist-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(IDX_SPECS, "fashion-mnist", dataclasses.replace(FMNIST, mirrors=(), system_dir=source))
        yield RealFashion(root, source, load_dataset(data_dir=root, progress=False))


def test_fashion_mnist_splits_sizes_values_and_info(fmnist: RealFashion) -> None:
    d = fmnist.data
    assert (len(d.train), len(d.val), len(d.test)) == (55_000, 5_000, 10_000)
    for split in (d.train, d.val, d.test):
        assert split.images.dtype == torch.float32 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert set(split.labels.unique().tolist()) == set(range(10))
        scaled = split.images[:1000] * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-3)  # exactly the 256 grey levels
    assert torch.bincount(d.val.labels).tolist() == [500] * 10  # stratified carve of a balanced set
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    expected = combined_checksum([FMNIST.files[p].payload_sha256 for p in PARTS])
    assert d.info.checksum == expected and d.info.licence == "MIT" and d.info.note == ""
    assert d.info.shape == (1, 28, 28) and d.info.num_classes == 10 and len(d.info.class_names) == 10
    assert d.info.class_names[0] == "T-shirt/top" and d.info.class_names[9] == "Ankle boot"
    assert d.binarize is None and len(d.fingerprint) == 16


def test_val_split_is_a_seeded_partition_of_train(fmnist: RealFashion) -> None:
    raw = gzip.decompress((fmnist.source / FMNIST.files["train-images"].filename).read_bytes())
    full = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    d = fmnist.data
    together = np.concatenate([as_u8(d.train.images), as_u8(d.val.images)])
    assert row_keys(together) == row_keys(full)  # train + val = all 60k, none twice
    again = load_dataset(data_dir=fmnist.root, progress=False)
    assert torch.equal(again.val.images, d.val.images) and torch.equal(again.train.labels, d.train.labels)
    other = load_dataset(seed=1, data_dir=fmnist.root, progress=False)
    assert not torch.equal(other.val.images, d.val.images)
    assert torch.equal(other.test.images, d.test.images) and other.fingerprint != d.fingerprint


def test_limit_is_stratified_and_test_subset_is_seed_independent(fmnist: RealFashion) -> None:
    d = load_dataset(limit=1005, data_dir=fmnist.root, progress=False)
    for split in (d.train, d.val, d.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.sum() == 1005 and counts.max() - counts.min() <= 1
    other_seed = load_dataset(limit=1005, seed=3, data_dir=fmnist.root, progress=False)
    assert torch.equal(other_seed.test.images, d.test.images)
    assert not torch.equal(other_seed.train.images, d.train.images)
    small = load_dataset(limit=200, val_size=0, data_dir=fmnist.root, progress=False)
    assert (len(small.train), len(small.val), len(small.test)) == (200, 0, 200)
    assert small.val.images.shape == (0, 1, 28, 28)


@pytest.mark.parametrize("limit", [0, -3, 55_001])
def test_limit_out_of_range(fmnist: RealFashion, limit: int) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(limit=limit, data_dir=fmnist.root, progress=False)
    assert str(err.value) == (f"limit={limit} is invalid for fashion-mnist: it must be in 1..55000 (the train split "
                              "after carving val_size=5000), or None for all of it.")


def test_binarize_modes(fmnist: RealFashion) -> None:
    def load(mode):
        return load_dataset(limit=500, binarize=mode, data_dir=fmnist.root, progress=False)

    grey, static, dynamic = load(None), load("static"), load("dynamic")
    for split in (static.train, static.val, static.test, dynamic.val, dynamic.test):
        assert set(split.images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dynamic.train.images, grey.train.images)  # the trainer resamples it every batch
    assert torch.equal(dynamic.test.images, static.test.images) and torch.equal(dynamic.val.images, static.val.images)
    assert torch.equal(load("static").train.images, static.train.images)  # sampled once with a fixed seed
    assert torch.equal(static.train.labels, grey.train.labels)
    assert abs(static.train.images.mean() - grey.train.images.mean()) < 0.01  # E[Bernoulli(x)] = x; n = 392k
    assert (static.binarize, dynamic.binarize) == ("static", "dynamic")
    assert len({grey.fingerprint, static.fingerprint, dynamic.fingerprint}) == 3


def test_list_datasets_and_resolve_data_dir(fmnist: RealFashion, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    rows = {row.name: row for row in list_datasets(fmnist.root)}
    assert tuple(rows) == DATASET_NAMES
    assert rows["fashion-mnist"].available and rows["fashion-mnist"].location == str(fmnist.root / "fashion-mnist")
    assert not rows["mnist"].available and rows["digits"].available
    assert [rows[n].licence for n in DATASET_NAMES[:3]] == ["MIT", "CC BY-SA 3.0", "CC BY 4.0"]
    monkeypatch.delenv("AESTUDY_DATA", raising=False)
    assert resolve_data_dir() == REPO / "data"  # a writable checkout keeps its data next to the code
    monkeypatch.setenv("AESTUDY_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_cli_data_info_and_list(fmnist: RealFashion, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AESTUDY_DATA", str(fmnist.root))
    assert main(["data", "info", "fashion-mnist", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "splits:   train 55,000 / val 5,000 / test 10,000" in out
    assert "shape:    1x28x28" in out and "licence:  MIT" in out
    assert f"checksum: sha256:{fmnist.data.info.checksum}" in out
    assert f"source:   {fmnist.root / 'fashion-mnist'} (decoded cache of {fmnist.source})" in out
    assert main(["data", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "shape", "classes", "local", "licence"]
    assert table[1].split()[:4] == ["fashion-mnist", "1x28x28", "10", "yes"] and table[1].endswith("MIT")
    assert table[2].split() == ["mnist", "1x28x28", "10", "no", "CC", "BY-SA", "3.0"]
    assert table[3].startswith("digits") and table[3].endswith("CC BY 4.0")


# ---------------------------------------------------------------------------------------------------------
# Argument checks and helpers (no data needed)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("cifar10")
    assert str(err.value) == ("name='cifar10' is not a dataset; valid names: fashion-mnist, mnist, digits, "
                              "photo-patches-32, photo-patches-64, cifar-10, or a path to a folder of images or an "
                              ".npz/.npy file.")


def test_unknown_binarize() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(binarize="always")
    assert str(err.value) == "binarize='always' is not a binarization mode; valid values: None, 'static', 'dynamic'."


def test_cli_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "cifar10"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("aestudy: error: name='cifar10' is not a dataset; valid names: fashion-mnist, mnist, "
                            "digits, photo-patches-32, photo-patches-64, cifar-10, or a path to a folder of images "
                            "or an .npz/.npy file.\n")
    assert main(["data"]) == 2 and main([]) == 2  # no subcommand: usage on stderr


def test_binarize_images() -> None:
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    sample = binarize_images(x, torch.Generator().manual_seed(1))
    assert sample.dtype == torch.float32 and sample.shape == x.shape
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(sample, binarize_images(x, torch.Generator().manual_seed(1)))
    assert abs(sample.mean() - x.mean()) < 0.01  # 50k Bernoulli draws: std of the mean < 0.0023
    assert binarize_images(torch.zeros(3, 1, 2, 2)).sum() == 0 and binarize_images(torch.ones(3, 1, 2, 2)).min() == 1


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=8), fraction=st.floats(0, 1), seed=st.integers(0, 99))
def test_stratified_subset_gives_each_class_its_share(counts: list[int], fraction: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    n = round(fraction * len(labels))
    index = stratified_subset(labels, n, np.random.default_rng(seed))
    assert len(index) == n and len(np.unique(index)) == n and np.all(np.diff(index) > 0)
    share = np.bincount(labels[index], minlength=len(counts))
    exact = np.array(counts) * n / len(labels)
    assert np.all(share >= np.floor(exact)) and np.all(share <= np.ceil(exact))


# ---------------------------------------------------------------------------------------------------------
# digits (scikit-learn, offline)


def test_digits_upscaled_and_native() -> None:
    big = load_dataset("digits", val_size=140)
    small = load_dataset("digits", val_size=140, upscale=False)
    assert len(big.train) + len(big.val) + len(big.test) == 1797 and len(big.test) == 360 and len(big.val) == 140
    assert big.train.images.shape[1:] == (1, 28, 28) and small.train.images.shape[1:] == (1, 8, 8)
    assert big.info.shape == (1, 28, 28) and small.info.shape == (1, 8, 8)
    assert "upscaled 8x8->28x28" in big.info.note and "kept at 8x8" in small.info.note
    assert big.info.licence == "CC BY 4.0" and big.fingerprint != small.fingerprint
    scaled = small.train.images * 16
    assert torch.allclose(scaled, scaled.round(), atol=1e-5) and small.train.images.max() == 1.0  # levels 0..16
    expected = torch.nn.functional.interpolate(small.test.images, size=(28, 28), mode="bilinear", align_corners=False)
    assert torch.allclose(big.test.images, expected) and torch.equal(big.test.labels, small.test.labels)
    assert big.train.images.min() >= 0.0 and big.train.images.max() <= 1.0


def test_digits_val_size_larger_than_the_dataset() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("digits")
    assert str(err.value) == ("val_size=5000 is invalid for digits: it must be in 0..1436 (the training set has "
                              "1,437 images; e.g. val_size=140).")


# ---------------------------------------------------------------------------------------------------------
# MNIST through generated IDX files


def mirror_of(tmp_path: Path, arrays=None, name: str = "mirror") -> tuple[str, dict]:
    """A folder of fixture .gz files and its file:// URL."""
    files = write_idx_folder(tmp_path / name, arrays)
    return (tmp_path / name).as_uri() + "/", files


def local_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payloads=None, *, known=True) -> Path:
    """Fixture files inside <root>/mnist with a spec that knows their archive hashes and has no mirrors."""
    root = tmp_path / "data"
    files = write_idx_folder(root / "mnist", fixture_arrays(), payloads)
    spec = fixture_spec("mnist", files) if known else dataclasses.replace(IDX_SPECS["mnist"], mirrors=())
    monkeypatch.setitem(IDX_SPECS, "mnist", spec)
    return root


def test_mnist_from_file_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = fixture_arrays()
    url, files = mirror_of(tmp_path, arrays)
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", files, mirrors=(url,)))
    root = tmp_path / "data"
    folder = fetch_dataset("mnist", data_dir=root, progress=False)
    assert folder == root / "mnist"
    for name in FILENAMES.values():
        assert (folder / name).read_bytes() == (tmp_path / "mirror" / name).read_bytes()
    d = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert (len(d.train), len(d.val), len(d.test)) == (15, 5, 10)
    np.testing.assert_array_equal(as_u8(d.test.images), arrays["test-images"])
    np.testing.assert_array_equal(d.test.labels.numpy(), arrays["test-labels"])
    together = np.concatenate([as_u8(d.train.images), as_u8(d.val.images)])
    assert row_keys(together) == row_keys(arrays["train-images"])
    assert d.info.note == "" and d.info.licence == "CC BY-SA 3.0"
    assert d.info.source == f"{folder} (decoded cache of {url})"
    assert d.info.checksum == combined_checksum([files[p].payload_sha256 for p in PARTS])
    assert leftovers(tmp_path) == []


def test_mirror_fallback_skips_a_corrupt_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good_url, files = mirror_of(tmp_path, fixture_arrays(seed=0), "good")
    bad_url, _ = mirror_of(tmp_path, fixture_arrays(seed=1), "bad")
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", files, mirrors=(bad_url, good_url)))
    folder = fetch_dataset("mnist", data_dir=tmp_path / "data", progress=False)
    for part in PARTS:
        assert sha256((folder / FILENAMES[part]).read_bytes()) == files[part].archive_sha256
    assert leftovers(tmp_path) == []


def test_checksum_mismatch_on_download_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, files = mirror_of(tmp_path)
    files["train-labels"] = dataclasses.replace(files["train-labels"], archive_sha256="0" * 64)
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", files, mirrors=(url,)))
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist", data_dir=root, progress=False)
    got = sha256((tmp_path / "mirror" / FILENAMES["train-labels"]).read_bytes())
    folder = root / "mnist"
    assert str(err.value) == (
        f"mnist is not available. Tried: (1) {folder}: missing {FMNIST_FILES}; "
        f"(2) {url}train-labels-idx1-ubyte.gz: checksum mismatch (SHA-256 {got}, expected {'0' * 64}); "
        f"the download was deleted. Fix: {MNIST_FIX.format(folder)}")
    assert not (folder / FILENAMES["train-labels"]).exists()  # the bad download is gone
    assert (folder / FILENAMES["train-images"]).exists()  # the verified one before it is kept
    assert not (folder / "decoded.json").exists() and leftovers(tmp_path) == []


def test_every_route_failing_is_one_error_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = (tmp_path / "no-mirror").as_uri() + "/"
    spec = dataclasses.replace(FMNIST, system_dir=tmp_path / "no-debian", mirrors=(mirror,))
    monkeypatch.setitem(IDX_SPECS, "fashion-mnist", spec)
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_dataset(data_dir=root, progress=False)
    message = str(err.value)
    assert message.startswith(
        f"fashion-mnist is not available. Tried: (1) {root / 'fashion-mnist'}: missing {FMNIST_FILES}; "
        f"(2) {tmp_path / 'no-debian'}: does not exist; (3) {mirror}train-images-idx3-ubyte.gz: download failed (")
    assert message.endswith("). Fix: sudo apt-get install dataset-fashion-mnist (or, with internet access: "
                            "aestudy data fetch fashion-mnist)")
    assert "\n" not in message and leftovers(tmp_path) == []


def test_mnist_with_unknown_checksums_is_accepted_but_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = local_mnist(tmp_path, monkeypatch, known=False)
    d = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert d.info.note == "checksum not verified: the files match no known upstream SHA-256"
    again = load_dataset("mnist", val_size=5, data_dir=root, progress=False)  # from the decoded cache
    assert again.info.note == d.info.note and torch.equal(again.train.images, d.train.images)


def test_truncated_gz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = local_mnist(tmp_path, monkeypatch)
    path = root / "mnist" / FILENAMES["train-images"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert str(err.value) == (f"{path}: truncated or corrupt gzip file; delete it and re-fetch with "
                              "`aestudy data fetch mnist`.")
    assert leftovers(tmp_path) == [] and not (root / "mnist" / "decoded.json").exists()


def test_short_idx_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = idx_bytes(fixture_arrays()["train-images"])
    root = local_mnist(tmp_path, monkeypatch, {"train-images": full[:-100]})
    with pytest.raises(DataError) as err:
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    path = root / "mnist" / FILENAMES["train-images"]
    assert str(err.value) == (f"{path}: IDX payload is {len(full) - 100} bytes but its header (20x28x28) needs "
                              f"{len(full)}; the file is truncated or corrupt — delete it and re-fetch with "
                              "`aestudy data fetch mnist`.")
    assert leftovers(tmp_path) == []


def test_wrong_magic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = idx_bytes(fixture_arrays()["test-images"], magic=2049)
    root = local_mnist(tmp_path, monkeypatch, {"test-images": payload})
    with pytest.raises(DataError) as err:
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    path = root / "mnist" / FILENAMES["test-images"]
    assert str(err.value) == (f"{path}: wrong IDX magic number 2049 (expected 2051 for images); not an IDX images "
                              "file — delete it and re-fetch with `aestudy data fetch mnist`.")
    assert leftovers(tmp_path) == []


def test_image_label_count_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = fixture_arrays()["train-labels"][:19]
    root = local_mnist(tmp_path, monkeypatch, {"train-labels": idx_bytes(labels)})
    with pytest.raises(DataError) as err:
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    folder = root / "mnist"
    assert str(err.value) == (f"{folder / FILENAMES['train-images']} has 20 images but "
                              f"{folder / FILENAMES['train-labels']} has 19 labels; the train files do not belong "
                              "together — delete both files and re-fetch with `aestudy data fetch mnist`.")
    assert leftovers(tmp_path) == []


def test_local_fashion_mnist_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    files = write_idx_folder(root / "fashion-mnist")
    spec = fixture_spec("fashion-mnist", files, payload_known=True)
    monkeypatch.setitem(IDX_SPECS, "fashion-mnist", dataclasses.replace(spec, system_dir=None))
    path = root / "fashion-mnist" / FILENAMES["test-labels"]
    payload = idx_bytes(fixture_arrays()["test-labels"][::-1].copy())
    path.write_bytes(gz(payload))
    with pytest.raises(DataError) as err:
        load_dataset(val_size=5, data_dir=root, progress=False)
    expected = files["test-labels"]
    assert str(err.value) == (
        f"{path}: checksum mismatch: SHA-256 {sha256(gz(payload))} matches neither the upstream archive "
        f"({expected.archive_sha256}) nor, decompressed ({sha256(payload)}), the upstream IDX payload "
        f"({expected.payload_sha256}); delete it and re-fetch with `aestudy data fetch fashion-mnist`.")
    assert leftovers(tmp_path) == []


def test_payload_checksum_accepts_a_regzipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    files = write_idx_folder(system)
    for name in FILENAMES.values():  # what Debian did: same IDX bytes, different gzip stream
        (system / name).write_bytes(gzip.compress(gzip.decompress((system / name).read_bytes()), 1, mtime=1))
    spec = fixture_spec("fashion-mnist", files, system_dir=system, payload_known=True)
    monkeypatch.setitem(IDX_SPECS, "fashion-mnist", spec)
    d = load_dataset(val_size=5, data_dir=tmp_path / "data", progress=False)
    assert d.info.note == "" and d.info.source == str(system)
    assert d.info.checksum == combined_checksum([files[p].payload_sha256 for p in PARTS])


def test_unwritable_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    system = tmp_path / "system"
    files = write_idx_folder(system)
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", files, system_dir=system))
    (tmp_path / "blocker").write_text("a file where the data dir should be")  # unwritable even for root
    root = tmp_path / "blocker" / "data"
    with pytest.warns(UserWarning) as record:
        d = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert [str(w.message) for w in record] == [
        f"data dir {root / 'mnist'} is not writable (Not a directory); decoded mnist from {system} without caching "
        "it (set $AESTUDY_DATA to a writable folder to cache it)"]
    assert len(d.train) == 15 and d.info.source == str(system)
    fix = (f"data dir {root / 'mnist'} is not writable (Not a directory); set $AESTUDY_DATA to a writable folder "
           "(e.g. `export AESTUDY_DATA=~/.cache/aestudy/data`) and run again.")
    with pytest.raises(DataError) as err:
        fetch_dataset("mnist", data_dir=root, progress=False)
    assert str(err.value) == fix
    assert main(["data", "fetch", "mnist", "--data-dir", str(root), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"aestudy: error: {fix}\n"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", write_idx_folder(system), system_dir=system))
    root = tmp_path / "ro"
    root.mkdir(mode=0o555)
    with pytest.raises(DataError, match="is not writable"):
        fetch_dataset("mnist", data_dir=root, progress=False)
    with pytest.warns(UserWarning, match="without caching"):
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def _garble(path: Path) -> None:
    path.write_text("{not json")


@pytest.mark.parametrize(("target", "damage"), [("train-images.npy", _truncate), ("test-images.npy", _flip_last_byte),
                                                ("decoded.json", _garble)])
def test_damaged_decoded_cache_is_ignored_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      target: str, damage) -> None:
    root = local_mnist(tmp_path, monkeypatch)
    first = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    meta = json.loads((root / "mnist" / "decoded.json").read_text())
    assert meta["parts"]["train-images"]["shape"] == [20, 28, 28]
    damage(root / "mnist" / target)
    with pytest.warns(UserWarning, match="ignoring the decoded cache"):
        rebuilt = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert torch.equal(rebuilt.train.images, first.train.images)
    assert torch.equal(rebuilt.test.images, first.test.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is intact
        load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    assert leftovers(tmp_path) == []


def test_cli_fetch_from_file_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, files = mirror_of(tmp_path)
    monkeypatch.setitem(IDX_SPECS, "mnist", fixture_spec("mnist", files, mirrors=(url,)))
    monkeypatch.setenv("AESTUDY_DATA", str(tmp_path / "data"))
    assert main(["data", "fetch", "mnist", "--no-progress"]) == 0
    assert capsys.readouterr().out == f"mnist: ready in {tmp_path / 'data' / 'mnist'}\n"
    assert main(["data", "info", "mnist", "--val-size", "5"]) == 0
    assert "splits:   train 15 / val 5 / test 10" in capsys.readouterr().out.splitlines()


def test_replaced_idx_files_invalidate_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = local_mnist(tmp_path, monkeypatch, known=False)
    first = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    newer = fixture_arrays(seed=7)
    write_idx_folder(root / "mnist", newer)
    with pytest.warns(UserWarning, match="changed after the cache was built"):
        second = load_dataset("mnist", val_size=5, data_dir=root, progress=False)
    np.testing.assert_array_equal(as_u8(second.test.images), newer["test-images"])
    assert second.info.checksum != first.info.checksum and second.fingerprint != first.fingerprint


def test_hand_built_dataset_is_fingerprinted_by_content() -> None:
    info = data.DatasetInfo("toy", (1, 2, 2), 2, ("a", "b"), "memory", "none", "n/a")

    def toy(fill: float) -> data.Dataset:
        split = data.Split(torch.full((3, 1, 2, 2), fill), torch.tensor([0, 1, 0]))
        return data.Dataset(split, split, split, info, None)

    assert toy(0.5).fingerprint == toy(0.5).fingerprint != toy(0.25).fingerprint


TOY_INFO = data.DatasetInfo("toy", (1, 2, 2), 3, ("a", "b", "c"), "memory", "none", "n/a")


def _toy_split(n: int = 4, fill: float = 0.5, name: str = "") -> data.Split:
    return data.Split(torch.full((n, 1, 2, 2), fill), torch.arange(n) % 3, name)


@pytest.mark.parametrize(("images", "labels", "message"), [
    (torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.int64),
     "Split(images, labels) needs images (N, C, H, W) and labels (N,); got (3, 2, 2) and (3,)."),
    (torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64),
     "Split(images, labels) needs images (N, C, H, W) and labels (N,); got (3, 1, 2, 2) and (2,)."),
    (np.zeros((3, 1, 2, 2), np.float32), torch.zeros(3, dtype=torch.int64),
     "Split(images, labels) needs torch tensors for images and labels; got ndarray and Tensor (convert numpy arrays "
     "with torch.from_numpy)."),
    (torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64),
     "Split(images, labels) has images of dtype torch.uint8; they must be torch.float32 in [0, 1] "
     "(e.g. images.float() / 255 for uint8 images)."),
    (torch.zeros(3, 1, 2, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.int64),
     "Split(images, labels) has images of dtype torch.float64; they must be torch.float32 in [0, 1] "
     "(e.g. images.float() / 255 for uint8 images)."),
    (torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.int32),
     "Split(images, labels) has labels of dtype torch.int32; they must be torch.int64 class indices "
     "(convert with labels.long())."),
    (torch.zeros(3, 1, 2, 2), torch.tensor([0, -1, 2]),
     "Split(images, labels) has a negative label (-1); labels are class indices >= 0 (or all -1 for unlabelled "
     "images)."),
])
def test_split_checks_types_shapes_and_dtypes_at_construction(images, labels, message) -> None:
    with pytest.raises(ConfigError) as err:
        data.Split(images, labels)
    assert str(err.value) == message


def test_images_outside_unit_range_are_refused_naming_the_split_range_and_fix() -> None:
    """Issue 12, item 2: 0..255 images used to train silently into impossible NLLs (-1.4e6 nats)."""
    raw = torch.arange(4 * 4, dtype=torch.float32).view(4, 1, 2, 2) * 17  # 0..255
    with pytest.raises(ConfigError) as err:
        data.Split(raw, torch.arange(4) % 3, "train")
    assert str(err.value) == ("the train split has pixel values in [0, 255] (first outside [0, 1]: image 0); they "
                              "must lie in [0, 1] (images in 0..255: divide by 255).")
    with pytest.raises(ConfigError) as err:  # an unnamed split is named by its place in the Dataset
        data.Dataset(_toy_split(), _toy_split(), data.Split(raw, torch.arange(4) % 3), TOY_INFO, None)
    assert str(err.value) == ("the test split has pixel values in [0, 255] (first outside [0, 1]: image 0); they "
                              "must lie in [0, 1] (images in 0..255: divide by 255).")
    normalised = torch.linspace(-1, 1, 16).view(4, 1, 2, 2)  # e.g. Normalize((0.5,), (0.5,)): no "divide by 255"
    with pytest.raises(ConfigError) as err:
        data.Dataset(_toy_split(), data.Split(normalised, torch.arange(4) % 3), _toy_split(), TOY_INFO, None)
    assert str(err.value) == ("the val split has pixel values in [-1, 1] (first outside [0, 1]: image 0); they must "
                              "lie in [0, 1].")
    assert data.Dataset(*(data.Split(raw / 255, torch.arange(4) % 3),) * 3, TOY_INFO, None).train.images.max() == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_pixels_are_refused_naming_split_and_image(bad: float) -> None:
    images = torch.full((5, 1, 2, 2), 0.5)
    images[3, 0, 1, 0] = bad
    with pytest.raises(ConfigError) as err:
        data.Split(images, torch.arange(5) % 3, "val")
    assert str(err.value) == (f"the val split has a non-finite pixel ({bad}) in image 3 (1 of 5 images hold NaN or "
                              "±inf); drop or repair those images.")
    with pytest.raises(ConfigError) as err:
        data.Dataset(data.Split(images, torch.arange(5) % 3), _toy_split(), _toy_split(), TOY_INFO, None)
    assert str(err.value).startswith(f"the train split has a non-finite pixel ({bad}) in image 3 ")


def test_dataset_checks_labels_against_its_classes_and_image_shape() -> None:
    labels = torch.tensor([0, 1, 3, 2])
    with pytest.raises(ConfigError) as err:
        data.Dataset(_toy_split(), data.Split(torch.zeros(4, 1, 2, 2), labels), _toy_split(), TOY_INFO, None)
    assert str(err.value) == ("the val split has label 3; labels must lie in [0, 3) for 'toy' (3 classes per its "
                              "DatasetInfo.num_classes).")
    with pytest.raises(ConfigError) as err:
        data.Dataset(_toy_split(), _toy_split(), data.Split(torch.zeros(4, 1, 3, 3), labels % 3), TOY_INFO, None)
    assert str(err.value) == ("the test split has images of shape (1, 3, 3) (C, H, W) but the dataset info says "
                              "(1, 2, 2); make them agree.")
    with pytest.raises(ConfigError) as err:
        data.Dataset(_toy_split(), None, _toy_split(), TOY_INFO, None)
    assert str(err.value) == "Dataset(val=...) must be an aestudy.data.Split; got NoneType."
    empty = data.Split(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), "val")
    assert len(data.Dataset(_toy_split(), empty, _toy_split(), TOY_INFO, None).val) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shape": (28, 28)}, "DatasetInfo shape=(28, 28) is invalid; it must be (C, H, W), three integers >= 1."),
    ({"num_classes": -1}, "DatasetInfo num_classes=-1 is invalid; it must be an integer >= 0 (0 = unlabelled images)."),
    ({"class_names": ("a", "b")},
     "DatasetInfo class_names=('a', 'b') is invalid; it must hold one name per class (3)."),
])
def test_dataset_info_checks_shape_and_classes(kwargs, message) -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(TOY_INFO, **kwargs)
    assert str(err.value) == message
    info = dataclasses.replace(TOY_INFO, shape=[np.int64(1), 2, 2], class_names=["a", "b", "c"])
    assert info.shape == (1, 2, 2) and type(info.shape[0]) is int and info.class_names == ("a", "b", "c")


def test_every_loaded_split_is_named_and_checked() -> None:
    d = load_dataset("digits", limit=50, val_size=20, seed=0)
    assert (d.train.name, d.val.name, d.test.name) == ("train", "val", "test")
    assert all(s._pixels_checked for s in (d.train, d.val, d.test))
    binarized = load_dataset("digits", limit=50, val_size=20, seed=0, binarize="static", upscale=False)
    assert (binarized.train.name, binarized.test.name) == ("train", "test")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"val_size": -1}, "val_size=-1 is invalid; it must be an integer >= 0."),
    ({"val_size": 2.0}, "val_size=2.0 is invalid; it must be an integer >= 0."),
    ({"limit": "100"}, "limit='100' is invalid; it must be None (all images) or an integer."),
    ({"seed": True}, "seed=True is invalid; it must be an integer >= 0."),
    ({"upscale": "yes"}, "upscale='yes' is invalid; it must be True or False."),
    ({"progress": None}, "progress=None is invalid; it must be True or False."),
    ({"binarize": "otsu"}, "binarize='otsu' is not a binarization mode; valid values: None, 'static', 'dynamic'."),
])
def test_load_dataset_refuses_bad_arguments_before_reading_anything(kwargs, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("digits", **kwargs)
    assert str(err.value) == message


def test_bad_arguments_leave_the_data_folder_untouched(tmp_path: Path) -> None:
    for kwargs in ({"val_size": -1}, {"limit": 1.5}, {"seed": np.float64(1.0)}, {"binarize": "yes"}):
        with pytest.raises(ConfigError):
            load_dataset("mnist", data_dir=tmp_path, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_takes_numpy_integers_as_plain_ones() -> None:
    grid = load_dataset("digits", limit=np.int64(50), val_size=np.int32(20), seed=np.int64(1))
    plain = load_dataset("digits", limit=50, val_size=20, seed=1)
    assert grid.fingerprint == plain.fingerprint and torch.equal(grid.train.images, plain.train.images)


def test_split_sizes_scale_profiles_to_small_datasets() -> None:
    from aestudy.data import split_sizes

    assert split_sizes("fashion-mnist", limit=2000, val_size=500) == {"limit": 2000, "val_size": 500}
    assert split_sizes("fashion-mnist", limit=None, val_size=5000) == {"limit": None, "val_size": 5000}
    assert split_sizes("digits", limit=2000, val_size=500) == {"limit": None, "val_size": 140}
    assert split_sizes("digits", limit=200, val_size=5000) == {"limit": 200, "val_size": 140}
    sizes = split_sizes("digits", limit=2000, val_size=5000)
    data = load_dataset("digits", seed=0, **sizes)
    assert len(data.val) == 140 and len(data.train) == 1437 - 140
    with pytest.raises(ConfigError, match=r"name='svhn' is not a dataset; valid names: fashion-mnist, mnist, digits, "
                                          r"photo-patches-32, photo-patches-64, cifar-10, or a path"):
        split_sizes("svhn", limit=None, val_size=10)


# ---------------------------------------------------------------------------------------------------------
# Colour datasets: photo patches (offline) and CIFAR-10 (a generated fixture archive served from file://)


def _cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """One pickled batch as upstream writes it: {b"data": (N, 3072) uint8, b"labels": [int]}, protocol 2."""
    import pickle

    return pickle.dumps({b"batch_label": b"fixture", b"data": images.reshape(len(images), -1),
                         b"labels": [int(v) for v in labels]}, protocol=2)


def _cifar_archive(path: Path, n_train: int = 20, n_test: int = 10, *, payloads: dict[str, bytes] | None = None
                   ) -> dict[str, np.ndarray]:
    """Write a tiny cifar-10-python.tar.gz (5 train batches + test batch) to `path`; the arrays written."""
    import io
    import tarfile

    rng = np.random.default_rng(7)
    arrays = {"train-images": rng.integers(0, 256, (5 * n_train, 3, 32, 32), dtype=np.uint8),
              "train-labels": np.arange(5 * n_train) % 10, "test-images": rng.integers(0, 256, (n_test, 3, 32, 32),
                                                                                       dtype=np.uint8),
              "test-labels": np.arange(n_test) % 10}
    members = {f"data_batch_{i + 1}": _cifar_batch(arrays["train-images"][i * n_train:(i + 1) * n_train],
                                                   arrays["train-labels"][i * n_train:(i + 1) * n_train])
               for i in range(5)}
    members["test_batch"] = _cifar_batch(arrays["test-images"], arrays["test-labels"])
    members.update(payloads or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return arrays


@pytest.fixture()
def cifar_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A fixture archive behind a file:// URL, with the CIFAR-10 spec's URL and SHA-256 swapped for it."""
    source = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    source.parent.mkdir()
    arrays = _cifar_archive(source)
    spec = dataclasses.replace(data.ARCHIVE_SPECS["cifar-10"], urls=(source.as_uri(),),
                               sha256=sha256(source.read_bytes()))
    monkeypatch.setitem(data.ARCHIVE_SPECS, "cifar-10", spec)
    return source, arrays


def test_cifar10_spec_is_the_upstream_archive() -> None:
    spec = data.ARCHIVE_SPECS["cifar-10"]
    assert spec.urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
    assert spec.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert spec.filename == "cifar-10-python.tar.gz" and len(spec.class_names) == 10


def test_cifar10_downloads_verifies_and_loads(cifar_mirror, tmp_path: Path) -> None:
    source, arrays = cifar_mirror
    root = tmp_path / "data"
    ds = load_dataset("cifar-10", val_size=10, data_dir=root, progress=False)
    assert (root / "cifar-10" / "cifar-10-python.tar.gz").read_bytes() == source.read_bytes()
    assert ds.train.images.shape == (90, 3, 32, 32) and ds.test.images.shape == (10, 3, 32, 32)
    assert ds.train.images.dtype == torch.float32 and ds.train.images.min() >= 0 and ds.train.images.max() <= 1
    np.testing.assert_array_equal((ds.test.images.numpy() * 255).round().astype(np.uint8), arrays["test-images"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), arrays["test-labels"])
    both = np.concatenate([(s.images.numpy() * 255).round().astype(np.uint8) for s in (ds.train, ds.val)])
    assert row_keys(both) == row_keys(arrays["train-images"])  # val carved from train, nothing lost
    assert ds.info.shape == (3, 32, 32) and ds.info.checksum == sha256(source.read_bytes())
    assert ds.info.class_names[0] == "airplane" and ds.info.num_classes == 10
    assert fetch_dataset("cifar-10", data_dir=root, progress=False) == root / "cifar-10"
    assert {row.name: row for row in list_datasets(root)}["cifar-10"].available
    assert not leftovers(root)


def test_cifar10_bad_download_is_deleted(cifar_mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = cifar_mirror
    monkeypatch.setitem(data.ARCHIVE_SPECS, "cifar-10",
                        dataclasses.replace(data.ARCHIVE_SPECS["cifar-10"], sha256="0" * 64))
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_dataset("cifar-10", val_size=10, data_dir=root, progress=False)
    got = sha256(source.read_bytes())
    assert str(err.value) == (
        f"cifar-10 is not available. Tried: (1) {root / 'cifar-10' / 'cifar-10-python.tar.gz'}: does not exist; "
        f"(2) {source.as_uri()}: checksum mismatch (SHA-256 {got}, expected {'0' * 64}); the download was deleted. "
        f"Fix: with internet access: aestudy data fetch cifar-10 (or copy cifar-10-python.tar.gz into "
        f"{root / 'cifar-10'})")
    assert not list((root / "cifar-10").iterdir())


def test_cifar10_local_archive_is_checked(cifar_mirror, tmp_path: Path) -> None:
    source, _ = cifar_mirror
    folder = tmp_path / "data" / "cifar-10"
    folder.mkdir(parents=True)
    (folder / "cifar-10-python.tar.gz").write_bytes(source.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: checksum mismatch: SHA-256 [0-9a-f]{64}, "
                                        r"expected [0-9a-f]{64}; delete it and re-fetch with `aestudy data fetch "
                                        r"cifar-10`\.$"):
        load_dataset("cifar-10", val_size=10, data_dir=tmp_path / "data", progress=False)


def test_cifar10_archive_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "data" / "cifar-10"
    folder.mkdir(parents=True)
    path = folder / "cifar-10-python.tar.gz"
    _cifar_archive(path, payloads={"data_batch_1": pickle.dumps(Evil(), protocol=2)})
    monkeypatch.setitem(data.ARCHIVE_SPECS, "cifar-10",
                        dataclasses.replace(data.ARCHIVE_SPECS["cifar-10"], sha256=sha256(path.read_bytes())))
    with pytest.raises(DataError, match=r"not a readable CIFAR-10 python archive \(UnpicklingError: refusing to load "
                                        r"(posix|os)\.system from a dataset file\)"):
        load_dataset("cifar-10", val_size=10, data_dir=tmp_path / "data", progress=False)


def _locate(patch: np.ndarray, photo: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where `patch` (3, s, s) uint8 occurs in `photo` (H, W, 3)."""
    side = patch.shape[1]
    hwc = patch.transpose(1, 2, 0)
    corner = np.all(photo[: photo.shape[0] - side + 1, : photo.shape[1] - side + 1] == hwc[0, 0], axis=-1)
    return [(int(t), int(c)) for t, c in np.argwhere(corner) if np.array_equal(photo[t:t + side, c:c + side], hwc)]


@pytest.mark.parametrize(("name", "side", "sizes"), [("photo-patches-32", 32, (9000, 1000, 2000)),
                                                     ("photo-patches-64", 64, (3500, 500, 1000))])
def test_photo_patches_shapes_and_disjoint_regions(name: str, side: int, sizes: tuple[int, int, int]) -> None:
    from sklearn.datasets import load_sample_images

    ds = load_dataset(name, val_size=data.default_val_size(name))
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert ds.train.images.shape[1:] == (3, side, side) and ds.info.shape == (3, side, side)
    assert ds.train.images.dtype == torch.float32 and ds.train.images.min() >= 0 and ds.train.images.max() <= 1
    assert ds.info.class_names == ("china", "flower") and ds.info.licence == "CC BY 2.0"
    assert torch.bincount(ds.test.labels).tolist() == [sizes[2] // 2] * 2
    photos = load_sample_images().images
    split_column = data.PHOTO_TEST_FROM_COLUMN
    for split, inside in ((ds.test, lambda c: c >= split_column), (ds.train, lambda c: c + side <= split_column),
                          (ds.val, lambda c: c + side <= split_column)):
        for k in range(0, len(split), max(1, len(split) // 12)):  # a dozen patches per split
            u8 = (split.images[k].numpy() * 255).round().astype(np.uint8)
            spots = _locate(u8, photos[int(split.labels[k])])
            assert spots and all(inside(c) for _, c in spots)  # the patch is real, and from its region only
    again = load_dataset(name, val_size=data.default_val_size(name), seed=1)
    assert torch.equal(again.test.images, ds.test.images) and again.info.checksum == ds.info.checksum
    assert not torch.equal(again.val.images, ds.val.images)  # the seed moves only the val carve


def test_photo_patches_cli_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "photo-patches-32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "splits:   train 9,000 / val 1,000 / test 2,000" in out and "shape:    3x32x32" in out
    assert "classes:  2 (china, flower)" in out and "licence:  CC BY 2.0" in out
    rows = {row.name: row for row in list_datasets()}
    assert rows["photo-patches-64"].shape == (3, 64, 64) and rows["photo-patches-64"].available
    assert data.split_sizes("photo-patches-64", limit=2000, val_size=5000) == {"limit": 2000, "val_size": 500}
    with pytest.raises(ConfigError, match=r"^val_size=5000 is invalid for photo-patches-64: it must be in 0\.\.3999"):
        load_dataset("photo-patches-64", val_size=5000)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_models_train_on_colour_patches(arch: str) -> None:
    from aestudy.models import ModelConfig
    from aestudy.train import TrainConfig, train_or_load

    ds = load_dataset("photo-patches-32", val_size=100, limit=300, binarize="dynamic")
    cfg = ModelConfig(kind="vae", arch=arch, input_shape=(3, 32, 32), latent_dim=8, hidden=(64,), channels=(8, 16))
    result = train_or_load(cfg, TrainConfig(epochs=4, lr=3e-3, device="cpu", progress=False), ds)
    history = result.history
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]  # it learns the colour patches
    recon = result.model.reconstruct(ds.test.images[:5])
    assert recon.shape == (5, 3, 32, 32) and recon.min() >= 0 and recon.max() <= 1
    assert result.model.sample(3).shape == (3, 3, 32, 32)
