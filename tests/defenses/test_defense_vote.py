"""Detection (eq. 4) and correction on constructed label maps; the online vote."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.config import FinetuneConfig
from bench.errors import ModelError
from bench.models.taps import unwrapped
from bench.scoring import ForwardMemo, scored_at
from defenses import DefenseError, Vote, d_ae, hamming
from defenses.vote import suspects, thresholds

from defense_fakes import label_maps


def test_hamming_and_d_ae_by_hand():
    m = label_maps()
    assert hamming(m["T"], m["A"]).tolist() == pytest.approx([0.6, 0.05, 0.05, 0.2])
    assert d_ae(m["T"], m["S"], m["A"]).tolist() == pytest.approx([0.5, -0.6, 0.0, 0.15])


def test_single_threshold_picks_by_eq4(const_networks):
    images = torch.zeros(4, 3, 4, 5, dtype=torch.uint8)
    m = label_maps()
    ts = Vote(const_networks, fallback="S", delta=0.1).predict(images)
    ta = Vote(const_networks, fallback="A", delta=0.1).predict(images)
    # attack on T (0) and borderline 0.15 > 0.1 (3): fallback; attack on S (1), clean (2): T
    assert [r["chosen"] for r in ts.records] == ["S", "T", "T", "S"]
    assert [r["chosen"] for r in ta.records] == ["A", "T", "T", "A"]
    for i, net in enumerate("STTS"):
        assert torch.equal(ts.labels[i], m[net][i])
    for i, net in enumerate("ATTA"):
        assert torch.equal(ta.labels[i], m[net][i])
    # one threshold is a binary detector: d < delta points at S (paper Section 3.3)
    assert [r["suspect"] for r in ts.records] == ["T", "S", "S", "T"]
    assert ts.records[0]["d_ae"] == pytest.approx(0.5)
    assert ts.records[0]["d_ta"] == pytest.approx(0.6)
    assert ts.records[0]["d_sa"] == pytest.approx(0.1)


def test_two_thresholds_allow_no_attack(const_networks):
    images = torch.zeros(4, 3, 4, 5, dtype=torch.uint8)
    pred = Vote(const_networks, fallback="A", delta_t=0.2, delta_s=-0.2).predict(images)
    assert [r["suspect"] for r in pred.records] == ["T", "S", None, None]
    assert [r["flagged"] for r in pred.records] == [True, True, False, False]
    assert [r["chosen"] for r in pred.records] == ["A", "T", "T", "T"]


def test_suspects_at_the_threshold_keep_t():
    # d == delta is not > delta: T stays (the better clean network)
    assert suspects(torch.tensor([0.25, 0.0]), 0.25, 0.0) == [None, None]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"delta_t": 0.1}, "both delta_t and delta_s"),
        ({"delta_t": -0.1, "delta_s": 0.1}, "must be >= delta_s"),
    ],
    ids=["one-of-two", "crossed"],
)
def test_threshold_errors(kwargs, message):
    with pytest.raises(DefenseError, match=message):
        thresholds(**kwargs)


def test_vote_needs_a_and_a_known_fallback(const_networks):
    with pytest.raises(DefenseError, match="bench train --net A"):
        Vote({k: const_networks[k] for k in "TS"})
    with pytest.raises(DefenseError, match="choose from S, A"):
        Vote(const_networks, fallback="T")


def test_online_vote_votes_first_then_finetunes_a_private_copy(tiny_networks, images):
    original_a = copy.deepcopy(tiny_networks["A"].state_dict())
    offline = Vote(tiny_networks, fallback="A")
    online = Vote(tiny_networks, fallback="A", online=True, finetune=FinetuneConfig(lr=1e-2))
    assert online.name == "TA-vote-online"
    first = online.predict(images)
    # prequential: the first batch is judged by the A it arrived to, exactly as offline
    assert torch.equal(first.labels, offline.predict(images).labels)
    assert first.records == offline.predict(images).records
    # then A has learned from that batch, and only its private copy has
    moved = [not torch.equal(p, original_a[k]) for k, p in online.nets["A"].state_dict().items()]
    assert any(moved)
    for key, value in tiny_networks["A"].state_dict().items():
        assert torch.equal(value, original_a[key]), key
    assert not online.nets["A"].training


@pytest.mark.parametrize("label_size", [None, (64, 128)], ids=["data size", "full resolution"])
def test_online_vote_learns_the_same_behind_the_evaluations_forward_memo(
    tiny_networks, images, label_size
):
    # the evaluation stage hands defenses its networks wrapped in ForwardMemo (shared forward
    # passes, logits upsampled to the labels' size when scoring at full resolution) and calls
    # them under no_grad; the taps must still name the network's modules, see a real forward
    # pass, and T and A's logits must keep one size
    settings = FinetuneConfig(lr=1e-2)
    plain = Vote(copy.deepcopy(tiny_networks), fallback="A", online=True, finetune=settings)
    memos = {k: ForwardMemo(copy.deepcopy(n)) for k, n in tiny_networks.items()}
    with torch.no_grad():
        plain.predict(images)
        plain.predict(images)  # judged by the A that learned from the first batch
        with scored_at(memos, label_size):
            wrapped = Vote(memos, fallback="A", online=True, finetune=settings)
            wrapped.predict(images)
            labels = wrapped.predict(images).labels
    assert tuple(labels.shape[-2:]) == (label_size or tuple(images.shape[-2:]))
    learned = unwrapped(wrapped.nets["A"]).state_dict()
    for key, value in plain.nets["A"].state_dict().items():
        assert torch.equal(value, learned[key]), key
    assert any(not torch.equal(v, tiny_networks["A"].state_dict()[k]) for k, v in learned.items())


def test_online_vote_validates_its_finetune_settings(tiny_networks):
    with pytest.raises(ModelError, match="unknown layer 'down4'"):
        Vote(tiny_networks, online=True, finetune=FinetuneConfig(layers=("down4",)))


def test_at_in_as_place_is_the_watchdog_and_the_fallback(const_networks):
    """The T/AT vote is the T/A vote with AT's map where A's was: the same choices."""
    images = torch.zeros(4, 3, 4, 5, dtype=torch.uint8)
    with_at = {"T": const_networks["T"], "S": const_networks["S"], "AT": const_networks["A"]}
    tat = Vote(with_at, fallback="A", adaptive="AT", delta=0.1).predict(images)
    ta = Vote(const_networks, fallback="A", delta=0.1).predict(images)
    assert torch.equal(tat.labels, ta.labels)
    assert [r["chosen"] for r in tat.records] == ["AT", "T", "T", "AT"]
    assert [r["d_ae"] for r in tat.records] == [r["d_ae"] for r in ta.records]
    with pytest.raises(DefenseError, match=r"needs networks T, S, AT.*bench train --net AT"):
        Vote(const_networks, fallback="A", adaptive="AT")
    with pytest.raises(DefenseError, match="unknown vote watchdog 'B'"):
        Vote(with_at, adaptive="B")
    with pytest.raises(DefenseError, match="online vote finetunes A"):
        Vote(with_at, fallback="A", adaptive="AT", online=True)
