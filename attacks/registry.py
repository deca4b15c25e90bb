"""The attacks a config can name: the native LLCM, APGD, SegPGD, CosPGD and Square, and ART's
attacks (imported only when built).

attack = build_attack("llcm")                     # or LLCM(rounding="floor")
adv = attack(model, images, eps=10)               # uint8 (N,3,H,W) -> uint8 (N,3,H,W)
"""

from __future__ import annotations

from functools import partial
from typing import Any

from attacks.apgd import APGD
from attacks.base import Attack
from attacks.cospgd import CosPGD
from attacks.llcm import LLCM
from attacks.segpgd import SegPGD
from attacks.square import Square
from bench.errors import AttackError
from bench.registry import Registry

# ART takes seconds to import, so its attacks are imported only when one is built.
ART_ATTACK_NAMES = ("fgsm", "bim", "pgd", "mifgsm")


def _art_attack(name: str) -> type:
    from attacks.art import ART_ATTACKS

    return ART_ATTACKS[name]


REGISTRY: Registry[type] = Registry(
    "attack",
    AttackError,
    {
        LLCM.name: LLCM,
        APGD.name: APGD,
        SegPGD.name: SegPGD,
        CosPGD.name: CosPGD,
        Square.name: Square,
    },
    lazy={name: partial(_art_attack, name) for name in ART_ATTACK_NAMES},
)
ATTACK_NAMES = tuple(REGISTRY.names())


def attack_class(name: str) -> type:
    """The class registered under ``name``; the error lists the valid names."""
    return REGISTRY.get(name)


def build_attack(name: str, **options: Any) -> Attack:
    """Build an attack by name with keyword hyper-parameters, e.g. ``build_attack("llcm",
    rounding="floor")``."""
    cls = attack_class(name)
    try:
        return cls(**options)
    except TypeError as err:
        raise AttackError(f"bad options for attack {name!r} ({options}): {err}") from err
