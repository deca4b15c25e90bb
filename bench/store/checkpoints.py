"""Checkpoints of a run: ``<run>/models/<name>.pt`` (a state_dict) beside ``<name>.json``.

The JSON record holds what rebuilds the network (architecture and options), the sha256 of the
``.pt`` file, and free-form provenance (training recipe, seed, metrics). Files are written to a
temporary name and renamed, so an interrupted save never leaves a half-written checkpoint.
Checkpoints are loaded with ``weights_only=True``: a state_dict never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError
from bench.models import build_model


class CheckpointError(BenchError, RuntimeError):
    """A checkpoint is missing, corrupt or does not match its record."""


@dataclass(frozen=True)
class ModelRecord:
    """What a checkpoint is: architecture + options rebuild it, sha256 identifies the weights."""

    name: str
    arch: str
    options: dict[str, Any]
    sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(
    model: nn.Module, models_dir: Path, name: str, arch: str, options: dict[str, Any], **info: Any
) -> ModelRecord:
    """Write ``models_dir/<name>.pt`` and ``<name>.json`` atomically; returns the record."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    weights = models_dir / f"{name}.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write_bytes(weights, lambda tmp: torch.save(state, tmp))
    record = ModelRecord(name, arch, dict(options), sha256_file(weights), dict(info))
    _write_record(models_dir, record)
    return record


def _write_record(models_dir: Path, record: ModelRecord) -> None:
    _atomic_write_bytes(
        Path(models_dir) / f"{record.name}.json",
        lambda tmp: tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"),
    )


def load_record(models_dir: Path, name: str) -> ModelRecord:
    path = Path(models_dir) / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint record {path}; train the network first (bench train)")
    try:
        return ModelRecord(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(f"corrupt checkpoint record {path} ({err}); retrain the network") from None


def load_model(models_dir: Path, name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild ``name`` from its record, verify the sha256, load the weights; eval mode."""
    record = load_record(models_dir, name)
    weights = Path(models_dir) / f"{name}.pt"
    if not weights.is_file():
        raise CheckpointError(f"missing weights {weights}; retrain the network (bench train)")
    if sha256_file(weights) != record.sha256:
        raise CheckpointError(
            f"{weights} does not match the sha256 in {name}.json (corrupt or replaced); retrain it"
        )
    model = build_model(record.arch, **record.options)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # a torn or foreign file: say which and what to do
        raise CheckpointError(f"cannot load {weights} ({err}); retrain the network") from None
    return model.to(device).eval()


def export_half(models_dir: Path, name: str, dest_dir: Path) -> ModelRecord:
    """Copy checkpoint ``name`` to ``dest_dir`` with float tensors stored as float16 (half the
    size, for the reference checkpoints shipped in git). The record keeps its key, so a run still
    recognises the recipe; ``load_model`` casts the weights back to float32."""
    record = load_record(models_dir, name)
    state = torch.load(Path(models_dir) / f"{name}.pt", map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    weights = dest_dir / f"{name}.pt"
    _atomic_write_bytes(weights, lambda tmp: torch.save(half, tmp))
    info = dict(record.info, stored_dtype="float16", float32_sha256=record.sha256)
    exported = ModelRecord(name, record.arch, record.options, sha256_file(weights), info)
    _write_record(dest_dir, exported)
    return exported
