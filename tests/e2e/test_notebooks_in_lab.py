"""Each notebook in a real JupyterLab, in headless Chromium: it runs clean and its main widget re-renders its figure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import FIXTURE_NOTEBOOK, NOTEBOOKS, LabServer

pytestmark = pytest.mark.e2e

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
OPEN_TIMEOUT_MS = 120_000  # page load + kernel start on a busy 2-core machine
RUN_TIMEOUT_MS = 180_000  # Run All of one notebook in the smoke profile (each is meant to take <= 60 s)
WIDGET_TIMEOUT_MS = 60_000  # one widget callback re-rendering its figure
ARROW_PRESSES = 3
# IPython's error outputs render as stderr text; these lines only appear in tracebacks (SyntaxError included).
TRACEBACK = r"Traceback \(most recent call last\)|Cell In\s?\[\d+\], line \d+|Error displaying widget"
EXECUTED_PROMPT = re.compile(r"^\[\d+\]:$")

# One snapshot of the visible notebook, read in the page: kernel idle?, dialogs, prompts, errors, figures.
STATE_JS = """
(args) => {
  const panel = document.querySelector(args.panel);
  const traceback = new RegExp(args.traceback);
  const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => e.textContent.trim().endsWith('| Idle'));
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].map(e => e.innerText.trim());
  if (!panel) return {found: false, idle, dialogs, prompts: [], errors: [], images: [], widgetImages: []};
  const prompts = [...panel.querySelectorAll('.jp-CodeCell')]
    .filter(cell => (cell.querySelector('.cm-content')?.textContent ?? '').trim() !== '')
    .map(cell => cell.querySelector('.jp-InputArea-prompt')?.textContent.trim() ?? '');
  const errors = [...panel.querySelectorAll('.jp-OutputArea-output')]
    .filter(e => !e.querySelector('.jp-OutputArea-output'))  // leaves only: a widget's box holds outputs too
    .filter(e => e.dataset.mimeType === 'application/vnd.jupyter.error' || traceback.test(e.innerText))
    .map(e => e.innerText.slice(0, 2000));
  const images = [...panel.querySelectorAll('.jp-OutputArea-output img')].map(e => e.getAttribute('src'));
  const main = [...panel.querySelectorAll('.aestudy-widget')]
    .find(box => box.querySelector('.aestudy-main-control'));
  const widgetImages = main ? [...main.querySelectorAll('img')].map(e => e.getAttribute('src')) : [];
  return {found: true, idle, dialogs, prompts, errors, images, widgetImages};
}
"""
RUN_FINISHED_JS = f"""
(args) => {{
  const s = ({STATE_JS})(args);
  if (s.dialogs.length) return true;
  return s.found && s.idle && (s.errors.length > 0
    || (s.prompts.length > 0 && s.prompts.every(p => /^\\[\\d+\\]:$/.test(p))));
}}
"""
FIGURE_CHANGED_JS = f"""
(args) => {{
  const s = ({STATE_JS})(args);
  if (s.dialogs.length || s.errors.length) return true;
  return s.idle && s.widgetImages.length > 0 && JSON.stringify(s.widgetImages) !== JSON.stringify(args.before);
}}
"""
IDLE_JS = f"(args) => {{ const s = ({STATE_JS})(args); return s.dialogs.length > 0 || (s.found && s.idle); }}"


def js_args(**extra: object) -> dict[str, object]:
    """Arguments for the page-side functions above."""
    return {"panel": PANEL, "traceback": TRACEBACK, **extra}


def notebook_state(page) -> dict:
    """The visible notebook's state, as STATE_JS reads it."""
    return page.evaluate(STATE_JS, js_args())


def wait_until(page, predicate_js: str, timeout_ms: int, waiting_for: str, **extra: object) -> None:
    """Poll `predicate_js` in the page until it holds; on timeout fail saying what and the notebook's state."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function(predicate_js, arg=js_args(**extra), timeout=timeout_ms)
    except PlaywrightTimeoutError:
        state = notebook_state(page)
        summary = {key: state[key] for key in ("found", "idle", "dialogs", "prompts")}
        seconds = timeout_ms / 1000
        raise AssertionError(f"timed out after {seconds:.0f} s waiting for {waiting_for}; {summary}") from None


class Screenshots:
    """Full-page screenshots of one test, saved under the artifacts folder and listed for failure reports."""

    def __init__(self, page, folder: Path, stem: str) -> None:
        self.page, self.folder, self.stem = page, folder, stem
        self.paths: list[Path] = []

    def take(self, label: str) -> Path:
        """Save a screenshot named STEM-LABEL.png and print its path (pytest shows it when the test fails)."""
        path = self.folder / f"{self.stem}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(f"screenshot: {path}")
        return path

    @contextmanager
    def on_failure(self) -> Iterator[None]:
        """Take a `failed` screenshot if the block raises, and add every screenshot path to the error."""
        try:
            yield
        except BaseException as exc:
            self.take("failed")
            exc.add_note("screenshots:\n" + "\n".join(f"  {path}" for path in self.paths))
            raise


def open_notebook(page, lab: LabServer, name: str) -> None:
    """Open `name` alone in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.notebook_url(name))
    wait_until(page, IDLE_JS, OPEN_TIMEOUT_MS, f"{name} to open with an idle kernel")
    assert_no_dialog(page)


