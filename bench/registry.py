"""One shape for every table of names a config can use: attacks, defenses, architectures.

    ARCHITECTURES = Registry("architecture", ModelError, {"erfnet": ERFNet},
                             plugin_hint="name your own as package.module:factory")
    ARCHITECTURES.get("erfnet")           # the class; nothing is built
    ARCHITECTURES.get("mine.py:factory")  # a user's plug-in (bench.plugins)

A name is looked up as a plug-in spec (``module:name``, ``file.py:name``) when the registry
takes plug-ins, then among the built-ins, then among the lazy built-ins (imported on first use),
then among the installed entry points of ``entry_point_group``. Building stays with each
registry's own module: the three build differently (keyword options only, a leading
``networks``, a leading class count) and check what they built differently.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from bench.errors import BenchError
from bench.plugins import is_spec, load_object

T = TypeVar("T")


class Registry(Generic[T]):
    """The names of one kind of thing and what each stands for.

    Args:
        kind: what a name names, for messages ("attack", "defense", "architecture").
        error: the ``BenchError`` subclass raised for unknown or broken names.
        builtins: name -> class or factory (kept, not copied: the module's own table).
        lazy: name -> zero-argument loader of the class, for built-ins whose module is slow to
            import (ART's attacks); listed after ``builtins``.
        plugin_hint: when given, plug-in specs are accepted and the unknown-name error ends with
            this advice (e.g. "name a class as package.module:Class").
        entry_point_group: installed packages may add names under this entry-point group.
    """

    def __init__(
        self,
        kind: str,
        error: type[BenchError],
        builtins: Mapping[str, T],
        *,
        lazy: Mapping[str, Callable[[], T]] | None = None,
        plugin_hint: str | None = None,
        entry_point_group: str | None = None,
    ) -> None:
        self.kind = kind
        self.error = error
        self.builtins = builtins
        self.lazy = dict(lazy or {})
        self.plugin_hint = plugin_hint
        self.entry_point_group = entry_point_group

    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The installed entry points of the group, by name (none without a group)."""
        if self.entry_point_group is None:
            return {}
        found = importlib.metadata.entry_points(group=self.entry_point_group)
        return {ep.name: ep for ep in found}

    def names(self) -> list[str]:
        """Built-in names in registration order, then the installed ones sorted."""
        own = [*self.builtins, *self.lazy]
        return own + sorted(set(self.entry_points()) - set(own))

    def get(self, name: str) -> T:
        """The class or factory ``name`` stands for; nothing is built yet.

        Raises ``error`` (one line) for an unknown name, listing the valid ones, and for a
        plug-in or entry point that does not load.
        """
        if self.plugin_hint is not None and is_spec(name):
            return load_object(name, self.kind, self.error)
        if name in self.builtins:
            return self.builtins[name]
        if name in self.lazy:
            return self.lazy[name]()
        entry_points = self.entry_points()
        if name in entry_points:
            try:
                return entry_points[name].load()
            except Exception as err:
                raise self.error(
                    f"{self.kind} {name!r}: its entry point {entry_points[name].value} does not "
                    f"load ({err}); reinstall the package that provides it"
                ) from err
        hint = f", or {self.plugin_hint}" if self.plugin_hint is not None else ""
        raise self.error(
            f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}{hint}"
        )
