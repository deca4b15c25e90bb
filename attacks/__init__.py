"""Attacks on segmentation networks: the native, exact LLCM and extra attacks through ART.

    from attacks import build_attack
    attack = build_attack("llcm")                     # or LLCM(rounding="floor")
    adv = attack(model, images, eps=10)               # uint8 (N,3,H,W) -> uint8 (N,3,H,W)

Names: llcm (native, paper Section 3.4), apgd (native, SEA's segmentation APGD), segpgd and
cospgd (native, ``attacks.segpgd``, ``attacks.cospgd``), square (native, gradient-free random
search), fgsm, bim, pgd, mifgsm (ART, ``attacks.art``). Every attack also runs on several networks
at once (``attacks.objectives.Ensemble``).
"""

from attacks.apgd import APGD
from attacks.base import (
    ATTACKS_VERSION,
    Attack,
    AttackBase,
    AttackResult,
    IterativeAttack,
    check_eps,
    run_attack,
)
from attacks.cospgd import CosPGD
from attacks.llcm import LLCM
from attacks.registry import ATTACK_NAMES, attack_class, build_attack
from attacks.segpgd import SegPGD
from attacks.square import Square
from bench.errors import AttackError

__all__ = [
    "APGD",
    "ATTACKS_VERSION",
    "ATTACK_NAMES",
    "LLCM",
    "Attack",
    "AttackBase",
    "AttackError",
    "AttackResult",
    "CosPGD",
    "IterativeAttack",
    "SegPGD",
    "Square",
    "attack_class",
    "build_attack",
    "check_eps",
    "run_attack",
]
