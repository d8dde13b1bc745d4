"""Reading a policy file into typed sections: one loader for every section, so every section
reports a wrong key or type the same way (the file, the section and the key named)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import fields
from typing import Any, Callable, Mapping, get_args, get_origin

__all__ = ["PolicyError", "Check", "build", "plain", "toml_value", "within_01", "at_least"]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, section and key."""


Check = Callable[[str, str], None]  # bad(where, message): raises PolicyError naming the file


def within_01(bad: Check, *pairs: tuple[str, float]) -> None:
    for where, value in pairs:
        if not 0.0 <= value <= 1.0:
            bad(where, f"must be within 0..1, got {value}")


def at_least(bad: Check, low: float, *pairs: tuple[str, float]) -> None:
    for where, value in pairs:
        if value < low:
            bad(where, f"must be >= {low}, got {value}")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table: a table inside a section's table (a task's contract)
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build(cls: Any, raw: Any, source: str, section: str = ""):
    """`cls` (a section dataclass) from a TOML table: only the keys it changes, the rest defaults."""
    where = f"[{section}]" if section else "top level"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source}: {where} must be a table, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    defaults = cls()
    values = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            hint = difflib.get_close_matches(key, known, n=1)
            raise PolicyError(
                f"{source}: {where}: unknown key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(known)}")
            )
        values[key] = _value(hints[key], value, source, f"{section}.{key}" if section else key, getattr(defaults, key))
    return cls(**values)


def _value(kind: Any, value: Any, source: str, key: str, default: Any):
    if dataclasses.is_dataclass(kind):
        return build(kind, value, source, key)
    origin = get_origin(kind)
    if origin is tuple:
        args = get_args(kind)
        if not isinstance(value, list):
            raise PolicyError(f"{source}: {key} must be an array, got {type(value).__name__}")
        item = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise PolicyError(f"{source}: {key} must be an array of 2, got {len(value)}")
        return tuple(_value(item, v, source, key, None) for v in value)
    if origin is not None and origin.__name__ == "Mapping":
        if not isinstance(value, Mapping):
            raise PolicyError(f"{source}: {key} must be a table, got {type(value).__name__}")
        merged = dict(default or {})  # a file can change one entry of a table and keep the rest
        merged.update({k: _value(get_args(kind)[1], v, source, f"{key}.{k}", None) for k, v in value.items()})
        return merged
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise PolicyError(f"{source}: {key} must be {_SCALAR_NAMES[kind]}, got {type(value).__name__}")
    return value


_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
