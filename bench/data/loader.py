"""The shuffling loaders of training and finetuning: their order depends only on the seed.

In a world of several processes (``torchrun``), each rank reads its share of every epoch
(``DistributedSampler``, reseeded per epoch) in batches of the global batch size divided among
the ranks, so that a step sees as many images as in one process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bench import dist


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


def training_loader(
    dataset: Dataset,
    global_batch: int,
    *,
    seed: int,
    workers: int,
    key: str,
    distributed: bool = True,
) -> tuple[DataLoader, Callable[[int], None]]:
    """The loader of this process and the function that starts epoch ``e`` (reseeds the
    distributed sampler; a no-op in one process). ``key`` names the batch size in errors;
    ``distributed=False`` reads the whole dataset in this process alone, as in a world of one."""
    if dist.size() == 1 or not distributed:
        return make_loader(dataset, global_batch, seed=seed, workers=workers), lambda epoch: None
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_size=dist.per_rank_batch(global_batch, key),
        sampler=sampler,
        drop_last=len(sampler) > global_batch // dist.size(),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return loader, sampler.set_epoch
