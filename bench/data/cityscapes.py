"""The one loader for trees in the Cityscapes layout: a real Cityscapes copy or the toy city.

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      (train, val)
    <root>/gtCoarse/train_extra/<city>/..._gtCoarse_labelIds.png                (never read)

Images come out as uint8 (3, H, W) gray values 0..255 and labels as int64 (H, W) trainIds, 255 =
ignore. ``*_labelTrainIds.png`` is used when present, otherwise labelIds are mapped with the
official table. Order is sorted by file name, so every run sees the same images in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from bench.config import SPLITS, SUBSETS
from bench.data.identity import data_identity
from bench.data.labels import (
    describe_values,
    holds_train_ids,
    invalid_values,
    label_ids_to_train_ids,
    values_rule,
)
from bench.errors import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"


def label_kind(split: str) -> str:
    """The label folder of a split: coarse labels for ``train_extra``, fine ones elsewhere."""
    return "gtCoarse" if split == "train_extra" else "gtFine"


def image_path(root: Path, split: str, city: str, stem: str) -> Path:
    """``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``."""
    return root / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}"


def label_path(root: Path, split: str, city: str, stem: str, ids: str = "labelIds") -> Path:
    """``<root>/<gtFine|gtCoarse>/<split>/<city>/<stem>_<kind>_<ids>.png``."""
    kind = label_kind(split)
    return root / kind / split / city / f"{stem}_{kind}_{ids}.png"


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None


class CityscapesSegmentation(Dataset):
    """Images and trainId labels of one split (or named subset) of a Cityscapes-layout tree.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val``, ``train_extra`` (or ``test``), or a named subset
            (``mini_val``, ``mini_test``).
        cities: optional city filter (folder names), e.g. ``("lindau",)``.
        size: optional (H, W) to resize to: bilinear for images, nearest for labels.
        with_labels: read labels; ``False`` for the unlabelled finetuning split.
        full_labels: keep labels at their own resolution (the official evaluation's), while
            images are resized to ``size``.

    Items: ``(image, label)`` with image uint8 (3, H, W) and label int64 (H, W) trainIds, 255 =
    ignore; label is an empty tensor when ``with_labels`` is False.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        cities: tuple[str, ...] | None = None,
        size: tuple[int, int] | None = None,
        with_labels: bool = True,
        full_labels: bool = False,
    ) -> None:
        self.root = Path(root)
        if split in SUBSETS:
            if cities is not None:
                raise DataError(f"subset {split!r} fixes its cities; do not pass cities as well")
            split, cities = SUBSETS[split]
        elif split not in SPLITS:
            raise DataError(
                f"unknown split or subset {split!r}; choose from {', '.join(SPLITS + tuple(SUBSETS))}"
            )
        self.split = split
        self.cities = cities
        self.size = size
        self.with_labels = with_labels
        self.full_labels = full_labels
        self.samples = self._index()

    def _index(self) -> list[Sample]:
        require_root(self.root)
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise DataError(f"missing split folder {image_dir}; expected the Cityscapes layout")
        available = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
        cities = self.cities or tuple(available)
        missing = [c for c in cities if c not in available]
        if missing:
            raise DataError(
                f"no city {', '.join(missing)} in {image_dir}; found {', '.join(available) or 'none'}"
            )
        samples = []
        for city in cities:
            images = (image_dir / city).glob(f"*{IMAGE_SUFFIX}")
            # macOS leaves "._*" resource files beside copied images: they are not images.
            for image in sorted(p for p in images if not p.name.startswith("._")):
                label = None
                if self.with_labels:
                    label = self._label(city, image.name[: -len(IMAGE_SUFFIX)])
                samples.append(Sample(image, label))
        if not samples:
            raise DataError(
                f"no *{IMAGE_SUFFIX} images for cities {', '.join(cities)} in {image_dir}"
            )
        return samples

    def _label(self, city: str, stem: str) -> Path:
        for ids in ("labelTrainIds", "labelIds"):
            path = label_path(self.root, self.split, city, stem, ids)
            if path.is_file():
                return path
        expected = label_path(self.root, self.split, city, stem)
        raise DataError(f"image {stem}{IMAGE_SUFFIX} has no label {expected}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.samples[index]
        image = _read_png(sample.image, "RGB")
        if sample.label is None:
            return _to_tensor(_resize(image, self.size, Image.BILINEAR)), torch.empty(
                0, dtype=torch.int64
            )
        label = _read_png(sample.label, "L")
        if label.size != image.size:
            raise DataError(
                f"label {sample.label} is {label.size[1]}x{label.size[0]} but its image is "
                f"{image.size[1]}x{image.size[0]}; every label must have its image's size"
            )
        raw = np.asarray(label if self.full_labels else _resize(label, self.size, Image.NEAREST))
        is_train_ids = holds_train_ids(sample.label.name)
        # the data check reads every label of the evaluated subsets and a sample of the others:
        # a bad value it did not see stops here, named, not as an IndexError in a loss
        bad = invalid_values(raw, train_ids=is_train_ids)
        if bad:
            raise DataError(
                f"label {sample.label} holds {describe_values(bad)}: "
                f"{values_rule(train_ids=is_train_ids)}"
            )
        train_ids = raw if is_train_ids else label_ids_to_train_ids(raw)
        return _to_tensor(_resize(image, self.size, Image.BILINEAR)), torch.from_numpy(
            train_ids.astype(np.int64)
        )

    def files(self) -> list[Path]:
        """Every file this dataset reads: images, then their labels."""
        return [s.image for s in self.samples] + [s.label for s in self.samples if s.label]

    def fingerprint(self) -> str:
        """The key of what this dataset yields: its selection (split, cities, size, labels or
        not) and the identity of its files (``bench.data.identity``), so edited data is noticed."""
        selection = [self.split, list(self.cities or ()), self.size, self.with_labels]
        if self.full_labels:
            selection.append("full-resolution labels")
        return data_identity(self.root, self.files(), selection)


def require_root(root: Path) -> None:
    """Raise ``DataError`` unless ``root`` is a folder (one line: missing, or a file)."""
    if root.is_dir():
        return
    if root.exists():
        raise DataError(
            f"data root {root} is a file, not a folder; pass the folder holding leftImg8bit/ "
            "(e.g. the one you unzipped Cityscapes into)"
        )
    raise DataError(
        f"data root {root} does not exist; pass the folder holding leftImg8bit/ "
        "(or generate one: bench data toycity --out DIR)"
    )


def _read_png(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(
            f"cannot read image {path} ({err}); the file is missing or corrupt"
        ) from err


def _resize(img: Image.Image, size: tuple[int, int] | None, resample: int) -> Image.Image:
    if size is None or img.size == (size[1], size[0]):
        return img
    return img.resize((size[1], size[0]), resample)


def _to_tensor(img: Image.Image) -> Tensor:
    """(H, W, 3) RGB -> (3, H, W) uint8."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))


__all__ = ["CityscapesSegmentation", "image_path", "label_kind", "label_path", "require_root"]
