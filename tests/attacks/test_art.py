"""ART through the segmentation estimator: BIM equals the native LLCM bit for bit, and ART's
FGSM, BIM, PGD (random start) and MI-FGSM run targeted and untargeted on the project's networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.attacks.evasion import BasicIterativeMethod
from art.estimators.classification.classifier import ClassifierMixin

from attacks import LLCM, AttackError, build_attack
from attacks.art import ART_ATTACKS, SegmentationEstimator
from attacks.base import eval_mode


@pytest.mark.parametrize("eps", [1, 10])
def test_art_bim_equals_native_llcm_bit_for_bit(model, images, eps):
    """ART's own BIM, driven directly: targeted at the least-likely map, no random start,
    eps_step 1, LLCM's number of iterations."""
    x = images.float()
    with eval_mode(model), torch.no_grad():
        target = model(x).argmin(1).numpy()
    estimator = SegmentationEstimator(model, input_shape=(3, 32, 64))
    assert not isinstance(estimator, ClassifierMixin)
    bim = BasicIterativeMethod(
        estimator,
        eps=eps,
        eps_step=1.0,
        max_iter=LLCM().n_iter(eps),
        targeted=True,
        batch_size=len(images),
        verbose=False,
    )
    with eval_mode(model):
        art_adv = bim.generate(x.numpy(), y=target)
    assert np.array_equal(art_adv, np.round(art_adv))  # integer valued before any quantisation
    native = LLCM()(model, images, eps=eps)
    assert np.array_equal(art_adv.astype(np.uint8), native.numpy())
    assert torch.equal(build_attack("bim")(model, images, eps=eps), native)  # the registry's BIM


def _ce(model, images, target):
    with torch.no_grad():
        return F.cross_entropy(model(images.float()), target, ignore_index=255).item()


@pytest.mark.parametrize("name", sorted(ART_ATTACKS))
@pytest.mark.parametrize("target", ["least_likely", "labels"])
def test_art_attacks_targeted_and_untargeted(model, images, labels, name, target):
    attack = build_attack(name, target=target)
    eps = 10
    adv = attack(model, images, eps=eps, labels=labels)
    assert adv.dtype == torch.uint8 and adv.shape == images.shape
    assert 0 < (adv.int() - images.int()).abs().max() <= eps
    if target == "labels":  # away from the ground truth
        assert _ce(model, adv, labels) > _ce(model, images, labels)
    else:  # towards the clean least-likely map
        with torch.no_grad():
            least = model(images.float()).argmin(1)
        assert _ce(model, adv, least) < _ce(model, images, least)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_random_start_is_seeded_and_leaves_numpy_alone(model, images):
    state = np.random.get_state()[1].copy()
    a = build_attack("pgd", seed=1)(model, images, eps=4)
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(a, build_attack("pgd", seed=1)(model, images, eps=4))
    assert not torch.equal(a, build_attack("pgd", seed=2)(model, images, eps=4))
    assert not torch.equal(a, build_attack("pgd", random_init=False)(model, images, eps=4))


def test_untargeted_needs_labels(model, images):
    with pytest.raises(AttackError, match="needs the ground-truth labels"):
        build_attack("pgd", target="labels")(model, images, eps=1)
    with pytest.raises(AttackError, match="choose from least_likely, labels"):
        build_attack("fgsm", target="gt")
    with pytest.raises(AttackError, match=r"eps must lie in \[0, 255\]"):
        build_attack("mifgsm")(model, images, eps=-2)
