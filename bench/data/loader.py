"""The shuffling loader of training and finetuning: its order depends only on the seed."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(dataset: Dataset, batch_size: int, *, seed: int, workers: int) -> DataLoader:
    """A shuffling loader whose order depends only on ``seed``; a ragged last batch is dropped
    (a BatchNorm of one image) unless the whole split fits in one batch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) > batch_size,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )
