"""The evaluation's checks of itself (AutoAttack's ``checks.py`` in spirit): each a small
function that returns findings, one dict per warning with ``check``, ``subject`` and
``message``. The root lists them in ``checks.csv`` and the report renders them.

- ``gradient_checks``: a white-box gradient that is zero or NaN for most of the input (masking);
- ``random_checks``: a defense whose two fresh instances answer the same batch differently;
- ``input_checks``: a defense whose output does not depend on its input;
- ``weaker_checks``: a white-box attack that leaves a defense more mIoU than a transfer attack;
- ``convergence_checks`` (``bench.report.tables``, where the report recomputes it from the
  stored marks): a worst case still falling at the end of the attacks' budget.

Every finding's ``subject`` is a defense row (the leaderboard puts its flag there), except the
data stage's, whose subject is the data root.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd
import torch

from bench.metrics import TIE_POINTS
from bench.scoring import defense_label
from bench.stages.ae_sets import PlannedSet
from bench.stages.context import RunContext
from bench.stages.probes import answers_differ, input_ignoring_rows, probe_batch
from bench.variants import TRANSFER, WHITE_BOX

#: the columns of ``checks.csv``; ``subset`` only where a finding holds for one subset alone
CHECK_COLUMNS = ["check", "subject", "message", "subset"]


Finding = dict[str, object]


def gradient_checks(plans: Sequence[PlannedSet], ignoring: Collection[str] = ()) -> list[Finding]:
    """One warning per defense row whose white-box surface the probe before the attacks found
    masked (``bench.stages.probes``: the plan and this check read the same batch). Rows in
    ``ignoring`` (their output ignores the input, ``input_checks``) get none: their zero
    gradient is the truth, not a mask."""
    warnings, seen = [], set()
    for plan in plans:
        probe = plan.target.probe
        if plan.spec.threat != WHITE_BOX or probe is None or plan.spec.source in seen:
            continue
        seen.add(plan.spec.source)
        rows = [r for r in plan.target.rows or () if r not in ignoring]
        share = probe.masked_share
        if rows and probe.masked:
            warnings += [
                {
                    "check": "gradient masking",
                    "subject": row,
                    "message": f"{row}: the white-box gradient of its surface "
                    f"{plan.spec.source} is zero or NaN for {100 * share:.0f}% of the input "
                    "(gradient masking), so its white-box numbers are upper bounds; give its "
                    "AttackSurface a differentiable transform (BPDA: the exact step forward, a "
                    "differentiable stand-in backward, e.g. defenses.preprocess.bpda)",
                }
                for row in rows
            ]
    return warnings


@torch.no_grad()
def random_checks(ctx: RunContext) -> list[Finding]:
    """A defense that gives two fresh instances of itself the same batch and answers differently
    is randomised: its numbers need EOT, which a defense with an attack surface got (the probe
    before the attacks found it random too), one without none. A plug-in that fails here (its
    rows may all come from the cache) is one line, as in the evaluation."""
    images, _ = probe_batch(ctx)
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
                    "EOT (give it an attack_surface() with random=True: EOT over attack.eot_samples)",
                }
            )
    return warnings


def input_checks(ctx: RunContext) -> list[Finding]:
    """A defense whose labels for a clean batch equal its labels for uniform noise and for the
    same batch in reverse order ignores its input (``input_ignoring_rows``): nothing an attacker
    does can move it, so its robust mIoU is exact but says nothing (its clean mIoU is what it
    costs)."""
    images, _ = probe_batch(ctx)
    return [
        {
            "check": "input independence",
            "subject": name,
            "message": f"{name} ignores its input (the same labels for a clean batch, for uniform "
            "noise and for the batch reversed): its robust mIoU is exact but meaningless, no "
            "attack can move it; judge it by its clean mIoU",
        }
        for name in input_ignoring_rows(ctx.require_defenses().entries, images)
    ]


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
                    "subset": subset,
                    "message": f"{defense} on {subset} at eps {eps:g}: the white-box attack leaves "
                    f"{adaptive.min():.1f}% mIoU, a transfer attack {transfer.min():.1f}%; "
                    "the white-box attack needs more iterations or another loss",
                }
            )
    return warnings


def data_checks(root: str, warnings: Sequence[str]) -> list[Finding]:
    """The data stage's warnings (image counts unlike Cityscapes') as findings of the run."""
    return [{"check": "data", "subject": root, "message": m} for m in warnings]
