"""Attack surfaces: what a white-box attacker of each built-in defense differentiates through."""

from __future__ import annotations

import pytest
import torch

from attacks import APGD, LLCM
from attacks.objectives import Ensemble
from bench.errors import DefenseError
from defenses import (
    AttackSurface,
    DisagreementVote,
    InputTransform,
    SingleNetwork,
    Vote,
    attack_surface,
    build_defense,
)


def test_a_single_network_is_its_own_surface(tiny_networks):
    surface = attack_surface(SingleNetwork(tiny_networks, net="S"))
    assert surface.name == "S" and surface.networks == {"S": tiny_networks["S"]}
    assert surface.transform is None and surface.decide is None and not surface.random


def test_a_preprocessor_is_crossed_with_bpda(tiny_networks, images):
    defense = InputTransform(tiny_networks, method="jpeg", quality=50)
    surface = attack_surface(defense)
    assert surface.name == "jpeg(T)" and surface.settings == {"method": "jpeg", "quality": 50}
    x = images.float().requires_grad_(True)
    out = surface.transform(x)
    exact, _ = defense.transform(images.numpy().astype("float32"))
    assert torch.equal(out.detach(), torch.from_numpy(exact))  # the exact forward
    (out * 3).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3))  # ART's estimate: the identity


@pytest.mark.parametrize("cls", [Vote, DisagreementVote])
def test_a_vote_is_judged_on_its_own_output(tiny_networks, images, cls):
    vote = cls(tiny_networks) if cls is DisagreementVote else cls(tiny_networks, fallback="A")
    surface = attack_surface(vote)
    assert set(surface.networks) == {"T", "S", "A"} and surface.name == f"T+S+A:{vote.name}"
    maps = {k: net(images.float()).argmax(1) for k, net in surface.networks.items()}
    assert torch.equal(surface.decide(maps), vote.predict(images).labels)


def test_the_disagreement_vote_answers_a_joint_attack():
    t = torch.zeros(1, 4, 4, dtype=torch.int64)
    fooled_alike = {"T": t, "S": t, "A": torch.ones_like(t)}  # T and S agree, A disagrees with both
    _, records = Vote(dict.fromkeys("TSA"), fallback="A").vote(fooled_alike)
    assert records[0]["chosen"] == "T" and records[0]["d_ae"] == 0  # eq. 4 keeps T
    guarded, records = DisagreementVote(dict.fromkeys("TSA"), tau=0.5).vote(fooled_alike)
    assert records[0]["suspect"] == "T+S" and records[0]["chosen"] == "A"
    assert torch.equal(guarded, fooled_alike["A"])
    with pytest.raises(
        DefenseError, match=r"tau = 2: is a share of pixels, so it must lie in \[0, 1\]"
    ):
        DisagreementVote(dict.fromkeys("TSA"), tau=2)


def test_a_surface_must_be_an_attack_surface(tiny_networks):
    class Odd(SingleNetwork):
        def attack_surface(self):
            return {"T": self.model}

    with pytest.raises(DefenseError, match=r"must return defenses\.AttackSurface"):
        attack_surface(Odd(tiny_networks))
    assert attack_surface(object()) is None
    assert isinstance(attack_surface(SingleNetwork(tiny_networks)), AttackSurface)


def test_white_box_bpda_hurts_jpeg_more_than_the_transfer_attack(reference):
    t, _, images, labels = reference
    jpeg = build_defense("jpeg", {"T": t})
    surface = attack_surface(jpeg)
    white = APGD(n_iter=5)(
        Ensemble(surface.networks, transform=surface.transform), images, eps=4, labels=labels
    )
    transfer = LLCM()(t, images, eps=4)

    def accuracy(batch):
        right = (jpeg.predict(batch).labels == labels) & (labels != 255)
        return float(right.sum() / (labels != 255).sum())

    assert accuracy(white) < accuracy(transfer) - 0.05 < accuracy(images)


def test_the_online_vote_is_attacked_against_its_a_of_the_moment(tiny_networks, images):
    online = Vote(tiny_networks, fallback="A", online=True)
    surface = attack_surface(online)
    assert surface.networks["A"] is online.nets["A"]  # the private copy that learns
    before = [p.clone() for p in surface.networks["A"].parameters()]
    surface.after_batch(images)  # what the AE builder calls after each adversarial batch
    assert any(not torch.equal(b, p) for b, p in zip(before, surface.networks["A"].parameters()))
    assert attack_surface(Vote(tiny_networks, fallback="A")).after_batch is None


def test_the_adversarially_trained_network_is_its_own_surface(tiny_networks):
    networks = {**tiny_networks, "AT": tiny_networks["S"]}
    defense = build_defense("AT", networks)
    surface = attack_surface(defense)
    assert defense.name == "AT" and surface.name == "AT"
    assert surface.networks == {"AT": networks["AT"]}
    assert surface.transform is None and surface.decide is None and not surface.random


def test_the_vote_with_at_in_as_place_is_attacked_through_t_s_and_at(tiny_networks, images):
    networks = {"T": tiny_networks["T"], "S": tiny_networks["S"], "AT": tiny_networks["A"]}
    vote = build_defense("TAT-vote", networks)
    surface = attack_surface(vote)
    assert vote.name == "TAT-vote" and surface.name == "T+S+AT:TAT-vote"
    assert surface.networks == networks
    maps = {k: net(images.float()).argmax(1) for k, net in surface.networks.items()}
    assert torch.equal(surface.decide(maps), vote.predict(images).labels)
