"""Probes of the defenses before the attacks: what one batch says about how to attack each one.

- ``masked_gradient_share``: the share of the input whose white-box gradient is zero or NaN (a
  masked surface is also attacked by the gradient-free attack);
- ``answers_differ``: two fresh instances of a defense answer the same batch differently (a
  random defense is attacked with EOT, whether or not its surface says ``random=True``);
- ``input_ignoring_rows``: the defenses whose labels are the same for a batch, for uniform noise
  and for the batch reversed (a masked surface whose rows all ignore their input on the probe
  batch gets no gradient-free attack: its zero gradient is the truth, no query would move it).

``probe_surfaces`` runs them once per run on every white-box surface (the input test only where
the gradient is masked), before the attacks stage plans its sets; the evaluation's checks
(``bench.stages.evaluation_checks``) use the same probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attacks.objectives import Ensemble, ce_loss, summed_loss
from bench import dist
from bench.devices import module_device
from bench.scoring import checked_predict, defense_label
from bench.stages.context import DefenseEntry, RunContext
from defenses import Defense

#: a white-box gradient that is zero or NaN on more than this share of the input is masked
MASKED_GRADIENT_SHARE = 0.5


def masked_gradient_share(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The share of input pixels whose gradient of the summed cross-entropy is zero or NaN on
    one batch: near 1 means gradient masking (a white-box attack would be blind).

    Shapes:
        images: (N, 3, H, W) uint8 gray values 0..255; labels: (N, H, W) int64 trainIds.
    """
    device = module_device(model)  # a surface may run networks without parameters
    x = images.to(device).float().requires_grad_(True)
    with torch.enable_grad():
        loss = summed_loss(ce_loss, model(x), labels.to(device)).sum()
        if not loss.requires_grad:  # an output cut off from the input: zero gradient everywhere
            return 1.0
        (grad,) = torch.autograd.grad(loss, x)
    return float(((grad == 0) | grad.isnan()).float().mean())


@torch.no_grad()
def answers_differ(make: Callable[[], Defense], images: Tensor, who: str, plugin: bool) -> bool:
    """Two fresh instances of a defense (``make()``) given the same batch answer differently:
    the defense is random. A plug-in that fails here is one line naming it (``who``).

    Shapes:
        images: (N, 3, H, W) uint8 gray values 0..255.
    """
    first, second = (checked_predict(make(), images, who, plugin) for _ in range(2))
    return not torch.equal(first.labels, second.labels)


@torch.no_grad()
def input_ignoring_rows(entries: Mapping[str, DefenseEntry], images: Tensor) -> list[str]:
    """The rows of ``entries`` whose labels for ``images``, for uniform noise and for the batch
    reversed are all the same: their output ignores their input. Each input goes to every
    defense in turn, so defenses on the same networks share their forward passes.

    Shapes:
        images: (N, 3, H, W) uint8 gray values 0..255.
    """
    noise = torch.randint(
        0, 256, images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    inputs = [images, noise, images.flip(0)] if len(images) > 1 else [images, noise]
    answers: dict[str, list[Tensor]] = {name: [] for name in entries}
    for batch in inputs:
        for name, entry in entries.items():
            who = defense_label(name, entry.plugin)
            prediction = checked_predict(entry.make(), batch, who, bool(entry.plugin))
            answers[name].append(prediction.labels)
    return [
        name
        for name, labels in answers.items()
        if all(torch.equal(labels[0], other) for other in labels[1:])
    ]


@dataclass(frozen=True)
class SurfaceProbe:
    """What one batch says about a white-box surface and the defense rows attacked through it.

    ``masked_share``: the share of the input whose gradient is zero or NaN (NaN when it could
    not be computed); ``random_rows``: the rows whose two fresh instances answered differently;
    ``ignores_input``: the gradient is masked and every row on the surface ignored its input on
    the probe batch (``input_ignoring_rows``), so no gradient-free attack is spent on them.
    """

    masked_share: float
    random_rows: tuple[str, ...]
    ignores_input: bool = False

    @property
    def masked(self) -> bool:
        return self.masked_share > MASKED_GRADIENT_SHARE or math.isnan(self.masked_share)


def probe_batch(ctx: RunContext) -> tuple[Tensor, Tensor]:
    """The one batch every probe reads: the first of the validation subset (never the test
    subset), at the evaluation's batch size."""
    val = ctx.data.split(ctx.config.data.val_subset)
    images, labels = next(iter(DataLoader(val, ctx.config.evaluate.batch_size)))
    return images, labels


def probe_surfaces(ctx: RunContext) -> dict[str, SurfaceProbe]:
    """Surface key -> its probe, for every white-box surface of the run's defense rows (each
    surface once, its gradient as the white-box attacks see it with EOT off; each row on it for
    randomness). Rank 0 probes and every rank of a torchrun launch gets its answer, so all
    plan the same sets even for a random defense."""
    return dist.broadcast(_probe_surfaces(ctx) if dist.is_main() else None)


def _probe_surfaces(ctx: RunContext) -> dict[str, SurfaceProbe]:
    images, labels = probe_batch(ctx)
    rows_of: dict[str, list[str]] = {}
    for name, entry in ctx.require_defenses().entries.items():
        if entry.surface is not None:
            rows_of.setdefault(entry.surface_key, []).append(name)
    probes = {}
    for key, rows in rows_of.items():
        entries = [ctx.require_defenses().entries[row] for row in rows]
        surface = entries[0].surface
        assert surface is not None
        model = Ensemble(surface.networks, transform=surface.transform, decide=surface.decide)
        random_rows = tuple(
            row
            for row, entry in zip(rows, entries)
            if answers_differ(
                entry.make, images, defense_label(row, entry.plugin), bool(entry.plugin)
            )
        )
        share = masked_gradient_share(model, images, labels)
        probe = SurfaceProbe(share, random_rows)
        if probe.masked:
            on_surface = dict(zip(rows, entries))
            ignoring = input_ignoring_rows(on_surface, images)
            probe = SurfaceProbe(share, random_rows, ignores_input=len(ignoring) == len(rows))
        probes[key] = probe
    return probes
