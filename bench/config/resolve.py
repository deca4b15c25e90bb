"""The config a command runs with: a preset, then ``--set``, then the command's own options.

Its own module because it sits above both the presets (``bench.config.presets``) and the path
resolution of the run file (``bench.config.runfile``), which itself builds on the presets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.config.presets import apply_overrides, apply_values, load_config
from bench.config.runfile import resolved_paths
from bench.config.schema import RunConfig


def train_values(
    *, epochs: int | None = None, layers: Sequence[str] | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """``bench train``'s own options as config values (``--epochs`` sets both pretraining and
    finetuning), so that the saved config records what was trained."""
    values: dict[str, Any] = {
        "pretrain.epochs": epochs,
        "finetune.epochs": epochs,
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

    A user's own data (``data_root``) is never overwritten by a generated toy city.
    """
    config = apply_overrides(load_config(preset), overrides)
    extra = dict(values or {})
    if data_root is not None:
        extra |= {"data.root": str(data_root), "data.toycity": False}
    if seed is not None:
        extra["seed"] = seed
    if extra:
        config = apply_values(config, extra)
    return resolved_paths(config, Path.cwd())
