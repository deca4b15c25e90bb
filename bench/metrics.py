"""Confusion matrix, mIoU (paper eq. 9) and the mIoU ratio Q (eq. 10).

Semantics of cityscapesscripts' official evaluation: one confusion matrix accumulated over the
whole split; IoU_s = TP / (TP + FP + FN); classes absent from both ground truth and prediction are
NaN and left out of the mean; a class predicted but absent from the ground truth counts as 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: mIoU (or Q) differences of at most this many points are ties (evaluation checks and findings).
TIE_POINTS = 1.0
#: resamples of the paired bootstrap over images (``resample_weights``) and its interval's level
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


class ConfusionMatrix:
    """Accumulates a (C, C) int64 matrix, rows = ground truth, columns = prediction.

    Shapes:
        pred: (N, H, W) or (H, W) integer trainIds 0..C-1.
        target: same shape, integer trainIds, ``ignore_index`` pixels are skipped.
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        pred = pred.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        if pred.numel() and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"predictions must lie in 0..{self.num_classes - 1}")
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(
                f"targets must lie in 0..{self.num_classes - 1} or be {self.ignore_index}"
            )
        self.matrix += torch.bincount(
            target * self.num_classes + pred, minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)

    def iou(self) -> Tensor:
        """Per-class IoU (C,) float64; NaN where a class is in neither GT nor prediction."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self) -> float:
        """Mean IoU over classes present in GT or prediction, in [0, 1]; NaN if none is."""
        return float(self.iou().nanmean())


def q_ratio(miou_adv: float, miou_clean: float) -> float:
    """The mIoU ratio Q = mIoU_adv / mIoU_clean (eq. 10); NaN when mIoU_clean is 0."""
    return miou_adv / miou_clean if miou_clean > 0 else math.nan


def image_counts(
    pred: Tensor, target: Tensor, num_classes: int = 19, ignore_index: int = 255
) -> Tensor:
    """Per image: intersection (C) and union (C) per class, correct and valid pixels.

    Sums over images of these counts give the dataset's IoU exactly (TP, TP + FP + FN), which
    is what the worst case over attacks needs (SEA picks an attack per image).

    Shapes:
        pred, target: (N, H, W) integer trainIds (target: ``ignore_index`` skipped).
        returns: (N, 2 C + 2) int64: [I_0..I_C-1, U_0..U_C-1, correct, valid].
    """
    valid = target != ignore_index
    classes = torch.arange(num_classes, device=pred.device).view(1, -1, 1)
    p = pred.flatten(1)[:, None]
    t = target.flatten(1)[:, None]
    v = valid.flatten(1)[:, None]
    in_pred, in_true = (p == classes) & v, (t == classes) & v
    inter = (in_pred & in_true).sum(2)
    union = (in_pred | in_true).sum(2)
    correct = ((pred == target) & valid).flatten(1).sum(1, keepdim=True)
    return torch.cat([inter, union, correct, valid.flatten(1).sum(1, keepdim=True)], 1).cpu()


def _miou(inter: Tensor, union: Tensor) -> Tensor:
    """mIoU of summed counts (..., C): classes with union 0 left out; NaN if none has one."""
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, math.nan))
    return iou.nanmean(-1)


def worst_case_miou(inter: Tensor, union: Tensor) -> tuple[float, Tensor]:
    """The worst-case mIoU over attacks by SEA's greedy per-image assignment.

    Every image starts on the attack with the lowest mIoU over the data set; then, image by
    image, it switches to another attack whenever that lowers the data set's mIoU; passes repeat
    until none changes. Never above any single attack's mIoU.

    Shapes:
        inter, union: (A, N, C) per attack, image and class (``image_counts``).
        returns: mIoU in [0, 1] (NaN if no class occurs); the attack chosen per image (N,).
    """
    inter, union = inter.double(), union.double()
    n_images = inter.shape[1]
    choice = torch.full((n_images,), int(_miou(inter.sum(1), union.sum(1)).nan_to_num(2).argmin()))
    images = torch.arange(n_images)
    total_i, total_u = inter[choice, images].sum(0), union[choice, images].sum(0)
    current = float(_miou(total_i, total_u))
    changed = True
    while changed:
        changed = False
        for n in range(n_images):
            old = int(choice[n])
            tried_i = total_i - inter[old, n] + inter[:, n]  # (A, C): image n on each attack
            tried_u = total_u - union[old, n] + union[:, n]
            scores = _miou(tried_i, tried_u).nan_to_num(2)
            best = int(scores.argmin())
            if best != old and float(scores[best]) < current - 1e-12:
                choice[n], current = best, float(scores[best])
                total_i, total_u = tried_i[best], tried_u[best]
                changed = True
    return current, choice


def worst_pixel_accuracy(correct: Tensor, valid: Tensor) -> Tensor:
    """Per image, the lowest pixel accuracy over attacks.

    Shapes:
        correct: (A, N) correct pixels per attack and image; valid: (N,) labelled pixels.
        returns: (N,) in [0, 1] (images without labelled pixels: NaN).
    """
    return correct.double().min(0).values / valid.double().where(valid > 0, torch.nan)


def resample_weights(
    n_images: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """How often each image is drawn in each resample of a bootstrap over images (n of n, with
    replacement). One matrix serves every defense and data variant of a subset, so differences
    between them are paired (the same images in each resample).

    Shapes:
        returns: (resamples, n_images) float64 counts, every row summing to ``n_images``.
    """
    draws = np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))
    flat = (draws + n_images * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n_images).reshape(resamples, n_images) * 1.0


def bootstrap_miou(inter: np.ndarray, union: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mIoU of every resample, from the pooled per-image counts (one confusion matrix per
    resample, as ``ConfusionMatrix.miou``: classes with union 0 left out).

    Shapes:
        inter, union: (N, C) per image and class (``image_counts``); weights: (B, N).
        returns: (B,) mIoU in [0, 1]; NaN for a resample in which no class occurs.
    """
    pooled_i, pooled_u = weights @ inter, weights @ union
    present = pooled_u > 0
    iou = np.where(present, pooled_i / np.maximum(pooled_u, 1), 0.0)
    classes = present.sum(1)
    return np.where(classes > 0, iou.sum(1) / np.maximum(classes, 1), np.nan)


def interval(samples: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap ``samples`` (B,) at ``level``."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)
