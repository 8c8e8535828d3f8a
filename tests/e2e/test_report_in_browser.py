"""A run's report.html opened from disk (file://) in headless Chromium: figures load, findings show, links resolve.

The run is the toy series of tests/fixtures/notebooks executed by `run_study` (two small kernels, no training):
notebook 02 records a comparison table, claims and a figure through the claims API, as the study's notebooks do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aestudy.runner.run import run_study

from .conftest import REPO

pytestmark = pytest.mark.e2e

TOY_NOTEBOOKS = REPO / "tests" / "fixtures" / "notebooks"
LOAD_TIMEOUT_MS = 60_000
# Every <img>: loaded, its decoded width, and where it came from (a data URI: the page is self-contained).
IMAGES_JS = """() => [...document.images].map(img => ({complete: img.complete, width: img.naturalWidth,
                                                      src: img.getAttribute('src').slice(0, 22)}))"""
# The element a URL fragment names (nbconvert's cell anchors look like `cell-id=cell-4`).
TARGET_JS = """() => {
  const el = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  return el ? {found: true, classes: el.className, text: el.innerText.slice(0, 2000)} : {found: false};
}"""


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete smoke run of the toy series (beta = 4, so one examined claim does not hold)."""
    run_dir = tmp_path_factory.mktemp("runs") / "report-e2e"
    result = run_study(TOY_NOTEBOOKS, out=run_dir, profile="smoke", device="cpu", params={"beta": 4.0},
                       progress=False)
    assert result.status == "complete"
    return run_dir


@pytest.fixture
def report_page(browser) -> Iterator[object]:
    """A fresh browser page (no JupyterLab needed: the report is a plain file)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_report_opens_offline_with_figures_findings_and_resolving_claim_links(
    toy_run: Path, report_page, artifacts_dir: Path
) -> None:
    page = report_page
    report = toy_run / "report.html"
    page.goto(report.as_uri(), wait_until="load", timeout=LOAD_TIMEOUT_MS)
    page.screenshot(path=str(artifacts_dir / "report.png"), full_page=True)

    images = page.evaluate(IMAGES_JS)
    assert images, "the report shows no figure"
    assert all(img["complete"] and img["width"] > 0 for img in images), images
    assert all(img["src"].startswith("data:image/png;base64") for img in images), images

    findings = page.locator("#findings li")
    assert page.locator("h2", has_text="What this run found").count() == 1
    assert findings.count() == 2  # one sentence per row of the toy's AE-vs-VAE table
    assert findings.nth(0).inner_text().startswith("toy KL — holds: “the toy KL grows linearly with beta” holds")
    assert "does not hold" in findings.nth(1).inner_text()

    details = page.locator("details#environment")
    assert details.count() == 1 and not details.evaluate("el => el.open")  # folded until asked for

    link = findings.nth(0).locator("a", has_text="toy-kl-scale")
    assert link.get_attribute("href") == "02_toy_beta.html#cell-id=cell-4"
    with page.expect_navigation(wait_until="domcontentloaded", timeout=LOAD_TIMEOUT_MS):
        link.click()
    assert page.url == (toy_run / "02_toy_beta.html").as_uri() + "#cell-id=cell-4"
    target = page.evaluate(TARGET_JS)
    assert target["found"], "the claim link's anchor names no element in the rendered notebook"
    assert "jp-CodeCell" in target["classes"] and 'check_claim("toy-kl-scale"' in target["text"]
    page.screenshot(path=str(artifacts_dir / "report-claim-link.png"))
