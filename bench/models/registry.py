"""The architectures a config can name, and how a network is built from its name.

``arch`` is a registered name (``erfnet``, ``deeplabv3plus``) or a user's own architecture,
``package.module:factory`` or ``path/to/file.py:factory``: called with the preset's options, it
returns a module that takes float gray values 0..255 (N, 3, H, W) and returns 19-class logits
(N, 19, H, W). Named feature taps are optional (without them, IFM' layers name modules by path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bench.errors import ModelError
from bench.models.deeplab import DeepLabV3Plus
from bench.models.erfnet import ERFNet
from bench.plugins import is_spec
from bench.registry import Registry

ARCHITECTURES: dict[str, type[nn.Module]] = {"erfnet": ERFNet, "deeplabv3plus": DeepLabV3Plus}
REGISTRY: Registry[Callable[..., nn.Module]] = Registry(
    "architecture",
    ModelError,
    ARCHITECTURES,
    plugin_hint="name your own as package.module:factory",
)


def architecture(arch: str) -> Callable[..., nn.Module]:
    """The class registered under ``arch``, or the user's factory it names."""
    return REGISTRY.get(arch)


def build_model(arch: str, num_classes: int = 19, **options: Any) -> nn.Module:
    """Build a network by architecture name, e.g. ``build_model("deeplabv3plus", depth=18)``."""
    factory = architecture(arch)
    try:
        model = factory(**options) if is_spec(arch) else factory(num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as err:  # unknown option, refused value
        raise ModelError(f"bad options for {arch} ({options}): {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"architecture {arch!r} built a {type(model).__name__}, not a torch module"
        )
    return model
