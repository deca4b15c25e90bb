"""Iterative least-likely class method (LLCM), exactly as the paper's Section 3.4.

Kurakin et al. (2017) and Arnab et al. (2018) for segmentation: every pixel is pushed towards the
class the network finds least likely. x_adv = x + r (eq. 5) with ||r||_inf <= eps (eq. 6), a step
of lambda = 1 gray value per iteration, ceil(min(eps + 4, 1.25 eps)) iterations, and the target
taken once from the attacked network on the clean image.
"""

from __future__ import annotations

import math

from attacks.base import IterativeAttack
from bench.errors import AttackError

ROUNDINGS = ("ceil", "floor")
TARGETS = ("fixed", "per_step")


class LLCM(IterativeAttack):
    """Iterative LLCM: ``LLCM()(model, images, eps=10)``.

    Args:
        rounding: ``ceil`` (the paper: eps 1 -> 2, eps 10 -> 13 iterations) or ``floor`` (the rule
            of torchattacks and TUBSRobustCheck: 1 and 12 iterations).
        target: ``fixed`` (the least-likely class per pixel on the clean image, the paper) or
            ``per_step`` (recomputed from the current adversarial image at every step, as Arnab
            et al. 2018 do).
        step: lambda, gray values per iteration (1 in the paper).

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255.
        returns: (N, 3, H, W) uint8 with ||returned - images||_inf <= eps.
    """

    name = "llcm"
    targeted = True

    def __init__(self, *, rounding: str = "ceil", target: str = "fixed", step: float = 1.0) -> None:
        super().__init__(step=step)
        if rounding not in ROUNDINGS:
            raise AttackError(
                f"unknown LLCM rounding {rounding!r}; choose from {', '.join(ROUNDINGS)}"
            )
        if target not in TARGETS:
            raise AttackError(f"unknown LLCM target {target!r}; choose from {', '.join(TARGETS)}")
        self.rounding = rounding
        self.target = target
        self.target_per_step = target == "per_step"

    def n_iter(self, eps: float) -> int:
        """Iterations at ``eps``: ceil (or floor) of min(eps + 4, 1.25 eps)."""
        bound = min(eps + 4, 1.25 * eps)
        return math.ceil(bound) if self.rounding == "ceil" else math.floor(bound)
