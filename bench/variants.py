"""Data variants: the clean images of a subset, or one of its AE sets (source network x eps).

One order everywhere (the evaluation loop, the tables, the plots): clean first, then for each eps
every source, the column order of the paper's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CLEAN = "clean"


@dataclass(frozen=True)
class Variant:
    """Clean images (``source == "clean"``, eps 0) or the AE set of ``source`` at ``eps``."""

    source: str
    eps: float

    @property
    def is_clean(self) -> bool:
        return self.source == CLEAN

    @property
    def label(self) -> str:
        """The column title of the tables: ``clean`` or ``eps=10 T-AE``."""
        return CLEAN if self.is_clean else f"eps={self.eps:g} {self.source}-AE"


def variants(eps_list: Sequence[float], sources: Sequence[str] = ("T", "S")) -> list[Variant]:
    """Clean, then for each eps every source."""
    return [Variant(CLEAN, 0.0)] + [Variant(s, float(e)) for e in eps_list for s in sources]
