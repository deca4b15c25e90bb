"""Users' own code named in a config: ``package.module:name`` or ``path/to/file.py:name``.

One loader for every kind of plug-in (defenses, network architectures). Whatever goes wrong in
the user's module becomes one line that names the plug-in: the module is the user's, so any
exception its import raises, ``SystemExit`` included, is the user's to fix (``KeyboardInterrupt``
stays the user's Ctrl-C). That exception stays the error's cause, so
``BENCH_DEBUG=1`` shows where in the plug-in it happened.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def is_spec(text: str) -> bool:
    """True for ``module:name`` / ``file.py:name`` (what names a plug-in, not a built-in)."""
    return ":" in text


def _import_module(module_name: str, spec: str, kind: str, error: type[BenchError]) -> Any:
    try:
        if not module_name.endswith(".py"):
            return importlib.import_module(module_name)
        path = Path(module_name)
        if not path.is_file():
            raise error(f"{kind} {spec!r}: no file {path}")
        name = f"bench_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise error(f"{kind} {spec!r}: {path} is not a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up here
        module_spec.loader.exec_module(module)
        return module
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
        raise error(f"{kind} {spec!r}: module {module_name} has no {attr!r}") from err
    if not callable(obj):
        raise error(f"{kind} {spec!r} is not a class or factory")
    return obj
