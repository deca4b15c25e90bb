"""The run's defenses: how to build each, what its results depend on, and its attack surface.

Used by the attacks stage (white-box sets are built on the defenses' surfaces) and by the
evaluation stage (every defense on every data variant it is attacked with).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench import __version__, dist
from bench.config import RunConfig, adaptive_students, cache_key
from bench.errors import DefenseError
from bench.evaluate import ForwardMemo
from bench.files import sha256_file
from bench.stages.data import dataset
from bench.store.checkpoints import load_meta, load_model
from bench.store.rundir import RunDir
from defenses import (
    BUILTINS,
    AttackSurface,
    Defense,
    SingleNetwork,
    attack_surface,
    build_defense,
    load_defense,
    predict_labels,
)
from defenses.vote import hamming

#: the options a run offers every defense that takes them
OFFERED = ("delta", "delta_t", "delta_s", "tau", "finetune")


@dataclass(frozen=True)
class DefenseEntry:
    """A row of the run's results: how to build a fresh instance of its defense, what its
    results depend on, and (when it exposes one) its attack surface and that surface's key."""

    make: Callable[[], Defense]
    fingerprint: str
    surface: AttackSurface | None
    surface_key: str
    #: one of the sweeps' extra adaptive students (evaluated on the transfer sets only)
    sweep: bool = False

    @property
    def learns(self) -> bool:
        """The defense learns from what it sees (the online vote): one ordered stream only."""
        return self.surface is not None and self.surface.after_batch is not None


@dataclass(frozen=True)
class RunDefenses:
    """The run's networks (by role), their checkpoints' sha256 and every defense row."""

    networks: dict[str, nn.Module]
    weights: dict[str, str]
    entries: dict[str, DefenseEntry]
    tau: float
    #: the sweeps' extra students, by row name (each a ForwardMemo like ``networks``)
    students: dict[str, nn.Module] = field(default_factory=dict)


def checkpoint_names(config: RunConfig) -> dict[str, str]:
    return {"T": "T", "S": "S", "A": config.finetune.checkpoint_name}


def load_networks(config: RunConfig, run: RunDir, device: torch.device) -> dict[str, nn.Module]:
    """T, S and the main A of the run, each wrapped so defenses share forward passes."""
    return {
        role: ForwardMemo(load_model(run.models, name, device))
        for role, name in checkpoint_names(config).items()
    }


@torch.no_grad()
def calibrate_tau(config: RunConfig, networks: dict[str, nn.Module]) -> float:
    """``detect.tau``, or its calibration on the validation subset's clean images: the
    ``tau_quantile`` quantile of min(D(T, A), D(S, A)), so that share of clean validation
    images does not trigger the disagreement vote (never the test subset)."""
    if config.detect.tau is not None:
        return config.detect.tau
    loader = DataLoader(dataset(config, config.data.val_subset), config.evaluate.batch_size)
    both = []
    for images, _ in loader:
        maps = {role: predict_labels(networks[role], images) for role in ("T", "S", "A")}
        both.append(torch.minimum(hamming(maps["T"], maps["A"]), hamming(maps["S"], maps["A"])))
    return float(np.quantile(torch.cat(both).numpy(), config.detect.tau_quantile))


def run_defenses(config: RunConfig, run: RunDir, device: torch.device) -> RunDefenses:
    """Every defense row of the run: the config's defenses and the sweeps' extra students.

    The run's thresholds, the calibrated tau and the J_TS' settings are offered to every defense
    that takes them.
    """
    networks = load_networks(config, run, device)
    weights = {
        role: load_meta(run.models, n).sha256 for role, n in checkpoint_names(config).items()
    }
    tau = dist.broadcast(calibrate_tau(config, networks) if dist.is_main() else None)
    detect = config.detect
    offered = dict(
        zip(OFFERED, (detect.delta, detect.delta_t, detect.delta_s, tau, config.finetune))
    )
    entries: dict[str, DefenseEntry] = {}
    for spec in config.evaluate.defenses:
        factory = load_defense(spec)
        accepted = inspect.signature(factory).parameters
        options = {k: v for k, v in offered.items() if k in accepted}
        defense = build_defense(spec, networks, **options)
        if defense.name in entries:
            raise DefenseError(
                f"two defenses are named {defense.name!r}; give one of them another name"
            )
        source = "" if spec in BUILTINS else _source_digest(factory)
        surface = attack_surface(defense)
        entries[defense.name] = DefenseEntry(
            partial(build_defense, spec, networks, **options),
            cache_key(spec, options, weights, source, __version__),
            surface,
            surface_key(surface, weights) if surface is not None else "",
        )
    students = {}
    for row, settings in adaptive_students(config).all()[1:]:
        sha256 = load_meta(run.models, settings.checkpoint_name).sha256
        students[row] = ForwardMemo(load_model(run.models, settings.checkpoint_name, device))
        nets = {"A": students[row]}
        entries[row] = DefenseEntry(
            partial(SingleNetwork, nets, net="A"),
            cache_key(row, sha256, __version__),
            None,
            "",
            sweep=True,
        )
    return RunDefenses(networks, weights, entries, tau, students)


def surface_networks(surface: AttackSurface, weights: dict[str, str]) -> dict[str, str]:
    """role -> sha256 of every network of a surface (the run's checkpoints by role; a plug-in's
    own network by a digest of its weights)."""
    return {
        role: weights.get(role) or _weights_digest(net) for role, net in surface.networks.items()
    }


def surface_key(surface: AttackSurface, weights: dict[str, str]) -> str:
    """What a white-box set built on ``surface`` depends on: its networks, transform, decision
    and settings (two defenses with equal keys share their white-box sets)."""
    return cache_key(
        surface.name,
        surface_networks(surface, weights),
        {k: repr(v) for k, v in surface.settings.items()},
        surface.transform is not None,
        surface.decide is not None,
        surface.random,
        __version__,
    )


def _weights_digest(net: nn.Module) -> str:
    """sha256 of a network's weights (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _source_digest(obj: object) -> str:
    """The sha256 of the file that defines a plug-in: editing it re-evaluates the plug-in."""
    try:
        return sha256_file(Path(inspect.getfile(obj)))  # type: ignore[arg-type]
    except (TypeError, OSError):
        return ""
