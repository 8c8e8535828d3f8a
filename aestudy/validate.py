"""The one set of validators for user values: type, range and finiteness, checked once at the door.

Every config dataclass, loader and command-line entry point checks its values with these, so a wrong value is
named with its parameter and the fix, the same way everywhere, before any long work starts. The converters
return *plain Python* values (a numpy scalar from a grid becomes an `int`/`float`), because configs are hashed
into cache keys and stored in checkpoints that `torch.load(weights_only=True)` must read back.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from aestudy.errors import ConfigError


def require(cond: bool, name: str, value: Any, valid: str) -> None:
    """Raise `ConfigError("{name}={value!r} is invalid; {valid}.")` unless `cond`.

    `valid` says what is accepted (and so how to fix it), e.g. "it must be an integer >= 1".
    """
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid; {valid}.")


def is_int(value: Any) -> bool:
    """True for Python and numpy integers; False for bools (``True`` is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for finite real numbers (Python or numpy); False for bools, NaN and ±inf."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _bound_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _valid_text(kind: str, bounds: str, allow_none: bool, none_means: str, meaning: str) -> str:
    """What a value must be, e.g. "it must be None (all images) or an integer >= 1 (seeds)"."""
    return ("it must be " + (f"None ({none_means}) or " if allow_none else "") + kind + (f" {bounds}" if bounds else "")
            + (f" ({meaning})" if meaning else ""))


def as_int(value: Any, name: str, *, low: int | None = None, high: int | None = None,
           allow_none: bool = False, none_means: str = "", meaning: str = "") -> int | None:
    """`value` as a plain `int`, checked against `low <= value <= high`.

    Raises:
        ConfigError: naming `name`, when `value` is not an integer (bools and floats are refused: ``2.0`` epochs
            is a typo more often than not) or out of range. `none_means` explains None where it is allowed;
            `meaning` says what the parameter is, so the message reads "…; it must be an integer >= 1 (seeds)".
    """
    if value is None and allow_none:
        return None
    valid = _valid_text("an integer", _bound_text(low, high, False, False), allow_none, none_means, meaning)
    require(is_int(value), name, value, valid)
    number = int(value)
    require((low is None or number >= low) and (high is None or number <= high), name, value, valid)
    return number


def as_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False, allow_none: bool = False,
             none_means: str = "", meaning: str = "") -> float | None:
    """`value` as a plain finite `float`, checked against the (open or closed) bounds.

    Raises:
        ConfigError: naming `name`, when `value` is not a real number, is NaN/±inf, or is out of range.
    """
    if value is None and allow_none:
        return None
    valid = _valid_text("a finite number", _bound_text(low, high, low_open, high_open), allow_none, none_means,
                        meaning)
    require(is_number(value), name, value, valid)
    number = float(value)
    ok_low = low is None or (number > low if low_open else number >= low)
    ok_high = high is None or (number < high if high_open else number <= high)
    require(ok_low and ok_high, name, value, valid)
    return number


def as_bool(value: Any, name: str) -> bool:
    """`value` as a plain `bool` (numpy bools accepted; 0/1 and strings refused)."""
    require(isinstance(value, (bool, np.bool_)), name, value, "it must be True or False")
    return bool(value)


def as_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """`value` when it is one of `choices` (compared with ==, types kept), else a ConfigError listing them."""
    choices = tuple(choices)
    shown = ", ".join("None" if c is None else repr(c) for c in choices)
    require(any(value == c and type(value) is type(c) or (value is None and c is None) for c in choices),
            name, value, f"valid values: {shown}")
    return value


SEED_MAX = 2**32 - 1  # numpy's legacy seeding and most samplers take 32-bit seeds


def as_seed(value: Any, name: str = "seed") -> int:
    """`value` as a plain `int` seed in [0, 2**32): the range every seeded component here accepts.

    Raises:
        ConfigError: naming `name`, for a non-integer, a negative value or one of 2**32 or more.
    """
    seed = as_int(value, name, low=0)
    require(seed <= SEED_MAX, name, value, "it must be an integer >= 0 and < 2**32")
    return seed  # type: ignore[return-value]
