"""Progress display: widget bar in a live frontend, whole text lines ending at the final state without one
(papermill, nbval), tqdm in a terminal; one home (`aestudy.progress`) for every bar in the package."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import re
import sys
import types
from pathlib import Path

import nbformat
import papermill
import pytest
from test_train import FAST, fresh, toy_dataset

from aestudy import progress as progress_module
from aestudy.errors import ConfigError
from aestudy.progress import TextBar, detect_mode, progress, set_mode
from aestudy.train import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _auto_mode():
    set_mode("auto")
    yield
    set_mode("auto")


def _fake_kernel(monkeypatch: pytest.MonkeyPatch, allow_stdin: bool | None) -> None:
    """Pretend to run inside an IPython kernel whose current request has `allow_stdin` (None: no kernel at all)."""
    assert importlib.util.find_spec("ipywidgets") is not None
    import ipywidgets  # noqa: F401 - imported while the real IPython is in place (it imports IPython itself)

    kernel = None if allow_stdin is None else types.SimpleNamespace(
        get_parent=lambda: {"header": {"msg_type": "execute_request"}, "content": {"allow_stdin": allow_stdin}})
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


@pytest.mark.parametrize(("allow_stdin", "mode"), [(True, "widget"), (False, "text"), (None, "terminal")])
def test_mode_follows_whether_the_kernel_has_a_frontend(monkeypatch, allow_stdin, mode):
    _fake_kernel(monkeypatch, allow_stdin)
    assert detect_mode() == mode


def test_plain_python_is_a_terminal_and_set_mode_overrides(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert detect_mode() == "terminal"
    set_mode("text")
    assert detect_mode() == "text" and isinstance(progress(range(2), enabled=False), TextBar)
    with pytest.raises(ConfigError) as err:
        set_mode("bars")
    assert str(err.value) == "mode='bars' is invalid; valid values: 'auto', 'widget', 'text', 'terminal', 'off'."


def test_text_bar_writes_whole_lines_ending_at_the_final_state():
    out = io.StringIO()
    bar = TextBar(range(10), desc="train", unit="epoch", file=out)
    for _ in bar:
        bar.set_postfix(loss="1.00", refresh=False)
    lines = out.getvalue().split("\n")
    assert "\r" not in out.getvalue() and lines[-1] == ""
    assert lines[0].startswith("train:   0%|") and " 0/10 " in lines[0]
    assert re.match(r"train: 100%\|#+\| 10/10 \[.*epoch/s, loss=1\.00\]$", lines[-2]), lines[-2]


def test_text_bar_ends_at_the_state_it_stopped_in():
    out = io.StringIO()
    with TextBar(total=10, desc="train", file=out) as bar:
        bar.update(4)  # e.g. early stopping after 4 of 10 epochs
    assert " 4/10 " in out.getvalue().splitlines()[-1]


def test_off_and_disabled_bars_print_nothing(capsys):
    set_mode("off")
    assert list(progress(range(3), desc="x")) == [0, 1, 2]
    set_mode("text")
    assert list(progress(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


def test_fit_without_a_frontend_prints_its_final_state(capsys):
    set_mode("text")
    fit(fresh(), toy_dataset(), dataclasses.replace(FAST, progress=True))
    lines = capsys.readouterr().err.splitlines()
    assert re.match(r"train: 100%\|.*\| 3/3 \[.*kl=.*loss=.*samples_per_s=.*\]$", lines[-1]), lines


def test_every_bar_in_the_package_goes_through_progress_py():
    users = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "aestudy").rglob("*.py"))
             if "tqdm" in p.read_text() and p.name != "progress.py"]
    assert users == []


@pytest.mark.slow
def test_papermill_saves_training_progress_as_text_at_its_final_state(tmp_path):
    """Issue 12, item 5: executed notebooks used to keep each bar's first frame ("0/10") as their saved text."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
        "import dataclasses\n"
        "from test_train import FAST, fresh, toy_dataset\n"
        "from aestudy.train import fit\n"
        "fit(fresh(), toy_dataset(n=64), dataclasses.replace(FAST, epochs=10, progress=True)).history.shape")]
    nb.metadata["kernelspec"] = {"name": "aestudy", "display_name": "aestudy", "language": "python"}
    source, out = tmp_path / "progress.ipynb", tmp_path / "progress.out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(out), kernel_name="aestudy", cwd=str(tmp_path), progress_bar=False)
    outputs = nbformat.read(out, as_version=4).cells[0].outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "\r" not in text
    assert re.match(r"train: 100%\|.*\| 10/10 \[", text.splitlines()[-1]), text
    assert progress_module.TEXT_MININTERVAL >= 10  # a long training adds a line per TEXT_MININTERVAL at most
