"""The defenses a run can name: the built-ins and users' plug-ins.

A defense is named by one of the built-in names below, by ``package.module:Class`` (or
``path/to/file.py:Class``), or by the name of an entry point in the group ``bench.defenses``
(``[project.entry-points."bench.defenses"] mine = "mypkg.defense:MyDefense"``). It is built as
``Class(networks, **options)``; see ``defenses.base`` for the contract.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.errors import DefenseError
from defenses.base import Defense, Networks
from defenses.preprocess import METHODS, InputTransform
from defenses.single import SingleNetwork
from defenses.vote import DisagreementVote, Vote

ENTRY_POINT_GROUP = "bench.defenses"

BUILTINS: dict[str, Callable[..., Defense]] = {
    "T": partial(SingleNetwork, net="T"),
    "S": partial(SingleNetwork, net="S"),
    "A": partial(SingleNetwork, net="A"),
    "TS-vote": partial(Vote, fallback="S"),
    "TA-vote": partial(Vote, fallback="A"),
    "TA-vote-online": partial(Vote, fallback="A", online=True),
    "TA-vote-disagree": DisagreementVote,
    **{method: partial(InputTransform, method=method) for method in METHODS},
}


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_defenses() -> list[str]:
    """Built-in names, then the names installed under the entry-point group."""
    return list(BUILTINS) + sorted(set(_entry_points()) - set(BUILTINS))


def _import_module(module_name: str, spec: str) -> Any:
    """Import a plug-in's module; whatever goes wrong in the user's code becomes one line that
    names the plug-in (the module is the user's, so any exception it raises is the user's to fix).
    """
    try:
        if not module_name.endswith(".py"):
            return importlib.import_module(module_name)
        path = Path(module_name)
        if not path.is_file():
            raise DefenseError(f"defense {spec!r}: no file {path}")
        name = f"bench_defense_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise DefenseError(f"defense {spec!r}: {path} is not a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up here
        module_spec.loader.exec_module(module)
        return module
    except DefenseError:
        raise
    except ModuleNotFoundError as err:
        raise DefenseError(
            f"defense {spec!r}: cannot import {module_name} ({err}); install it, put its folder "
            "on PYTHONPATH, or name the file: path/to/file.py:Class"
        ) from None
    except Exception as err:
        raise DefenseError(
            f"defense {spec!r}: importing {module_name} failed with "
            f"{type(err).__name__}: {err}; fix the plug-in"
        ) from None


def _import_object(spec: str) -> Callable[..., Defense]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DefenseError(f"defense {spec!r} is not of the form package.module:Class")
    module = _import_module(module_name, spec)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise DefenseError(f"defense {spec!r}: module {module_name} has no {attr!r}") from None
    if not callable(obj):
        raise DefenseError(f"defense {spec!r} is not a class or factory")
    return obj


def load_defense(spec: str) -> Callable[..., Defense]:
    """The class (or factory) a defense name stands for; nothing is built yet.

    ``spec``: a built-in name (``available_defenses()``), ``package.module:Class``,
    ``path/to/file.py:Class``, or an entry-point name of the group ``bench.defenses``.
    """
    if ":" in spec:
        return _import_object(spec)
    if spec in BUILTINS:
        return BUILTINS[spec]
    entry_points = _entry_points()
    if spec in entry_points:
        try:
            return entry_points[spec].load()
        except Exception as err:
            raise DefenseError(
                f"defense {spec!r}: its entry point {entry_points[spec].value} does not load "
                f"({err}); reinstall the package that provides it"
            ) from None
    raise DefenseError(
        f"unknown defense {spec!r}; choose from {', '.join(available_defenses())}, "
        "or name a class as package.module:Class"
    )


def build_defense(spec: str, networks: Networks, **options: Any) -> Defense:
    """Load ``spec`` and build it as ``Class(networks, **options)``; checks the result.

    Raises ``DefenseError`` for unknown names, options the class does not take, and objects
    without ``name`` and ``predict``.
    """
    factory = load_defense(spec)
    try:
        inspect.signature(factory).bind(networks, **options)
    except TypeError as err:
        raise DefenseError(
            f"defense {spec!r} cannot be built as Class(networks, **options): {err}"
        ) from None
    defense = factory(networks, **options)
    if not isinstance(defense, Defense) or not isinstance(defense.name, str):
        raise DefenseError(
            f"defense {spec!r} built a {type(defense).__name__}, which lacks a str 'name' or a "
            "'predict(images)' method (see defenses/base.py)"
        )
    return defense
