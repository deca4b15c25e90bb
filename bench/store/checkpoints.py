"""Checkpoints of a run: ``<run>/models/<name>.pt`` (a state_dict) beside ``<name>.json``.

The JSON metadata records the network's architecture and options, the sha256 of the ``.pt``
file, and free-form provenance (cache key, training recipe, seed, metrics). Both files are
written atomically (``bench.files``), so an interrupted save never leaves a half-written
checkpoint.

Nothing in a checkpoint decides what code runs: run directories are shared, so their files are
data. The weights are loaded with ``weights_only=True`` (a state_dict never executes code), and
the network is built from the architecture and options the caller's config asks for; the
metadata must agree with them (``check_meta``), or the checkpoint is refused before anything is
imported or built.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.config import NetConfig
from bench.errors import CheckpointError
from bench.files import atomic_write, atomic_write_text, sha256_file
from bench.models import build_model


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint is: the architecture and options it was made with (checked against
    the config, never built from), sha256 identifies the weights, ``info`` holds its provenance
    (``key``: the settings it was made with)."""

    name: str
    arch: str
    options: dict[str, Any]
    sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def save_model(
    model: nn.Module, models_dir: Path, name: str, arch: str, options: dict[str, Any], **info: Any
) -> CheckpointMeta:
    """Write ``models_dir/<name>.pt`` and ``<name>.json`` atomically; returns its metadata."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    weights = models_dir / f"{name}.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: _save_state(state, tmp))
    meta = CheckpointMeta(name, arch, dict(options), sha256_file(weights), dict(info))
    _write_meta(models_dir, meta)
    return meta


def _save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    # Serialised into memory, not to a path: torch names the archive's inner folder after a path
    # (here the temporary file's random name), so equal weights would give unequal files; and a
    # failed write inside torch's archive writer surfaces as a RuntimeError ("unexpected pos"),
    # while a plain write raises the OSError (a full disk) that ``atomic_write`` turns into one
    # line. The bytes are those torch writes to a file handle.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def _write_meta(models_dir: Path, meta: CheckpointMeta) -> None:
    text = json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n"
    atomic_write_text(Path(models_dir) / f"{meta.name}.json", text)


def load_meta(models_dir: Path, name: str) -> CheckpointMeta:
    path = Path(models_dir) / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint metadata {path}; train the network first (bench train)"
        )
    try:
        return CheckpointMeta(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"corrupt checkpoint metadata {path} ({err}); retrain the network"
        ) from err


def _plain(options: Mapping[str, Any]) -> Any:
    """``options`` as the JSON metadata holds them (tuples become lists)."""
    return json.loads(json.dumps(dict(options)))


def check_meta(
    models_dir: Path, name: str, meta: CheckpointMeta, arch: str, options: Mapping[str, Any]
) -> None:
    """Refuse (``CheckpointError``, one line naming the JSON file and the key) metadata that
    names another architecture or other options than the config's ``arch`` and ``options``."""
    path = Path(models_dir) / f"{name}.json"
    fix = "delete the checkpoint or retrain it (bench train --retrain)"
    if meta.arch != arch:
        raise CheckpointError(
            f"{path} names arch {meta.arch!r} but the config asks for {arch!r}; {fix}"
        )
    if meta.options != _plain(options):
        raise CheckpointError(
            f"{path} names options {meta.options!r} but the config asks for "
            f"{_plain(options)!r}; {fix}"
        )


def load_model(
    models_dir: Path,
    name: str,
    arch: str,
    options: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build ``arch`` with ``options`` (what the caller's config asks for, never what the
    metadata says), check that the metadata agrees and the sha256, load the weights; eval mode.
    """
    meta = load_meta(models_dir, name)
    check_meta(models_dir, name, meta, arch, options)
    weights = Path(models_dir) / f"{name}.pt"
    if not weights.is_file():
        raise CheckpointError(f"missing weights {weights}; retrain the network (bench train)")
    if sha256_file(weights) != meta.sha256:
        raise CheckpointError(
            f"{weights} does not match the sha256 in {name}.json (corrupt or replaced); retrain it"
        )
    model = build_model(arch, **options)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # a torn or foreign file: say which and what to do
        raise CheckpointError(f"cannot load {weights} ({err}); retrain the network") from err
    return model.to(device).eval()


def load_network(
    models_dir: Path, name: str, net: NetConfig, device: str | torch.device = "cpu"
) -> nn.Module:
    """Checkpoint ``name`` built as the config's ``net`` asks (T, S: ``config.net(name)``; an
    adaptive student: ``config.student``)."""
    return load_model(models_dir, name, net.arch, net.options, device)


def export_half(models_dir: Path, name: str, dest_dir: Path) -> CheckpointMeta:
    """Copy checkpoint ``name`` to ``dest_dir`` with float tensors stored as float16 (half the
    size, for the reference checkpoints shipped in git). The metadata keeps its key, so a run still
    recognises the recipe; ``load_model`` casts the weights back to float32."""
    meta = load_meta(models_dir, name)
    state = torch.load(Path(models_dir) / f"{name}.pt", map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    weights = dest_dir / f"{name}.pt"
    atomic_write(weights, lambda tmp: _save_state(half, tmp))
    info = dict(meta.info, stored_dtype="float16", float32_sha256=meta.sha256)
    exported = CheckpointMeta(name, meta.arch, meta.options, sha256_file(weights), info)
    _write_meta(dest_dir, exported)
    return exported
