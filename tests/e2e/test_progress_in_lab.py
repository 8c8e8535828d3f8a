"""In a live JupyterLab, training progress stays a widget bar (papermill/nbval get text: tests/test_progress.py)."""

from __future__ import annotations

import nbformat
import pytest

from .conftest import REPO, LabServer
from .test_notebooks_in_lab import PANEL, Screenshots, assert_clean, open_notebook, run_all

pytestmark = pytest.mark.e2e

TINY_FIT = f"""\
import sys
sys.path.insert(0, {str(REPO)!r})
import torch
from aestudy.data import Dataset, DatasetInfo, Split
from aestudy.models import ModelConfig, build_model
from aestudy.progress import detect_mode
from aestudy.train import TrainConfig, fit

g = torch.Generator().manual_seed(0)
split = Split(torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 2, "train")
data = Dataset(split, split, split, DatasetInfo("toy", (1, 8, 8), 2, ("a", "b"), "memory", "", "none"), None)
fit(build_model(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2)), data,
    TrainConfig(epochs=10, batch_size=32, progress=True))
print("progress mode:", detect_mode())
"""


def test_training_progress_is_a_widget_bar_in_jupyterlab(page, lab_server: LabServer, artifacts_dir) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TINY_FIT)]
    nb.metadata["kernelspec"] = {"name": "aestudy", "display_name": "aestudy", "language": "python"}
    nbformat.write(nb, lab_server.root / "progress_in_lab.ipynb")
    shots = Screenshots(page, artifacts_dir, "progress-in-lab")
    with shots.on_failure():
        open_notebook(page, lab_server, "progress_in_lab.ipynb")
        run_all(page)
        assert_clean(page, require_executed=True)
        outputs = page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts()
        assert any("progress mode: widget" in text for text in outputs), outputs
        bar = page.locator(f"{PANEL} .widget-hprogress, {PANEL} .widget-progress")
        assert bar.count() >= 1, "no ipywidgets progress bar rendered"
        assert any("10/10" in text for text in outputs), outputs  # the widget's label shows the final count
        shots.take("done")
