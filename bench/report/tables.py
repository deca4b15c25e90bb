"""The paper's Tables 1-7 and a leaderboard, built from the run's stored rows alone.

Inputs are the run's rows (``metrics.csv``: one row per defense x subset x data variant;
``records.csv``: one row per image, of which the T/A vote's carry d_AE) and the paper's numbers
(``paper/paper_tables.csv``, shipped with the package). Every table is generated; none is typed
by hand. Our numbers and the paper's stand side by side as ``ours`` / ``paper`` column pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import THREAT_MODELS
from bench.variants import (
    CONVERGED_POINTS,
    MARK_NAMES,
    WHITE_BOX,
    WORST_CASE,
    WORST_CASE_AT_MARK,
    Variant,
)

PAPER_TABLES = Path(__file__).parent / "paper" / "paper_tables.csv"
PAPER_DELTAS = (0.0, 0.1, 0.2, 0.5)


def paper_numbers() -> pd.DataFrame:
    """Every number of the paper's Tables 1-7, one per row (see ``paper/README.md``)."""
    return pd.read_csv(PAPER_TABLES)


def _select(df: pd.DataFrame, **where: object) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for column, value in where.items():
        mask &= (df[column] == value).to_numpy()
    return df[mask]


def _value(df: pd.DataFrame, column: str, **where: object) -> float:
    rows = _select(df, **where)
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


def _paper_value(
    paper: pd.DataFrame | None, table: int, variant: Variant, **where: object
) -> float:
    if paper is None:
        return float("nan")
    return _value(paper, "value", table=table, source=variant.source, eps=variant.eps, **where)


def _of(variant: Variant) -> dict[str, object]:
    """The columns that select a variant's rows."""
    return {
        "threat": variant.threat,
        "attack": variant.attack,
        "source": variant.source,
        "eps": variant.eps,
    }


