"""Pretraining: it learns, it is reproducible, it validates its settings."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from bench.config import PretrainConfig
from bench.models import ERFNet
from bench.scoring import clean_confusion
from bench.train import poly_lr, pretrain, random_hflip


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
