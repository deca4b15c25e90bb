"""The defenses a run can name: the built-ins and users' plug-ins.

A defense is named by one of the built-in names below, by ``package.module:Class`` (or
``path/to/file.py:Class``), or by the name of an entry point in the group ``bench.defenses``
(``[project.entry-points."bench.defenses"] mine = "mypkg.defense:MyDefense"``). It is built as
``Class(networks, **options)``; see ``defenses.base`` for the contract.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.errors import BenchError, DefenseError
from bench.registry import Registry
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
    "AT": partial(SingleNetwork, net="AT"),
    "TAT-vote": partial(Vote, fallback="A", adaptive="AT"),
    **{method: partial(InputTransform, method=method) for method in METHODS},
}


#: the networks each built-in reads (a run finetunes A only when a defense reads it)
BUILTIN_NEEDS: dict[str, tuple[str, ...]] = {
    "T": ("T",),
    "S": ("S",),
    "A": ("A",),
    "TS-vote": ("T", "S", "A"),
    "TA-vote": ("T", "S", "A"),
    "TA-vote-online": ("T", "S", "A"),
    "TA-vote-disagree": ("T", "S", "A"),
    "AT": ("AT",),
    "TAT-vote": ("T", "S", "AT"),
    **dict.fromkeys(METHODS, ("T",)),
}
#: the built-ins' options that choose which networks they read: fixed by each built-in's name,
#: so that ``BUILTIN_NEEDS`` holds (the vote with AT in A's place is ``TAT-vote``)
ROLE_OPTIONS = ("net", "fallback", "adaptive")
#: what a plug-in is assumed to read unless its class says otherwise (``needs``)
ALL_NETWORKS = ("T", "S", "A")
#: every role a plug-in may ask for: the adversarially trained AT only on request
ROLES = (*ALL_NETWORKS, "AT")

REGISTRY: Registry[Callable[..., Defense]] = Registry(
    "defense",
    DefenseError,
    BUILTINS,
    plugin_hint="name a class as package.module:Class",
    entry_point_group=ENTRY_POINT_GROUP,
)


def available_defenses() -> list[str]:
    """Built-in names, then the names installed under the entry-point group."""
    return REGISTRY.names()


def load_defense(spec: str) -> Callable[..., Defense]:
    """The class (or factory) a defense name stands for; nothing is built yet.

    ``spec``: a built-in name (``available_defenses()``), ``package.module:Class``,
    ``path/to/file.py:Class``, or an entry-point name of the group ``bench.defenses``.
    """
    return REGISTRY.get(spec)


def is_plugin(spec: str) -> bool:
    """True for a user's defense (a class spec or an entry point), False for a built-in."""
    return spec not in BUILTINS


def networks_needed(spec: str) -> tuple[str, ...]:
    """The roles the defense of ``spec`` reads: a built-in's from ``BUILTIN_NEEDS``, a
    plug-in's from its class attribute ``needs`` (e.g. ``needs = ("T",)``, or ``("T", "AT")``
    for the adversarially trained network), T, S and A when it has none. Raises
    ``DefenseError`` for a ``needs`` that is not a tuple of T, S, A, AT."""
    if not is_plugin(spec):
        return BUILTIN_NEEDS[spec]
    needs = getattr(load_defense(spec), "needs", ALL_NETWORKS)
    if not isinstance(needs, (tuple, list)) or not set(needs) <= set(ROLES):
        raise DefenseError(
            f"defense {spec!r}: needs = {needs!r} must be a tuple of the roles it reads, from "
            f"{', '.join(ROLES)}, e.g. needs = ('T',)"
        )
    return tuple(needs)


def defense_name(spec: str) -> str | None:
    """The row name the defense of ``spec`` will have, where it is known without building it:
    a built-in's is its name, a plug-in class's its ``name`` class attribute (None when only
    its constructor sets one)."""
    if not is_plugin(spec):
        return spec
    name = getattr(load_defense(spec), "name", None)
    return name if isinstance(name, str) else None


def build_defense(spec: str, networks: Networks, **options: Any) -> Defense:
    """Load ``spec`` and build it as ``Class(networks, **options)``; checks the result.

    Raises ``DefenseError`` for unknown names, options the class does not take, objects
    without ``name`` and ``predict``, and any exception a plug-in's constructor raises (one line
    naming the spec; the exception stays its cause).
    """
    factory = load_defense(spec)
    try:
        inspect.signature(factory).bind(networks, **options)
    except TypeError as err:
        raise DefenseError(
            f"defense {spec!r} cannot be built as Class(networks, **options): {err}"
        ) from err
    try:
        defense = factory(networks, **options)
    except BenchError:
        raise
    except Exception as err:
        if not is_plugin(spec):
            raise  # a built-in's failure is a bug: its traceback stays
        raise DefenseError(
            f"defense {spec!r}: its constructor failed with {type(err).__name__}: {err}; fix "
            "the plug-in (BENCH_DEBUG=1 shows where)"
        ) from err
    if not isinstance(defense, Defense) or not isinstance(defense.name, str):
        raise DefenseError(
            f"defense {spec!r} built a {type(defense).__name__}, which lacks a str 'name' or a "
            "'predict(images)' method (see defenses/base.py)"
        )
    return defense