def metric_table(
    metrics: pd.DataFrame,
    rows: Sequence[tuple[str, str, dict[str, object]]],
    *,
    subset: str,
    columns: Sequence[Variant],
    table: int | None = None,
    paper: pd.DataFrame | None = None,
    quantity: str = "miou",
    clean_as_miou: bool = False,
) -> pd.DataFrame:
    """One row per (row label, defense name); columns = data variants, ours next to the paper's.

    ``rows`` holds (label, defense, paper-row selector); ``quantity`` is ``miou`` or ``q`` (both
    in %); with ``clean_as_miou`` the clean column shows mIoU even when the others show Q
    (Table 1).
    """
    table_rows = []
    for label, defense, paper_where in rows:
        row: dict[str, object] = {"": label}
        for variant in columns:
            column = "miou" if (clean_as_miou and variant.source == "clean") else quantity
            row[(variant.label, "ours")] = _value(
                metrics, column, defense=defense, subset=subset, **_of(variant)
            )
            if table is not None:
                row[(variant.label, "paper")] = _paper_value(paper, table, variant, **paper_where)
        table_rows.append(row)
    frame = pd.DataFrame(table_rows).set_index("")
    if table is not None:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def detection_table(
    detections: pd.DataFrame,
    *,
    subset: str,
    columns: Sequence[Variant],
    deltas: Sequence[float] = PAPER_DELTAS,
    table: int | None = None,
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tables 4 and 6: for how many images d_AE picks T (d_AE <= delta) or S (d_AE > delta).

    Read with eq. (4): a large positive d_AE means A agrees with S, so T is under attack (and the
    T/A vote outputs A).
    """
    table_rows = []
    for delta in deltas:
        for picks in ("T", "S"):
            row: dict[object, object] = {"delta": delta, "picks": picks}
            for variant in columns:
                d = _select(detections, subset=subset, **_of(variant))["d_ae"]
                count = int((d > delta).sum()) if picks == "S" else int((d <= delta).sum())
                row[(variant.label, "ours")] = count if len(d) else None
                if table is not None:
                    value = _paper_value(paper, table, variant, delta=delta, picks=picks)
                    row[(variant.label, "paper")] = None if math.isnan(value) else int(value)
            table_rows.append(row)
    frame = pd.DataFrame(table_rows).set_index(["delta", "picks"]).astype("Int64")  # counts
    if table is not None:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def threat_models(rows: pd.DataFrame) -> str:
    """The threat models a defense was attacked under, as the leaderboard shows them."""
    seen = [t for t in THREAT_MODELS if t in set(rows["threat"])]
    text = " + ".join(seen) if seen else "none"
    return text if WHITE_BOX in seen else f"{text} (not adaptively evaluated)"


def robust_column(eps: float) -> str:
    """The leaderboard's column of the worst case at ``eps``."""
    return f"robust mIoU eps={eps:g}"


def budget_fall(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per defense, subset and eps with marks (``WORST_CASE_AT_MARK`` rows), how far its worst
    case fell from the mark at half the budget to the end (``fell``, mIoU points; NaN without
    both marks), from the mark at a quarter to the one at half (``before``) and whether it
    ``converged``: it did not if it fell by more than ``CONVERGED_POINTS``, or by more than half
    of that without slowing down (no less per iteration than over the quarter before, counted
    from the marks' iterations: at that pace a budget twice as long would lose more than
    ``CONVERGED_POINTS``, as a plateau before a fall does; unknown without the quarter's mark),
    or if the fall is unknown. One row each, columns defense, subset, eps, fell, before,
    converged."""
    marks = metrics[metrics["threat"] == WORST_CASE_AT_MARK]
    quarter, half, end = MARK_NAMES
    rows = []
    for (defense, subset, eps), group in marks.groupby(["defense", "subset", "eps"], sort=False):
        by_mark = group.set_index("attack")
        miou = by_mark["miou"]
        fell = float(miou.get(half, math.nan) - miou.get(end, math.nan))
        before = float(miou.get(quarter, math.nan) - miou.get(half, math.nan))
        spans = _span_ratio(by_mark["source"])
        slowing = fell < spans * before  # per iteration; NaN (a mark missing): not known to
        converged = fell <= CONVERGED_POINTS and (slowing or fell <= CONVERGED_POINTS / 2)
        rows.append((defense, subset, float(eps), fell, before, converged))  # NaN: no
    return pd.DataFrame(rows, columns=["defense", "subset", "eps", "fell", "before", "converged"])


def _span_ratio(sources: pd.Series) -> float:
    """How many times more iterations lie between the marks at half the budget and the end
    than between those at a quarter and half, from the marks' sources (``attack k/n, ...``,
    ``bench.stages.results.mark_worst_case_rows``): the smallest over the marked attacks (the
    strictest), 2 (the marks' nominal spacing) where the sources do not say."""
    found: dict[str, list[int]] = {}
    for mark in MARK_NAMES:
        for attack, k in re.findall(r"(\S+) (\d+)/\d+", str(sources.get(mark, ""))):
            found.setdefault(attack, []).append(int(k))
    ratios = [
        (k[2] - k[1]) / (k[1] - k[0]) if k[1] > k[0] else math.inf
        for k in found.values()
        if len(k) == len(MARK_NAMES)
    ]
    return min(ratios) if ratios else 2.0


def still_falling(fell: float, before: float) -> str:
    """Why a worst case with a known fall has not converged (``budget_fall``), in words."""
    said = f"fell by {fell:.2f} points over the second half of the budget"
    if fell > CONVERGED_POINTS:
        return said
    if math.isnan(before):
        return f"{said}, and whether it was slowing down is unknown (no mark at a quarter)"
    return f"{said}, no slower than the {before:.2f} over the quarter before it"


def convergence_checks(metrics: pd.DataFrame) -> list[dict[str, object]]:
    """A defense whose worst case (``bench.stages.results.mark_worst_case_rows``) had not
    converged by the end of the budget (``budget_fall``: it fell by more than
    ``CONVERGED_POINTS`` over the second half, or by more than half of that without slowing
    down): its robust mIoU is an upper bound still falling, not a final number. A fall that
    cannot be measured (a mark missing) fires nothing."""
    falling = budget_fall(metrics)
    falling = falling[~falling["converged"] & falling["fell"].notna()]
    return [
        {
            "check": "not converged",
            "subject": row.defense,
            "subset": row.subset,
            "message": f"{row.defense} on {row.subset} at eps {row.eps:g}: worst case "
            f"{still_falling(row.fell, row.before)}: an upper bound still falling",
        }
        for row in falling.itertuples()
    ]


def headline_eps(metrics: pd.DataFrame, subset: str) -> list[float]:
    """The eps whose worst cases enter the headline robust mIoU of ``subset``: those at which
    the run used its strongest threat model (white-box, else joint, else transfer). At an eps
    met by weaker attacks alone the worst case is nearer the clean mIoU (by transfer alone,
    little below it): a mean over it would rank clean accuracy, not robustness."""
    rows = _select(metrics, subset=subset)
    for threat in reversed(THREAT_MODELS):
        attacked = rows[rows["threat"] == threat]
        if len(attacked):
            return sorted({float(e) for e in attacked["eps"]})
    return []


def leaderboard(metrics: pd.DataFrame, *, subset: str) -> pd.DataFrame:
    """The robust leaderboard of ``subset``, one row per defense: the threat models it was
    attacked under, its worst-case mIoU over every attack and threat model at each eps, their
    mean over ``headline_eps`` (the headline "robust mIoU"), its clean mIoU and its mIoU on every
    attacked data variant. Rows are sorted by robust mIoU, the defenses that were attacked
    white-box first: one that only saw attacks built on other networks has not been evaluated."""
    rows = _select(metrics, subset=subset)
    if rows.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(rows["defense"]))
    table = pd.DataFrame(index=pd.Index(order, name="defense"))
    table["threat models"] = [threat_models(rows[rows["defense"] == d]) for d in order]
    worst = rows[rows["threat"] == WORST_CASE]
    for eps in sorted(set(worst["eps"])):
        table[robust_column(eps)] = worst[worst["eps"] == eps].set_index("defense")["miou"]
    robust = [robust_column(e) for e in headline_eps(metrics, subset)]
    robust = [c for c in robust if c in table.columns]
    # a defense without a worst case at one of these eps has no headline: a mean over fewer
    # eps would not compare with the others'
    table["robust mIoU"] = table[robust].mean(axis=1, skipna=False) if robust else np.nan
    attacked = rows[~rows["threat"].isin([WORST_CASE])]
    labels = [Variant(r.source, r.eps, r.threat, r.attack).label for r in attacked.itertuples()]
    values = attacked.assign(variant=labels).pivot_table(
        index="defense", columns="variant", values="miou", sort=False
    )
    for label in dict.fromkeys(labels):
        table[label] = values[label]
    # a defense never attacked by what sees it has not been evaluated: it ranks after all that were
    adaptive = ~table["threat models"].str.contains("not adaptively evaluated", regex=False)
    table = table.assign(_adaptive=adaptive)
    table = table.sort_values(
        ["_adaptive", "robust mIoU"], ascending=[False, False], na_position="last"
    )
    return table.drop(columns="_adaptive")
