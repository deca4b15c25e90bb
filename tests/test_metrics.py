"""mIoU against hand-computed cases and against cityscapesscripts' official evaluation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.labels import CLASS_NAMES, TRAIN_TO_LABEL
from bench.metrics import ConfusionMatrix, q_ratio


def test_hand_computed_two_classes():
    cm = ConfusionMatrix(num_classes=3)
    target = torch.tensor([[0, 0, 1, 1], [1, 255, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 0]])
    cm.update(pred, target)
    # class 0: TP 2 (0,0),(1,3); FP 1 (1,0); FN 1 (0,1) -> 2/4
    # class 1: TP 2; FP 1 (0,1); FN 1 (1,0) -> 2/4; class 2: never in GT or prediction on valid px
    iou = cm.iou()
    assert iou[0].item() == pytest.approx(0.5)
    assert iou[1].item() == pytest.approx(0.5)
    assert math.isnan(iou[2].item())
    assert cm.miou() == pytest.approx(0.5)


def test_predicted_but_absent_class_counts_as_zero():
    cm = ConfusionMatrix(num_classes=3)
    cm.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    assert cm.iou()[2].item() == 0.0
    assert cm.miou() == pytest.approx((0.5 + 0.0) / 2)


def test_accumulates_over_the_split_not_per_image():
    split = ConfusionMatrix(num_classes=2)
    per_image = []
    images = [
        (torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0])),
        (torch.tensor([1, 1]), torch.tensor([1, 0])),
    ]
    for pred, target in images:
        split.update(pred, target)
        single = ConfusionMatrix(num_classes=2)
        single.update(pred, target)
        per_image.append(single.miou())
    # class 0: TP 3, FN 2 -> 0.6; class 1: TP 1, FP 2 -> 1/3
    assert split.miou() == pytest.approx((0.6 + 1 / 3) / 2)
    assert split.miou() != pytest.approx(sum(per_image) / 2)


def test_rejects_out_of_range_and_shape_mismatch():
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match="predictions"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="targets"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(2, 2), torch.zeros(4))


def test_q_ratio():
    assert q_ratio(0.3, 0.6) == pytest.approx(0.5)
    assert math.isnan(q_ratio(0.3, 0.0))


def test_matches_cityscapes_official_evaluation(tmp_path):
    """The same predictions scored by cityscapesscripts and by ConfusionMatrix agree to 1e-9."""
    evaluation = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix()
    preds, gts = [], []
    for i in range(4):
        # GT: trainIds 0..15 only (classes 16-18 absent), blocks of ignore; prediction noisy copy
        # that sometimes predicts absent classes 16 and 17 (they must count as IoU 0).
        gt = rng.integers(0, 16, size=(24, 40))
        gt[:4, :10] = 255
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 18, size=gt.shape), gt)
        pred = np.where(pred == 255, 0, pred)
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        gt_ids = np.where(gt == 255, 0, TRAIN_TO_LABEL[np.clip(gt, 0, 18)]).astype(np.uint8)
        gt_path, pred_path = tmp_path / f"gt{i}_gtFine_labelIds.png", tmp_path / f"pred{i}.png"
        Image.fromarray(gt_ids).save(gt_path)
        Image.fromarray(TRAIN_TO_LABEL[pred].astype(np.uint8)).save(pred_path)
        preds.append(str(pred_path))
        gts.append(str(gt_path))
    args = copy.copy(evaluation.args)
    args.evalInstLevelScore = False  # crashes on numpy >= 2.4 and is not what we measure
    args.JSONOutput = False
    args.quiet = True
    result = evaluation.evaluateImgLists(preds, gts, args)
    official = result["classScores"]
    ours = cm.iou().numpy()
    for train_id, name in enumerate(CLASS_NAMES):
        if math.isnan(official[name]):
            assert math.isnan(ours[train_id]), name
        else:
            assert ours[train_id] == pytest.approx(official[name], abs=1e-9), name
    official_mean = np.nanmean([official[n] for n in CLASS_NAMES])
    assert cm.miou() == pytest.approx(official_mean, abs=1e-9)
    assert math.isnan(ours[18]) and ours[16] == 0.0  # absent vs predicted-but-absent
