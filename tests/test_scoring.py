"""ForwardMemo shares a forward pass only when that cannot change a result."""

from __future__ import annotations

import torch
from torch import nn

from bench.scoring import ForwardMemo


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.scale


def test_same_input_same_weights_runs_once():
    net = Counting()
    memo = ForwardMemo(net).eval()
    x = torch.rand(2, 3)
    with torch.no_grad():
        first = memo(x.clone())
        again = memo(x.clone())  # equal values, another tensor
    assert net.calls == 1 and torch.equal(first, again)


def test_new_input_updated_weights_and_training_run_again():
    net = Counting()
    memo = ForwardMemo(net).eval()
    x = torch.rand(2, 3)
    with torch.no_grad():
        memo(x)
        memo(x + 1)
        assert net.calls == 2
        net.scale.mul_(2)  # an in-place optimiser update bumps the version counter
        out = memo(x + 1)
    assert net.calls == 3 and torch.allclose(out, 2 * (x + 1))
    memo(x + 1)  # gradients enabled: never cached
    memo.train()
    with torch.no_grad():
        memo(x + 1)
    assert net.calls == 5


def test_attributes_reach_the_wrapped_network():
    net = Counting()
    assert ForwardMemo(net).calls == 0
