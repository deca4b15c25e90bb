"""The stages of a run, each reusing what is cached and still valid.

``bench run`` is the composition of these functions; every ``bench`` sub-command calls one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bench.config import RunConfig, save_config
from bench.data.cityscapes import CityscapesSegmentation
from bench.evaluate import clean_confusion
from bench.models import build_model, count_parameters
from bench.store.checkpoints import CheckpointError, ModelRecord, load_record, save_model
from bench.train import pretrain

STATIC_NETS = ("T", "S")


def open_run(config: RunConfig, run_dir: str | Path) -> Path:
    """Create the run directory and write the resolved config into it."""
    run_dir = Path(run_dir)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.toml")
    return run_dir


def resolve_data_root(config: RunConfig) -> RunConfig:
    """Make ``data.root`` absolute (relative paths are relative to the current directory)."""
    root = Path(config.data.root).expanduser().resolve()
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(root)))


def prepare_data(config: RunConfig, *, progress: bool = True) -> Path:
    """Return the data root; generate the toy city there first when it is missing and allowed."""
    root = Path(config.data.root)
    if not (root / "leftImg8bit").is_dir() and config.data.toycity:
        from bench.data.toycity import generate_toycity

        generate_toycity(
            root,
            seed=config.data.toycity_seed,
            size=tuple(config.data.size),
            progress=progress,
            **config.data.toycity_counts,
        )
    return root


def _static_net_key(config: RunConfig, name: str) -> str:
    net = "teacher" if name == "T" else "student"
    return config.digest("data", net, "pretrain") + f"-seed{config.seed}"


def train_static(
    config: RunConfig,
    run_dir: Path,
    name: str,
    *,
    device: torch.device,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[ModelRecord, bool]:
    """Pretrain T (the teacher architecture) or S (the student) unless a valid checkpoint exists.

    Returns the checkpoint record and whether it was trained now (False: reused).
    """
    if name not in STATIC_NETS:
        raise ValueError(f"unknown static network {name!r}; choose from {', '.join(STATIC_NETS)}")
    models_dir = run_dir / "models"
    key = _static_net_key(config, name)
    if not retrain:
        try:
            record = load_record(models_dir, name)
            if record.info.get("key") == key and (models_dir / f"{name}.pt").is_file():
                return record, False
        except CheckpointError:
            pass
    net = config.teacher if name == "T" else config.student
    # Distinct, fixed seeds for T and S: same config -> same weights, T and S never share an init.
    seed = config.seed * 1000 + STATIC_NETS.index(name)
    torch.manual_seed(seed)
    model = build_model(net.arch, **net.options)
    size = tuple(config.data.size)
    train_set = CityscapesSegmentation(config.data.root, config.data.train_split, size=size)
    stats = pretrain(
        model, train_set, config.pretrain, device=device, seed=seed, progress=progress,
        desc=f"pretrain {name}",
    )
    val_set = CityscapesSegmentation(config.data.root, config.data.val_subset, size=size)
    miou = clean_confusion(model, val_set, batch_size=config.pretrain.batch_size, progress=progress).miou()
    record = save_model(
        model, models_dir, name, net.arch, net.options,
        key=key,
        parameters=count_parameters(model),
        train_seconds=round(stats.seconds, 1),
        iterations=stats.iterations,
        final_loss=stats.final_loss,
        train_images=len(train_set),
        recipe=dataclasses.asdict(config.pretrain),
        seed=seed,
        device=str(device),
        **{f"miou_{config.data.val_subset}": miou},
    )
    return record, True
