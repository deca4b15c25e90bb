"""The template of sign-step PGD for dense prediction: a random start, steps along the sign of
the gradient of a per-pixel cross-entropy that a subclass weights, and the best iterate judged on
the attacked system's own output (``attacks.best_iterate``).

Per image, from a random point of the L_inf ball (seeded by the image's index, as APGD's), for
t = 0 .. T - 1:

    L_t = sum_members sum_pixels w_t(z_i, y_i) CE(z_i, y_i) / (labelled pixels)
    x_{t+1} = clip_[0,255](x + clamp(x_t + alpha sign(grad L_t) - x, -eps, eps))

with the weights w_t detached (they steer the steps, they are not differentiated). Every iterate
x_0 .. x_T is judged; the one of the lowest pixel accuracy of the attacked system is returned
(per decision), and the attack stops early when every labelled pixel of every image is wrong.
Pixels labelled 255 weigh 0. Cost: T forward + backward passes and one forward pass.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from attacks.apgd import random_start
from attacks.base import AttackBase, check_precision, check_step, forward_in, project
from attacks.best_iterate import BestIterates, Iterates, budget_marks
from attacks.objectives import ce_loss, judged_output, members_of, summed_loss
from bench.errors import AttackError

#: alpha / eps of SegPGD's and CosPGD's experiments: alpha = 0.01 at eps = 8/255 (pixels in
#: [0, 1]), i.e. 0.32 eps in any unit
PAPERS_STEP_SHARE = 0.01 / (8 / 255)


class DensePGD(AttackBase):
    """Sign-step PGD whose per-pixel cross-entropy is weighted by ``weights``.

    Args:
        n_iter: iterations T (forward + backward passes).
        step: alpha in gray values; None: the papers' alpha / eps (``PAPERS_STEP_SHARE``) x eps.
        seed: seeds the per-image random starts.
        precision: what the passes compute in (``attacks.base.PRECISIONS``); None: float32.

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255.
        labels: (N, H, W) int64 trainIds, 255 = ignore (required).
        returns: (N, 3, H, W) uint8 with ||returned - images||_inf <= eps.
    """

    needs_labels = True
    shares_trajectory = True  # the weights read each member's own output, never a decision

    def __init__(
        self,
        *,
        n_iter: int = 20,
        step: float | None = None,
        seed: int = 0,
        precision: str | None = None,
    ) -> None:
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise AttackError(f"n_iter must be an integer >= 1, got {n_iter!r}")
        self.n_iter = n_iter
        self.step = None if step is None else check_step(step)
        self.seed = int(seed)
        self.precision = check_precision(precision)

    @abstractmethod
    def weights(self, logits: Tensor, labels: Tensor, t: int) -> Tensor:
        """The per-pixel weights of the cross-entropy at step ``t`` of ``n_iter`` (detached).

        Shapes:
            logits: (N, C, H, W); labels: (N, H, W) int64, 255 = ignore.
            returns: (N, H, W) float.
        """

    def loss(self, outputs: Tensor | tuple[Tensor, ...], labels: Tensor, t: int) -> Tensor:
        """Per image, the weighted cross-entropy summed over pixels and members, over the
        labelled pixels: (N,)."""

        def weighted(logits: Tensor, y: Tensor) -> Tensor:
            return self.weights(logits.detach(), y, t) * ce_loss(logits, y)

        return summed_loss(weighted, outputs, labels)

    def budget_marks(self, model: nn.Module, eps: float) -> tuple[int, ...]:
        """1/4, 1/2 and all of the iterations."""
        return budget_marks(self.n_iter) if judged_output(model) else ()

    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Iterates:
        assert labels is not None
        step = PAPERS_STEP_SHARE * eps if self.step is None else self.step
        judge = BestIterates(model, labels, self.budget_marks(model, eps))
        adv = random_start(x, eps, index, self.seed)
        for t in range(self.n_iter):
            adv = adv.detach().requires_grad_(True)
            outputs = forward_in(model, adv, self.precision)
            (grad,) = torch.autograd.grad(self.loss(outputs, labels, t).sum(), adv)
            judge.judge(adv.detach(), tuple(o.detach() for o in members_of(outputs)), t)
            if judge.all_wrong():
                return judge.finish()  # every pixel of every image is wrong: nothing to gain
            adv = project(adv.detach() + step * grad.sign(), x, eps)
        with torch.no_grad():
            judge.judge(adv, forward_in(model, adv, self.precision), self.n_iter)
        return judge.finish()
