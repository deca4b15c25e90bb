"""CosPGD (Agnihotri, Jung & Keuper, "CosPGD: an efficient white-box adversarial attack for
pixel-wise prediction tasks", ICML 2024), untargeted, L_inf.

Every pixel's cross-entropy is weighted by how close the network still is to its label: the
cosine similarity of its softmax and the one-hot label,

    w_i = cos(softmax(z_i), onehot(y_i)) = p_{y_i} / ||p_i||_2,   L = sum_i w_i CE_i / HW,

detached, so the steps spend their budget on the pixels that are still right and let go of the
ones already lost. Step size and budget as the paper's experiments (which follow SegPGD's):
alpha = 0.01 at eps = 8/255 (``PAPERS_STEP_SHARE``, 0.32 eps here); 20 iterations.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attacks.dense_pgd import DensePGD
from bench.data.labels import IGNORE_INDEX


def cospgd_weights(logits: Tensor, labels: Tensor) -> Tensor:
    """cos(softmax(z), onehot(y)) per pixel (0 where the label is 255).

    Shapes:
        logits: (N, C, H, W); labels: (N, H, W) int64, 255 = ignore.
        returns: (N, H, W) float in [0, 1].
    """
    valid = labels != IGNORE_INDEX
    p = F.softmax(logits, 1)
    p_y = p.gather(1, labels.where(valid, 0)[:, None])[:, 0]
    return valid.float() * p_y / p.norm(dim=1)


class CosPGD(DensePGD):
    """CosPGD: ``CosPGD(n_iter=20)(model, images, eps=8, labels=labels)``; see the module.

    Args: as ``attacks.dense_pgd.DensePGD`` (n_iter, step, seed).
    """

    name = "cospgd"

    def weights(self, logits: Tensor, labels: Tensor, t: int) -> Tensor:
        return cospgd_weights(logits, labels)
