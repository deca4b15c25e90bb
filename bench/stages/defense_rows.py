"""The defense rows of a run: how to build each defense, what its results depend on, and its
attack surface.

Used by the attacks stage (white-box sets are built on the defenses' surfaces) and by the
evaluation stage (every defense on every data variant it is attacked with).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench import __version__, dist
from bench.config import ROBUST_NET
from bench.errors import BenchError, DefenseError
from bench.files import sha256_file
from bench.keys import cache_key
from bench.scoring import ForwardMemo, defense_label
from bench.stages.context import DefenseEntry, RunContext, RunDefenses, RunNetworks
from bench.stages.networks import needed_students
from bench.store.checkpoints import load_meta, load_network
from defenses import (
    BUILTINS,
    AttackSurface,
    Defense,
    SingleNetwork,
    attack_surface,
    build_defense,
    is_plugin,
    load_defense,
    networks_needed,
    predict_labels,
)
from defenses.vote import hamming

#: the options a run offers every defense that takes them
OFFERED = ("delta", "delta_t", "delta_s", "tau", "finetune")


@torch.no_grad()
def calibrate_tau(ctx: RunContext) -> float:
    """``detect.tau``, or its calibration on the validation subset's clean images: the
    ``tau_quantile`` quantile of min(D(T, A), D(S, A)), so that share of clean validation
    images does not trigger the disagreement vote (never the test subset)."""
    detect = ctx.config.detect
    if detect.tau is not None:
        return detect.tau
    networks = ctx.require_networks().memos
    if "A" not in networks:
        return math.nan  # no defense of the run reads A, so none is a disagreement vote
    val = ctx.data.split(ctx.config.data.val_subset)
    both = []
    for images, _ in DataLoader(val, ctx.config.evaluate.batch_size):
        maps = {role: predict_labels(networks[role], images) for role in ("T", "S", "A")}
        both.append(torch.minimum(hamming(maps["T"], maps["A"]), hamming(maps["S"], maps["A"])))
    return float(np.quantile(torch.cat(both).numpy(), detect.tau_quantile))


def build_defense_rows(ctx: RunContext) -> RunDefenses:
    """Every defense row of the run: the config's defenses and the sweeps' extra students.

    The run's thresholds, the calibrated tau and the J_TS' settings are offered to every defense
    that takes them.
    """
    networks = ctx.require_networks()
    tau = dist.broadcast(calibrate_tau(ctx) if dist.is_main() else None)
    detect, finetune = ctx.config.detect, ctx.config.finetune
    offered = dict(zip(OFFERED, (detect.delta, detect.delta_t, detect.delta_s, tau, finetune)))
    entries: dict[str, DefenseEntry] = {}
    labels: dict[str, str] = {}
    for configured in ctx.config.evaluate.defenses:
        spec = configured.spec
        factory = load_defense(spec)
        accepted = inspect.signature(factory).parameters
        options = {k: v for k, v in offered.items() if k in accepted} | configured.options
        given = _networks_for(spec, networks)
        defense = build_defense(spec, given, **options)
        row = configured.name or defense.name
        if row in entries:
            raise DefenseError(
                f"defenses {labels[row]} and {configured.label()} are both named {row!r}; give "
                f'one of them a row name of its own: {{spec = "{spec}", options = {{...}}, '
                f'name = "{row}-2"}}'
            )
        labels[row] = configured.label()
        source = "" if spec in BUILTINS else _source_digest(factory)
        surface = _surface(defense, spec)
        key = surface_key(surface, networks.sha256, configured.options) if surface else ""
        if surface is not None and is_plugin(spec):
            surface = _guarded_surface(surface, defense_label(row, spec), networks)
        entries[row] = DefenseEntry(
            partial(build_defense, spec, given, **options),
            cache_key(spec, options, {r: networks.sha256[r] for r in given}, source, __version__),
            surface,
            key,
            plugin=spec if is_plugin(spec) else "",
        )
    entries = _distinct_surface_names(entries)
    students = {}
    for row, settings in needed_students(ctx.config)[1:]:
        if row in entries:
            raise DefenseError(
                f"defense {row!r} has the name of the sweep's adaptive student {row}; give it "
                "another name"
            )
        sha256 = load_meta(ctx.run.models, settings.checkpoint_name).sha256
        students[row] = ForwardMemo(
            load_network(ctx.run.models, settings.checkpoint_name, ctx.config.student, ctx.device)
        )
        nets = {"A": students[row]}
        entries[row] = DefenseEntry(
            partial(SingleNetwork, nets, net="A"),
            cache_key(row, sha256, __version__),
            None,
            "",
            sweep=True,
        )
    return RunDefenses(entries, tau, students)


def _networks_for(spec: str, networks: RunNetworks) -> dict[str, nn.Module]:
    """The run's networks a defense is built with (and its row keyed by): T, S and A as every
    defense always got them, and AT only for one that reads it, so that AT's presence never
    changes another defense (a plug-in that iterates over its networks) or its row's key."""
    reads = networks_needed(spec)
    return {
        role: memo
        for role, memo in networks.memos.items()
        if role != ROBUST_NET or ROBUST_NET in reads
    }


