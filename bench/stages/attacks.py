"""The attacks stage: every AE set of the run (subset x source x eps), built, finished or reused
from the HDF5 store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from attacks import build_attack
from bench.config import RunConfig, apply_values
from bench.stages.data import dataset
from bench.store.aesets import STORE_FILE, AESet, build_ae_set
from bench.store.checkpoints import load_meta, load_model
from bench.store.rundir import RunDir

AESets = dict[tuple[str, str, float], AESet]


def build_ae_sets(
    config: RunConfig, run: RunDir, *, device: torch.device, progress: bool = True
) -> AESets:
    """Build (or reuse, or finish) every AE set of the run: {(subset, source, eps): set}."""
    attack = build_attack(config.attack.name, **config.attack.options)
    sets = {}
    for source in config.attack.sources:
        sha256 = load_meta(run.models, source).sha256
        model = load_model(run.models, source, device)
        for subset in config.attack.subsets:
            images = dataset(config, subset)
            for eps in config.attack.eps:
                sets[(subset, source, eps)] = build_ae_set(
                    run.path / STORE_FILE,
                    split=subset,
                    source=source,
                    source_sha256=sha256,
                    model=model,
                    dataset=images,
                    attack=attack,
                    eps=eps,
                    batch_size=config.attack.batch_size,
                    progress=progress,
                )
    return sets


def attack_settings(
    config: RunConfig,
    *,
    name: str | None = None,
    eps: Sequence[float] | None = None,
    sources: Sequence[str] | None = None,
    subsets: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> RunConfig:
    """The config with the given attack settings (``bench attack``'s options); another attack
    starts from no options, since the run's options belong to its own attack."""
    values: dict[str, Any] = {}
    if name is not None and name != config.attack.name:
        values |= {"attack.name": name, "attack.options": {}}
    given = {"eps": eps, "sources": sources, "subsets": subsets, "batch_size": batch_size}
    values |= {
        f"attack.{k}": list(v) if isinstance(v, (list, tuple)) else v
        for k, v in given.items()
        if v is not None
    }
    return apply_values(config, values) if values else config
