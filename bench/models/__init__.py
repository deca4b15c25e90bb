"""Networks: ERFNet (students S and A), DeepLabv3+ (teacher T), a registry of architectures."""

from bench.models.deeplab import DeepLabV3Plus
from bench.models.erfnet import ERFNet, load_official_state_dict
from bench.models.registry import ARCHITECTURES, architecture, build_model
from bench.models.taps import TapMixin, count_parameters

__all__ = [
    "ARCHITECTURES",
    "DeepLabV3Plus",
    "ERFNet",
    "TapMixin",
    "architecture",
    "build_model",
    "count_parameters",
    "load_official_state_dict",
]
