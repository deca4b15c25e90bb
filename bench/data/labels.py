"""The official Cityscapes label table (cityscapesscripts' ``helpers/labels.py``), as data.

labelIds are what ``*_gtFine_labelIds.png`` stores; trainIds 0..18 are the 19 evaluated classes
and 255 is ignored. The table is tested against cityscapesscripts itself.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255
NUM_CLASSES = 19

# (name, labelId, trainId, colour) for every labelId 0..33.
LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)

CLASS_NAMES: tuple[str, ...] = tuple(
    name for name, _, train_id, _ in sorted(LABELS, key=lambda r: r[2]) if train_id != IGNORE_INDEX
)
# (19, 3) uint8 colours of the trainIds, for plots and label PNGs.
PALETTE = np.array(
    [colour for _, _, t, colour in sorted(LABELS, key=lambda r: r[2]) if t != IGNORE_INDEX],
    dtype=np.uint8,
)
# labelId -> trainId; any value outside 0..33 (e.g. -1 stored as 255) maps to ignore.
_LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _, _label_id, _train_id, _ in LABELS:
    _LABEL_TO_TRAIN[_label_id] = _train_id
# trainId -> labelId (for writing labelId PNGs and for the official evaluation).
TRAIN_TO_LABEL = np.array(
    [label_id for _, label_id, t, _ in sorted(LABELS, key=lambda r: r[2]) if t != IGNORE_INDEX],
    dtype=np.uint8,
)
LABEL_ID: dict[str, int] = {name: label_id for name, label_id, _, _ in LABELS}
# The values a label PNG may hold: trainIds 0..18 and 255 (ignore) in ``*_labelTrainIds.png``;
# the table's labelIds 0..33 and 255 (-1, the licence plate, as uint8) in ``*_labelIds.png``.
VALID_TRAIN_IDS = np.zeros(256, dtype=bool)
VALID_TRAIN_IDS[[*range(NUM_CLASSES), IGNORE_INDEX]] = True
VALID_LABEL_IDS = np.zeros(256, dtype=bool)
VALID_LABEL_IDS[[*(label_id for _, label_id, _, _ in LABELS), 255]] = True


def holds_train_ids(name: str) -> bool:
    """A ``*_labelTrainIds.png`` holds trainIds; every other label file holds labelIds."""
    return name.endswith("labelTrainIds.png")


def values_rule(*, train_ids: bool) -> str:
    """What a label file of its kind may hold and how to fix one that holds more."""
    if train_ids:
        return (
            "trainIds must be 0..18 or 255 (ignore); regenerate it (cityscapesscripts' "
            "createTrainIdLabelImgs) or delete it so that its labelIds file is read"
        )
    return "labelIds must be Cityscapes' ids 0..33 (or 255); regenerate it (json2labelImg)"


def describe_values(values: list[int], limit: int = 5) -> str:
    """``[50, 254]`` -> ``"50, 254"`` (the first ``limit``, then how many more)."""
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def invalid_values(values: np.ndarray, *, train_ids: bool) -> list[int]:
    """The values of a uint8 label map (any shape) that its kind of file may not hold, sorted."""
    valid = VALID_TRAIN_IDS if train_ids else VALID_LABEL_IDS
    if valid[values].all():  # the common case, one pass
        return []
    return [int(v) for v in np.unique(values) if not valid[v]]


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelId map (H, W) uint8 to trainIds (H, W) uint8, 255 = ignore."""
    return _LABEL_TO_TRAIN[label_ids]


def colorize(train_ids: torch.Tensor | np.ndarray) -> np.ndarray:
    """trainIds (..., H, W) -> RGB (..., H, W, 3) uint8 in the Cityscapes palette; ignore is black."""
    ids = np.asarray(train_ids.cpu() if isinstance(train_ids, torch.Tensor) else train_ids)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[ids.astype(np.int64).clip(0, 255)]
