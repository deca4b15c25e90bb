"""The teacher-student losses that finetune the adaptive student A (paper Section 3.2 and 3.5).

J_CE (eq. 1) pulls A's soft outputs towards the static teacher's, J_IFM' (eqs. 2 and 7) pushes
A's features at the layers L' away from the static student's, J_TS' (eqs. 3 and 8) mixes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config.rules import check_alpha, check_ifm_weights
from bench.errors import LossError


def soft_cross_entropy(logits_t: Tensor, logits_a: Tensor) -> Tensor:
    """J_CE of eq. 1: cross-entropy from T's soft outputs to A's, averaged over pixels.

    The pixel mean runs over the whole batch; every image has the same number of pixels, so this
    equals the mean over images of the per-image eq. 1.

    Shapes:
        logits_t, logits_a: (N, C, H, W) float logits of the teacher and the adaptive student.
        returns: a scalar tensor.
    """
    if logits_t.shape != logits_a.shape:
        raise LossError(
            f"teacher logits {tuple(logits_t.shape)} and student logits {tuple(logits_a.shape)} "
            "differ in shape; both networks must see the same images and predict the same classes"
        )
    y_t = F.softmax(logits_t, dim=1)
    return -(y_t * F.log_softmax(logits_a, dim=1)).sum(1).mean()


def feature_distance(
    feats_a: Mapping[str, Tensor], feats_s: Mapping[str, Tensor], *, p: float = 1
) -> Tensor:
    """Per image, the mean over layers l of ||f_A - f_S||_p / (H_l W_l C_l): the inner sum of eq. 7.

    Shapes:
        feats_a, feats_s: {layer name: (N, C_l, H_l, W_l)}, the same names and shapes in both.
        returns: (N,) float.
    """
    if not feats_a:
        raise LossError("IFM needs at least one layer; pass a non-empty layer set L'")
    if set(feats_a) != set(feats_s):
        raise LossError(
            f"IFM layers differ: A has {', '.join(feats_a)}, S has {', '.join(feats_s)}; "
            "tap the same layers of both students"
        )
    per_layer = []
    for name, f_a in feats_a.items():
        f_s = feats_s[name]
        if f_a.shape != f_s.shape:
            raise LossError(
                f"layer {name!r}: A's features are {tuple(f_a.shape)}, S's {tuple(f_s.shape)}; "
                "A and S must share one architecture"
            )
        diff = (f_a - f_s).flatten(1)
        per_layer.append(torch.linalg.vector_norm(diff, ord=p, dim=1) / diff.shape[1])
    return torch.stack(per_layer).mean(0)


def ifm_loss(
    feats_a: Mapping[str, Tensor],
    feats_s: Mapping[str, Tensor],
    *,
    p: float = 1,
    beta: float = 0.5,
    gamma: float = 1,
) -> Tensor:
    """J_IFM' of eq. 7 (eq. 2 when the layers are all of them), averaged over the batch.

    Eq. 7 is defined per input image x. The power -gamma is not linear, so the loss of the batch
    is the mean of the per-image losses, not eq. 7 of the batch-mean distance: that keeps J_IFM'
    on the same per-image footing as J_CE and makes it independent of the batch size and of
    which other images share the batch (which matters in the online mode, where batches are
    whatever arrives).

    Shapes:
        feats_a, feats_s: {layer name: (N, C_l, H_l, W_l)} of the adaptive and the static student.
        returns: a scalar tensor; 1 / beta**gamma when A's features equal S's.
    """
    check_ifm_weights(p, beta, gamma, "", LossError)
    return ((beta + feature_distance(feats_a, feats_s, p=p)) ** -gamma).mean()


class TSLoss(NamedTuple):
    """J_TS' and its two terms (scalar tensors; ``total`` carries the gradient)."""

    total: Tensor
    ce: Tensor
    ifm: Tensor


def ts_loss(
    logits_t: Tensor,
    logits_a: Tensor,
    feats_a: Mapping[str, Tensor],
    feats_s: Mapping[str, Tensor],
    *,
    alpha: float = 0.6,
    p: float = 1,
    beta: float = 0.5,
    gamma: float = 1,
) -> TSLoss:
    """J_TS' = (1 - alpha) J_CE + alpha J_IFM' (eq. 8).

    Shapes:
        logits_t, logits_a: (N, C, H, W) logits of T and A.
        feats_a, feats_s: {layer name: (N, C_l, H_l, W_l)} of A and S.
    """
    check_alpha(alpha, "alpha", LossError)
    ce = soft_cross_entropy(logits_t, logits_a)
    ifm = ifm_loss(feats_a, feats_s, p=p, beta=beta, gamma=gamma)
    return TSLoss((1 - alpha) * ce + alpha * ifm, ce, ifm)
