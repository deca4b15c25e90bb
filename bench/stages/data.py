"""The data stage: the data root of a run (the toy city generated there when it is missing) and
the datasets the other stages read from it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.config import RunConfig
from bench.data.check import require_tree
from bench.data.cityscapes import CityscapesSegmentation
from bench.data.labels import IGNORE_INDEX, NUM_CLASSES
from bench.data.toycity import SceneStyle, generate_toycity


def prepare_data(config: RunConfig, *, progress: bool = True) -> Path:
    """Return the data root; generate the toy city there first when it is missing and allowed.

    ``generate_toycity`` returns at once for a finished tree of the same settings and stops with
    a clear error for a tree made with other settings.
    """
    root = Path(config.data.root)
    if config.data.toycity:
        generate_toycity(
            root,
            seed=config.data.toycity_seed,
            size=tuple(config.data.size),
            style=SceneStyle.from_dict(config.data.toycity_style),
            progress=progress,
            **config.data.toycity_counts,
        )
    return root


def dataset(config: RunConfig, split: str, *, with_labels: bool = True) -> CityscapesSegmentation:
    """A split or subset of the run's data at the run's image size."""
    return CityscapesSegmentation(
        config.data.root, split, size=tuple(config.data.size), with_labels=with_labels
    )


_counts: dict[str, list[int]] = {}


def class_pixel_counts(config: RunConfig) -> list[int]:
    """Pixels per class (trainIds 0..18) in the labelled training split at the run's size:
    N_y of the balanced loss (remembered per data identity within a process)."""
    train = dataset(config, config.data.train_split)
    key = train.fingerprint()
    if key not in _counts:
        counts = torch.zeros(NUM_CLASSES, dtype=torch.int64)
        for _, labels in DataLoader(train, batch_size=32):
            valid = labels[labels != IGNORE_INDEX]
            counts += torch.bincount(valid, minlength=NUM_CLASSES)
        _counts[key] = counts.tolist()
    return _counts[key]


def scoring_dataset(config: RunConfig, split: str) -> CityscapesSegmentation:
    """A subset as the evaluation scores it: images at the run's size, labels at their own
    resolution when ``evaluate.full_resolution`` (else at the run's size too)."""
    return CityscapesSegmentation(
        config.data.root,
        split,
        size=tuple(config.data.size),
        full_labels=config.evaluate.full_resolution,
    )


def data_reads(
    config: RunConfig, *, train: bool = True, finetune: bool = True, attack: bool = True
) -> list[tuple[str, bool]]:
    """(split or subset, with labels) of everything the run's stages read."""
    reads = [(config.data.val_subset, True)]
    if train and not (config.teacher.weights and config.student.weights):
        reads.append((config.data.train_split, True))
    if finetune:
        reads.append((config.data.unlabeled_split, False))
    if attack:
        subsets = {s for spec in config.attack.suite for s in config.attack.subsets_of(spec)}
        reads += [(s, True) for s in (*config.attack.subsets, *sorted(subsets))]
    return reads


def check_data(config: RunConfig, reads: list[tuple[str, bool]]) -> list[str]:
    """Stop with one line per problem of the data tree before any work; the warnings (image
    counts that differ from real Cityscapes', for a tree that is not a toy city)."""
    return require_tree(config.data.root, reads, real=not config.data.toycity)
