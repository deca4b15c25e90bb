"""APGD (Croce & Hein 2020) for segmentation, as SEA (Croce, Singh & Hein 2024) adapts it.

Untargeted against the ground truth (pixels labelled 255 ignored), L_inf ball of radius eps in
gray values. Per image:

- start at a random point of the ball, drawn from a generator seeded by the image's index in its
  data set (so a result never depends on the batch size or on which images share a batch);
- steps with momentum 0.75: z = P(x_k + eta sign(grad)), x_{k+1} = P(x_k + 0.75 (z - x_k)
  + 0.25 (x_k - x_{k-1}));
- the step eta starts at 2 eps and is halved at checkpoints (the first after 0.22 N iterations,
  the spacing shrinking by 0.03 N per checkpoint to at least 0.06 N) when the loss rose in at
  most 75% of the steps since the last checkpoint, or when the step was not halved at the last
  checkpoint and the best loss has not improved since; a halving restarts from the point of the
  best loss;
- the output is the iterate with the lowest pixel accuracy of the attacked system's real output
  (a defense's decision when the model is an ``Ensemble`` that can decide), not the one with the
  highest loss; the attack stops early when every pixel of every image is wrong.

Losses: ``ce``, ``masked-ce``, ``js``, ``balanced-masked-ce`` (``attacks.objectives``); on an
ensemble the members' losses are summed. ``red_eps``: SEA's schedule of radii 2 eps, 1.5 eps and
eps with the iterations split 3:3:4, each stage starting from the previous stage's best point
projected into its ball; only the last stage (radius eps) yields the output. A larger-radius
stage stops early when every member network is wrong on every labelled pixel (not when a
defense's decision is): its trajectory never depends on a decision, so several decisions on the
same networks (the votes) share it, as they share every other attack's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attacks.base import AttackBase, check_precision, forward_in, project
from attacks.best_iterate import BestIterates, Iterates, budget_marks
from attacks.objectives import (
    LOSSES,
    PixelLoss,
    judged_output,
    members_of,
    pixel_loss,
    summed_loss,
    without_decisions,
)
from bench.errors import AttackError


def checkpoints(n_iter: int) -> list[int]:
    """The iteration counts after which APGD may halve its step.

    >>> checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    k, decrease, k_min = (max(int(f * n_iter), 1) for f in (0.22, 0.03, 0.06))
    points, at = [], 0
    while at + k <= n_iter:
        at += k
        points.append(at)
        k = max(k - decrease, k_min)
    return points


def random_start(x: Tensor, eps: float, index: Tensor, seed: int) -> Tensor:
    """x plus uniform noise in [-eps, eps], one generator per image seeded by (seed, index)."""
    noise = torch.stack(
        [
            torch.rand(
                x.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i))
            )
            for i in index
        ]
    ).to(x)
    return torch.clamp(x + eps * (2 * noise - 1), 0, 255)


