"""Fixtures of the defense tests: fake and tiny networks, a batch of images."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bench.models import ERFNet

from defense_fakes import ConstNet, label_maps


@pytest.fixture
def const_networks() -> dict[str, nn.Module]:
    return {k: ConstNet(v) for k, v in label_maps().items()}


@pytest.fixture
def tiny_networks() -> dict[str, nn.Module]:
    """Untrained ERFNet(width=1) for T, S, A (A a copy of S) and AT, eval mode."""
    torch.manual_seed(0)
    t, s = ERFNet(width=1).eval(), ERFNet(width=1).eval()
    a = ERFNet(width=1).eval()
    a.load_state_dict(s.state_dict())
    return {"T": t, "S": s, "A": a, "AT": ERFNet(width=1).eval()}


@pytest.fixture
def images() -> Tensor:
    return torch.randint(
        0, 256, (2, 3, 32, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
