"""The data tree, checked before any work: what a run will read exists, has labels of its
images' sizes, and (for real Cityscapes) holds the images the paper used.

Reading an image's size costs its PNG header only (about 50 us), so all of Cityscapes' 45,000
files are checked in seconds, not after hours of training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from bench.data.cityscapes import CityscapesSegmentation
from bench.errors import DataError

#: image counts of real Cityscapes (the paper's Section 4.1 for the mini subsets)
CITYSCAPES_COUNTS = {"mini_val": 59, "mini_test": 441, "train": 2975, "train_extra": 19998}
_EXAMPLES = 3


@dataclass
class TreeCheck:
    """The problems (the run cannot work) and warnings (it can, but not as the paper did)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        return None


def check_tree(
    root: str | Path, reads: Sequence[tuple[str, bool]], *, real: bool = False
) -> TreeCheck:
    """Check every (split or subset, with labels) a run reads under ``root``.

    One problem per split: a missing folder or city, images without labels, unreadable files,
    labels of another size than their images. With ``real``, a warning per subset whose image
    count differs from real Cityscapes'.
    """
    result = TreeCheck()
    if not Path(root).is_dir():
        raise DataError(
            f"data root {root} does not exist; pass the folder holding leftImg8bit/ "
            "(or generate one: bench data toycity --out DIR)"
        )
    for split, with_labels in dict(reads).items():
        try:
            data = CityscapesSegmentation(root, split, with_labels=with_labels)
        except DataError as err:
            result.problems.append(f"{split}: {err}")
            continue
        unreadable, mismatched = [], []
        for sample in data.samples if with_labels else ():
            image, label = _size(sample.image), _size(sample.label)
            if image is None or label is None:
                unreadable.append(str(sample.image if image is None else sample.label))
            elif image != label:
                mismatched.append(
                    f"{sample.label.name} is {label[1]}x{label[0]}, its image {image[1]}x{image[0]}"
                )
        if unreadable:
            result.problems.append(
                f"{split}: {len(unreadable)} unreadable files, e.g. {', '.join(unreadable[:_EXAMPLES])}"
            )
        if mismatched:
            result.problems.append(
                f"{split}: {len(mismatched)} labels differ in size from their images, e.g. "
                f"{'; '.join(mismatched[:_EXAMPLES])}; every label must have its image's size"
            )
        expected = CITYSCAPES_COUNTS.get(split)
        if real and expected is not None and len(data) != expected:
            result.warnings.append(
                f"{split} holds {len(data)} images, real Cityscapes {expected}: numbers will not "
                "compare with the paper's"
            )
    return result


def require_tree(root: str | Path, reads: Sequence[tuple[str, bool]], *, real: bool) -> list[str]:
    """``check_tree``, raising one ``DataError`` with one line per problem; the warnings."""
    result = check_tree(root, reads, real=real)
    if result.problems:
        raise DataError(
            f"the data tree {root} cannot serve this run:\n  " + "\n  ".join(result.problems)
        )
    return result.warnings
