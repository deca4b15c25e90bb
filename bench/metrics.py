"""Confusion matrix, mIoU (paper eq. 9) and the mIoU ratio Q (eq. 10).

Semantics of cityscapesscripts' official evaluation: one confusion matrix accumulated over the
whole split; IoU_s = TP / (TP + FP + FN); classes absent from both ground truth and prediction are
NaN and left out of the mean; a class predicted but absent from the ground truth counts as 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
