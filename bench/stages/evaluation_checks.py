"""The evaluation's checks of itself (AutoAttack's ``checks.py`` in spirit): each a small
function that returns findings, one dict per warning with ``check``, ``subject`` and
``message``. The root lists them in ``checks.csv`` and the report renders them.

- ``gradient_checks``: a white-box gradient that is zero or NaN for most of the input (masking);
- ``random_checks``: a defense whose two fresh instances answer the same batch differently;
- ``weaker_checks``: a white-box attack that leaves a defense more mIoU than a transfer attack;
- ``convergence_checks``: a worst case still falling over the second half of the attacks' budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attacks.objectives import ce_loss, summed_loss
from bench.devices import module_device
from bench.metrics import TIE_POINTS
from bench.scoring import checked_predict, defense_label
from bench.stages.ae_sets import PlannedSet
from bench.stages.context import RunContext
from bench.variants import (
    CONVERGED_POINTS,
    MARK_NAMES,
    TRANSFER,
    WHITE_BOX,
    WORST_CASE_AT_MARK,
)

#: the columns of ``checks.csv``
CHECK_COLUMNS = ["check", "subject", "message"]
#: a white-box gradient that is zero or NaN on more than this share of the input warns
MASKED_GRADIENT_SHARE = 0.5


Finding = dict[str, object]


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


def gradient_checks(ctx: RunContext, plans: Sequence[PlannedSet]) -> list[Finding]:
    """One warning per white-box surface whose gradient is masked on its first batch."""
    warnings, seen = [], set()
    for plan in plans:
        if plan.spec.threat != WHITE_BOX or plan.spec.source in seen:
            continue
        seen.add(plan.spec.source)
        loader = DataLoader(ctx.data.split(plan.spec.subset), ctx.config.attack.batch_size)
        images, labels = next(iter(loader))
        share = masked_gradient_share(plan.target.model, images, labels)
        if share > MASKED_GRADIENT_SHARE or math.isnan(share):
            warnings.append(
                {
                    "check": "gradient masking",
                    "subject": plan.spec.source,
                    "message": f"the white-box gradient of {plan.spec.source} is zero or NaN for "
                    f"{100 * share:.0f}% of the input: gradient masking; its white-box "
                    "numbers are upper bounds (give its surface a differentiable transform)",
                }
            )
    return warnings


@torch.no_grad()
def random_checks(ctx: RunContext) -> list[Finding]:
    """A defense that gives two fresh instances of itself the same batch and answers differently
    is randomised: its numbers need EOT, and its surface must say ``random=True``. A plug-in
    that fails here (its rows may all come from the cache) is one line, as in the evaluation."""
    loader = DataLoader(ctx.data.split(ctx.config.data.val_subset), ctx.config.evaluate.batch_size)
    images, _ = next(iter(loader))
    warnings = []
    for name, entry in ctx.require_defenses().entries.items():
        who, plugin = defense_label(name, entry.plugin), bool(entry.plugin)
        first, second = (checked_predict(entry.make(), images, who, plugin) for _ in range(2))
        surface_random = entry.surface is not None and entry.surface.random
        if not torch.equal(first.labels, second.labels) and not surface_random:
            warnings.append(
                {
                    "check": "randomness",
                    "subject": name,
                    "message": f"{name} gives different outputs for the same input: it is "
                    "randomised, but its attack surface does not say random=True, so "
                    "white-box attacks on it ran without EOT",
                }
            )
    return warnings


def weaker_checks(metrics: pd.DataFrame) -> list[Finding]:
    """An adaptive (white-box) attack that leaves a defense a higher mIoU than a transfer
    attack at the same eps (by more than a tie) is too weak: the defense's white-box number is
    not its worst case."""
    warnings = []
    attacked = metrics[metrics["threat"].isin([TRANSFER, WHITE_BOX])]
    for (defense, subset, eps), group in attacked.groupby(["defense", "subset", "eps"]):
        adaptive = group[group["threat"] == WHITE_BOX]["miou"]
        transfer = group[group["threat"] == TRANSFER]["miou"]
        if len(adaptive) and len(transfer) and adaptive.min() > transfer.min() + TIE_POINTS:
            warnings.append(
                {
                    "check": "adaptive weaker than transfer",
                    "subject": defense,
                    "message": f"{defense} on {subset} at eps {eps:g}: the white-box attack leaves "
                    f"{adaptive.min():.1f}% mIoU, a transfer attack {transfer.min():.1f}%; "
                    "the white-box attack needs more iterations or another loss",
                }
            )
    return warnings


def convergence_checks(metrics: pd.DataFrame) -> list[Finding]:
    """A defense whose worst case (``bench.stages.results.mark_worst_case_rows``) fell by more
    than ``CONVERGED_POINTS`` from the mark at half the budget to the end: its robust mIoU is an
    upper bound still falling, not a final number."""
    warnings = []
    marks = metrics[metrics["threat"] == WORST_CASE_AT_MARK]
    half, end = MARK_NAMES[-2], MARK_NAMES[-1]
    for (defense, subset, eps), group in marks.groupby(["defense", "subset", "eps"], sort=False):
        miou = group.set_index("attack")["miou"]
        fell = float(miou.get(half, math.nan) - miou.get(end, math.nan))
        if fell > CONVERGED_POINTS:
            warnings.append(
                {
                    "check": "not converged",
                    "subject": defense,
                    "message": f"{defense} on {subset} at eps {eps:g}: worst case fell by "
                    f"{fell:.1f} points over the second half of the budget: an upper bound "
                    "still falling",
                }
            )
    return warnings


def data_checks(root: str, warnings: Sequence[str]) -> list[Finding]:
    """The data stage's warnings (image counts unlike Cityscapes') as findings of the run."""
    return [{"check": "data", "subject": root, "message": m} for m in warnings]
