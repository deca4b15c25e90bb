"""The one loader for trees in the Cityscapes layout: a real Cityscapes copy or the toy city.

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      (train, val)
    <root>/gtCoarse/train_extra/<city>/..._gtCoarse_labelIds.png                (never read)

Images come out as uint8 (3, H, W) gray values 0..255 and labels as int64 (H, W) trainIds, 255 =
ignore. ``*_labelTrainIds.png`` is used when present, otherwise labelIds are mapped with the
official table. Order is sorted by file name, so every run sees the same images in the same order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from bench.errors import BenchError
from bench.data.labels import IGNORE_INDEX, label_ids_to_train_ids

SPLITS = ("train", "val", "test", "train_extra")
# Named city subsets of the paper (Section 4.1): Lindau = mini val, Frankfurt + Muenster = mini test.
SUBSETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mini_val": ("val", ("lindau",)),
    "mini_test": ("val", ("frankfurt", "munster")),
}
_IMAGE_SUFFIX = "_leftImg8bit.png"


class DataError(BenchError, ValueError):
    """The data tree is not where or what it should be."""


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
        self.samples = self._index()

    def _index(self) -> list[Sample]:
        if not self.root.is_dir():
            raise DataError(
                f"data root {self.root} does not exist; pass the folder holding leftImg8bit/ "
                "(or generate one: bench data toycity --out DIR)"
            )
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
        label_kind = "gtCoarse" if self.split == "train_extra" else "gtFine"
        samples = []
        for city in cities:
            for image in sorted((image_dir / city).glob(f"*{_IMAGE_SUFFIX}")):
                label = None
                if self.with_labels:
                    stem = self.root / label_kind / self.split / city / image.name[: -len(_IMAGE_SUFFIX)]
                    label = _label_path(stem, label_kind)
                    if label is None:
                        raise DataError(
                            f"image {image} has no label {stem}_{label_kind}_labelIds.png"
                        )
                samples.append(Sample(image, label))
        if not samples:
            raise DataError(f"no *{_IMAGE_SUFFIX} images for cities {', '.join(cities)} in {image_dir}")
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.samples[index]
        image = _read_png(sample.image, "RGB", self.size, Image.BILINEAR)
        if image.ndim != 3:
            raise DataError(f"{sample.image} is not an RGB image")
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sample.label is None:
            return image_t, torch.empty(0, dtype=torch.int64)
        raw = _read_png(sample.label, "L", self.size, Image.NEAREST)
        train_ids = raw if sample.label.name.endswith("labelTrainIds.png") else label_ids_to_train_ids(raw)
        if train_ids.shape != image.shape[:2]:
            raise DataError(
                f"label {sample.label} is {train_ids.shape}, image {sample.image} is {image.shape[:2]}"
            )
        return image_t, torch.from_numpy(train_ids.astype(np.int64))

    def fingerprint(self) -> str:
        """Identifies the selection (split, cities, size, file names) for cache keys."""
        digest = hashlib.sha256(f"{self.split}|{self.cities}|{self.size}".encode())
        for sample in self.samples:
            digest.update(sample.image.name.encode())
        return digest.hexdigest()[:16]


def _label_path(stem: Path, kind: str) -> Path | None:
    for suffix in (f"_{kind}_labelTrainIds.png", f"_{kind}_labelIds.png"):
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    return None


def _read_png(path: Path, mode: str, size: tuple[int, int] | None, resample: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), resample)
            return np.asarray(img)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {path} ({err}); the file is missing or corrupt") from None


def load_split(dataset: CityscapesSegmentation) -> tuple[Tensor, Tensor]:
    """Read a whole (small) split into memory: images (N, 3, H, W) uint8, labels (N, H, W) int64."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([i for i, _ in items]), torch.stack([lab for _, lab in items])


__all__ = ["IGNORE_INDEX", "SPLITS", "SUBSETS", "CityscapesSegmentation", "DataError", "load_split"]
