"""Fixtures of the store tests: a tiny source network and the toy city's mini test split."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from bench.data.cityscapes import CityscapesSegmentation
from bench.models import ERFNet


@pytest.fixture
def make_source() -> Callable[[int], nn.Module]:
    """Tiny untrained source networks: ``make_source(seed)``."""

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return ERFNet(width=1).eval()

    return make


@pytest.fixture
def source(make_source) -> nn.Module:
    return make_source(0)


@pytest.fixture
def mini_test(toy_root) -> CityscapesSegmentation:
    """Four 32x64 images (2 Frankfurt + 2 Muenster)."""
    return CityscapesSegmentation(toy_root, "mini_test", size=(32, 64))
