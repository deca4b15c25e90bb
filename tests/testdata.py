"""Helpers shared by the test packages (imported as ``testdata``; ``tests/`` is on sys.path)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


def load_split(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """A whole (small) split in memory: images (N, 3, H, W) uint8, labels (N, H, W) int64."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([i for i, _ in items]), torch.stack([lab for _, lab in items])
