"""Notebook prose states no size the code may not use (issue 14, item 12): a count of images in a markdown cell
goes stale when a profile changes it, so counts are printed by the code instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# "10,000 images", "the first 10,000", "5000 test images": a thousands-sized count in prose
COUNT = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d{4,}\s+(?:training |test |held-out )?images\b")


@pytest.mark.parametrize("name", ["01_autoencoder_basics.ipynb", "03_ae_vs_vae_comparison.ipynb"])
def test_markdown_states_no_image_counts(name):
    cells = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]
    found = [(i, m.group(0)) for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
             for m in COUNT.finditer("".join(cell["source"]))]
    assert found == []


def test_the_pattern_catches_the_old_split_size_sentence():
    old = "between training images (the first 10,000, binarized with a fixed seed) and test images"
    assert COUNT.search(old) is not None
