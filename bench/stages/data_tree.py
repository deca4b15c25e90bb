"""The data stage: the run's data tree, generated when it is a missing toy city, and checked
before any work for everything the run's stages will read."""

from __future__ import annotations

from pathlib import Path

from bench.config import RunConfig
from bench.data.check import require_tree
from bench.data.toycity import SceneStyle, generate_toycity
from bench.stages.networks import robust_needed


def prepare_data(config: RunConfig, *, progress: bool = True) -> bool:
    """Generate the toy city at the data root when it is missing and allowed; whether it was
    generated now (False: the tree was there).

    ``generate_toycity`` returns at once for a finished tree of the same settings and stops with
    a clear error for a tree made with other settings.
    """
    data = config.data
    root = Path(data.root)
    missing = not root.is_dir()
    if data.toycity:
        generate_toycity(
            root,
            seed=data.toycity_seed,
            size=tuple(data.size),
            style=SceneStyle.from_dict(data.toycity_style),
            progress=progress,
            **data.toycity_counts,
        )
    return data.toycity and missing


def data_reads(
    config: RunConfig,
    *,
    train: bool = True,
    finetune: bool = True,
    attack: bool = True,
    robust: bool | None = None,
) -> list[tuple[str, bool]]:
    """(split or subset, with labels) of everything the run's stages read; ``robust``: AT is
    trained (None: when an evaluated defense reads it)."""
    data = config.data
    reads = [(data.val_subset, True)]
    imported = config.teacher.weights and config.student.weights
    robust = robust_needed(config) if robust is None else robust
    if train and (not imported or robust):
        reads.append((data.train_split, True))
    if finetune:
        reads.append((data.unlabeled_split, False))
    if attack:
        suite = config.attack
        subsets = {s for spec in suite.suite for s in suite.subsets_of(spec)}
        reads += [(s, True) for s in (*suite.subsets, *sorted(subsets))]
    return reads


def check_data(config: RunConfig, reads: list[tuple[str, bool]]) -> list[str]:
    """Stop with one line per problem of the data tree before any work; the warnings (image
    counts that differ from real Cityscapes', for a tree that is not a toy city).

    Label values are read in full for every subset the run evaluates and on a sample of the
    training split (``bench.data.check.LABEL_SAMPLE`` files)."""
    evaluated = {split for split, _ in data_reads(config, train=False, finetune=False)}
    sampled = {config.data.train_split} - evaluated
    return require_tree(config.data.root, reads, real=not config.data.toycity, sampled=sampled)
