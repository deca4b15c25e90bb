"""The Cityscapes-layout loader on a hand-made tree: selection, mapping, resizing, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.cityscapes import CityscapesSegmentation
from bench.errors import DataError

from testdata import load_split

H, W = 16, 32


def _write(
    root: Path, split: str, city: str, frame: int, label_id: int, kind: str = "gtFine"
) -> None:
    stem = f"{city}_000000_{frame:06d}"
    img_dir = root / "leftImg8bit" / split / city
    lab_dir = root / kind / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    image = np.full((H, W, 3), frame * 10, dtype=np.uint8)
    Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
    labels = np.full((H, W), label_id, dtype=np.uint8)
    labels[:, : W // 2] = 0  # void -> 255
    Image.fromarray(labels).save(lab_dir / f"{stem}_{kind}_labelIds.png")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for frame in (2, 1):
        _write(tmp_path, "val", "lindau", frame, label_id=7)  # road -> 0
    _write(tmp_path, "val", "frankfurt", 1, label_id=26)  # car -> 13
    _write(tmp_path, "val", "munster", 1, label_id=24)  # person -> 11
    _write(tmp_path, "train", "aachen", 1, label_id=11)  # building -> 2
    _write(tmp_path, "train_extra", "augsburg", 1, label_id=21, kind="gtCoarse")
    return tmp_path


def test_subsets_select_cities_as_on_real_cityscapes(tree):
    mini_val = CityscapesSegmentation(tree, "mini_val")
    assert [s.image.name for s in mini_val.samples] == [
        "lindau_000000_000001_leftImg8bit.png",
        "lindau_000000_000002_leftImg8bit.png",
    ]
    mini_test = CityscapesSegmentation(tree, "mini_test")
    assert [s.image.parent.name for s in mini_test.samples] == ["frankfurt", "munster"]
    assert len(CityscapesSegmentation(tree, "val")) == 4


def test_items_are_uint8_images_and_train_id_labels(tree):
    image, label = CityscapesSegmentation(tree, "mini_test")[0]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert label.dtype == torch.int64 and label.shape == (H, W)
    assert set(label.unique().tolist()) == {13, 255}


def test_label_train_ids_png_is_preferred(tree):
    stem = tree / "gtFine/val/munster/munster_000000_000001_gtFine"
    Image.fromarray(np.full((H, W), 5, dtype=np.uint8)).save(f"{stem}_labelTrainIds.png")
    _, label = CityscapesSegmentation(tree, "val", cities=("munster",))[0]
    assert set(label.unique().tolist()) == {5}


def test_resize_is_bilinear_for_images_and_nearest_for_labels(tree):
    data = CityscapesSegmentation(tree, "mini_test", size=(8, 16))
    images, labels = load_split(data)
    assert images.shape == (2, 3, 8, 16) and labels.shape == (2, 8, 16)
    assert set(labels.unique().tolist()) <= {11, 13, 255}  # no blended label values


def test_unlabelled_split_never_reads_labels(tree):
    image, label = CityscapesSegmentation(tree, "train_extra", with_labels=False)[0]
    assert image.shape == (3, H, W) and label.numel() == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: CityscapesSegmentation(t / "nope", "val"), r"data root .*nope does not exist"),
        (lambda t: CityscapesSegmentation(t, "test"), r"missing split folder .*leftImg8bit/test"),
        (lambda t: CityscapesSegmentation(t, "val", cities=("bonn",)), r"no city bonn in .*found"),
        (
            lambda t: CityscapesSegmentation(t, "mini_trainval"),
            r"unknown split or subset 'mini_trainval'",
        ),
    ],
)
def test_clear_errors(tree, make, message):
    with pytest.raises(DataError, match=message):
        make(tree)


def test_image_without_label_names_the_file(tree):
    (tree / "gtFine/val/lindau/lindau_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match=r"lindau_000000_000001_leftImg8bit.png has no label"):
        CityscapesSegmentation(tree, "mini_val")


def test_unreadable_image_names_the_file(tree):
    (tree / "leftImg8bit/val/munster/munster_000000_000001_leftImg8bit.png").write_bytes(b"junk")
    data = CityscapesSegmentation(tree, "val", cities=("munster",))
    with pytest.raises(
        DataError, match=r"cannot read image .*munster_000000_000001_leftImg8bit.png"
    ):
        data[0]


def test_fingerprint_tracks_selection_and_size(tree):
    a = CityscapesSegmentation(tree, "mini_val").fingerprint()
    assert a == CityscapesSegmentation(tree, "mini_val").fingerprint()
    assert a != CityscapesSegmentation(tree, "mini_val", size=(8, 16)).fingerprint()
    assert a != CityscapesSegmentation(tree, "mini_test").fingerprint()
