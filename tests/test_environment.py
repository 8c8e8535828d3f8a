"""environment.yml (conda) and pyproject.toml (pip) must name the same dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
NOT_DEPENDENCIES = {"python", "pip"}  # the conda env's base, not a package aestudy depends on


def normalise(name: str) -> str:
    """PEP 503 name normalisation (case, and runs of - _ . are the same)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, str]:
    """{normalised name: version specifier} from [project] dependencies + extras dev and bench."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + extras["dev"] + extras["bench"]
    return {normalise(req.name): str(req.specifier) for req in map(Requirement, lines)}


def environment_requirements() -> dict[str, str]:
    """{normalised name: version specifier} from environment.yml's conda and pip sections (not `-e .`)."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    lines = []
    for entry in env["dependencies"]:
        lines.extend(entry["pip"] if isinstance(entry, dict) else [entry])
    reqs = {}
    for line in lines:
        if line.startswith("-"):  # pip options such as `-e .` (aestudy itself)
            continue
        name = re.split(r"[=<>!~\[ ]", line, maxsplit=1)[0]
        if normalise(name) in NOT_DEPENDENCIES:
            continue
        spec = line[len(name):].strip()
        reqs[normalise(name)] = str(Requirement(f"x{spec}").specifier)  # conda `==`/`>=` read as pip's
    return reqs


def test_environment_yml_names_the_same_distributions_as_pyproject() -> None:
    assert sorted(environment_requirements()) == sorted(pyproject_requirements())


def test_environment_yml_uses_the_same_version_bounds() -> None:
    assert environment_requirements() == pyproject_requirements()


def test_environment_yml_is_the_aestudy_env_on_python_3_11() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "aestudy"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    pip_section = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    assert "-e ." in pip_section  # installs aestudy itself (and its `aestudy` command)
