"""Browser-test fixtures: a throw-away JupyterLab server from the venv and a headless Debian Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
JUPYTER_LAB = VENV / "bin" / "jupyter-lab"
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, never `playwright install`: no downloads, no sandbox (containers), nothing phoning home.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIXTURE_NOTEBOOK = Path(__file__).parent / "fixtures" / "widget_demo.ipynb"
ARTIFACTS = REPO / "tests" / "artifacts" / "e2e"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.25
# Settings a reader never sees but a test must: no news/update pop-ups, every cell attached to the DOM.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}
LAB_CONFIG = """\
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
"""


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: where it listens, its token, the folder it serves and its log file."""

    base_url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        """URL that opens `name` alone in a fresh workspace (`reset`: restored tabs would hide it)."""
        return f"{self.base_url}/lab/tree/{name}?reset&token={self.token}"

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API; return the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(f"{self.base_url}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every session and kernel, so notebooks tested one after another never hold memory together."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_lab_home(home: Path) -> dict[str, str]:
    """Create Jupyter config/data/runtime/settings dirs under `home`; return the env vars pointing at them."""
    dirs = {name: home / name for name in ("config", "data", "runtime", "settings")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    (dirs["config"] / "jupyter_lab_config.py").write_text(LAB_CONFIG, encoding="utf-8")
    (dirs["settings"] / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=1), encoding="utf-8")
    return {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_PATH": str(VENV / "share" / "jupyter"),  # where the `aestudy` kernel spec is registered
    }


def lab_environment(home: Path) -> dict[str, str]:
    """The server's (and so its kernels') environment: the user's, isolated dirs, the smoke profile."""
    env = {**os.environ, **write_lab_home(home), "AESTUDY_PROFILE": "smoke"}
    # The test session forces matplotlib's Agg backend; a reader's kernel uses the inline one (PNG outputs).
    env.pop("MPLBACKEND", None)
    return env


def lab_command(root: Path, home: Path, port: int, token: str) -> list[str]:
    """The jupyter-lab command line: loopback only, fixed port, token auth, no browser."""
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers, CI
    return [
        str(JUPYTER_LAB),
        *as_root,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # fail rather than silently move to another port
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={home / 'settings'}",  # holds overrides.json
    ]


def server_answers(base_url: str, token: str) -> bool:
    """Whether the server's REST API answers /api/status with 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until_ready(proc: subprocess.Popen, base_url: str, token: str, log: Path) -> None:
    """Poll /api/status until it answers; fail with the server log if it exits or takes too long."""
    waited = 0.0
    while not server_answers(base_url, token):
        try:
            code = proc.wait(timeout=POLL_S)  # doubles as the pause between polls
        except subprocess.TimeoutExpired:
            waited += POLL_S
            if waited > START_TIMEOUT_S:
                pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT_S:.0f} s; log: {log}\n{tail(log)}")
            continue
        pytest.fail(f"JupyterLab exited with code {code} before it was ready; log: {log}\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM (it shuts its kernels down), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file (for failure messages)."""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextmanager
def running_lab(root: Path, home: Path) -> Iterator[LabServer]:
    """Run JupyterLab on `root` as its own process until the block exits, failure or not."""
    env = lab_environment(home)
    port, token = free_port(), token_hex(24)
    base_url = f"http://127.0.0.1:{port}"
    log = home / "jupyter-lab.log"
    with log.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            lab_command(root, home, port, token),
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_ready(proc, base_url, token, log)
        yield LabServer(base_url=base_url, token=token, root=root, log=log)
    finally:
        stop(proc)


def copy_notebooks(dest: Path) -> Path:
    """Copy the series' notebooks and the toy fixture into `dest`, so runs never write into the repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for notebook in [*NOTEBOOKS, FIXTURE_NOTEBOOK]:
        shutil.copy2(notebook, dest / notebook.name)
    return dest


def require_jupyterlab() -> None:
    """Skip (visibly) when the venv has no jupyter-lab."""
    if not JUPYTER_LAB.exists():
        pytest.skip(f"e2e: {JUPYTER_LAB} not found (run `make setup`)")


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp folder served by JupyterLab, holding copies of the notebooks."""
    return copy_notebooks(tmp_path_factory.mktemp("lab-root"))


@pytest.fixture(scope="session")
def lab_server(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """One JupyterLab server for the whole session (starting one costs seconds)."""
    require_jupyterlab()
    with running_lab(lab_root, tmp_path_factory.mktemp("lab-home")) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright; skipped with the reason when either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"e2e: no browser at {CHROMIUM} (`make browser` installs Debian's chromium as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"e2e: Playwright for Python is not installed ({exc}); it is in the `dev` extra")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, lab_server: LabServer) -> Iterator[object]:
    """A fresh browser context and page per test; afterwards its kernels are shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()
        lab_server.shutdown_kernels()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """The git-ignored folder for screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
