"""A gradient-free attack: random search in the manner of Square (Andriushchenko et al. 2020),
L_inf, on the segmentation objective.

It needs forward passes only, so it moves a defense whose gradient is masked (a quantizer, a
non-differentiable step without a stand-in), where every gradient attack is blind. Per image:

- start at a vertex of the eps ball made of vertical stripes: one sign per channel and column;
- every further query replaces one square window of the current best point by x + eps s, with a
  sign s per channel; its side shrinks on Square's schedule (the share p of the image's pixels
  it covers starts at ``p_init`` and halves at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
  8000 of 10,000 queries, rescaled to the budget), and it is kept when it raises the objective;
- the objective is the per-image mean cross-entropy over the labelled pixels (summed over the
  members of an ensemble and over its EOT samples): it is smooth, so a window that moves
  logits without yet flipping a pixel is still progress, where the share of wrong pixels is
  flat almost everywhere at small eps and the search would drift blind;
- the output is the visited point with the lowest pixel accuracy of the attacked system's real
  output (a defense's decision on an ``Ensemble`` that can decide), as APGD keeps it.

Windows and signs come from a generator per image seeded by (seed, image index), so a result
does not depend on the batch. The perturbation is whole gray values (floor(eps)), so what was
judged is exactly what the store keeps. ``queries`` counts calls of the attacked model per image,
the start included; the search stops earlier only when every labelled pixel is already wrong.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attacks.base import AttackBase
from attacks.objectives import ce_loss, pixel_accuracy, summed_loss
from bench.errors import AttackError

#: Square's schedule on a budget of 10,000 queries: after query ``bound`` p is p_init / divisor
SCHEDULE = (
    (8000, 512),
    (6000, 256),
    (4000, 128),
    (2000, 64),
    (1000, 32),
    (500, 16),
    (200, 8),
    (50, 4),
    (10, 2),
)
#: draws of a window that would change nothing before one is queried anyway
REDRAWS = 10


def window_share(p_init: float, query: int, queries: int) -> float:
    """The share of an image's pixels the window of query ``query`` covers (of ``queries``).

    >>> window_share(0.8, 5, 100)   # 500 of 10,000: p_init / 8
    0.1
    """
    rescaled = int(query / queries * 10_000)
    return next((p_init / div for bound, div in SCHEDULE if rescaled > bound), p_init)


def window_side(share: float, height: int, width: int) -> int:
    """The side of a square window covering ``share`` of an image, at least 1, at most the
    shorter side."""
    return min(max(round(math.sqrt(share * height * width)), 1), height, width)


def _signs(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


def _draw(generator: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (1,), generator=generator))


class Square(AttackBase):
    """Square-style random search: ``Square(queries=1000)(model, images, eps=8, labels=labels)``.

    Args:
        queries: forward passes of the attacked model per image (the start included).
        p_init: the share of the image the first windows cover (Square's 0.8).
        seed: seeds the per-image windows and signs.

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255.
        labels: (N, H, W) int64 trainIds, 255 = ignore (required).
        returns: (N, 3, H, W) uint8 with ||returned - images||_inf <= eps.
    """

    name = "square"
    needs_labels = True
    needs_gradient = False

    def __init__(self, *, queries: int = 1000, p_init: float = 0.8, seed: int = 0) -> None:
        if not (isinstance(queries, int) and queries >= 1):
            raise AttackError(f"queries must be an integer >= 1, got {queries!r}")
        if not 0 < p_init <= 1:
            raise AttackError(f"p_init must lie in (0, 1], got {p_init!r}; Square uses 0.8")
        self.queries = queries
        self.p_init = float(p_init)
        self.seed = int(seed)

    @torch.no_grad()
    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Tensor:
        radius = math.floor(eps)
        if radius == 0:
            return x
        _, channels, height, width = x.shape
        generators = [torch.Generator().manual_seed(self.seed * 1_000_003 + int(i)) for i in index]
        stripes = torch.stack([_signs((channels, 1, width), g) for g in generators]).to(x)
        current = torch.clamp(x + radius * stripes, 0, 255)
        loss, accuracy = self._evaluate(model, current, labels)
        kept, kept_accuracy = current.clone(), accuracy
        for query in range(1, self.queries):
            if bool((kept_accuracy == 0).all()):
                break  # every labelled pixel of every image is wrong: nothing left to gain
            side = window_side(window_share(self.p_init, query, self.queries), height, width)
            candidate = current.clone()
            for k, generator in enumerate(generators):
                self._replace_window(candidate[k], x[k], current[k], side, radius, generator)
            new_loss, accuracy = self._evaluate(model, candidate, labels)
            higher = new_loss > loss
            current = torch.where(higher.view(-1, 1, 1, 1), candidate, current)
            loss = torch.maximum(new_loss, loss)
            lower = accuracy < kept_accuracy
            kept = torch.where(lower.view(-1, 1, 1, 1), candidate, kept)
            kept_accuracy = torch.minimum(accuracy, kept_accuracy)
        return kept

    @staticmethod
    def _replace_window(
        candidate: Tensor,
        x: Tensor,
        current: Tensor,
        side: int,
        radius: int,
        generator: torch.Generator,
    ) -> None:
        """Set one window of ``candidate`` (3, H, W) to a vertex x + radius s (in place),
        redrawing a window that would leave the image as it is."""
        channels, height, width = x.shape
        for _ in range(REDRAWS):
            top, left = _draw(generator, height - side + 1), _draw(generator, width - side + 1)
            window = (slice(None), slice(top, top + side), slice(left, left + side))
            sign = _signs((channels, 1, 1), generator).to(x)
            vertex = torch.clamp(x[window] + radius * sign, 0, 255)
            if not torch.equal(vertex, current[window]):
                break
        candidate[window] = vertex

    def _evaluate(self, model: nn.Module, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One query: per image the objective and the judged pixel accuracy, both (N,)."""
        outputs = model(x)
        return summed_loss(ce_loss, outputs, labels), pixel_accuracy(model, outputs, labels)
