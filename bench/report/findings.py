"""The paper's qualitative findings, each checked on a run's numbers with named thresholds.

A finding "holds" only when the run's numbers clear its threshold by more than ``TIE_POINTS``;
a smaller difference is reported as a tie, and on a run whose static networks have not learned
(clean mIoU below ``UNTRAINED_MIOU``) nothing is judged at all.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.config import RunConfig, adaptive_students
from bench.metrics import TIE_POINTS
from bench.variants import JOINT, TRANSFER, WHITE_BOX, Variant, variants

#: Below this clean mIoU (%) a network has not learned, and no finding is judged.
UNTRAINED_MIOU = 5.0
#: A network "collapses" on an AE set below this Q (%) and "keeps most" of its mIoU above it.
COLLAPSE_Q = 50.0
#: The detector "picks the non-attacked network" when at least this share (%) is right.
DETECTION_SHARE = 90.0
#: The vote "keeps mIoU" when it loses at most this many points to the better static network.
VOTE_TOLERANCE = 1.0


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


THRESHOLDS = (
    f"differences of at most {_points(TIE_POINTS)} are ties; networks below {UNTRAINED_MIOU:g}% "
    f"clean mIoU count as untrained; 'collapses' means Q < {COLLAPSE_Q:g}%, 'keeps most' "
    f"Q > {COLLAPSE_Q:g}%; detection needs >= {DETECTION_SHARE:g}% right; the vote may trail "
    f"the better static network by {_points(VOTE_TOLERANCE)}"
)


def compare(a: float, b: float, margin: float = TIE_POINTS) -> str:
    """'holds' when a exceeds b by more than ``margin``, 'does not hold' when b exceeds a by
    more, 'tie' in between, 'not measured' when either is missing."""
    if math.isnan(a) or math.isnan(b):
        return "not measured"
    if a - b > margin:
        return "holds"
    if b - a > margin:
        return "does not hold"
    return f"tie (within {_points(margin)})"


def _measured(*values: float) -> bool:
    """Every input of a finding exists in the run: a finding is stated only then."""
    return all(not math.isnan(v) for v in values)


def _mean(values: list[float]) -> float:
    """The mean of the measured values; NaN when none is."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def findings(config: RunConfig, metrics: pd.DataFrame, detections: pd.DataFrame) -> list[str]:
    """The paper's findings as sentences, each with its verdict and the numbers behind it; a
    finding whose inputs the run lacks (no LLCM, no A, no vote) is left out.

    They read the paper's protocol: the transfer sets of the paper's attack (LLCM); the
    detection rows are the T/A vote's records on those sets.
    """
    val, test = config.data.val_subset, config.data.test_subset
    top = max(config.attack.eps)
    sources = config.attack.sources
    paper = config.attack.paper_attack or ""
    columns = variants(config.attack.eps, sources, paper)

    def m(defense: str, v: Variant = columns[0], subset: str = val, col: str = "miou") -> float:
        rows = metrics[
            (metrics.defense == defense)
            & (metrics.subset == subset)
            & (metrics.threat == v.threat)
            & (metrics.attack == v.attack)
            & (metrics.source == v.source)
            & (metrics.eps == v.eps)
        ]
        return float(rows[col].iloc[0]) if len(rows) else math.nan

    t, s = m("T"), m("S")
    if math.isnan(t) or math.isnan(s):
        return [f"Not judged: T or S was not evaluated on clean {val} images in this run."]
    if not (t >= UNTRAINED_MIOU and s >= UNTRAINED_MIOU):
        return [
            f"Not judged: the static networks have not learned (clean mIoU T {t:.1f}%, S {s:.1f}% "
            f"on {val}, below {UNTRAINED_MIOU:g}%), so no finding of the paper can be tested."
        ]
    lines = [f"T beats S on clean data: {compare(t, s)} (mIoU T {t:.1f}%, S {s:.1f}%, {val})."]
    for net, other in (("T", "S"), ("S", "T")):
        if {net, other} <= set(sources) and paper:
            own = m(net, Variant(net, top, TRANSFER, paper), col="q")
            cross = m(net, Variant(other, top, TRANSFER, paper), col="q")
            if not _measured(own, cross):
                continue
            both = [compare(COLLAPSE_Q, own), compare(cross, COLLAPSE_Q), compare(cross, own)]
            lines.append(
                f"{net} collapses on its own AEs and keeps most of its mIoU on {other}'s "
                f"(eps {top:g}): {_all(both)} (Q own {own:.1f}%, Q cross {cross:.1f}%)."
            )
    s_ae = Variant("S", top, TRANSFER, paper)
    a_s, s_s = m("A", s_ae), m("S", s_ae)
    if "S" in sources and paper and _measured(a_s, s_s):
        lines.append(
            f"A is more robust than S to S-AEs (eps {top:g}): {compare(a_s, s_s)} "
            f"(mIoU A {a_s:.1f}%, S {s_s:.1f}%)."
        )
    base = adaptive_students(config).row(["all"], config.finetune.alpha)
    ours = _mean([m("A", v, test) for v in columns])
    theirs = _mean([m(base, v, test) for v in columns])
    if config.sweep.baseline and _measured(ours, theirs):
        lines.append(
            f"A with IFM' on {'+'.join(config.finetune.layers)} beats the all-layer "
            f"baseline of [6] (mean over clean and AE sets, {test}): "
            f"{compare(ours, theirs)} ({ours:.1f}% vs {theirs:.1f}%)."
        )
    det = detections[
        (detections.subset == test)
        & detections.threat.isin(["clean", TRANSFER])
        & detections.attack.isin(["clean", paper])
    ]
    if len(det):
        right = {"clean": "T", "T": "S", "S": "T"}
        picked = np.where(det["d_ae"] > config.detect.delta, "S", "T")
        share = 100 * float(np.mean(picked == det["source"].map(right).to_numpy()))
        lines.append(
            f"Detection at delta {config.detect.delta:g} picks the non-attacked network: "
            f"{_threshold(share >= DETECTION_SHARE)} ({share:.1f}% of {len(det)} "
            f"image-variants right, {test})."
        )
    margins = [m("TA-vote", v, test) - max(m("T", v, test), m("S", v, test)) for v in columns[1:]]
    q_min = min((m("TA-vote", v, test, col="q") for v in columns[1:]), default=math.nan)
    worst = min(margins, default=math.nan)
    if not paper or not _measured(worst, q_min):
        return lines
    lines.append(
        f"The T/A vote keeps mIoU under every attack (at least the better static network "
        f"on each AE set): {compare(worst, -VOTE_TOLERANCE, margin=0)} (worst margin "
        f"{worst:+.1f} points, lowest Q {q_min:.1f}%, {test})."
    )
    return lines


