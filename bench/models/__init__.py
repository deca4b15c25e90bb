"""Networks: ERFNet (students S and A), DeepLabv3+ (teacher T), a registry of architectures."""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.models.deeplab import DeepLabV3Plus
from bench.models.erfnet import ERFNet, load_official_state_dict
from bench.models.taps import TapMixin, count_parameters

ARCHITECTURES: dict[str, type[nn.Module]] = {"erfnet": ERFNet, "deeplabv3plus": DeepLabV3Plus}


def build_model(arch: str, num_classes: int = 19, **options: Any) -> nn.Module:
    """Build a network by architecture name, e.g. ``build_model("deeplabv3plus", depth=18)``."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}"
        ) from None
    try:
        return cls(num_classes, **options)
    except TypeError as err:
        raise ValueError(f"bad options for {arch}: {err}") from None


__all__ = [
    "ARCHITECTURES",
    "DeepLabV3Plus",
    "ERFNet",
    "TapMixin",
    "build_model",
    "count_parameters",
    "load_official_state_dict",
]
