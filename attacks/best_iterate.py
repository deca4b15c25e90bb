"""The iterate an attack returns, and how far it had come at marks of its budget.

An attack that keeps a best iterate judges every iterate on the attacked system's real output
(``attacks.objectives.judge_outputs``: a defense's decision, or a network's own map) and keeps,
per image and per decision, the one with the lowest pixel accuracy. At marks of its budget (1/4,
1/2 and all of its iterations) it records, per image, the per-class intersections and unions of
the output at the best iterate so far: the robust mIoU the attack had reached there, so a number
still falling can be told from a converged one (``bench.stages.results``).

Several decisions on the same networks (the three votes on T, S and A) follow one trajectory
when the attack's steps do not depend on the decision: each keeps its own best iterate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks.objectives import judge_outputs
from bench.data.labels import NUM_CLASSES
from bench.metrics import image_counts

#: where the marks fall, as shares of the budget
MARK_SHARES = (0.25, 0.5, 1.0)


def budget_marks(n_iter: int, offset: int = 0) -> tuple[int, ...]:
    """The iteration counts of the marks of a budget of ``n_iter`` iterations (each at least 1),
    shifted by ``offset`` iterations spent before it.

    >>> budget_marks(5), budget_marks(100), budget_marks(2)
    ((2, 3, 5), (25, 50, 100), (1, 1, 2))
    """
    return tuple(offset + max(1, math.ceil(share * n_iter)) for share in MARK_SHARES)


def mark_counts(decided: Tensor, labels: Tensor) -> Tensor:
    """Per image, the intersections and unions per class of a label map.

    Shapes:
        decided: (N, H, W) int64 trainIds; labels: (N, H, W) int64, 255 = ignore.
        returns: (N, 2, C) int64: [intersections, unions].
    """
    counts = image_counts(decided, labels, NUM_CLASSES)
    return counts[:, : 2 * NUM_CLASSES].view(-1, 2, NUM_CLASSES)


@dataclass(frozen=True)
class Iterates:
    """What an attack that judges its iterates hands back (float, before rounding).

    Shapes:
        best: decision -> (N, 3, H, W) float gray values, the best iterate per image.
        marks: decision -> (N, M, 2, C) int64, the intersections and unions at each mark; empty
            when the system has no single output to judge (several networks, no decision).
        mark_iterations: (M,) the iteration counts of the marks.
    """

    best: dict[str, Tensor]
    marks: dict[str, Tensor]
    mark_iterations: tuple[int, ...]


class BestIterates:
    """Per decision and image: the iterate of the lowest judged pixel accuracy so far, and the
    marks (``budget_marks``) reached.

    Args:
        model: the attacked network or ``Ensemble`` (its decisions judge).
        labels: (N, H, W) int64 trainIds, 255 = ignore.
        marks: the iteration counts at which to record; ``judge`` is told how many iterations
            are done (0: the start).
    """

    def __init__(self, model: nn.Module, labels: Tensor, marks: Sequence[int]) -> None:
        self.model, self.labels = model, labels
        self.mark_iterations = tuple(marks)
        self.best: dict[str, Tensor] = {}
        self.accuracy: dict[str, Tensor] = {}
        self._maps: dict[str, Tensor | None] = {}
        self._marks: dict[str, list[Tensor]] = {}
        self._recorded = 0  # marks recorded so far

    @torch.no_grad()
    def judge(self, adv: Tensor, outputs: Tensor | Sequence[Tensor], done: int) -> Tensor:
        """Judge the iterate ``adv`` (after ``done`` iterations) on the model's ``outputs`` at
        it; returns, per image, whether it is a new best for any decision ((N,) bool)."""
        shape = (-1, *([1] * (adv.ndim - 1)))
        improved = torch.zeros(len(adv), dtype=torch.bool, device=adv.device)
        for name, (accuracy, decided) in judge_outputs(self.model, outputs, self.labels).items():
            if name not in self.best:
                self.best[name], self.accuracy[name] = adv.clone(), accuracy.clone()
                self._maps[name] = decided
                improved[:] = True
                continue
            lower = accuracy < self.accuracy[name]
            self.best[name] = torch.where(lower.view(shape), adv, self.best[name])
            self.accuracy[name] = torch.minimum(accuracy, self.accuracy[name])
            if decided is not None:
                self._maps[name] = torch.where(lower.view(shape[:-1]), decided, self._maps[name])
            improved |= lower
        self._record(done)
        return improved

    def all_wrong(self) -> bool:
        """Whether every labelled pixel of every image is wrong for every decision."""
        return all(bool((accuracy == 0).all()) for accuracy in self.accuracy.values())

    def finish(self) -> Iterates:
        """The best iterates and the marks (those not reached, after an early stop, hold the
        last best: nothing could have lowered it)."""
        self._record(math.inf)
        marks = {
            name: torch.stack(found, 1)
            for name, found in self._marks.items()
            if self._maps[name] is not None
        }
        return Iterates(dict(self.best), marks, self.mark_iterations)

    def _record(self, done: float) -> None:
        while self._recorded < len(self.mark_iterations):
            if self.mark_iterations[self._recorded] > done:
                return
            for name, decided in self._maps.items():
                if decided is not None:
                    counts = mark_counts(decided, self.labels)
                    self._marks.setdefault(name, []).append(counts)
            self._recorded += 1
