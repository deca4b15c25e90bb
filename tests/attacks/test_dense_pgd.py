"""SegPGD and CosPGD: their weights and losses by hand, their strength against plain PGD, the
marks every judged attack records, and one trajectory for several decisions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from attacks import APGD, CosPGD, SegPGD, build_attack
from attacks.base import forward_in
from attacks.best_iterate import budget_marks, mark_counts
from attacks.cospgd import cospgd_weights
from attacks.dense_pgd import DensePGD
from attacks.objectives import Ensemble, pixel_accuracy
from attacks.segpgd import segpgd_weights
from bench.errors import AttackError

# One image of 2 x 2 pixels, 2 classes: right (label 0), wrong (label 0), right (label 1), ignored.
LOGITS = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.5, 0.0]]])[None]
LABELS = torch.tensor([[[0, 0], [1, 255]]])


def _ce(z_label: float, z_other: float) -> float:
    return math.log(1 + math.exp(z_other - z_label))


CE = [_ce(2, 0), _ce(0, 1), _ce(0.5, 0)]  # the three labelled pixels


def test_segpgd_weights_and_loss_by_hand():
    # step t = 2 of T = 4: l_t = 2 / 8 = 0.25 on the wrong pixel, 0.75 on the right ones
    weights = segpgd_weights(LOGITS, LABELS, 2, 4)
    assert torch.allclose(weights[0, :, :][LABELS[0] != 255], torch.tensor([0.75, 0.25, 0.75]))
    loss = SegPGD(n_iter=4).loss(LOGITS, LABELS, 2)
    expected = (0.75 * (CE[0] + CE[2]) + 0.25 * CE[1]) / 3  # over the 3 labelled pixels
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the first step: only the right pixels count
    assert SegPGD(n_iter=4).loss(LOGITS, LABELS, 0).item() == pytest.approx(
        (CE[0] + CE[2]) / 3, rel=1e-5
    )


def test_cospgd_weights_and_loss_by_hand():
    def cosine(z_label: float, z_other: float) -> float:
        p_label, p_other = (
            math.exp(z) / (math.exp(z_label) + math.exp(z_other)) for z in (z_label, z_other)
        )
        return p_label / math.hypot(p_label, p_other)  # <p, onehot> / (|p| |onehot|)

    hand = [cosine(2, 0), cosine(0, 1), cosine(0.5, 0), 0.0]
    assert torch.allclose(cospgd_weights(LOGITS, LABELS).flatten(), torch.tensor(hand), atol=1e-6)
    loss = CosPGD(n_iter=4).loss(LOGITS, LABELS, 0)
    assert loss.item() == pytest.approx(sum(w * c for w, c in zip(hand, CE)) / 3, rel=1e-5)


class _PlainPGD(DensePGD):
    """Sign-step PGD with the plain cross-entropy: the same start, step and best iterate."""

    name = "plain-pgd"

    def weights(self, logits: Tensor, labels: Tensor, t: int) -> Tensor:
        return torch.ones_like(labels, dtype=logits.dtype)


def _accuracy(net, images, labels) -> float:
    with torch.no_grad():
        return float(pixel_accuracy(net, net(images.float()), labels).mean())


@pytest.mark.parametrize("attack", [SegPGD, CosPGD], ids=["segpgd", "cospgd"])
@pytest.mark.parametrize("member", [0, 1], ids=["T", "S"])
def test_at_least_as_strong_as_plain_pgd_at_20_iterations(reference, attack, member):
    net, images, labels = reference[member], reference[2], reference[3]
    adv = attack(n_iter=20)(net, images, eps=4, labels=labels)
    plain = _PlainPGD(n_iter=20)(net, images, eps=4, labels=labels)
    assert (adv.int() - images.int()).abs().max() <= 4
    assert _accuracy(net, adv, labels) <= _accuracy(net, plain, labels)
    assert _accuracy(net, adv, labels) < _accuracy(net, images, labels) - 0.2


def test_registered_by_name():
    assert isinstance(build_attack("segpgd", n_iter=3), SegPGD)
    assert isinstance(build_attack("cospgd", step=1), CosPGD)
    with pytest.raises(AttackError, match="n_iter"):
        build_attack("segpgd", n_iter=0)


def test_budget_marks():
    assert budget_marks(5) == (2, 3, 5)
    assert budget_marks(100) == (25, 50, 100)
    assert budget_marks(4, offset=6) == (7, 8, 10)


@pytest.mark.parametrize(
    "attack", [APGD(n_iter=4), SegPGD(n_iter=4), CosPGD(n_iter=4)], ids=["apgd", "segpgd", "cospgd"]
)
def test_marks_recorded_at_a_quarter_a_half_and_the_whole_budget(reference, attack):
    net, images, labels = reference[1], reference[2][:3], reference[3][:3]
    result = attack.run(net, images, eps=4, labels=labels)
    assert result.mark_iterations == (1, 2, 4)
    marks = result.marks[""]
    assert marks.shape == (3, 3, 2, 19)
    correct = marks[:, :, 0].sum(-1)  # the intersections add up to the correct pixels
    assert (correct[:, 1:] <= correct[:, :-1]).all()  # the best iterate never gets better
    clean = mark_counts(net(images.float()).argmax(1), labels)[:, 0].sum(-1)
    assert (correct[:, -1] < clean).all()
    assert (marks[:, :, 0] <= marks[:, :, 1]).all()  # I <= U


def test_a_joint_objective_without_a_decision_records_no_marks(reference):
    joint = Ensemble({"T": reference[0], "S": reference[1]})
    result = SegPGD(n_iter=2).run(joint, reference[2][:2], eps=4, labels=reference[3][:2])
    assert result.marks == {} and set(result.images) == {""}


def _decide_t(maps):
    return maps["T"]


def _decide_s(maps):
    return maps["S"]


def _decide_never_right(maps):
    """A decision wrong on every pixel of the fixture's labels from the start (class 19 does
    not exist), so an early stop on it would fire at once."""
    return torch.full_like(maps["T"], 19)


@pytest.mark.parametrize(
    "attack",
    [APGD(n_iter=5), APGD(n_iter=10, red_eps=True), SegPGD(n_iter=5), CosPGD(n_iter=5)],
    ids=["apgd", "apgd-red-eps", "segpgd", "cospgd"],
)
def test_one_trajectory_for_several_decisions_gives_the_separate_sets_bit_for_bit(
    reference, attack
):
    nets = {"T": reference[0], "S": reference[1]}
    images, labels = reference[2][:4], reference[3][:4]
    decisions = {"t": _decide_t, "s": _decide_s, "never": _decide_never_right}
    shared = attack.run(Ensemble(nets, decisions=decisions), images, eps=4, labels=labels)
    for name, decide in decisions.items():
        alone = attack.run(Ensemble(nets, decide=decide), images, eps=4, labels=labels)
        assert torch.equal(shared.images[name], alone.images[""])
        assert torch.equal(shared.marks[name], alone.marks[""])
    assert not torch.equal(shared.marks["t"], shared.marks["s"])  # each judged on its own output


def test_red_eps_stops_a_larger_radius_stage_on_the_members_not_on_a_decision(reference):
    # the decision is wrong everywhere from the start, the members are not: the 2 eps and
    # 1.5 eps stages run their 3 + 3 iterations (and their first evaluations); the last stops
    # after its first step, its decision all wrong
    net, images, labels = reference[1], reference[2][:2], reference[3][:2]
    calls = []
    hook = net.register_forward_hook(lambda *_: calls.append(1))
    try:
        APGD(n_iter=10, red_eps=True).run(
            Ensemble({"T": net}, decide=_decide_never_right), images, eps=4, labels=labels
        )
    finally:
        hook.remove()
    assert len(calls) == (1 + 3) + (1 + 3) + (1 + 1)


def test_only_red_eps_sets_carry_apgds_revision():
    assert (APGD(red_eps=True).revision, APGD().revision, CosPGD().revision) == (1, 0, 0)


def test_an_attack_on_several_decisions_must_be_run():
    nets = Ensemble({"T": torch.nn.Identity()}, decisions={"a": _decide_t, "b": _decide_t})
    with pytest.raises(AttackError, match="call run"):
        SegPGD(n_iter=3)(nets, torch.zeros(1, 3, 4, 4, dtype=torch.uint8), eps=4)


def test_ignored_pixels_weigh_nothing():
    labels = torch.full_like(LABELS, 255)
    assert SegPGD(n_iter=2).loss(LOGITS, labels, 1).item() == 0
    assert CosPGD(n_iter=2).loss(LOGITS, labels, 1).item() == 0


def test_precision_float32_keeps_the_keys_and_a_bad_one_is_refused():
    assert CosPGD(precision="float32").params() == CosPGD().params()
    assert APGD(precision="float32").params() == APGD().params()
    assert CosPGD(precision="bfloat16").params()["precision"] == "bfloat16"
    with pytest.raises(AttackError, match="precision must be one of float32, bfloat16"):
        build_attack("apgd", precision="half")


def test_forward_in_bfloat16_hands_back_float32_and_a_gradient(reference):
    t, s, images = reference[0], reference[1], reference[2][:2].float()
    x = images.clone().requires_grad_(True)
    outputs = forward_in(Ensemble({"T": t, "S": s}), x, "bfloat16")
    assert isinstance(outputs, tuple) and all(o.dtype == torch.float32 for o in outputs)
    (grad,) = torch.autograd.grad(sum(o.logsumexp(1).sum() for o in outputs), x)
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0
    with torch.no_grad():
        exact = t(images)
        # bfloat16 passes: the same map on most pixels, not the same logits
        low = forward_in(t, images, "bfloat16")
    assert (low.argmax(1) == exact.argmax(1)).float().mean() > 0.9
    assert not torch.equal(low, exact)
    with torch.no_grad():
        assert torch.equal(forward_in(t, images, None), exact)
        assert torch.equal(forward_in(t, images, "float32"), exact)


@pytest.mark.parametrize(
    "attack",
    [CosPGD(n_iter=10), APGD(loss="js", n_iter=10)],
    ids=["cospgd", "apgd-js"],
)
def test_an_attack_in_bfloat16_stays_in_the_ball_and_breaks_the_network(reference, attack):
    net, images, labels = reference[1], reference[2], reference[3]
    low = build_attack(attack.name, **{**attack.params(), "precision": "bfloat16"})
    adv = low(net, images, eps=4, labels=labels)
    assert adv.dtype == torch.uint8 and (adv.int() - images.int()).abs().max() <= 4
    exact = attack(net, images, eps=4, labels=labels)
    assert not torch.equal(adv, exact)  # the passes did run in bfloat16
    # as strong as float32's on this tiny set (benchmarks/attack_precision.md measures it)
    assert _accuracy(net, adv, labels) < _accuracy(net, images, labels) - 0.2
    assert _accuracy(net, adv, labels) <= _accuracy(net, exact, labels) + 0.03
