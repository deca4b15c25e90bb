"""TOML tables to the config's dataclasses: every value checked against its field's type.

Ints become floats where floats are wanted and lists become tuples; anything else of the wrong
type, and any unknown key, is a ``ConfigError`` naming the key, the value and the expected type
(ranges and cross-field rules are ``bench.config.validation``'s).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from bench.errors import ConfigError


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "a table"
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}s"
        return f"a list of {len(args)} {_type_name(args[0])}s"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(hint, str(hint))


def _described(hint: Any) -> str:
    """The type ``hint`` names, as a message says it: "a number", "a list of numbers"."""
    name = _type_name(hint)
    return f"an {name}" if name == "integer" else name if " " in name else f"a {name}"


def _list_example(value: Any, hint: Any, key: str) -> str:
    """How a list is written, for a value that is not one (``1,2`` or an unquoted ``[down9]``,
    which TOML read as a string): its items in TOML, strings quoted, e.g. ``[1, 2]``."""
    if typing.get_origin(hint) is not tuple or isinstance(value, (list, tuple)):
        return ""
    items = [v.strip() for v in str(value).strip("[]").split(",") if v.strip()]
    numbers = all(a in (int, float) for a in typing.get_args(hint) if a is not Ellipsis)
    if not numbers:
        items = [f'"{v.strip(chr(34) + chr(39))}"' for v in items]
    shown = f"[{', '.join(items)}]"
    quoting = "" if numbers else f" (on the command line quote it whole: '{key}={shown}')"
    return f", e.g. {shown}{quoting}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` names (ints become floats where floats are wanted, lists
    become tuples); a ConfigError naming the key, the value and the expected type otherwise."""
    origin = typing.get_origin(hint)
    bad = ConfigError(
        f"{key} = {value!r} is not {_described(hint)}{_list_example(value, hint, key)}; fix it in the "
        "preset or --set"
    )
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            if dataclasses.is_dataclass(args[0]):
                text_field = getattr(args[0], "TEXT_FIELD", None)  # "T" stands for {spec = "T"}
                return tuple(
                    build_dataclass(
                        args[0],
                        {text_field: v} if text_field and isinstance(v, str) else v,
                        f"{key}[{i}].",
                    )
                    for i, v in enumerate(value)
                )
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        value_hint = typing.get_args(hint)[1]
        if value_hint is Any:
            return dict(value)
        return {k: _coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} is not a finite number; give a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"no validation for {hint!r}")  # a field type this module does not know


def build_dataclass(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, recursing into nested dataclasses."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where.rstrip('.')} must be a table, e.g. [{where.rstrip('.')}]")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**kwargs)
