"""The architectures a config can name, and how a network is built from its name."""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.errors import ModelError
from bench.models.deeplab import DeepLabV3Plus
from bench.models.erfnet import ERFNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"erfnet": ERFNet, "deeplabv3plus": DeepLabV3Plus}


def architecture(arch: str) -> type[nn.Module]:
    """The class registered under ``arch``; the error lists the valid names."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ModelError(
            f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}"
        ) from None


def build_model(arch: str, num_classes: int = 19, **options: Any) -> nn.Module:
    """Build a network by architecture name, e.g. ``build_model("deeplabv3plus", depth=18)``."""
    cls = architecture(arch)
    try:
        return cls(num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as err:  # unknown option, refused value
        raise ModelError(f"bad options for {arch} ({options}): {err}") from None
