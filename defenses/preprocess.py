"""Baseline input-transformation defenses: an ART pre-processor in front of one network (T).

JPEG compression (Guo et al. [25] of the paper; default quality 75 as there), spatial smoothing
(a median filter, Xu et al.; window 3) and feature squeezing (bit-depth reduction, Xu et al.;
default 5 bits, since 8 bits would leave uint8 images unchanged). None of them is
differentiable; a white-box attacker crosses them with BPDA (Athalye et al. 2018): the exact
transformation forward, ART's gradient estimate of the pre-processor backward (the identity for
all three).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from bench.errors import DefenseError
from defenses.base import (
    AttackSurface,
    DefenseBase,
    Networks,
    Prediction,
    predict_labels,
    require_networks,
)

if TYPE_CHECKING:
    from art.defences.preprocessor.preprocessor import Preprocessor

# ART is imported inside the builders: it takes seconds to import, and every user of
# ``defenses`` (e.g. ``bench train --net A`` through the losses) would pay for it otherwise.


def _jpeg(quality: int = 75) -> Preprocessor:
    from art.defences.preprocessor import JpegCompression

    return JpegCompression(clip_values=(0, 255), quality=quality, channels_first=True)


def _smoothing(window_size: int = 3) -> Preprocessor:
    from art.defences.preprocessor import SpatialSmoothing

    return SpatialSmoothing(window_size=window_size, channels_first=True, clip_values=(0, 255))


def _squeezing(bit_depth: int = 5) -> Preprocessor:
    from art.defences.preprocessor import FeatureSqueezing

    return FeatureSqueezing(clip_values=(0, 255), bit_depth=bit_depth)


# method name -> builder of the ART pre-processor (its keyword arguments are the options)
METHODS = {"jpeg": _jpeg, "spatial-smoothing": _smoothing, "feature-squeezing": _squeezing}


class _BPDA(torch.autograd.Function):
    """An ART pre-processor as a differentiable step: exact forward, ART's estimate backward."""

    @staticmethod
    def forward(ctx, x: Tensor, preprocessor: Preprocessor) -> Tensor:  # type: ignore[override]
        ctx.preprocessor = preprocessor
        ctx.save_for_backward(x)
        out, _ = preprocessor(x.detach().cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.asarray(out, np.float32)).to(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        estimate = ctx.preprocessor.estimate_gradient(x.detach().cpu().numpy(), grad.cpu().numpy())
        return torch.from_numpy(np.asarray(estimate, np.float32)).to(grad), None


def bpda(preprocessor: Preprocessor):
    """``preprocessor`` as a function of float pixels (N, 3, H, W) that autograd can cross."""
    return lambda x: _BPDA.apply(x, preprocessor)


class InputTransform(DefenseBase):
    """Transform the images with an ART pre-processor, then take ``net``'s argmax.

    Args:
        networks: needs ``net`` (default "T").
        method: "jpeg" (option ``quality``), "spatial-smoothing" (``window_size``) or
            "feature-squeezing" (``bit_depth``).

    Records: ``{"chosen": net}`` for every image.
    """

    def __init__(
        self, networks: Networks, *, method: str = "jpeg", net: str = "T", **params: Any
    ) -> None:
        if method not in METHODS:
            raise DefenseError(
                f"unknown input transformation {method!r}; choose from {', '.join(METHODS)}"
            )
        self.name = method
        require_networks(networks, (net,), method)
        self.net = net
        self.model = networks[net]
        self.params = params
        try:
            self.transform = METHODS[method](**params)
        except (TypeError, ValueError) as err:  # unknown keyword, or ART's own range checks
            raise DefenseError(f"bad option for {method}: {err}") from err

    def _predict(self, images: Tensor) -> Prediction:
        transformed, _ = self.transform(images.cpu().numpy().astype(np.float32))
        labels = predict_labels(self.model, torch.from_numpy(np.asarray(transformed, np.float32)))
        return Prediction(labels, [{"chosen": self.net} for _ in range(len(labels))])

    def attack_surface(self) -> AttackSurface:
        """The network behind the pre-processor, crossed with BPDA."""
        return AttackSurface(
            f"{self.name}({self.net})",
            {self.net: self.model},
            transform=bpda(self.transform),
            settings={"method": self.name, **self.params},
        )
