"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# A tiny toy city: 32x64 images, 6 train, 6 train_extra, 2 val images per city (lindau = mini_val,
# frankfurt + munster = mini_test).
TOY_SIZE = (32, 64)
TOY_COUNTS = {"train": 6, "train_extra": 6, "val_per_city": 2}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' networks are tiny: one thread runs them as fast as two on an idle machine and
    far faster on a busy one, where extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy city in the Cityscapes layout, generated once per test session (read-only: copy it
    before changing anything)."""
    from bench.data.toycity.tree import generate_toycity

    root = tmp_path_factory.mktemp("toycity") / "root"
    return generate_toycity(root, seed=0, size=TOY_SIZE, progress=False, **TOY_COUNTS)


@pytest.fixture(scope="session")
def reference(toy_root) -> tuple:
    """The shipped reference T and S (trained on the toy city, so attacks have something to
    break; untrained tiny networks barely react to any attack) and the toy city's 6 val images
    with their labels."""
    from bench.config import load_config
    from bench.data.cityscapes import CityscapesSegmentation
    from bench.stages.networks import REFERENCE_DIR
    from bench.store.checkpoints import load_network

    from testdata import load_split

    images, labels = load_split(CityscapesSegmentation(toy_root, "val", size=(32, 64)))
    toy = load_config("toy")  # the preset the reference checkpoints were trained with
    nets = [load_network(REFERENCE_DIR / "toy", name, toy.net(name)) for name in ("T", "S")]
    return nets[0], nets[1], images, labels
