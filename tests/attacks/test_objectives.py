"""The per-pixel losses against hand values, and several networks attacked as one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import LLCM, build_attack
from attacks.objectives import (
    Ensemble,
    balanced_masked_ce_loss,
    ce_loss,
    class_weights,
    js_loss,
    masked_ce_loss,
    pixel_accuracy,
    pixel_loss,
)
from bench.errors import AttackError


def _pixel(probs: list[float]) -> torch.Tensor:
    """Logits (1, C, 1, 1) whose softmax is ``probs``."""
    return torch.tensor(probs).log().view(1, -1, 1, 1)


def test_ce_and_masked_ce_by_hand():
    logits = torch.cat([_pixel([0.5, 0.25, 0.25])] * 3, dim=3)  # three pixels, argmax 0
    labels = torch.tensor([[[0, 1, 255]]])
    assert ce_loss(logits, labels)[0, 0].tolist() == pytest.approx([math.log(2), math.log(4), 0])
    # only the pixel the network still gets right counts
    assert masked_ce_loss(logits, labels)[0, 0].tolist() == pytest.approx([math.log(2), 0, 0])


def test_js_by_hand():
    """p = (1/2, 1/4, 1/4), y = 0: m = (3/4, 1/8, 1/8), KL(p||m) = 1/2 ln(4/3), KL(q||m) =
    ln(4/3), JS = 3/4 ln(4/3); a certain right pixel gives 0, a certain wrong one ln 2."""
    assert js_loss(_pixel([0.5, 0.25, 0.25]), torch.tensor([[[0]]])).item() == pytest.approx(
        0.75 * math.log(4 / 3)
    )
    sure = torch.tensor([30.0, 0, 0]).view(1, 3, 1, 1)
    assert js_loss(sure, torch.tensor([[[0]]])).item() == pytest.approx(0, abs=1e-6)
    assert js_loss(sure, torch.tensor([[[1]]])).item() == pytest.approx(math.log(2), abs=1e-6)
    assert js_loss(sure, torch.tensor([[[255]]])).item() == 0


def test_balanced_masked_ce_weighs_by_inverse_class_frequency():
    weights = class_weights([300, 100, 0])
    assert weights[1] == pytest.approx(3 * weights[0]) and weights[2] == max(weights)
    logits = torch.cat([_pixel([0.6, 0.2, 0.2]), _pixel([0.2, 0.6, 0.2])], dim=3)
    labels = torch.tensor([[[0, 1]]])
    loss = balanced_masked_ce_loss(weights)(logits, labels)[0, 0]
    assert loss.tolist() == pytest.approx(
        [weights[0] * -math.log(0.6), weights[1] * -math.log(0.6)]
    )
    with pytest.raises(AttackError, match="needs class_weights"):
        pixel_loss("balanced-masked-ce")
    with pytest.raises(AttackError, match="unknown loss 'dice'"):
        pixel_loss("dice")


class Constant(nn.Module):
    """Logits that favour ``label`` everywhere, with a learnable dependence on the input."""

    def __init__(self, label: int, classes: int = 4) -> None:
        super().__init__()
        self.label, self.classes = label, classes
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        logits = (
            torch.zeros(x.shape[0], self.classes, *x.shape[2:])
            + self.w * x.mean(1, keepdim=True) / 255
        )
        logits[:, self.label] += 5
        return logits


def test_an_ensemble_judges_on_its_decision_or_on_every_member():
    x = torch.zeros(2, 3, 4, 4)
    labels = torch.zeros(2, 4, 4, dtype=torch.int64)
    both = Ensemble({"T": Constant(0), "S": Constant(1)})
    assert pixel_accuracy(both, both(x), labels).tolist() == [0.5, 0.5]  # mean over members
    first = Ensemble({"T": Constant(0), "S": Constant(1)}, decide=lambda maps: maps["T"])
    assert pixel_accuracy(first, first(x), labels).tolist() == [1.0, 1.0]


def test_an_ensemble_of_one_network_is_the_network(model, images):
    alone = LLCM()(model, images, eps=4)
    assert torch.equal(Ensemble({"T": model})(images.float())[0], model(images.float()))
    assert torch.equal(LLCM()(Ensemble({"T": model}), images, eps=4), alone)


def test_attacks_leave_every_module_in_its_mode(model, images, labels):
    model.train()
    joint = Ensemble({"T": model})
    build_attack("apgd", n_iter=2)(joint, images, eps=4, labels=labels)
    assert all(m.training for m in model.modules())  # restored, though the ensemble is in eval
