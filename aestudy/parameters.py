"""The notebooks' parameters: how their values are read, and the one set of rules that checks them.

Every notebook starts with a cell tagged `parameters` (`latent_dim: int = 16  # size of z`). Values for it come
from four places, and all of them are read and checked here, once, before any kernel starts:

* `aestudy run -p NAME VALUE` and sweep grids (`NAME=V1,V2`): VALUE is read as papermill's own `-p` reads it
  (`papermill.cli._resolve_type`): `None`, `True`, `False`, an int, a float (`1e-3`), else the text itself;
  `[...]`/`(...)` are read as Python literals (a list parameter);
* `--params FILE.yaml`: YAML 1.2's core schema (so `1e-3` is a float, `no`/`off` stay text, `010` is 10, dates
  stay text), plus Python's `None` as null, like `-p`; a key given twice is an error;
* the notebook itself (`StudyConfig`, and the lead's `Study` object) passes its plain Python values.

`validate_parameters` checks each value against its rule in `RULES` (type, range, finiteness, choices, and the
cross-checks such as `ood_dataset != dataset`) and, when given the notebook's declarations, against the
notebook's own annotation (`int | None`, `Literal["a", "b"]`, `list[float]`); it returns plain Python values.
Every error is a `ConfigError` naming the parameter, the value and what would be valid.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aestudy.config import DEVICES, PROFILES
from aestudy.data import DATASET_NAMES
from aestudy.denoising import DENOISING_NOISES
from aestudy.errors import ConfigError
from aestudy.validate import as_choice, as_float, as_int, as_seed, is_int, is_number, require

_NONE = type(None)


# ----------------------------------------------------------------------------------------- reading values


def parse_text(text: str) -> Any:
    """A value typed on the command line, read as papermill's `-p` reads it.

    `"None"` -> None, `"True"`/`"False"` -> bools, text `int()` accepts -> int, text `float()` accepts -> float
    (`"1e-3"`, and also `"nan"`/`"inf"`, which the rules then refuse), anything else -> the text unchanged.
    These are papermill's rules (`papermill.cli._resolve_type`, papermill 2.x), so `aestudy run -p` and
    `papermill -p` give a notebook the same value. One addition: text in `[...]` or `(...)` is read as a Python
    literal, for list-valued parameters (papermill needs `-y` for those).
    """
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.strip()[:1] in ("[", "(") and text.strip()[-1:] in ("]", ")"):
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            return text
    return text


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema instead of YAML 1.1's implicit types.

    YAML 1.1 (PyYAML's default) reads `1e-3` as a string, `no`/`off` as False, `010` as 8 and `2024-01-02` as a
    date; YAML 1.2 and every user expect a float, text, 10 and text. `None` is also read as null (as `-p` does).
    """

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith("0x"):
            return int(text, 16)
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text)  # decimal, leading zeros included: 010 is 10 (YAML 1.1 read it as octal 8)


for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|None|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     list("-+0123456789.")),
):
    _YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)
_YamlLoader.add_constructor("tag:yaml.org,2002:int", _YamlLoader.construct_core_int)


