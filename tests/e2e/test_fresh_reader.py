"""A fresh reader's check (issue 19, item 8): an executed series notebook opened in JupyterLab shows every figure
and no unrendered template in its text.

The notebook is executed once by a module fixture (papermill, the `smoke` profile, its ledger in a temp run folder),
then opened as a reader opens a finished notebook: without running anything. Notebook 05 is the one checked here:
it is the cheapest in `smoke` and ends with the most generated text (the series recap rendered from the ledgers, the
references), beside its sample figures. `aestudy run`'s executed standard notebooks can be checked the same way by
copying them into a lab root (see `rendered_problems`).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from aestudy.runner.kernel import execute_notebook, notebook_env

from .conftest import NOTEBOOKS, LabServer
from .test_notebooks_in_lab import open_notebook

pytestmark = pytest.mark.e2e

NOTEBOOK = next(nb for nb in NOTEBOOKS if nb.name.startswith("05_"))
OPEN_TIMEOUT_MS = 120_000
RENDER_TIMEOUT_MS = 30_000  # markdown and MathJax typesetting of a long notebook on a busy machine

# What a reader would see that nobody meant them to: for every rendered markdown (cells and `Markdown(...)`
# outputs), its text with typeset maths and code spans removed must hold no `{`, `}` or `$name` (an f-string that
# lost its `f`, a template never filled, a variable never substituted), and every image must have loaded.
PROBLEMS_JS = r"""
() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return {ready: false, problems: ['no notebook panel'], images: 0, markdowns: 0};
  const problems = [];
  const rendered = [...panel.querySelectorAll('.jp-RenderedMarkdown')];
  for (const node of rendered) {
    const copy = node.cloneNode(true);
    copy.querySelectorAll('mjx-container, .MathJax, code, pre, script').forEach(e => e.remove());
    const text = copy.textContent;
    const hit = text.match(/\{|\}|\$[A-Za-z_]\w*/);
    if (hit) problems.push(`markdown shows ${JSON.stringify(hit[0])}: ` +
                           text.slice(Math.max(0, hit.index - 60), hit.index + 40).replace(/\s+/g, ' '));
  }
  const images = [...panel.querySelectorAll('.jp-OutputArea-output img')];
  images.filter(img => !(img.complete && img.naturalWidth > 0))
        .forEach(img => problems.push(`image not rendered: ${(img.getAttribute('src') || '').slice(0, 40)}`));
  const sources = panel.querySelectorAll('.jp-MarkdownCell').length;
  return {ready: rendered.length >= sources && sources > 0, problems, images: images.length,
          markdowns: rendered.length};
}
"""


@pytest.fixture(scope="module")
def executed(lab_server: LabServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Notebook 05 executed in the `smoke` profile into the lab's folder; returns its name there."""
    run_dir = tmp_path_factory.mktemp("fresh-reader-run")
    source = run_dir / NOTEBOOK.name
    shutil.copy2(NOTEBOOK, source)
    name = f"executed-{NOTEBOOK.name}"
    env = notebook_env(source, metrics_file=run_dir / "metrics" / f"{NOTEBOOK.stem}.json", profile="smoke",
                       run_dir=run_dir)
    execute_notebook(source, lab_server.root / name, {"profile": "smoke"}, kernel="aestudy", env=env, progress=False)
    return name


def rendered_problems(page) -> dict:
    """Wait until every markdown cell is rendered and the text and images pass, or the wait runs out; then the
    final reading of PROBLEMS_JS."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    check = f"() => {{ const s = ({PROBLEMS_JS})(); return s.ready && s.problems.length === 0; }}"
    with contextlib.suppress(PlaywrightTimeoutError):  # the reading below says what is wrong
        page.wait_for_function(check, timeout=RENDER_TIMEOUT_MS)
    return page.evaluate(PROBLEMS_JS)


def test_an_executed_notebook_shows_every_figure_and_no_template(page, lab_server: LabServer, executed: str,
                                                                 artifacts_dir: Path):
    open_notebook(page, lab_server, executed)  # as a reader opens it: its kernel starts and goes idle, nothing runs
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img",
                           timeout=OPEN_TIMEOUT_MS)
    state = rendered_problems(page)
    if state["problems"]:
        page.screenshot(path=str(artifacts_dir / "fresh-reader-failed.png"), full_page=True)
    assert state["ready"], f"not every markdown cell rendered: {state}"
    assert state["problems"] == []
    assert state["images"] >= 3  # the sample panels, the ladder and the semi-supervised figures at least
