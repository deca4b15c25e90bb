"""The attacks a config can name: the native LLCM and ART's attacks (imported only when built).

attack = build_attack("llcm")                     # or LLCM(rounding="floor")
adv = attack(model, images, eps=10)               # uint8 (N,3,H,W) -> uint8 (N,3,H,W)
"""

from __future__ import annotations

from typing import Any

from attacks.apgd import APGD
from attacks.base import Attack
from attacks.llcm import LLCM
from bench.errors import AttackError

# ART takes seconds to import, so its attacks are imported only when one is built.
ART_ATTACK_NAMES = ("fgsm", "bim", "pgd", "mifgsm")
NATIVE: dict[str, type] = {LLCM.name: LLCM, APGD.name: APGD}
ATTACK_NAMES = (*NATIVE, *ART_ATTACK_NAMES)


def attack_class(name: str) -> type:
    """The class registered under ``name``; the error lists the valid names."""
    if name in NATIVE:
        return NATIVE[name]
    if name in ART_ATTACK_NAMES:
        from attacks.art import ART_ATTACKS

        return ART_ATTACKS[name]
    raise AttackError(f"unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")


def build_attack(name: str, **options: Any) -> Attack:
    """Build an attack by name with keyword hyper-parameters, e.g. ``build_attack("llcm",
    rounding="floor")``."""
    cls = attack_class(name)
    try:
        return cls(**options)
    except TypeError as err:
        raise AttackError(f"bad options for attack {name!r} ({options}): {err}") from None