def _surface(defense: Defense, spec: str) -> AttackSurface | None:
    """The defense's attack surface; an exception of a plug-in's ``attack_surface()`` (the
    user's code) is one line naming it, its cause kept. A built-in's failure is a bug."""
    try:
        return attack_surface(defense)
    except BenchError:
        raise
    except Exception as err:
        if not is_plugin(spec):
            raise
        raise _plugin_failure(repr(spec), "attack_surface()", err) from err


def _plugin_failure(who: str, what: str, err: Exception) -> DefenseError:
    return DefenseError(
        f"defense {who}: {what} failed with {type(err).__name__}: {err}; fix the plug-in "
        "(BENCH_DEBUG=1 shows where)"
    )


def _guarded(function: Callable[..., Any] | None, who: str, what: str) -> Any:
    """``function`` (the plug-in's code), whose exceptions become one line naming the plug-in;
    None stays None."""
    if function is None:
        return None

    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except BenchError:
            raise
        except Exception as err:
            raise _plugin_failure(who, what, err) from err

    return call


class _GuardedNetwork(nn.Module):
    """A plug-in's own network in its attack surface: an exception of its forward is one line
    naming the plug-in. Its weights are the wrapped network's."""

    def __init__(self, network: nn.Module, who: str, role: str) -> None:
        super().__init__()
        self.network, self.who, self.role = network, who, role

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.network(*args, **kwargs)
        except BenchError:
            raise
        except Exception as err:
            raise _plugin_failure(self.who, f"its network {self.role!r}", err) from err


def _guarded_surface(surface: AttackSurface, who: str, networks: RunNetworks) -> AttackSurface:
    """A plug-in's surface whose code (transform, decide, after_batch, its own networks)
    reports any exception as one line naming the plug-in, wherever the run calls it (attacks,
    the evaluation's checks); the run's networks stay as they are."""
    run = [*networks.memos.values(), *networks.plain.values()]
    return dataclasses.replace(
        surface,
        networks={
            role: net if any(net is r for r in run) else _GuardedNetwork(net, who, role)
            for role, net in surface.networks.items()
        },
        transform=_guarded(surface.transform, who, "its attack surface's transform"),
        decide=_guarded(surface.decide, who, "its attack surface's decide"),
        after_batch=_guarded(surface.after_batch, who, "its attack surface's after_batch"),
    )


def surface_networks(surface: AttackSurface, weights: dict[str, str]) -> dict[str, str]:
    """role -> sha256 of every network of a surface (the run's checkpoints by role; a plug-in's
    own network by a digest of its weights)."""
    return {
        role: weights.get(role) or _weights_digest(net) for role, net in surface.networks.items()
    }


def surface_key(
    surface: AttackSurface, weights: dict[str, str], options: dict[str, Any] | None = None
) -> str:
    """What a white-box set built on ``surface`` depends on: its networks, transform, decision
    and settings, and the options the config gave the defense (two defenses with equal keys
    share their white-box sets)."""
    return cache_key(
        surface.name,
        surface_networks(surface, weights),
        {k: repr(v) for k, v in surface.settings.items()},
        surface.transform is not None,
        surface.decide is not None,
        surface.random,
        __version__,
        *([{k: repr(v) for k, v in options.items()}] if options else []),
    )


def _distinct_surface_names(entries: dict[str, DefenseEntry]) -> dict[str, DefenseEntry]:
    """Surfaces of one name but different keys (one plug-in class with two settings) get their
    row's name added (``T:masked@masked-8``): the name names their AE sets, which must differ."""
    keys: dict[str, set[str]] = {}
    for entry in entries.values():
        if entry.surface is not None:
            keys.setdefault(entry.surface.name, set()).add(entry.surface_key)
    return {
        row: dataclasses.replace(
            entry, surface=dataclasses.replace(entry.surface, name=f"{entry.surface.name}@{row}")
        )
        if entry.surface is not None and len(keys[entry.surface.name]) > 1
        else entry
        for row, entry in entries.items()
    }


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
