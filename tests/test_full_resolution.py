"""Scoring at the labels' full resolution equals Cityscapes' official evaluation of the same
predictions: logits upsampled (bilinear) to the label's size before the argmax."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.data.cityscapes import CityscapesSegmentation
from bench.data.labels import CLASS_NAMES, TRAIN_TO_LABEL
from bench.scoring import ForwardMemo, evaluate_defenses, scored_at
from defenses import SingleNetwork


def test_full_resolution_scoring_equals_the_official_evaluation(reference, toy_root, tmp_path):
    evaluation = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    net = ForwardMemo(reference[1])  # the reference S, seeing 16x32 images of 32x64 labels
    data = CityscapesSegmentation(toy_root, "val", size=(16, 32), full_labels=True)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.stack([data[i][1] for i in range(len(data))])
    assert images.shape[-2:] == (16, 32) and labels.shape[-2:] == (32, 64)
    with scored_at({"S": net}, (32, 64)):
        results = evaluate_defenses(
            {"S": lambda: SingleNetwork({"S": net}, net="S")}, [(images, labels)], progress=False
        )
    ours = results["S"][0]
    preds, gts = [], []
    with torch.no_grad():
        logits = F.interpolate(reference[1](images.float()), size=(32, 64), mode="bilinear")
    for i, sample in enumerate(data.samples):
        pred = TRAIN_TO_LABEL[logits[i].argmax(0).numpy()].astype(np.uint8)
        Image.fromarray(pred).save(tmp_path / f"pred{i}.png")
        preds.append(str(tmp_path / f"pred{i}.png"))
        gts.append(str(sample.label))  # the tree's own labelIds at full resolution
    args = copy.copy(evaluation.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    official = evaluation.evaluateImgLists(preds, gts, args)["classScores"]
    for train_id, name in enumerate(CLASS_NAMES):
        if math.isnan(official[name]):
            assert math.isnan(ours.iou()[train_id].item()), name
        else:
            assert ours.iou()[train_id].item() == pytest.approx(official[name], abs=1e-9), name
    assert ours.miou() > 0.1  # a real network, not a trivial map
