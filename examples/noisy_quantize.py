"""A second example plug-in: T behind a random, non-differentiable pre-processing step, with an
option.

Use it with ``bench run --defense examples/noisy_quantize.py:NoisyQuantize``, or with options
and a row name of its own (the same TOML table a preset's ``evaluate.defenses`` takes)::

    bench run --defense '{spec = "examples/noisy_quantize.py:NoisyQuantize",
                          options = {step = 16}, name = "quantize-16"}'

Its ``attack_surface()`` tells a white-box attacker what it cannot differentiate: the rounding
(``transform``, crossed by BPDA: the exact forward, the identity backward) and the noise
(``random``: the attack averages its gradients over ``attack.eot_samples`` draws, EOT).
"""

from __future__ import annotations

import torch
from torch import Tensor

from defenses import (
    AttackSurface,
    DefenseBase,
    Networks,
    Prediction,
    predict_labels,
    require_networks,
)


class NoisyQuantize(DefenseBase):
    """T's map of the image after uniform noise of +-step/2 gray values and rounding to
    multiples of ``step``."""

    name = "noisy-quantize"
    needs = ("T",)  # the networks it reads: a run without other readers of A finetunes none

    def __init__(self, networks: Networks, *, step: int = 8) -> None:
        require_networks(networks, ("T",), self.name)
        if isinstance(step, bool) or not isinstance(step, int) or not 2 <= step <= 128:
            raise ValueError(f"step must be an integer in 2..128, got {step!r}")
        self.teacher = networks["T"]
        self.step = step

    def quantize(self, pixels: Tensor) -> Tensor:
        """Float gray values (N, 3, H, W) 0..255 -> the same shape and range: noise, then
        rounding. The forward is exact; the backward is the identity (BPDA), since rounding has
        a zero gradient almost everywhere."""
        noise = (torch.rand_like(pixels) - 0.5) * self.step
        rounded = ((pixels + noise) / self.step).round().mul(self.step).clamp(0, 255)
        return pixels + (rounded - pixels).detach()

    def _predict(self, images: Tensor) -> Prediction:
        labels = predict_labels(self.teacher, self.quantize(images.float()))
        return Prediction(labels, [{"step": self.step} for _ in range(len(labels))])

    def attack_surface(self) -> AttackSurface:
        return AttackSurface(
            "quantize(T)",
            {"T": self.teacher},
            transform=self.quantize,
            random=True,
            settings={"step": self.step},
        )