def read_yaml(text: str) -> Any:
    """Parse YAML text with the core schema above (raises `yaml.YAMLError` with line and column on bad input)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


# ----------------------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class Annotation:
    """What a parameters-cell annotation admits, read from its text without executing it.

    `types`: the plain types named (`int`, `float`, `str`, `bool`, `list`, `tuple`, `dict`, NoneType);
    `choices`: the values of a `Literal[...]`; `item`: the element annotation of `list[X]` / `tuple[X, ...]`.
    An unknown annotation (a name this reader does not know) admits anything.
    """

    text: str
    types: tuple[type, ...] = ()
    choices: tuple[Any, ...] = ()
    item: Annotation | None = None
    known: bool = True

    def describe(self) -> str:
        """The admitted values in words, e.g. `an int or None`, `one of 'a', 'b' or None`."""
        words = []
        if self.choices:
            words.append("one of " + ", ".join(repr(c) for c in self.choices if c is not None))
        for t in self.types:
            if t is _NONE:
                continue
            name = {int: "an integer", float: "a finite number", str: "a string", bool: "True or False",
                    dict: "a mapping"}.get(t)
            if t in (list, tuple):
                name = f"a list (each item {self.item.describe()})" if self.item else "a list"
            words.append(name or t.__name__)
        if _NONE in self.types or None in self.choices:
            words.append("None")
        return " or ".join(words) if words else "any value"

    def convert(self, value: Any) -> tuple[bool, Any]:
        """(admitted, the value as declared): ints become floats for `float`, lists tuples for `tuple`."""
        if not self.known:
            return True, value
        if any(value == c and type(value) is type(c) for c in self.choices if c is not None):
            return True, value
        if value is None:
            return (_NONE in self.types or None in self.choices), None
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool in self.types, bool(value)
        if is_int(value) and (int in self.types or float in self.types):
            return True, int(value) if int in self.types else float(value)
        if isinstance(value, float) or is_number(value):
            return (float in self.types and is_number(value)), float(value)
        if isinstance(value, str):
            return str in self.types, value
        if isinstance(value, (list, tuple)) and (list in self.types or tuple in self.types):
            items = []
            for element in value:
                ok, element = self.item.convert(element) if self.item else (True, element)
                if not ok:
                    return False, value
                items.append(element)
            return True, (list(items) if list in self.types else tuple(items))
        if isinstance(value, dict):
            return dict in self.types, value
        return False, value


_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict,
                                "tuple": tuple, "None": _NONE, "NoneType": _NONE, "List": list, "Dict": dict,
                                "Tuple": tuple, "Sequence": list}


def _parts(node: ast.expr) -> list[Annotation] | None:
    """The alternatives of an annotation node (a union gives several), or None when unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        try:
            return _parts(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Constant) and node.value is None:
        return [Annotation("None", (_NONE,))]
    if isinstance(node, ast.Name):
        return [Annotation(node.id, (_TYPE_NAMES[node.id],))] if node.id in _TYPE_NAMES else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _parts(node.left), _parts(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Subscript):
        head = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        inner = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Literal":
            try:
                return [Annotation("Literal", choices=tuple(ast.literal_eval(e) for e in inner))]
            except ValueError:
                return None
        if head in ("Optional", "Union"):
            parts = [_parts(e) for e in inner] + ([[Annotation("None", (_NONE,))]] if head == "Optional" else [])
            return None if any(p is None for p in parts) else [a for p in parts for a in p]  # type: ignore[union-attr]
        base = _parts(node.value)
        if base is None or len(base) != 1:
            return None
        if base[0].types[0] in (list, tuple) and inner:
            items = [e for e in inner if not (isinstance(e, ast.Constant) and e.value is Ellipsis)]
            item = _merge(ast.unparse(items[0]), _parts(items[0])) if len(items) == 1 else None
            return [Annotation(base[0].text, base[0].types, item=item)]
        return base
    return None


def _merge(text: str, parts: list[Annotation] | None) -> Annotation:
    if parts is None:
        return Annotation(text, known=False)
    items = [p.item for p in parts if p.item is not None]
    return Annotation(text, tuple(t for p in parts for t in p.types), tuple(c for p in parts for c in p.choices),
                      items[0] if items else None)


