"""The three votes' white-box sets on one trajectory: the same sets, bit for bit, as three
separate runs, for one attack run per batch."""

from __future__ import annotations

import pytest
import torch

from attacks import APGD
from attacks.objectives import Ensemble
from bench.config import AttackSpec
from bench.data.cityscapes import CityscapesSegmentation
from bench.stages.ae_sets import PlannedSet, Target, shared_attacks
from bench.store import SetSpec, build_ae_set


@pytest.fixture
def pair(reference):
    """The reference T and S."""
    return {"T": reference[0], "S": reference[1]}


@pytest.fixture
def mini_test_labelled(toy_root):
    """Four 32x64 images of the toy city with their labels."""
    return CityscapesSegmentation(toy_root, "mini_test", size=(32, 64))


class CountingAPGD(APGD):
    """APGD that counts its runs (one per batch and trajectory)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.runs = 0

    def _run(self, *args):
        self.runs += 1
        return super()._run(*args)


def _votes(nets):
    """Three decisions on T and S, as the votes decide on T, S and A."""
    return {
        "T-only": lambda maps: maps["T"],
        "S-only": lambda maps: maps["S"],
        "agree-else-T": lambda maps: torch.where(maps["T"] == maps["S"], maps["T"], maps["S"] * 0),
    }


def _plans(nets, eps=4.0):
    plans = []
    for name, decide in _votes(nets).items():
        model = Ensemble(nets, decide=decide)
        target = Target("white-box", f"T+S:{name}", model, {"T": "t", "S": "s"}, surface=name)
        spec = SetSpec(
            "mini_test", "apgd-ce", "white-box", target.source, eps, target.networks, name
        )
        plans.append(PlannedSet(spec, target, AttackSpec("apgd")))
    return plans


def _build_all(store, plans, attacks, dataset):
    return [
        build_ae_set(
            store,
            plan.spec,
            model=plan.target.model,
            dataset=dataset,
            attack=attacks[i],
            batch_size=2,
            progress=False,
        )
        for i, plan in enumerate(plans)
    ]


def test_shared_trajectory_gives_the_separate_sets_bit_for_bit(tmp_path, mini_test_labelled, pair):
    plans = _plans(pair)
    alone = CountingAPGD(n_iter=4)
    separate = _build_all(tmp_path / "alone", plans, [alone] * 3, mini_test_labelled)
    attack = CountingAPGD(n_iter=4)
    shared = shared_attacks(plans, {"apgd-ce": attack})
    assert sorted(shared) == [0, 1, 2]
    together = _build_all(tmp_path / "shared", plans, shared, mini_test_labelled)
    for a, b in zip(separate, together):
        assert torch.equal(a.read(), b.read())
        (marks_a, iterations_a), (marks_b, iterations_b) = a.marks(), b.marks()
        assert (marks_a == marks_b).all() and iterations_a == iterations_b == (1, 2, 4)
        assert a.attrs == b.attrs  # the same keys: the evaluation's cache holds for both
    assert (alone.runs, attack.runs) == (6, 2)  # 2 batches: 3 trajectories each, or 1


def test_surfaces_with_a_transform_are_attacked_apart(pair):
    plans = _plans(pair)
    plans[0].target.model.transform = lambda x: x
    shared = shared_attacks(plans, {"apgd-ce": APGD(n_iter=2)})
    assert sorted(shared) == [1, 2]  # the other two still share theirs
    red_eps = shared_attacks(_plans(pair), {"apgd-ce": APGD(n_iter=2, red_eps=True)})
    assert sorted(red_eps) == [0, 1, 2]  # red_eps stops its larger-radius stages on the members
