"""Networks: ERFNet (students S and A), DeepLabv3+ (teacher T), a registry of architectures."""

from bench.models.deeplab import DeepLabV3Plus
from bench.models.erfnet import ERFNet
from bench.models.registry import ARCHITECTURES, architecture, build_model
from bench.models.taps import TapMixin, count_parameters
from bench.models.weights import check_output, load_weights, read_state_dict, seed_backbone

__all__ = [
    "ARCHITECTURES",
    "DeepLabV3Plus",
    "ERFNet",
    "TapMixin",
    "architecture",
    "build_model",
    "check_output",
    "count_parameters",
    "load_weights",
    "read_state_dict",
    "seed_backbone",
]
