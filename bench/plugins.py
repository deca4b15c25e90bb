"""Users' own code named in a config: ``package.module:name`` or ``path/to/file.py:name``.

One loader for every kind of plug-in (defenses, network architectures). Whatever goes wrong in
the user's module becomes one line that names the plug-in: the module is the user's, so any
exception its import raises, ``SystemExit`` included, is the user's to fix (``KeyboardInterrupt``
stays the user's Ctrl-C). That exception stays the error's cause, so
``BENCH_DEBUG=1`` shows where in the plug-in it happened.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import sysconfig
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def is_spec(text: str) -> bool:
    """True for ``module:name`` / ``file.py:name`` (what names a plug-in, not a built-in)."""
    return ":" in text


def _users_file(module_name: str) -> Path | None:
    """The user's own file of a top-level module named like a standard-library one
    (``random.py`` in a folder on ``sys.path``), or None: ``import random`` would return the
    standard library's module, already loaded, and the user's never runs."""
    if "." in module_name or module_name not in sys.stdlib_module_names:
        return None
    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    folders = [p for p in sys.path if Path(p or ".").resolve() not in stdlib]
    found = importlib.machinery.PathFinder.find_spec(module_name, folders)
    if found is None or found.origin is None or not found.origin.endswith(".py"):
        return None  # a built-in or frozen module, or no file of the user's
    origin = Path(found.origin).resolve()
    return None if any(origin.is_relative_to(d) for d in stdlib) else origin


def _import_file(path: Path, spec: str, kind: str, error: type[BenchError]) -> Any:
    """The module of ``path``, under a private name that never shadows another module."""
    name = f"bench_plugin_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise error(f"{kind} {spec!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    module_spec.loader.exec_module(module)
    return module


def _import_module(module_name: str, spec: str, kind: str, error: type[BenchError]) -> Any:
    try:
        if not module_name.endswith(".py"):
            users = _users_file(module_name)
            if users is not None:
                return _import_file(users, spec, kind, error)
            return importlib.import_module(module_name)
        path = Path(module_name)
        if not path.is_file():
            raise error(f"{kind} {spec!r}: no file {path}")
        return _import_file(path, spec, kind, error)
    except BenchError:
        raise
    except ModuleNotFoundError as err:
        raise error(
            f"{kind} {spec!r}: cannot import {module_name} ({err}); install it, put its folder "
            "on PYTHONPATH, or name the file: path/to/file.py:name"
        ) from err
    except Exception as err:
        raise error(
            f"{kind} {spec!r}: importing {module_name} failed with "
            f"{type(err).__name__}: {err}; fix the plug-in"
        ) from err
    except SystemExit as err:  # sys.exit() in the plug-in's module; Ctrl-C is let through
        raise error(
            f"{kind} {spec!r}: importing {module_name} called sys.exit({err.code!r}); a "
            "plug-in must not exit when imported: fix the plug-in"
        ) from err


def load_object(spec: str, kind: str, error: type[BenchError]) -> Any:
    """The callable ``spec`` names; ``error`` (one line naming ``kind`` and ``spec``) otherwise."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise error(f"{kind} {spec!r} is not of the form package.module:name or file.py:name")
    module = _import_module(module_name, spec, kind, error)
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        hint = (
            f" (it is the standard library's {module_name}; name your file instead: "
            f"path/to/{module_name}.py:{attr})"
            if module_name in sys.stdlib_module_names
            else ""
        )
        raise error(f"{kind} {spec!r}: module {module_name} has no {attr!r}{hint}") from err
    if not callable(obj):
        raise error(f"{kind} {spec!r} is not a class or factory")
    return obj
