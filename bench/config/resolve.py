"""The config a command runs with: a preset, then ``--set``, then the command's own options.

Its own module because it sits above both the presets (``bench.config.presets``) and the path
resolution of the run file (``bench.config.runfile``), which itself builds on the presets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import __version__
from bench.config.presets import apply_overrides, apply_values, load_config
from bench.config.runfile import resolved_paths
from bench.config.schema import RunConfig
from bench.keys import cache_key

#: the folder of generated toy cities shared by every run of this user (``BENCH_DATA_DIR``
#: overrides it)
DATA_DIR_VARIABLE = "BENCH_DATA_DIR"


def data_home() -> Path:
    """Where generated toy cities live: ``$BENCH_DATA_DIR``, else the user's cache folder
    (``$XDG_CACHE_HOME/segrobust-bench``, by default ``~/.cache/segrobust-bench``)."""
    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "segrobust-bench"


def toycity_root(config: RunConfig) -> Path:
    """The shared folder of the toy city ``config`` generates, named by its settings: runs of
    one preset (in any --out) share it, other settings never meet it."""
    data = config.data
    h, w = data.size
    settings = (data.toycity_seed, data.size, data.toycity_counts, data.toycity_style)
    return data_home() / f"toycity-{h}x{w}-{cache_key(*settings, __version__)[:10]}"


def train_values(
    *, epochs: int | None = None, layers: Sequence[str] | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """``bench train``'s own options as config values (``--epochs`` sets pretraining,
    finetuning and adversarial training), so that the saved config records what was trained."""
    values: dict[str, Any] = {
        "pretrain.epochs": epochs,
        "finetune.epochs": epochs,
        "adversarial.epochs": epochs,
        "finetune.layers": list(layers) if layers else None,
        "finetune.alpha": alpha,
    }
    return {k: v for k, v in values.items() if v is not None}


def resolve_config(
    preset: str | Path,
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    seed: int | None = None,
) -> RunConfig:
    """The config a command runs with: the preset, then ``--set`` overrides, then the values of
    dedicated options (``{"finetune.alpha": 0.7}``), ``--data`` and ``--seed``; validated, with
    ``data.root`` made absolute (a relative root is relative to the current directory).

    A user's own data (``data_root``) is never overwritten by a generated toy city. A toy
    city without a ``data.root`` (the shipped presets) is generated once into the shared data
    folder (``toycity_root``) and read from there by every run.
    """
    config = apply_overrides(load_config(preset), overrides)
    extra = dict(values or {})
    if data_root is not None:
        extra |= {"data.root": str(data_root), "data.toycity": False}
    if seed is not None:
        extra["seed"] = seed
    if extra:
        config = apply_values(config, extra)
    if config.data.toycity and not config.data.root:  # the preset names no folder of its own
        config = apply_values(config, {"data.root": str(toycity_root(config))})
    return resolved_paths(config, Path.cwd())
