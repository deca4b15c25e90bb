"""The data tree is checked before any work: a tree in the real layout that lacks what the run
reads is refused with one line per problem, before a network is trained."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from bench.data.check import check_tree

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
