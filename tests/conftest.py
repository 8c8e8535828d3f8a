"""Session-wide test settings: headless plotting and throw-away caches, so tests never touch the user's files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]

# Toy notebooks used as fixtures by the runner and browser tests are not tests themselves (nbval would collect them).
collect_ignore_glob = ["fixtures/*", "e2e/fixtures/*"]


def pytest_configure(config) -> None:
    """Point the model cache and the claims ledger at a fresh temp dir for this session (kernels inherit it)."""
    session_dir = Path(tempfile.mkdtemp(prefix="aestudy-tests-"))
    os.environ.setdefault("AESTUDY_CACHE", str(session_dir / "models"))
    os.environ.setdefault("AESTUDY_METRICS_FILE", str(session_dir / "metrics.json"))
    # Under pytest-xdist (`make test` runs two workers) each worker inherits the controller's variables: the
    # model cache is shared on purpose (its per-key file locks let one worker wait for a model the other trains),
    # the default claims ledger is not (tests read back what they wrote there).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        os.environ["AESTUDY_METRICS_FILE"] = str(session_dir / f"metrics-{worker}.json")
