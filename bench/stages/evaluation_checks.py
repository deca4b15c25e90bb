"""The evaluation's checks of itself (AutoAttack's ``checks.py`` in spirit): each a small
function that returns findings, one dict per warning with ``check``, ``subject`` and
``message``. The root lists them in ``checks.csv`` and the report renders them.

- ``gradient_checks``: a white-box gradient that is zero or NaN for most of the input (masking);
- ``random_checks``: a defense whose two fresh instances answer the same batch differently;
- ``weaker_checks``: a white-box attack that leaves a defense more mIoU than a transfer attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader

from bench.metrics import TIE_POINTS
from bench.scoring import defense_label
from bench.stages.ae_sets import PlannedSet
from bench.stages.context import RunContext
from bench.stages.probes import MASKED_GRADIENT_SHARE, answers_differ, masked_gradient_share
from bench.variants import TRANSFER, WHITE_BOX

#: the columns of ``checks.csv``
CHECK_COLUMNS = ["check", "subject", "message"]

Finding = dict[str, object]


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
    is randomised: its numbers need EOT, which a defense with an attack surface got (the probe
    before the attacks found it random too), one without none. A plug-in that fails here (its
    rows may all come from the cache) is one line, as in the evaluation."""
    loader = DataLoader(ctx.data.split(ctx.config.data.val_subset), ctx.config.evaluate.batch_size)
    images, _ = next(iter(loader))
    warnings = []
    for name, entry in ctx.require_defenses().entries.items():
        who, plugin = defense_label(name, entry.plugin), bool(entry.plugin)
        if entry.surface is None and answers_differ(entry.make, images, who, plugin):
            warnings.append(
                {
                    "check": "randomness",
                    "subject": name,
                    "message": f"{name} gives different outputs for the same input: it is "
                    "randomised, but it has no attack surface, so no attack on it ran with "
                    "EOT (give it one: attack_surface())",
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


def data_checks(root: str, warnings: Sequence[str]) -> list[Finding]:
    """The data stage's warnings (image counts unlike Cityscapes') as findings of the run."""
    return [{"check": "data", "subject": root, "message": m} for m in warnings]
