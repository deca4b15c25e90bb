"""Pretraining and adversarial training: they learn, they are reproducible."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from bench.config import AdversarialConfig, PretrainConfig
from bench.models import ERFNet
from bench.scoring import clean_confusion
from bench.train import adversarial_train, pgd_examples, poly_lr, pretrain, random_hflip


def _stripes(n: int = 32) -> TensorDataset:
    """Images whose top half is dark (class 0) and bottom half bright (class 10)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (n, 3, 32, 64), generator=g, dtype=torch.uint8)
    images[:, :, 16:] += 150
    labels = torch.zeros(n, 32, 64, dtype=torch.int64)
    labels[:, 16:] = 10
    labels[:, :2] = 255
    return TensorDataset(images, labels)


def _train(seed: int) -> ERFNet:
    torch.manual_seed(seed)
    model = ERFNet(width=1)
    pretrain(
        model,
        _stripes(),
        PretrainConfig(epochs=6, batch_size=4, lr=1e-2),
        seed=seed,
        progress=False,
    )
    return model


def test_pretraining_learns_an_easy_split():
    model = _train(0)
    assert not model.training
    assert clean_confusion(model, _stripes(), progress=False).miou() > 0.9


def test_same_seed_same_weights():
    a, b = _train(3), _train(3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_poly_schedule_and_flip():
    assert poly_lr(1.0, 0, 10, 0.9) == 1.0 and poly_lr(1.0, 10, 10, 0.9) == 0.0
    images = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(8, 3, 2, 4)
    labels = torch.arange(4).view(1, 1, 4).expand(8, 2, 4)
    flipped, flipped_labels = random_hflip(images, labels, torch.Generator().manual_seed(0))
    changed = (flipped != images).flatten(1).any(1)
    assert 0 < changed.sum() < 8  # some, not all
    assert torch.equal(flipped[:, 0, 0].long(), flipped_labels[:, 0])  # labels follow images


def _pgd_loss(model: ERFNet, data: TensorDataset, eps: float) -> float:
    """Mean cross-entropy of ``model`` on 5-step PGD examples of ``data`` (fixed start)."""
    images, labels = data.tensors
    adv = pgd_examples(
        model,
        images.float(),
        labels,
        eps=eps,
        steps=5,
        step=eps / 2,
        generator=torch.Generator().manual_seed(9),
    )
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(adv), labels, ignore_index=255).item()


def test_pgd_examples_stay_in_the_ball_and_raise_the_loss():
    model = _train(0)
    images, labels = _stripes(8).tensors
    x = images.float()
    adv = pgd_examples(
        model, x, labels, eps=4.0, steps=3, step=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert (adv - x).abs().max() <= 4.0 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 255
    assert not model.training  # attacked as deployed, its mode restored
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), labels, ignore_index=255)
        attacked = torch.nn.functional.cross_entropy(model(adv), labels, ignore_index=255)
    assert attacked > clean


def test_adversarial_training_lowers_the_loss_on_pgd_examples():
    """A few epochs of PGD-AT lower a network's loss on fresh PGD examples (a large eps, so
    that the network starts clearly broken: measured 0.54 -> 0.02)."""
    data, eps = _stripes(), 48.0
    model = _train(0)
    before = _pgd_loss(model, data, eps)
    settings = AdversarialConfig(eps=eps, steps=2, epochs=4, batch_size=4, lr=1e-2)
    stats = adversarial_train(model, data, settings, seed=0, progress=False)
    assert stats.iterations == 4 * 8 and not model.training
    assert _pgd_loss(model, data, eps) < 0.3 * before


@pytest.mark.parametrize("clean_weight", [0.0, 0.5])
def test_the_optimiser_steps_on_pgd_examples(clean_weight):
    """What the trained forward pass sees: PGD examples inside the ball, not the clean images
    (clean training lowers the loss of the test above as well); with a clean term, the clean
    images beside them in one batch."""
    model = _train(0)
    seen = []
    hook = model.register_forward_hook(
        lambda module, inputs, _: seen.append(inputs[0].detach()) if module.training else None
    )
    data = _stripes(4)
    settings = AdversarialConfig(
        eps=8.0, steps=2, epochs=1, batch_size=4, clean_weight=clean_weight
    )
    adversarial_train(model, data, settings, seed=0, progress=False)
    hook.remove()
    (batch,) = seen
    images = data.tensors[0].float()
    adversarial = batch[:4]
    # the loader shuffles and may flip: match each image to the nearest clean one or mirror
    candidates = torch.cat([images, images.flip(-1)])

    def distance(a: torch.Tensor) -> torch.Tensor:
        return (candidates - a).abs().flatten(1).amax(1).min()

    delta = torch.stack([distance(a) for a in adversarial])
    assert (delta <= 8.0 + 1e-4).all() and (delta > 4.0).all()
    if clean_weight:
        assert len(batch) == 8
        clean = batch[4:]
        assert all(distance(c) == 0 for c in clean)
    else:
        assert len(batch) == 4


def test_a_clean_weight_of_one_is_plain_training_on_clean_images():
    """clean_weight = 1 never attacks: the same weights as the same steps of clean training."""
    a, b = _train(0), _train(0)
    settings = AdversarialConfig(clean_weight=1.0, epochs=1, batch_size=4, lr=1e-3, steps=1)
    adversarial_train(a, _stripes(), settings, seed=5, progress=False)
    clean = PretrainConfig(epochs=1, batch_size=4, lr=1e-3, weight_decay=settings.weight_decay)
    pretrain(b, _stripes(), clean, seed=5, progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
