"""ARCHITECTURE.md is the map of the package: every module listed, nothing listed that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listed() -> set[str]:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", text, flags=re.MULTILINE))


def _modules() -> set[str]:
    package = REPO / "aestudy"
    return {p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}


def test_every_module_is_listed_with_its_job():
    missing = sorted(_modules() - _listed())
    assert not missing, f"ARCHITECTURE.md's module table does not list {missing}: add a row saying its one job"


def test_every_listed_module_exists():
    stale = sorted(_listed() - _modules())
    assert not stale, f"ARCHITECTURE.md lists {stale}, which do not exist: remove or rename the rows"


def test_no_top_level_module_is_named_after_a_notebook_or_is_a_grab_bag():
    top = {m.removesuffix(".py") for m in _modules() if "/" not in m}
    banned = {"experiments", "comparison", "applications", "notebook01", "utils", "helpers", "misc", "common"}
    assert not top & banned, f"top-level modules named after a notebook or a grab bag: {sorted(top & banned)}"
