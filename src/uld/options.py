"""Typed options from YAML / `key=value` text: one parser for every dataclass of settings.

YAML and the command line deliver strings, ints, floats and lists; a dataclass field's type
hint says what the value must become. `coerce` converts one value (with a one-sentence
`UldError` naming the option), `from_mapping` builds a whole dataclass and rejects unknown
keys with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from uld.errors import UldError, unknown_choice


def coerce(key: str, hint: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the type `hint`; `key` names the option in the error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise UldError(f"option {key} cannot be empty")
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return coerce(key, inner[0], value)
    try:
        if hint is Any:
            return value
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # YAML reads "1e-3" as a string: float() accepts it
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            inner = args[0] if args else Any
            return origin(coerce(f"{key}[{i}]", inner, v) for i, v in enumerate(items))
    except (TypeError, ValueError):
        pass
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise UldError(f"option {key} expects {_article(name)} {name}, got {value!r}")


def _article(name: str) -> str:
    return "an" if name[:1] in "aeiou" else "a"


def from_mapping(cls: type, values: Mapping[str, Any] | None, prefix: str = "", renamed: Mapping[str, str] | None = None):
    """An instance of dataclass `cls` from `values`, each coerced to its field's type.

    Unknown keys raise "unknown option 'prefix.key'; did you mean ...". `renamed` maps old key
    names to new ones: an old name is refused with the new one in the message.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in fields:
            if renamed and key in renamed:
                raise UldError(f"option {prefix}{key} was renamed: use {prefix}{renamed[key]}")
            raise unknown_choice("option", f"{prefix}{key}", [f"{prefix}{f}" for f in sorted(fields)])
        kwargs[key] = coerce(f"{prefix}{key}", hints[key], value)
    return cls(**kwargs)


# Range checks shared by every options class; each raises one sentence naming the option.


def check_finite(key: str, value: float) -> None:
    if not math.isfinite(value):
        raise UldError(f"option {key} must be a finite number, got {value}")


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """`low <= value <= high` (strict where `*_open`), and finite."""
    check_finite(key, value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is not None and high is not None:
            want = f"in {lo}, {hi}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low:g}"
        else:
            want = f"{'<' if high_open else '<='} {high:g}"
        raise UldError(f"option {key} must be {want}, got {value:g}")
