"""Issue 17 (a new user's findings): your own data is checked at the door, and the fixes the messages name can be
passed. Fast: data is generated here, no notebook executes (the runner stops before any kernel starts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aestudy.errors import ConfigError, DataError
from aestudy.imagefiles import STUDY_MIN_IMAGES, check_study_size, parse_size
from aestudy.parameters import validate_parameters
from aestudy.runner.cli import main
from aestudy.runner.run import next_step
from aestudy.study import Study

TOO_FEW = ("{where}: {n} image(s) are fewer than the split sizes need: the study needs at least 100 (20 test, 8 "
           "validation and 72 training images; notebook 03 fits a 10-component Gaussian mixture to the training "
           "codes). Add images to reach 100 or more, then check them with: aestudy data info {where}")


def write_npz(path: Path, n: int, *, scale: float = 1.0) -> Path:
    """`n` grey 8x8 float images with values in [0, scale]."""
    rng = np.random.default_rng(0)
    np.savez(path, images=(rng.random((n, 8, 8)) * scale).astype(np.float32))
    return path


def write_pngs(folder: Path, n: int, side: int = 8, mode: str = "L") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    shape = (side, side) if mode == "L" else (side, side, 3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


# ------------------------------------------------------------------------------------------ item 1: too few images


@pytest.mark.parametrize("n", [5, 8, 30, 60, 99])
def test_too_few_images_for_the_study_name_the_count_the_minimum_and_the_fix(tmp_path: Path, n: int) -> None:
    path = write_npz(tmp_path / "few.npz", n)
    with pytest.raises(DataError) as err:
        check_study_size(path)
    assert str(err.value) == TOO_FEW.format(where=path, n=n)


def test_the_minimum_itself_passes_and_its_splits_are_what_the_message_says(tmp_path: Path) -> None:
    from aestudy.data import load_dataset

    path = write_npz(tmp_path / "enough.npz", STUDY_MIN_IMAGES)
    assert check_study_size(path) == STUDY_MIN_IMAGES
    data = load_dataset(path, progress=False)
    assert (len(data.test), len(data.val), len(data.train)) == (20, 8, 72)


def test_study_data_refuses_too_few_images_before_loading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics.json"))
    folder = write_pngs(tmp_path / "few", 30)
    study = Study("03_ae_vs_vae_comparison", {"epochs": (1, 1, 1)}, profile="smoke", dataset=str(folder))
    with pytest.raises(DataError) as err:
        study.data()
    assert str(err.value) == TOO_FEW.format(where=folder, n=30)


def test_data_info_says_whether_the_study_can_run_on_the_data(tmp_path: Path, capsys) -> None:
    path = write_npz(tmp_path / "few.npz", 60)
    assert main(["data", "info", str(path), "--no-progress"]) == 0
    assert f"study:    {TOO_FEW.format(where=path, n=60)}\n" in capsys.readouterr().out
    path = write_npz(tmp_path / "enough.npz", 100)
    assert main(["data", "info", str(path), "--no-progress"]) == 0
    assert "study:    enough images for aestudy run (at least 100)\n" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ item 2: at the door


def _corrupt(tmp_path: Path) -> tuple[Path, str]:
    folder = write_pngs(tmp_path / "corrupt", 100)
    (folder / "im050.png").write_bytes((folder / "im050.png").read_bytes()[:60])
    return folder, f"{folder / 'im050.png'}: unreadable or truncated image ("


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "out-of-range", "too-few"])
def test_aestudy_run_reads_your_data_before_any_notebook_starts(tmp_path: Path, capsys, case: str) -> None:
    if case == "missing":
        path, message = tmp_path / "nowhere", (f"{tmp_path / 'nowhere'} does not exist; pass a folder of images "
                                               "(optionally one sub-folder per class) or an .npz/.npy file of images.")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        path = tmp_path / "empty"
        message = (f"{path}: no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm, .pbm, "
                   ".pnm) found; put your images in it, or in one sub-folder per class.")
    elif case == "corrupt":
        path, message = _corrupt(tmp_path)
    elif case == "out-of-range":
        path = write_npz(tmp_path / "range.npz", 100, scale=1.5)
        high = float(np.load(path)["images"].max())
        message = (f"{path}: float images must lie in [0, 1]; found values from {np.load(path)['images'].min():g} "
                   f"to {high:g} (first at image 0). Clip or rescale them into [0, 1] (e.g. numpy.clip(images, 0, 1)).")
    else:
        path = write_npz(tmp_path / "few.npz", 60)
        message = TOO_FEW.format(where=path, n=60)
    out = tmp_path / "runs" / "x"
    code = main(["run", "--profile", "smoke", "--only", "03", "--out", str(out), "-p", "dataset", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and not (tmp_path / "runs").exists()  # nothing started, no folder
    assert err.startswith(f"aestudy: error: {message}") and err.count("\n") == 1  # one line, no traceback


def test_a_data_error_inside_a_notebook_is_answered_with_fix_and_rerun_not_resume(tmp_path: Path) -> None:
    state = {"parameters": {"03.ipynb": {}}, "notebooks": ["03.ipynb"], "notebooks_dir": str(tmp_path)}
    advice = next_step(tmp_path, state, "03.ipynb", {"ename": "DataError", "evalue": "x.png: unreadable"})
    assert advice == ("the data was refused: fix it as the message above says (or pass another dataset), then start "
                      "the run again with the same command; a --resume would read the same data and fail the same way")
    assert "--resume " + str(tmp_path) not in advice
    other = next_step(tmp_path, state, "03.ipynb", {"ename": "RuntimeError", "evalue": "boom"})
    assert other == f"continue with: aestudy run --resume {tmp_path}"


# ------------------------------------------------------------------------------------------ item 3: the fixes


def test_image_size_and_channels_are_parameters_with_one_spelling() -> None:
    values = validate_parameters({"dataset": "/data/scans", "image_size": "32X48", "channels": 3})
    assert (values["image_size"], values["channels"]) == ("32x48", 3)
    assert validate_parameters({"dataset": "/data/scans", "image_size": 32})["image_size"] == "32x32"
    assert validate_parameters({"dataset": "/data/scans", "image_size": "auto"})["image_size"] == "auto"
    assert parse_size("32x48") == (32, 48) and parse_size("auto") == "auto" and parse_size(None) is None
    with pytest.raises(ConfigError) as err:
        validate_parameters({"dataset": "/data/scans", "image_size": "32 by 48"})
    assert str(err.value) == ("image_size='32 by 48' is invalid; valid values: None (the images' one size), 'auto' "
                              "(the most common size), 'S' (e.g. '32') or 'HxW' (e.g. '32x48').")
    with pytest.raises(ConfigError) as err:
        validate_parameters({"dataset": "/data/scans", "channels": 2})
    assert str(err.value) == "channels=2 is invalid; valid values: None (as found), 1 (grey) or 3 (RGB)."
    with pytest.raises(ConfigError) as err:
        validate_parameters({"dataset": "mnist", "image_size": "auto"})
    assert str(err.value) == ("image_size='auto' is invalid; it applies to your own image files only; use None with "
                              "the built-in dataset 'mnist'.")


def test_the_fix_the_mixed_size_and_mode_errors_name_works_through_aestudy_run(tmp_path: Path, capsys) -> None:
    """The refusal names `-p image_size auto`; with it (and `-p channels 3`) the runner's door lets the data in and
    routes both to the notebook (plan_run: the checks of `aestudy run`, no notebook executes)."""
    folder = write_pngs(tmp_path / "mixed", 90)
    for i in range(10):
        Image.fromarray(np.full((10, 12), 7, np.uint8)).save(folder / f"odd{i}.png")
    out = tmp_path / "runs" / "x"
    assert main(["run", "--profile", "smoke", "--only", "03", "--out", str(out), "-p", "dataset", str(folder)]) == 2
    assert "(aestudy run: -p image_size auto, or -p image_size HxW)" in capsys.readouterr().err
    from aestudy.runner.run import plan_run

    _, routed, _, _ = plan_run(None, profile="smoke", device="cpu", only=["03"],
                               params={"dataset": str(folder), "image_size": "auto", "channels": 3})
    assert routed["03_ae_vs_vae_comparison"]["image_size"] == "auto"
    assert routed["03_ae_vs_vae_comparison"]["channels"] == 3


def test_study_passes_image_size_and_channels_to_every_load(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics.json"))
    folder = write_pngs(tmp_path / "grey", 100, side=10)
    study = Study("03_ae_vs_vae_comparison", {"epochs": (1, 1, 1)}, profile="smoke", dataset=str(folder),
                  image_size="8x6", channels=3, device="cpu")
    assert study.files == {"size": (8, 6), "channels": 3}
    assert study.data().info.shape == (3, 8, 6)
    plain = Study("03_ae_vs_vae_comparison", {"epochs": (1, 1, 1)}, profile="smoke", dataset="digits")
    assert plain.files == {}


# ------------------------------------------------------------------------------------------ item 5: stray files


def test_study_says_once_that_non_image_files_were_ignored(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AESTUDY_METRICS_FILE", str(tmp_path / "metrics.json"))
    folder = write_pngs(tmp_path / "scans", 100)
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0")
    study = Study("03_ae_vs_vae_comparison", {"epochs": (1, 1, 1)}, profile="smoke", dataset=str(folder))
    study.data()
    study.data(binarize="dynamic")
    assert capsys.readouterr().out == f"note: {folder}: 2 non-image file(s) ignored\n"