def run_all(page) -> None:
    """Run every cell through the menu (Run > Run All Cells) and wait until the run ends or fails."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    wait_until(page, RUN_FINISHED_JS, RUN_TIMEOUT_MS, "Run All to finish")


def assert_no_dialog(page) -> None:
    """No modal dialog (kernel died, kernel not found, ...) is open."""
    dialogs = notebook_state(page)["dialogs"]
    assert not dialogs, f"JupyterLab shows a dialog: {dialogs}"


def assert_clean(page, *, require_executed: bool) -> dict:
    """No dialog and no error output in the notebook (and, if asked, every non-empty code cell executed)."""
    state = notebook_state(page)
    assert state["found"], f"no visible notebook panel ({PANEL})"
    assert not state["dialogs"], f"JupyterLab shows a dialog: {state['dialogs']}"
    if state["errors"]:
        raise AssertionError("error output(s) in the notebook:\n" + "\n-----\n".join(state["errors"]))
    if require_executed:
        pending = [prompt for prompt in state["prompts"] if not EXECUTED_PROMPT.match(prompt)]
        assert state["prompts"] and not pending, f"cells left unexecuted after Run All: {state['prompts']}"
    return state


def wait_figure_changed(page, before: list[str]) -> list[str]:
    """Wait until the main widget's figure differs from `before` with the kernel idle; return the new one."""
    wait_until(page, FIGURE_CHANGED_JS, WIDGET_TIMEOUT_MS, "the main widget's figure to change", before=before)
    state = assert_clean(page, require_executed=True)
    assert state["widgetImages"] != before, "the figure did not change"
    return state["widgetImages"]


def move_main_control(page, before: list[str]) -> list[str]:
    """Move the main control like a reader (arrow keys on a slider, another option of a dropdown).

    Each step must re-render the figure: waiting after every key press, rather than after the last,
    keeps an idle flicker between queued callbacks from passing for the end of the re-rendering.
    """
    control = page.locator(f"{PANEL} .aestudy-main-control").first
    control.wait_for(state="visible", timeout=WIDGET_TIMEOUT_MS)
    control.scroll_into_view_if_needed()
    classes = control.get_attribute("class") or ""
    if "widget-slider" in classes:
        handle = control.locator(".noUi-handle").first
        key = "ArrowRight"
        for press in range(1, ARROW_PRESSES + 1):
            readout = control.locator(".widget-readout").inner_text()
            handle.focus()
            handle.press(key)
            if control.locator(".widget-readout").inner_text() == readout:
                # At the end of its range the handle does not move: a reader turns round.
                key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
                handle.press(key)
            try:
                before = wait_figure_changed(page, before)
            except AssertionError as exc:
                exc.add_note(f"after {key} press {press} on the main slider (readout was {readout!r})")
                raise
        return before
    if "widget-dropdown" in classes:
        select = control.locator("select").first
        current = select.input_value()
        values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
        others = [value for value in values if value != current]
        assert others, f"the main dropdown has no other option than {current!r}"
        select.select_option(others[0])
        try:
            return wait_figure_changed(page, before)
        except AssertionError as exc:
            exc.add_note(f"after selecting {others[0]!r} (was {current!r}) in the main dropdown")
            raise
    raise AssertionError(f"main control is neither an ipywidgets slider nor a dropdown (classes: {classes})")


def notebook_params() -> list:
    """The series' notebooks plus the toy fixture, each with a readable test id."""
    return [pytest.param(path, id=path.stem) for path in [*NOTEBOOKS, FIXTURE_NOTEBOOK]]


@pytest.mark.parametrize("notebook", notebook_params())
def test_notebook_runs_and_main_widget_rerenders(
    notebook: Path, page, lab_server: LabServer, artifacts_dir: Path
) -> None:
    """Run All shows no error; moving the main control changes the figure in its widget box."""
    shots = Screenshots(page, artifacts_dir, notebook.stem)
    with shots.on_failure():
        open_notebook(page, lab_server, notebook.name)
        run_all(page)
        before = assert_clean(page, require_executed=True)
        shots.take("before")
        assert before["widgetImages"], "no figure (img) inside the .aestudy-widget box holding .aestudy-main-control"

        move_main_control(page, before["widgetImages"])
        shots.take("after")


def test_papermill_run_opens_with_its_figures(
    page, lab_server: LabServer, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A papermill-executed copy (the `runs/` one) opens in JupyterLab, unrun, with its stored figures and no errors."""
    papermill = pytest.importorskip("papermill")
    runs = lab_server.root / "runs"
    runs.mkdir(exist_ok=True)
    executed = runs / FIXTURE_NOTEBOOK.name
    # As `aestudy run` would: the reader's inline backend (PNG outputs), the smoke profile, no stray runtime files.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("AESTUDY_PROFILE", "smoke")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    papermill.execute_notebook(str(FIXTURE_NOTEBOOK), str(executed), cwd=str(runs), progress_bar=False)

    shots = Screenshots(page, artifacts_dir, f"runs-{FIXTURE_NOTEBOOK.stem}")
    with shots.on_failure():
        open_notebook(page, lab_server, f"runs/{executed.name}")
        shots.take("opened")
        state = assert_clean(page, require_executed=True)
        pngs = [src for src in state["images"] if src and src.startswith("data:image/png")]
        assert len(pngs) >= 1, f"no stored PNG figure shown; images: {[src[:40] for src in state['images']]}"
