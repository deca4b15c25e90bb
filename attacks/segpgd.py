"""SegPGD (Gu, Zhao, Tresp & Torr, "SegPGD: An Effective and Efficient Adversarial Attack for
Evaluating and Boosting Segmentation Robustness", ECCV 2022), untargeted, L_inf.

The cross-entropy is split by whether a pixel is still classified right, and the weight moves
from the right pixels to the wrong ones over the budget:

    L_t = ((1 - l_t) sum_right CE + l_t sum_wrong CE) / HW,   l_t = t / (2T),

at step t = 0 .. T - 1 of T (the paper's (t - 1) / 2T with t counted from 1): early steps push
the pixels still right over the border, later ones keep the wrong ones from coming back. "Right"
is each member's own argmax, so the steps do not depend on a defense's decision. Step size and
budget as the paper's experiments: alpha = 0.01 at eps = 8/255 (``PAPERS_STEP_SHARE``, 0.32 eps
here), 20 iterations (the paper also reports 100).
"""

from __future__ import annotations

from torch import Tensor

from attacks.dense_pgd import DensePGD
from bench.data.tensors import class_map


def segpgd_weights(logits: Tensor, labels: Tensor, t: int, n_iter: int) -> Tensor:
    """1 - l_t on the pixels the network still gets right, l_t on the others, l_t = t / (2T).

    Shapes:
        logits: (N, C, H, W); labels: (N, H, W) int64, 255 = ignore.
        returns: (N, H, W) float.
    """
    share = t / (2 * n_iter)
    right = (class_map(logits) == labels).float()
    return (1 - share) * right + share * (1 - right)


class SegPGD(DensePGD):
    """SegPGD: ``SegPGD(n_iter=20)(model, images, eps=8, labels=labels)``; see the module.

    Args: as ``attacks.dense_pgd.DensePGD`` (n_iter, step, seed).
    """

    name = "segpgd"

    def weights(self, logits: Tensor, labels: Tensor, t: int) -> Tensor:
        return segpgd_weights(logits, labels, t, self.n_iter)
