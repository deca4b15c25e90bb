"""Fixtures of the attack tests: the two tiny architectures and a batch of images."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bench.models import DeepLabV3Plus, ERFNet


def _erfnet() -> nn.Module:
    torch.manual_seed(0)
    return ERFNet(width=1).eval()


def _deeplab() -> nn.Module:
    torch.manual_seed(0)
    return DeepLabV3Plus(depth=18, width=8, aspp_channels=32, aspp_rates=(1, 2, 3)).eval()


@pytest.fixture(params=[_erfnet, _deeplab], ids=["erfnet", "deeplab"])
def model(request: pytest.FixtureRequest) -> nn.Module:
    """Each tiny architecture, untrained, in eval mode."""
    return request.param()


@pytest.fixture
def images() -> Tensor:
    """Four gray-value images (4, 3, 32, 64) with saturated bands, so clipping matters."""
    images = torch.randint(
        0, 256, (4, 3, 32, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    images[:, :, :4] = 0
    images[:, :, -4:] = 255
    return images


@pytest.fixture
def labels() -> Tensor:
    """Ground-truth trainIds for ``images`` with an ignored (255) band."""
    labels = torch.randint(0, 19, (4, 32, 64), generator=torch.Generator().manual_seed(2))
    labels[:, :3] = 255
    return labels