class APGD(AttackBase):
    """APGD on segmentation: ``APGD(loss="ce", n_iter=100)(model, images, eps=8, labels=labels)``.

    Args:
        loss: ``ce``, ``masked-ce``, ``js`` or ``balanced-masked-ce``.
        n_iter: iterations N (forward + backward passes after the start).
        red_eps: SEA's reduced-radius schedule (2, 1.5, 1 x eps; budget 3:3:4).
        momentum: alpha of the momentum step (0.75).
        rho: the share of rising steps below which the step is halved (0.75).
        seed: seeds the per-image random starts.
        class_weights: 19 per-class weights (``balanced-masked-ce`` only; ``bench run`` computes
            1 / N_y from the training split).
        precision: what the passes compute in (``attacks.base.PRECISIONS``); None: float32.

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255.
        labels: (N, H, W) int64 trainIds, 255 = ignore (required).
        returns: (N, 3, H, W) uint8 with ||returned - images||_inf <= eps.
    """

    name = "apgd"
    needs_labels = True

    def __init__(
        self,
        *,
        loss: str = "ce",
        n_iter: int = 100,
        red_eps: bool = False,
        momentum: float = 0.75,
        rho: float = 0.75,
        seed: int = 0,
        class_weights: Sequence[float] | None = None,
        precision: str | None = None,
    ) -> None:
        if loss not in LOSSES:
            raise AttackError(f"unknown APGD loss {loss!r}; choose from {', '.join(LOSSES)}")
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise AttackError(f"n_iter must be an integer >= 1, got {n_iter!r}")
        if not (0 <= momentum <= 1 and 0 < rho <= 1):
            raise AttackError(
                f"momentum must lie in [0, 1] and rho in (0, 1], got {momentum}, {rho}"
            )
        self.loss = loss
        self.n_iter = n_iter
        self.red_eps = bool(red_eps)
        self.momentum = float(momentum)
        self.rho = float(rho)
        self.seed = int(seed)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.precision = check_precision(precision)
        self._loss_fn: PixelLoss = pixel_loss(loss, self.class_weights)

    def schedule(self, eps: float) -> list[tuple[float, int]]:
        """(radius, iterations) of each stage."""
        if not self.red_eps:
            return [(eps, self.n_iter)]
        first = second = round(0.3 * self.n_iter)
        return [(2 * eps, first), (1.5 * eps, second), (eps, self.n_iter - first - second)]

    # the steps follow the members' losses; the larger-radius stages of red_eps stop on the
    # members' outputs (``without_decisions``): no step depends on a decision
    shares_trajectory = True

    @property
    def revision(self) -> int:  # type: ignore[override]
        # 1: red_eps stops its larger-radius stages when every member is all wrong, not when a
        # decision is (the sets of surfaces with a decision changed; only red_eps sets rebuild)
        return 1 if self.red_eps else 0

    def budget_marks(self, model: nn.Module, eps: float) -> tuple[int, ...]:
        """1/4, 1/2 and all of the iterations; with ``red_eps``, of the last stage's (the only
        one whose iterates lie in the eps ball), counted from the start of the first."""
        if not judged_output(model):
            return ()
        *earlier, (_, last) = self.schedule(eps)
        return budget_marks(last, offset=sum(n for _, n in earlier))

    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Iterates:
        start = random_start(x, self.schedule(eps)[0][0], index, self.seed)
        members = without_decisions(model)
        for radius, n_iter in self.schedule(eps)[:-1]:
            start = self._stage(
                model, x, labels, start, radius, n_iter, BestIterates(members, labels, ())
            )
        last_radius, last_iter = self.schedule(eps)[-1]
        start = project(start, x, last_radius)
        judge = BestIterates(model, labels, self.budget_marks(model, eps))
        offset = sum(n for _, n in self.schedule(eps)[:-1])
        self._stage(model, x, labels, start, last_radius, last_iter, judge, offset)
        return judge.finish()

    def _evaluate(
        self, model: nn.Module, x: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Per image: the loss, its input gradient; and the outputs (to judge)."""
        x = x.detach().requires_grad_(True)
        outputs = forward_in(model, x, self.precision)
        loss = summed_loss(self._loss_fn, outputs, labels)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad, tuple(out.detach() for out in members_of(outputs))

    def _stage(
        self,
        model: nn.Module,
        x: Tensor,
        labels: Tensor,
        start: Tensor,
        eps: float,
        n_iter: int,
        judge: BestIterates,
        offset: int = 0,
    ) -> Tensor:
        """One APGD run in the ball of radius ``eps``: the iterates judged by ``judge`` (the
        iteration counts it is told start at ``offset``); returns the iterate of the highest
        loss (where the next stage starts)."""
        shape = (-1, *([1] * (x.ndim - 1)))
        adv = start.clone()
        loss, grad, outputs = self._evaluate(model, adv, labels)
        judge.judge(adv, outputs, offset)
        best_point, best_grad, best_loss = adv.clone(), grad.clone(), loss.clone()
        step = torch.full((len(x),), 2.0 * eps, device=x.device)
        previous, last_loss = adv.clone(), loss.clone()
        rises = torch.zeros(len(x), device=x.device)
        halved_last = torch.ones(len(x), dtype=torch.bool, device=x.device)
        best_at_checkpoint, last_checkpoint = best_loss.clone(), 0
        marks = set(checkpoints(n_iter))
        for i in range(n_iter):
            momentum = self.momentum if i > 0 else 1.0
            z = project(adv + step.view(shape) * grad.sign(), x, eps)
            adv, previous = (
                project(adv + momentum * (z - adv) + (1 - momentum) * (adv - previous), x, eps),
                adv,
            )
            loss, grad, outputs = self._evaluate(model, adv, labels)
            judge.judge(adv, outputs, offset + i + 1)
            rises += (loss > last_loss).float()
            last_loss = loss
            higher = (loss > best_loss).view(shape)
            best_point = torch.where(higher, adv, best_point)
            best_grad = torch.where(higher, grad, best_grad)
            best_loss = torch.maximum(loss, best_loss)
            if i + 1 in marks:
                oscillating = rises <= self.rho * (i + 1 - last_checkpoint)
                stalled = ~halved_last & (best_at_checkpoint >= best_loss)
                halve = oscillating | stalled
                step[halve] /= 2
                # restart from the best point, without momentum from the abandoned path
                adv[halve], grad[halve] = best_point[halve], best_grad[halve]
                previous[halve] = best_point[halve]
                halved_last, best_at_checkpoint = halve, best_loss.clone()
                rises.zero_()
                last_checkpoint = i + 1
            if judge.all_wrong():
                break  # every pixel of every image is wrong: nothing left to gain
        return best_point
