"""Helpers shared by the test packages (imported as ``testdata``; ``tests/`` is on sys.path)."""

from __future__ import annotations

import errno

import torch
from torch import Tensor
from torch.utils.data import Dataset


def load_split(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """A whole (small) split in memory: images (N, 3, H, W) uint8, labels (N, H, W) int64."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([i for i, _ in items]), torch.stack([lab for _, lab in items])


class FullDiskFile:
    """Stands in for ``open``: a file handle whose writes find the disk full (ENOSPC)."""

    def __init__(self, path, mode):
        self._file = open(path, mode)  # noqa: SIM115

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")
