"""Which notebooks run, with which parameters: discovery, `--only`, `-p`/`--params` values routed to the notebooks
that declare them and checked by the notebooks' own rules (`aestudy.parameters`) before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from aestudy.data import DATASET_NAMES
from aestudy.errors import ConfigError
from aestudy.imagefiles import inspect_for_study, is_path, parse_size
from aestudy.parameters import (
    notebook_parameters,
    parse_text,
    read_yaml,
    validate_parameters,
)

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


RUN_LEVEL: tuple[str, ...] = ("profile", "device")


def default_notebooks_dir() -> Path:
    """The repository's `notebooks/` folder."""
    return Path(__file__).resolve().parents[2] / "notebooks"  # aestudy/runner/params.py -> the checkout


def notebook_key(notebook: str | os.PathLike[str]) -> str:
    """The name a notebook's records are filed under: its file stem (e.g. `01_autoencoder_basics`)."""
    return Path(notebook).stem


def discover_notebooks(notebooks_dir: str | os.PathLike[str], only: Sequence[str] | None = None) -> list[Path]:
    """The series `NN_*.ipynb` in order, restricted to the prefixes (or stems) in `only`."""
    folder = Path(notebooks_dir)
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    if not found:
        raise ConfigError(f"no notebooks matching {NOTEBOOK_GLOB} in {folder}; valid values: a folder holding "
                          "the series (see --notebooks-dir).")
    if not only:
        return found
    valid = [nb.name[:2] for nb in found]
    unknown = [sel for sel in only if not any(_selects(sel, nb) for nb in found)]
    if unknown:
        raise ConfigError(f"--only {','.join(unknown)} selects no notebook; valid values: {', '.join(valid)}.")
    return [nb for nb in found if any(_selects(sel, nb) for sel in only)]


def _selects(selector: str, notebook: Path) -> bool:
    return notebook.name[:2] == selector.zfill(2) or notebook.stem == selector


def parse_only(text: str | None) -> list[str] | None:
    """`"01,03"` -> `["01", "03"]` (None: every notebook; a text that names nothing is an error)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"--only {text!r} names no notebook; valid values: number prefixes such as 01,03 "
                          "(or leave --only out to run every notebook).")
    return parts


def load_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping of parameter names to values (read by `parameters.read_yaml`: YAML 1.2, `None` = null)."""
    file = Path(path)
    try:
        data = read_yaml(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--params {file}: cannot read it ({exc.strerror}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--params {file} is not UTF-8 text ({exc.reason}); save it as UTF-8 YAML.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--params {file} is not valid YAML ({' '.join(str(exc).split())}).") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--params {file} must be a YAML mapping of parameter names to values "
                          "(e.g. `latent_dim: 8`).")
    return data


def collect_params(pairs: Sequence[Sequence[str]] | None = None,
                   params_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Merge `--params FILE` with `-p NAME VALUE` pairs (the pairs win); `-p` values read as papermill does.

    Raises ConfigError when one name is given twice with `-p`.
    """
    params = load_params_file(params_file) if params_file else {}
    seen: dict[str, str] = {}
    for name, text in pairs or []:
        if name in seen:
            raise ConfigError(f"-p {name} is given twice ({seen[name]!r}, then {text!r}); give it once.")
        seen[name] = text
        params[name] = parse_text(text)
    return params


def route_parameters(notebooks: Sequence[Path], params: Mapping[str, Any], *,
                     run_level: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Validate `params` against the notebooks; give each notebook only the names it declares, as plain values.

    Every parameter a notebook will run with (its defaults overridden by `params`) is checked with
    `aestudy.parameters.validate_parameters` (the notebooks' own rules, and each notebook's annotation), so a
    value no notebook could run with is refused here, before any folder or kernel exists. `run_level` values
    (profile, device) go to the notebooks that declare them and are never "unknown".
    Raises ConfigError for a name no selected notebook declares (listing the valid names) or an invalid value
    (naming the notebook, the parameter and what is valid).
    """
    declared = {notebook_key(nb): notebook_parameters(nb) for nb in notebooks}
    valid = sorted({name for names in declared.values() for name in names})
    unknown = [name for name in params if not any(name in names for names in declared.values())]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ConfigError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {listed}: not in the parameters "
                          f"cell of any selected notebook ({', '.join(declared)}); valid names: "
                          f"{', '.join(valid) or '(none)'}.")
    given = {**dict(run_level or {}), **dict(params)}
    routed: dict[str, dict[str, Any]] = {}
    own_data: dict[tuple[str, Any, Any], None] = {}  # (path, image_size, channels) the notebooks will load
    for key, names in declared.items():
        mine = {name: value for name, value in given.items() if name in names}
        effective = {**{name: p.default for name, p in names.items()}, **mine}
        checked = validate_parameters(effective, notebook=key,
                                      declared={name: p.annotation for name, p in names.items()})
        routed[key] = {name: _injectable(checked[name]) for name in mine}
        dataset = checked.get("dataset")
        if isinstance(dataset, str) and dataset not in DATASET_NAMES and is_path(dataset):
            own_data[(dataset, checked.get("image_size"), checked.get("channels"))] = None
    for dataset, image_size, channels in own_data:
        check_data(dataset, image_size=image_size, channels=channels)
    return routed


def check_data(dataset: str, *, image_size: str | None = None, channels: int | None = None) -> None:
    """Read your own data once, as the notebooks will, before any folder or kernel exists (issue 17).

    A missing path, an empty folder, a corrupt image, out-of-range arrays, mixed sizes or modes, or fewer images
    than the study needs would otherwise fail some seconds into the first notebook's setup cell, with a
    traceback. Raises the data layer's own DataError (the CLI prints it and exits with code 2); nothing is cached.
    """
    inspect_for_study(dataset, size=parse_size(image_size), channels=channels)


def _injectable(value: Any) -> Any:
    """A value papermill injects as itself: tuples become lists (papermill's Python translator writes a tuple
    as the *string* of its repr, e.g. `lrs = "(0.001, 0.003)"`; a list is written as a list literal)."""
    if isinstance(value, (list, tuple)):
        return [_injectable(v) for v in value]
    return value


def effective_parameters(notebook: Path, routed: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter the notebook runs with: its defaults overridden by the routed values."""
    defaults = {name: p.default for name, p in notebook_parameters(notebook).items()}
    return {**defaults, **routed}
