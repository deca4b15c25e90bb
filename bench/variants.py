"""Data variants: the clean images of a subset, or one of its AE sets.

An AE set is named by its threat model (``transfer``, ``joint``, ``white-box``), its attack (the
suite's label, e.g. ``llcm``, ``apgd-ce``), its source (the network or surface it was built on:
``T``, ``S``, ``T+S``, ``jpeg(T)``, ...) and eps. One order everywhere (the evaluation loop, the
tables, the plots): clean first, then per eps every source, as in the paper's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CLEAN = "clean"
TRANSFER, JOINT, WHITE_BOX = "transfer", "joint", "white-box"
#: the threat of the rows that hold a defense's worst case over every attack at one eps
WORST_CASE = "worst-case"
#: the threat of the rows that hold a defense's worst case at a mark of the attacks' budgets
#: (``attack`` = the mark: 1/4, 1/2, 1/1); read by the report's convergence section only
WORST_CASE_AT_MARK = "worst-case-at-mark"
#: the marks' names, as ``attacks.best_iterate.MARK_SHARES``
MARK_NAMES = ("1/4", "1/2", "1/1")
#: a worst case that fell by more than this many mIoU points from the mark at half the budget to
#: the end, or by more than half of it without slowing down, has not converged (the check "not
#: converged", the report's convergence table; ``bench.report.tables.budget_fall``)
CONVERGED_POINTS = 1.0
#: the source name of the joint threat model's sets
JOINT_SOURCE = "T+S"


@dataclass(frozen=True)
class Variant:
    """Clean images (``threat == "clean"``, eps 0) or an AE set."""

    source: str
    eps: float
    threat: str = TRANSFER
    attack: str = "llcm"

    @property
    def is_clean(self) -> bool:
        return self.threat == CLEAN

    @property
    def label(self) -> str:
        """The column title of the tables: ``clean``, ``eps=10 T-AE`` (the paper's transfer
        attack), ``eps=10 apgd-ce S-AE``, ``eps=10 apgd-ce joint``, ``eps=10 apgd-ce white-box``."""
        if self.is_clean:
            return CLEAN
        if self.threat == TRANSFER:
            name = (
                f"{self.source}-AE" if self.attack == "llcm" else f"{self.attack} {self.source}-AE"
            )
            return f"eps={self.eps:g} {name}"
        return f"eps={self.eps:g} {self.attack} {self.threat}"


CLEAN_VARIANT = Variant(CLEAN, 0.0, CLEAN, CLEAN)


def variants(
    eps_list: Sequence[float], sources: Sequence[str] = ("T", "S"), attack: str = "llcm"
) -> list[Variant]:
    """Clean, then for each eps every transfer source of ``attack``: the paper's columns."""
    return [CLEAN_VARIANT] + [
        Variant(s, float(e), TRANSFER, attack) for e in eps_list for s in sources
    ]
