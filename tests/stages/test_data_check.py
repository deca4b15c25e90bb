"""The data tree is checked before any work: a tree in the real layout that lacks what the run
reads is refused with one line per problem, before a network is trained."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from bench.data.check import check_tree
from bench.data.labels import label_ids_to_train_ids

from smokerun import invoke


@pytest.fixture
def real_tree(toy_root, tmp_path):
    """A copy of the toy city used as a user's own tree (``--data``), without its manifest."""
    tree = tmp_path / "cityscapes"
    shutil.copytree(toy_root, tree)
    (tree / "toycity.json").unlink()
    return tree


def _run(tree, out, ok=False):
    return invoke(
        "run",
        "--preset",
        "smoke",
        "--data",
        tree,
        "--out",
        out,
        "--device",
        "cpu",
        "--quiet",
        ok=ok,
    )


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("leftImg8bit/train_extra", "train_extra: missing split folder"),
        ("leftImg8bit/val/frankfurt", "mini_test: no city frankfurt in"),
    ],
)
def test_a_tree_without_what_the_run_reads_is_refused_before_any_work(
    real_tree, tmp_path, remove, message
):
    shutil.rmtree(real_tree / remove)
    result = _run(real_tree, tmp_path / "run")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "cannot serve this run" in result.output
    assert "[networks]" not in result.output and not (tmp_path / "run" / "models").exists()


def test_labels_of_another_size_and_missing_labels_are_named(real_tree):
    label = next((real_tree / "gtFine" / "train" / "aachen").glob("*_labelIds.png"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(label)
    (next((real_tree / "gtFine" / "val" / "lindau").glob("*_labelIds.png"))).unlink()
    result = check_tree(real_tree, [("train", True), ("mini_val", True), ("train_extra", False)])
    assert len(result.problems) == 2
    assert result.problems[0].startswith("train: 1 labels differ in size from their images")
    assert "8x8, its image 32x64" in result.problems[0]
    assert (
        result.problems[1].startswith("mini_val: image lindau_")
        and "has no label" in result.problems[1]
    )


def test_counts_that_differ_from_real_cityscapes_are_warned(real_tree, tmp_path):
    (
        real_tree / "leftImg8bit" / "val" / "lindau" / "._lindau_000000_000019_leftImg8bit.png"
    ).write_bytes(b"mac")
    output = _run(real_tree, tmp_path / "run", ok=True).output
    assert "warning: mini_val holds 2 images, real Cityscapes 59" in output
    assert "warning: train_extra holds 6 images, real Cityscapes 19998" in output
    assert "checks.csv" not in output
    checks = (tmp_path / "run" / "checks.csv").read_text()
    assert "real Cityscapes 441" in checks  # in the report's checks too


def _label(tree, city="frankfurt", kind="labelIds"):
    return next((tree / "gtFine" / "val" / city).glob(f"*_{kind}.png"))


def _with_value(path, value, target=None):
    """The label at ``path`` with a few pixels set to ``value``, saved as ``target`` (trainIds
    for a ``*_labelTrainIds.png``)."""
    labels = np.asarray(Image.open(path)).copy()
    if target is not None and target.name.endswith("labelTrainIds.png"):
        labels = label_ids_to_train_ids(labels)
    labels[0, :5] = value
    Image.fromarray(labels).save(target or path)
    return target or path


@pytest.mark.parametrize(
    ("kind", "value", "rule"),
    [
        ("labelTrainIds", 50, "trainIds must be 0..18 or 255 (ignore)"),
        ("labelTrainIds", 254, "trainIds must be 0..18 or 255 (ignore)"),
        ("labelIds", 50, "labelIds must be Cityscapes' ids 0..33 (or 255)"),
    ],
)
def test_labels_out_of_range_stop_the_run_before_any_work(real_tree, tmp_path, kind, value, rule):
    source = _label(real_tree)
    target = source.with_name(source.name.replace("labelIds", kind))
    _with_value(source, value, target)
    result = _run(real_tree, tmp_path / "run")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"mini_test: {target.relative_to(real_tree)} holds {value} (5 pixels): {rule}" in (
        result.output
    )
    assert "[networks]" not in result.output and not (tmp_path / "run" / "models").exists()


@pytest.mark.parametrize(
    "what", ["leftImg8bit/val/munster", "gtFine/val/munster", "leftImg8bit/train_extra"]
)
def test_truncated_pngs_stop_the_run_before_any_work(real_tree, tmp_path, what):
    path = sorted((real_tree / what).rglob("*.png"))[0]
    path.write_bytes(path.read_bytes()[:-40])  # cut inside the last data chunk
    result = _run(real_tree, tmp_path / "run")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"1 truncated files (their PNG ends early), e.g. {path}; copy or unzip" in result.output
    assert "[networks]" not in result.output and not (tmp_path / "run" / "models").exists()


def test_label_values_of_the_training_split_are_sampled(real_tree, monkeypatch):
    labels = sorted((real_tree / "gtFine" / "train").rglob("*_labelIds.png"))
    for label in labels:
        _with_value(label, 200)
    monkeypatch.setattr("bench.data.check.LABEL_SAMPLE", 2)
    full = check_tree(real_tree, [("train", True)]).problems
    sampled = check_tree(real_tree, [("train", True)], sampled={"train"}).problems
    assert len(full) == 4 and full[-1].startswith(f"train: {len(labels) - 3} more label files hold")
    assert len(sampled) == 2 and all("holds 200 (5 pixels)" in p for p in sampled)
    # files: the first and the last in file order
    assert labels[0].name in sampled[0] and labels[-1].name in sampled[1]


def test_a_bad_value_the_sample_missed_is_one_line_when_loaded(real_tree):
    from bench.data.cityscapes import CityscapesSegmentation
    from bench.errors import DataError

    label = _with_value(sorted((real_tree / "gtFine" / "train").rglob("*_labelIds.png"))[0], 77)
    with pytest.raises(DataError, match=rf"label {label} holds 77: labelIds must be"):
        CityscapesSegmentation(real_tree, "train", size=(32, 64))[0]
