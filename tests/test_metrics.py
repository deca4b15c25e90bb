"""mIoU against hand-computed cases and against cityscapesscripts' official evaluation."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.labels import CLASS_NAMES, TRAIN_TO_LABEL
from bench.metrics import (
    ConfusionMatrix,
    image_counts,
    q_ratio,
    worst_case_miou,
    worst_pixel_accuracy,
)


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


def test_greedy_worst_case_by_hand():
    """One class, three images, two attacks: A leaves intersections (2, 8, 5), B (8, 2, 5), all
    unions 10, so each alone has mIoU 15/30 = 0.5; the worst case takes A on image 1 and B on
    image 2: (2 + 2 + 5) / 30 = 0.3."""
    inter = torch.tensor([[[2], [8], [5]], [[8], [2], [5]]])
    union = torch.full_like(inter, 10)
    miou, choice = worst_case_miou(inter, union)
    assert miou == pytest.approx(0.3) and choice.tolist() == [0, 1, 0]


def test_worst_case_is_below_every_attack_and_matches_exhaustive_search():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        union = torch.randint(1, 20, (3, 4, 3), generator=generator).double()
        inter = (union * torch.rand(union.shape, generator=generator, dtype=torch.float64)).floor()
        miou, choice = worst_case_miou(inter, union)
        single = [float((inter[a].sum(0) / union[a].sum(0)).mean()) for a in range(3)]
        assert miou <= min(single) + 1e-12
        exhaustive = min(
            float((inter[list(pick), range(4)].sum(0) / union[list(pick), range(4)].sum(0)).mean())
            for pick in itertools.product(range(3), repeat=4)
        )
        assert exhaustive <= miou + 1e-12
        chosen = (inter[choice, range(4)].sum(0) / union[choice, range(4)].sum(0)).mean()
        assert float(chosen) == pytest.approx(miou)


def test_image_counts_sum_to_the_confusion_matrix():
    generator = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 19, (3, 8, 8), generator=generator)
    target = torch.randint(0, 19, (3, 8, 8), generator=generator)
    target[0, :3] = 255
    counts = image_counts(pred, target)
    cm = ConfusionMatrix()
    cm.update(pred, target)
    tp = cm.matrix.diag()
    assert counts[:, :19].sum(0).tolist() == tp.tolist()
    assert counts[:, 19:38].sum(0).tolist() == (cm.matrix.sum(0) + cm.matrix.sum(1) - tp).tolist()
    assert counts[:, 38].sum() == tp.sum() and counts[:, 39].tolist() == [40, 64, 64]
    correct = torch.tensor([[3, 5], [4, 1]])
    assert worst_pixel_accuracy(correct, torch.tensor([10, 10])).tolist() == [0.3, 0.1]
