"""The toy city: Cityscapes layout and names, valid labels, determinism, loader, CLI, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from bench.cli import main
from bench.data.cityscapes import CityscapesSegmentation
from bench.data.labels import LABELS, label_ids_to_train_ids
from bench.data.toycity.canvas import ToyCityError
from bench.data.toycity.scene import render_scene
from bench.data.toycity.tree import CITIES, generate_toycity

from testdata import load_split

SMALL = {"size": (32, 64), "train": 3, "train_extra": 2, "val_per_city": 1, "progress": False}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def test_layout_and_names_follow_cityscapes(toy_root):
    images = sorted(
        p.relative_to(toy_root).as_posix() for p in toy_root.glob("leftImg8bit/*/*/*.png")
    )
    assert "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png" in images
    assert "leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png" in images
    assert len(images) == 6 + 6 + 3 * 2
    for rel in images:
        _, split, city, name = rel.split("/")
        assert city in CITIES[split] and name.startswith(f"{city}_")
        stem = name[: -len("_leftImg8bit.png")]
        kind = "gtCoarse" if split == "train_extra" else "gtFine"
        assert (toy_root / kind / split / city / f"{stem}_{kind}_labelIds.png").is_file()
    assert not list(toy_root.rglob("*.tmp")) and (toy_root / "toycity.json").is_file()


def test_labels_are_official_ids_covering_many_classes():
    label_ids = np.stack([render_scene(0, "train", i, (64, 128))[1] for i in range(12)])
    valid = {label_id for _, label_id, _, _ in LABELS}
    assert set(np.unique(label_ids).tolist()) <= valid
    train_ids = label_ids_to_train_ids(label_ids)
    present = set(np.unique(train_ids).tolist()) - {255}
    assert len(present) >= 12
    assert {5, 6, 7, 11, 18} <= present  # pole, traffic light, traffic sign, person, bicycle
    assert 0.0 < (train_ids == 255).mean() < 0.2  # some void, not much


def test_images_look_like_photographs_not_flat_paint():
    image, label_ids = render_scene(3, "val", 0, (128, 256))
    assert image.dtype == np.uint8 and image.shape == (128, 256, 3)
    road = image[label_ids == 7].astype(float)
    assert road.std(0).min() > 2.0  # texture and noise inside one class
    assert 20 < image.mean() < 160


def test_same_seed_same_bytes_and_counts_do_not_change_earlier_images(tmp_path):
    a = generate_toycity(tmp_path / "a", seed=5, **SMALL)
    b = generate_toycity(tmp_path / "b", seed=5, **SMALL)
    assert _digests(a) == _digests(b)
    more = generate_toycity(tmp_path / "more", seed=5, **{**SMALL, "train": 5})
    assert _digests(a).items() <= _digests(more).items()
    other = generate_toycity(tmp_path / "other", seed=6, **SMALL)
    assert _digests(a) != _digests(other)


def test_the_one_loader_reads_every_split(toy_root):
    mini_val = CityscapesSegmentation(toy_root, "mini_val")
    assert {s.image.parent.name for s in mini_val.samples} == {"lindau"} and len(mini_val) == 2
    mini_test = CityscapesSegmentation(toy_root, "mini_test")
    assert {s.image.parent.name for s in mini_test.samples} == {"frankfurt", "munster"}
    images, labels = load_split(CityscapesSegmentation(toy_root, "train"))
    assert images.shape == (6, 3, 32, 64) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and int(labels[labels != 255].max()) < 19
    extra = CityscapesSegmentation(toy_root, "train_extra", with_labels=False)
    assert len(extra) == 6 and extra[0][1].numel() == 0
    coarse = CityscapesSegmentation(toy_root, "train_extra")[0][1]
    assert (coarse == 255).float().mean() > (labels[0] == 255).float().mean()  # boundaries blanked


def test_existing_tree_is_reused_and_foreign_folders_are_refused(tmp_path):
    root = generate_toycity(tmp_path / "tc", **SMALL)
    before = _digests(root)
    assert generate_toycity(root, **SMALL) == root and _digests(root) == before
    with pytest.raises(ToyCityError, match="other settings"):
        generate_toycity(root, seed=1, **SMALL)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ToyCityError, match="not empty"):
        generate_toycity(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "new.partial").mkdir()
    (tmp_path / "new.partial" / "notes.txt").write_text("keep me too")
    with pytest.raises(ToyCityError, match="not an interrupted toy city"):
        generate_toycity(tmp_path / "new", **SMALL)


def test_interrupted_generation_resumes_in_partial_folder(tmp_path, monkeypatch):
    from bench.data.toycity import tree

    calls = {"n": 0}
    real = tree.render_scene

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tree, "render_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_toycity(tmp_path / "tc", **SMALL)
    assert not (tmp_path / "tc").exists() and (tmp_path / "tc.partial").is_dir()
    calls["n"] = 100
    root = generate_toycity(tmp_path / "tc", **SMALL)
    assert calls["n"] == 100 + 8 - 3  # only the missing images were drawn
    assert not (tmp_path / "tc.partial").exists()
    assert _digests(root) == _digests(generate_toycity(tmp_path / "fresh", **SMALL))


def test_cli_generates_and_errors_cleanly(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "data",
        "toycity",
        "--out",
        str(out),
        "--size",
        "16x32",
        "--train",
        "2",
        "--train-extra",
        "1",
        "--val-per-city",
        "1",
        "--quiet",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("leftImg8bit/*/*/*.png"))) == 6
    with Image.open(next(out.glob("gtFine/val/lindau/*.png"))) as label:
        assert label.mode == "L" and label.size == (32, 16)
    result = runner.invoke(main, [*args, "--seed", "3"])
    assert result.exit_code == 1 and "other settings" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["data", "toycity", "--out", str(tmp_path / "x"), "--size", "big"])
    assert result.exit_code == 2 and "HxW" in result.output
