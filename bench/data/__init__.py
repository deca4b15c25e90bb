"""Data: the Cityscapes label table, the one Cityscapes-layout loader and the toy city."""

from bench.data.cityscapes import CityscapesSegmentation
from bench.data.labels import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    label_ids_to_train_ids,
)

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "PALETTE",
    "CityscapesSegmentation",
    "label_ids_to_train_ids",
]
