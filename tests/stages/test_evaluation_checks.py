"""The evaluation's own checks (AutoAttack-style): masked gradients, random defenses, defenses
that ignore their input, and adaptive attacks weaker than transfer ones."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from attacks.objectives import Ensemble
from bench.config import load_config
from bench.errors import DefenseError
from bench.stages.context import DefenseEntry, RunContext, RunDefenses
from bench.stages.evaluation_checks import (
    gradient_checks,
    input_checks,
    random_checks,
    weaker_checks,
)
from bench.stages.probes import SurfaceProbe, masked_gradient_share, probe_batch
from bench.store.rundir import RunDir
from defenses import Prediction


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 1)

    def forward(self, x):
        return self.conv(x / 255)


def test_a_gradient_that_a_transform_kills_is_flagged():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 19, (2, 8, 8))
    assert masked_gradient_share(Ensemble({"T": Net()}), images, labels) < 0.1
    rounding = Ensemble({"T": Net()}, transform=lambda x: (x / 32).round() * 32)
    assert masked_gradient_share(rounding, images, labels) == 1.0


class NoParameters(nn.Module):
    """A network without parameters: a fixed colour-to-class rule."""

    def forward(self, x):
        return x.mean(1, keepdim=True) * torch.linspace(-1, 1, 19)[None, :, None, None]


class Constant(nn.Module):
    """Ignores its input: the same logits for every image."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 19, *x.shape[2:])


def test_networks_without_parameters_are_checked_not_crashed():
    """A plug-in's surface may run a network without parameters (it used to end the run in a
    StopIteration); one whose output ignores the input has a zero gradient everywhere."""
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 19, (2, 8, 8))
    assert masked_gradient_share(Ensemble({"T": NoParameters()}), images, labels) < 0.1
    assert masked_gradient_share(Ensemble({"T": Constant()}), images, labels) == 1.0


class Coin:
    """Answers at random: its two instances disagree on the same batch."""

    name = "coin"

    def predict(self, images):
        n, _, h, w = images.shape
        return Prediction(torch.randint(0, 19, (n, h, w)), [{} for _ in range(n)])


def test_a_random_defense_without_eot_is_flagged(toy_root, tmp_path):
    config = load_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(toy_root)))
    ctx = RunContext.open(config, RunDir(tmp_path), torch.device("cpu"), progress=False)
    entries = {"coin": DefenseEntry(Coin, "", None, "")}
    warnings = random_checks(ctx.with_defenses(RunDefenses(entries, 0.0)))
    assert [w["subject"] for w in warnings] == ["coin"]
    assert "randomised" in warnings[0]["message"] and "random=True" in warnings[0]["message"]


class Fails:
    """A plug-in whose predict raises (its rows may all come from the cache of an earlier run)."""

    name = "fails"

    def predict(self, images):
        raise ZeroDivisionError("division by zero")


def test_a_plugin_failing_in_the_randomness_check_is_one_line(toy_root, tmp_path):
    config = load_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(toy_root)))
    ctx = RunContext.open(config, RunDir(tmp_path), torch.device("cpu"), progress=False)
    entries = {"fails": DefenseEntry(Fails, "", None, "", plugin="bad.py:Fails")}
    with pytest.raises(DefenseError, match=r"defense 'fails' \(bad.py:Fails\): predict failed"):
        random_checks(ctx.with_defenses(RunDefenses(entries, 0.0)))


def test_a_white_box_attack_weaker_than_a_transfer_one_is_flagged():
    rows = pd.DataFrame(
        [
            {"defense": "d", "subset": "s", "eps": 10.0, "threat": "transfer", "miou": 20.0},
            {"defense": "d", "subset": "s", "eps": 10.0, "threat": "white-box", "miou": 30.0},
            {"defense": "e", "subset": "s", "eps": 10.0, "threat": "transfer", "miou": 20.0},
            {"defense": "e", "subset": "s", "eps": 10.0, "threat": "white-box", "miou": 20.5},
        ]
    )
    warnings = weaker_checks(rows)
    assert [w["subject"] for w in warnings] == ["d"]  # within the tie margin: no warning for e
    assert "needs more iterations or another loss" in warnings[0]["message"]
    assert warnings[0]["subset"] == "s"  # the leaderboards of other subsets do not show it


class OnNet:
    """A defense on a fixed 1x1-convolution network: ``quantize`` rounds the gray values to
    steps of 32 first (its output still follows the input; its gradient is zero)."""

    def __init__(self, net: nn.Module, quantize: bool = False) -> None:
        self.net, self.quantize, self.name = net, quantize, "on-net"

    def predict(self, images):
        x = images.float()
        x = (x / 32).round() * 32 if self.quantize else x
        with torch.no_grad():
            labels = self.net(x).argmax(1)
        return Prediction(labels, [{} for _ in range(len(images))])


class FixedMap:
    """Ignores its input: the same label map for every image."""

    name = "fixed"

    def predict(self, images):
        n, _, h, w = images.shape
        labels = (torch.arange(h * w).view(h, w) % 19).expand(n, h, w).clone()
        return Prediction(labels, [{} for _ in range(n)])


def _context(toy_root, tmp_path, entries):
    config = load_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(toy_root)))
    ctx = RunContext.open(config, RunDir(tmp_path), torch.device("cpu"), progress=False)
    return ctx.with_defenses(RunDefenses(entries, 0.0))


def _white_box(ctx, source, model, rows):
    """A white-box AE set's plan as ``gradient_checks`` reads it, its surface probed."""
    images, labels = probe_batch(ctx)
    probe = SurfaceProbe(masked_gradient_share(model, images, labels), ())
    return SimpleNamespace(
        spec=SimpleNamespace(threat="white-box", source=source, subset="mini_val"),
        target=SimpleNamespace(model=model, rows=rows, probe=probe),
    )


def test_each_check_fires_on_its_own_kind_of_defense_and_nowhere_else(toy_root, tmp_path):
    torch.manual_seed(0)
    net = Net()
    entries = {
        "honest": DefenseEntry(lambda: OnNet(net), "", None, ""),
        "quant": DefenseEntry(lambda: OnNet(net, quantize=True), "", None, ""),
        "coin": DefenseEntry(Coin, "", None, ""),
        "fixed": DefenseEntry(FixedMap, "", None, ""),
    }
    ctx = _context(toy_root, tmp_path, entries)
    ignoring = input_checks(ctx)
    assert [w["subject"] for w in ignoring] == ["fixed"]
    assert "ignores its input" in ignoring[0]["message"]
    assert [w["subject"] for w in random_checks(ctx)] == ["coin"]
    rounding = Ensemble({"T": net}, transform=lambda x: (x / 32).round() * 32)
    plans = [
        _white_box(ctx, "T", Ensemble({"T": net}), ("honest",)),
        _white_box(ctx, "quant(T)", rounding, ("quant", "quant-twin")),
        _white_box(ctx, "fixed", Ensemble({"T": Constant()}), ("fixed",)),
    ]
    masked = gradient_checks(plans, {w["subject"] for w in ignoring})
    assert [w["subject"] for w in masked] == ["quant", "quant-twin"]  # the rows, not the surface
    assert "quant(T)" in masked[0]["message"] and "differentiable transform" in masked[0]["message"]
    # without the input check, the fixed map would be called masked: its zero gradient is real
    assert [w["subject"] for w in gradient_checks(plans)] == ["quant", "quant-twin", "fixed"]