def parse_annotation(text: str) -> Annotation:
    """What the annotation `text` (e.g. `"int | None"`, `'Literal["a", "b"]'`) admits."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return Annotation(text, known=False)
    return _merge(text, _parts(node))


# ----------------------------------------------------------------------------------------- the rules


class ParameterError(ConfigError):
    """A ConfigError about one notebook parameter; `parameter` and `notebook` say which (for advice on a fix)."""

    def __init__(self, message: str, *, parameter: str, notebook: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.notebook = notebook


def _num_classes(dataset: Any) -> int:
    from aestudy.data import list_datasets
    from aestudy.imagefiles import is_path

    if isinstance(dataset, str) and dataset not in DATASET_NAMES and is_path(dataset):
        return 0  # a path: its classes are read with the files
    return {row.name: row.num_classes for row in list_datasets()}.get(dataset, 10)


def _check_dataset(value: Any) -> str:
    """A built-in dataset name, or a path (kept as given; `load_dataset` reads and checks the files)."""
    from aestudy.imagefiles import is_path

    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value not in DATASET_NAMES and is_path(value):
        return value
    require(isinstance(value, str) and value in DATASET_NAMES, "dataset", value,
            f"valid values: {', '.join(map(repr, DATASET_NAMES))}, or a path to a folder of images or an .npz/.npy "
            "file")
    return value


def _own_files_only(name: str, value: Any, values: Mapping[str, Any]) -> None:
    """`image_size` and `channels` apply to a path only; a built-in dataset has one fixed shape."""
    dataset = values.get("dataset", "fashion-mnist")
    require(value is None or dataset not in DATASET_NAMES, name, value,
            f"it applies to your own image files only; use None with the built-in dataset {dataset!r}")


def _check_image_size(value: Any, values: Mapping[str, Any]) -> str | None:
    from aestudy.imagefiles import parse_size

    size = parse_size(value, name="image_size")  # raises ConfigError naming the valid forms
    _own_files_only("image_size", value, values)
    return size if size is None or size == "auto" else f"{size[0]}x{size[1]}"  # one spelling: "HxW"


def _check_channels(value: Any, values: Mapping[str, Any]) -> int | None:
    if value is not None:
        require(is_int(value) and int(value) in (1, 3), "channels", value,
                "valid values: None (as found), 1 (grey) or 3 (RGB)")
        value = int(value)
    _own_files_only("channels", value, values)
    return value


def _check_profile(value: Any, values: Mapping[str, Any]) -> str | None:
    return as_choice(value, "profile", (None, *PROFILES))


def _check_seed(value: Any) -> int:
    return as_seed(value, "seed")


def _check_device(value: Any, values: Mapping[str, Any]) -> str:
    require(isinstance(value, str) and (value in DEVICES or re.fullmatch(r"cuda:[0-9]+", value) is not None),
            "device", value, f"valid values: {', '.join(map(repr, DEVICES))} or 'cuda:N' (a GPU index)")
    return value


def _check_anomaly_class(value: Any, values: Mapping[str, Any]) -> int:
    n = _num_classes(values.get("dataset", "fashion-mnist"))
    if n == 0:  # your own images: the classes (if any) are known only once the files are read (notebook 04 checks)
        return as_int(value, "anomaly_class", low=0)  # type: ignore[return-value]
    return as_int(value, "anomaly_class", low=0, high=n - 1)  # type: ignore[return-value]


def _check_ood_dataset(value: Any, values: Mapping[str, Any]) -> str | None:
    from aestudy.data import list_datasets

    rows = {row.name: row for row in list_datasets()}
    dataset = values.get("dataset", "fashion-mnist")
    if _num_classes(dataset) == 0 and dataset not in rows:  # a path: notebook 04 checks the shape once it is read
        require(value is None or (isinstance(value, str) and value in rows), "ood_dataset", value,
                f"valid values: None (no out-of-distribution set) or one of {', '.join(map(repr, rows))}")
        if value is not None:
            require(rows[value].available, "ood_dataset", value,
                    f"{value} is not on this machine; fetch it first (aestudy data fetch {value}) or use None")
        return value
    shape = rows[dataset].shape if dataset in rows else (1, 28, 28)
    # Scored by the models trained on `dataset`, so the OOD images must have its image shape.
    others = [name for name in DATASET_NAMES if name != dataset and name in rows and rows[name].shape == shape]
    require(value is None or (isinstance(value, str) and value in others), "ood_dataset", value,
            f"valid values: None (digits, or fashion-mnist when training on digits) or one of "
            f"{', '.join(map(repr, others))} (a dataset other than the training dataset {dataset!r}, with its "
            f"image shape {'x'.join(map(str, shape))})")
    if value is not None:
        require(rows[value].available, "ood_dataset", value,
                f"{value} is not on this machine; fetch it first (aestudy data fetch {value}) or use None")
    return value


@dataclass(frozen=True)
class Rule:
    """The rule of one notebook parameter: its declared annotation, what it means, and its check.

    `check(value, values)` returns the plain, converted value or raises ConfigError; `values` holds the other
    parameters already checked (for cross-checks such as `ood_dataset != dataset`).
    """

    name: str
    annotation: str
    meaning: str
    check: Callable[[Any, Mapping[str, Any]], Any]


def _rule(name: str, annotation: str, meaning: str, check: Callable[[Any], Any]) -> Rule:
    return Rule(name, annotation, meaning, lambda value, _values: check(value))


# The order matters: cross-checks (anomaly_class, ood_dataset) read the dataset checked before them.
RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("profile", "str | None", "size of every computation; None -> $AESTUDY_PROFILE or 'standard'", _check_profile),
    _rule("dataset", "str", "the training dataset: a name, or a path to a folder of images or an .npz/.npy file",
          lambda v: _check_dataset(v)),
    Rule("image_size", "str | None", "your own images only: None (their one size), 'auto' (the most common size), "
         "'S' or 'HxW' (resize and center-crop)", _check_image_size),
    Rule("channels", "int | None", "your own images only: None (as found), 1 (grey) or 3 (RGB)", _check_channels),
    _rule("latent_dim", "int", "size of z", lambda v: as_int(v, "latent_dim", low=1)),
    # >= 1: every notebook measures its training curve (03's convergence needs one epoch at least).
    _rule("epochs", "int | None", "training epochs; None -> the profile's default",
          lambda v: as_int(v, "epochs", low=1, allow_none=True, none_means="the profile's default")),
    _rule("batch_size", "int", "minibatch size", lambda v: as_int(v, "batch_size", low=1)),
    _rule("lr", "float", "Adam learning rate",
          lambda v: as_float(v, "lr", low=0, high=10, low_open=True, high_open=True)),
    _rule("seed", "int", "global RNG seed", lambda v: _check_seed(v)),
    Rule("device", "str", "'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'", _check_device),
    _rule("beta", "float", "KL weight of notebook 02's main VAE (1 = the ELBO)", lambda v: as_float(v, "beta", low=0)),
    _rule("n_seeds", "int | None", "training seeds per model; None -> the profile's default",
          lambda v: as_int(v, "n_seeds", low=1, allow_none=True, none_means="the profile's default")),
    _rule("beta_vae", "float", "KL weight of the β-VAE column",
          lambda v: as_float(v, "beta_vae", low=0, low_open=True)),
    _rule("dae_noise", "float", "σ of the Gaussian input noise the DAE learns to remove",
          lambda v: as_float(v, "dae_noise", low=0, low_open=True)),
    _rule("train_noise", "str", "noise the denoisers learn to remove",
          lambda v: as_choice(v, "train_noise", DENOISING_NOISES)),
    _rule("train_noise_level", "float", "σ for 'gaussian', the corrupted share p for 'salt_pepper'",
          lambda v: as_float(v, "train_noise_level", low=0, high=1, low_open=True)),
    Rule("anomaly_class", "int", "class left out of training and scored as the anomaly", _check_anomaly_class),
    Rule("ood_dataset", "str | None", "out-of-distribution dataset; None -> digits (fashion-mnist for digits)",
         _check_ood_dataset),
)}


def validate_parameter(name: str, value: Any, values: Mapping[str, Any] | None = None) -> Any:
    """One parameter's value, checked by its rule (see RULES) and returned as a plain Python value.

    Raises:
        ConfigError: `"{name}={value!r} is invalid; {what is valid}."`, or for a name without a rule,
            `"unknown parameter ..."` with the valid names.
    """
    if name not in RULES:
        raise ConfigError(f"unknown parameter {name!r}; valid names: {', '.join(sorted(RULES))}.")
    return RULES[name].check(value, values or {})


def validate_parameters(values: Mapping[str, Any], *, notebook: str | None = None,
                        declared: Mapping[str, Annotation] | None = None) -> dict[str, Any]:
    """Check every value with its rule (and its notebook's annotation); return plain converted values.

    Args:
        values: parameter name -> value (from a notebook, the command line, a YAML file or a sweep point).
        notebook: the notebook's name, prefixed to messages (`notebook 04_applications: ...`).
        declared: the notebook's annotations (`notebook_parameters(nb)`); when given, a value must also be
            admitted by its annotation (`Literal[...]` included), and names the notebook declares without a rule
            here are checked by their annotation alone.
    Raises:
        ParameterError: (a ConfigError) naming the notebook, the parameter, the value and what is valid.
    """
    order = [name for name in RULES if name in values] + [name for name in values if name not in RULES]
    checked: dict[str, Any] = {}
    for name in order:
        try:
            value = values[name]
            if name in RULES or declared is None or name not in declared:
                value = validate_parameter(name, value, {**values, **checked})
            if declared is not None and name in declared:
                value = _admitted(name, value, declared[name])
        except ConfigError as exc:
            raise ParameterError(f"notebook {notebook}: {exc}" if notebook else str(exc), parameter=name,
                                 notebook=notebook) from None
        checked[name] = value
    return {name: checked[name] for name in values}


def _admitted(name: str, value: Any, annotation: Annotation) -> Any:
    ok, converted = annotation.convert(value)
    require(ok, name, value, f"the notebook declares `{name}: {annotation.text}`, so it must be "
            f"{annotation.describe()}")
    return converted


# ----------------------------------------------------------------------------------------- parameters cells


@dataclass(frozen=True)
class Parameter:
    """One name of a notebook's `parameters` cell: its default, its declaration line and its annotation."""

    name: str
    default: Any
    declaration: str
    annotation: Annotation


def _parameter(node: ast.stmt, source: str) -> Parameter | None:
    """The Parameter declared by one statement of a parameters cell (None for anything else)."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        name, value = node.target.id, node.value
        annotation = parse_annotation(ast.unparse(node.annotation))
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name, value, annotation = node.targets[0].id, node.value, None
    else:
        return None
    try:
        default = ast.literal_eval(value)
    except ValueError:
        default = None  # not a literal: only the annotation (if any) can type it
    if annotation is None:  # unannotated: the default's type, else anything
        annotation = (parse_annotation(type(default).__name__) if default is not None
                      else Annotation("any", known=False))
    declaration = (ast.get_source_segment(source, node) or name).splitlines()[0].split("  #")[0].strip()
    return Parameter(name, default, declaration, annotation)


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, Parameter]:
    """The names, defaults and annotations declared in a notebook's cell tagged `parameters` (empty if none).

    Read once per version of the file (a sweep checks every grid point against the same notebooks).
    Raises:
        ConfigError: when the cell is not plain Python.
    """
    path = Path(notebook).resolve()
    stat = path.stat()
    return dict(_read_parameters(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_parameters(path: Path, mtime_ns: int, size: int) -> dict[str, Parameter]:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cell = next((c for c in nb.cells
                 if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise ConfigError(f"the parameters cell of {path.name} is not plain Python ({exc.msg}, line "
                          f"{exc.lineno}); it must hold literal assignments only.") from exc
    found = (_parameter(node, cell.source) for node in tree.body)
    return {p.name: p for p in found if p is not None}
