"""APGD for segmentation (SEA): its schedule, its starts, and that it beats BIM."""

from __future__ import annotations

import pytest
import torch

from attacks import APGD, build_attack
from attacks.apgd import checkpoints, random_start
from attacks.objectives import Ensemble, pixel_accuracy
from bench.errors import AttackError


def test_checkpoints_for_100_iterations_by_hand():
    # first at 0.22 N = 22, then spacing 22 - 3 = 19, 16, 13, 10, 7, and at least 0.06 N = 6
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # every step once N is tiny


def test_random_starts_do_not_depend_on_the_batch():
    x = torch.rand(4, 3, 8, 8) * 255
    index = torch.tensor([7, 8, 9, 10])
    together = random_start(x, 4.0, index, seed=3)
    alone = torch.cat([random_start(x[i : i + 1], 4.0, index[i : i + 1], seed=3) for i in range(4)])
    assert torch.equal(together, alone)
    assert (together - x).abs().max() <= 4 and not torch.equal(together, x)
    assert not torch.equal(random_start(x, 4.0, index + 1, seed=3), together)


def _accuracy(net, images, labels) -> float:
    with torch.no_grad():
        return float(pixel_accuracy(net, net(images.float()), labels).mean())


@pytest.mark.parametrize("member", [0, 1], ids=["T", "S"])
def test_apgd_ce_beats_bim_with_the_same_budget(reference, member):
    net, images, labels = reference[member], reference[2], reference[3]
    clean = _accuracy(net, images, labels)
    apgd = APGD(loss="ce", n_iter=5)(net, images, eps=4, labels=labels)
    bim = build_attack("bim", target="labels", iterations=5, step=1)(
        net, images, eps=4, labels=labels
    )
    assert (apgd.int() - images.int()).abs().max() <= 4
    assert clean > 0.6
    assert _accuracy(net, apgd, labels) < _accuracy(net, bim, labels) - 0.01
    assert _accuracy(net, bim, labels) < clean


@pytest.mark.parametrize("loss", ["masked-ce", "js", "balanced-masked-ce"])
def test_every_loss_attacks(reference, loss):
    net, images, labels = reference[1], reference[2], reference[3]
    weights = [1.0] * 19 if loss == "balanced-masked-ce" else None
    adv = APGD(loss=loss, n_iter=5, class_weights=weights, red_eps=True)(
        net, images, eps=4, labels=labels
    )
    assert (adv.int() - images.int()).abs().max() <= 4  # red-eps ends inside the eps ball
    assert _accuracy(net, adv, labels) < _accuracy(net, images, labels)


def test_the_joint_attack_lowers_both_members(reference):
    t, s, images, labels = reference
    joint = APGD(loss="ce", n_iter=5)(Ensemble({"T": t, "S": s}), images, eps=4, labels=labels)
    for member in (t, s):
        assert _accuracy(member, joint, labels) < _accuracy(member, images, labels) - 0.2


def test_bad_options_are_named():
    with pytest.raises(AttackError, match="unknown APGD loss 'dlr'"):
        APGD(loss="dlr")
    with pytest.raises(AttackError, match="n_iter must be an integer >= 1"):
        APGD(n_iter=0)
    with pytest.raises(AttackError, match="needs the ground-truth labels"):
        APGD(n_iter=1)(torch.nn.Conv2d(3, 19, 1), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), eps=1)