def _all(verdicts: list[str]) -> str:
    """'holds' only when every part holds; the first part that does not otherwise."""
    return next((v for v in verdicts if v != "holds"), "holds")


def _threshold(ok: bool) -> str:
    return "holds" if ok else "does not hold"


PREPROCESSORS = ("jpeg", "spatial-smoothing", "feature-squeezing")
VOTES = ("TS-vote", "TA-vote", "TA-vote-disagree", "TAT-vote")


def adaptive_findings(
    config: RunConfig, metrics: pd.DataFrame, records: pd.DataFrame, subset: str
) -> list[str]:
    """What attacks that see the defense change, stated plainly with the run's numbers."""
    rows = metrics[metrics["subset"] == subset]
    white = rows[rows["threat"] == WHITE_BOX]
    joint = rows[rows["threat"] == JOINT]
    if white.empty and joint.empty:
        return []
    top = max(set(white["eps"]) | set(joint["eps"]))
    paper = config.attack.paper_attack

    def miou(
        defense: str,
        threat: str,
        source: str | None = None,
        attack: str | None = None,
        eps: float = top,
    ) -> float:
        sel = rows[(rows["defense"] == defense) & (rows["threat"] == threat) & (rows["eps"] == eps)]
        if source is not None:
            sel = sel[sel["source"] == source]
        if attack is not None:
            sel = sel[sel["attack"].astype(str).str.startswith(attack)]
        return float(sel["miou"].min()) if len(sel) else math.nan

    lines = []
    for defense in PREPROCESSORS:
        transfer, adaptive = miou(defense, TRANSFER, "T", paper), miou(defense, WHITE_BOX)
        if paper and _measured(transfer, adaptive):
            lines.append(
                f"The white-box (BPDA) attack hurts {defense} more than the transfer attack from "
                f"T (eps {top:g}, {subset}): {compare(transfer, adaptive)} (mIoU white-box "
                f"{adaptive:.1f}%, transfer {transfer:.1f}%)."
            )
    for net in ("T", "S"):
        apgd, llcm = miou(net, WHITE_BOX, attack="apgd"), miou(net, TRANSFER, net, paper)
        if paper and _measured(apgd, llcm):  # without LLCM in the suite, nothing to compare
            lines.append(
                f"APGD is stronger than LLCM on {net}'s own output (eps {top:g}, {subset}): "
                f"{compare(llcm, apgd)} (mIoU APGD {apgd:.1f}%, LLCM {llcm:.1f}%)."
            )
    for vote in VOTES:
        for threat in (JOINT, WHITE_BOX):
            value = miou(vote, threat)
            if math.isnan(value):
                continue
            left, median = _vote_choices(records, vote, subset, threat, top)
            alone = miou("T", threat)
            lines.append(
                f"{vote} under the {threat} attack (eps {top:g}, {subset}): mIoU {value:.1f}%"
                + (f" (T alone {alone:.1f}%)" if _measured(alone) else "")
                + (
                    f"; median d_AE {median:+.3f}, the vote output another network than T on {left:.0f}% of the images."
                    if _measured(left, median)
                    else "."
                )
            )
    if not math.isnan(miou("TA-vote-disagree", WHITE_BOX)):
        cases = [("clean", "clean", None, 0.0)]
        cases += [(f"transfer {src}-AE", TRANSFER, src, top) for src in config.attack.sources]
        cases += [("joint", JOINT, None, top), ("white-box", WHITE_BOX, None, top)]
        parts = []
        for label, threat, source, eps in cases:
            mine = miou("TA-vote-disagree", threat, source, eps=eps)
            plain = miou("TA-vote", threat, source, eps=eps)
            if _measured(mine, plain):
                parts.append(f"{label} {mine:.1f}% vs {plain:.1f}%")
        lines.append(
            f"What the disagreement vote buys over the T/A vote (mIoU, eps {top:g}, {subset}; "
            "the worst set where a threat model has several): " + ", ".join(parts) + "."
        )
    return lines


def _vote_choices(
    records: pd.DataFrame, vote: str, subset: str, threat: str, eps: float
) -> tuple[float, float]:
    """The share (%) of images on which ``vote`` output another network than T, and the median d_AE, under one attack
    (NaN for both without records)."""
    mine = records[
        (records["defense"] == vote)
        & (records["subset"] == subset)
        & (records["threat"] == threat)
        & (records["eps"] == eps)
    ]
    left = 100 * float((mine["chosen"] != "T").mean()) if len(mine) else math.nan
    median = float(mine["d_ae"].median()) if len(mine) else math.nan
    return left, median
