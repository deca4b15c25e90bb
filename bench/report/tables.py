"""The paper's Tables 1-7 and a leaderboard, built from the run's metric records alone.

Inputs are the run's records (``metrics.csv``: one row per defense x subset x AE set;
``detections.csv``: one row per image of the T/A vote) and the paper's numbers
(``results/paper/paper_tables.csv``). Every table is generated; none is typed by hand. Our numbers
and the paper's stand side by side as ``ours`` / ``paper`` column pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAPER_DELTAS = (0.0, 0.1, 0.2, 0.5)


@dataclass(frozen=True)
class Variant:
    """A data variant: clean images, or the AE set of ``source`` at ``eps``."""

    source: str  # "clean", "T" or "S"
    eps: float

    @property
    def label(self) -> str:
        return "clean" if self.source == "clean" else f"eps={self.eps:g} {self.source}-AE"


def variants(eps_list: Sequence[float], sources: Sequence[str] = ("T", "S")) -> list[Variant]:
    """clean, then for each eps every source, the column order of the paper's tables."""
    return [Variant("clean", 0.0)] + [Variant(s, float(e)) for e in eps_list for s in sources]


def _select(df: pd.DataFrame, **where: object) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for column, value in where.items():
        mask &= (df[column] == value).to_numpy()
    return df[mask]


def _value(df: pd.DataFrame, column: str, **where: object) -> float:
    rows = _select(df, **where)
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


def _paper_value(paper: pd.DataFrame | None, table: int, variant: Variant, **where: object) -> float:
    if paper is None:
        return float("nan")
    return _value(paper, "value", table=table, source=variant.source, eps=variant.eps, **where)


def metric_table(
    metrics: pd.DataFrame,
    rows: Sequence[tuple[str, str, dict[str, object]]],
    *,
    subset: str,
    eps_list: Sequence[float],
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
    records = []
    for label, defense, paper_where in rows:
        record: dict[str, object] = {"": label}
        for variant in variants(eps_list):
            column = "miou" if (clean_as_miou and variant.source == "clean") else quantity
            record[(variant.label, "ours")] = _value(
                metrics, column, defense=defense, subset=subset, source=variant.source, eps=variant.eps
            )
            if table is not None:
                record[(variant.label, "paper")] = _paper_value(paper, table, variant, **paper_where)
        records.append(record)
    frame = pd.DataFrame(records).set_index("")
    if table is not None:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def detection_table(
    detections: pd.DataFrame,
    *,
    subset: str,
    eps_list: Sequence[float],
    deltas: Sequence[float] = PAPER_DELTAS,
    table: int | None = None,
    paper: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tables 4 and 6: how many images the vote hands to T (d_AE <= delta) or S (d_AE > delta).

    Read with eq. (4): a large positive d_AE means A agrees with S, so T is under attack.
    """
    records = []
    for delta in deltas:
        for picks in ("T", "S"):
            record: dict[object, object] = {"delta": delta, "picks": picks}
            for variant in variants(eps_list):
                d = _select(detections, subset=subset, source=variant.source, eps=variant.eps)["d_ae"]
                count = int((d > delta).sum()) if picks == "S" else int((d <= delta).sum())
                record[(variant.label, "ours")] = count if len(d) else None
                if table is not None:
                    value = _paper_value(paper, table, variant, delta=delta, picks=picks)
                    record[(variant.label, "paper")] = None if math.isnan(value) else int(value)
            records.append(record)
    frame = pd.DataFrame(records).set_index(["delta", "picks"]).astype("Int64")  # counts
    if table is not None:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def leaderboard(metrics: pd.DataFrame, *, subset: str) -> pd.DataFrame:
    """Every defense over every data variant of ``subset``: mIoU per variant, mean mIoU over
    the AE sets, and mean Q; sorted best first by the mean over all variants."""
    rows = _select(metrics, subset=subset)
    if rows.empty:
        return pd.DataFrame()
    labels = {(v.source, v.eps): v.label for v in variants(sorted(set(rows["eps"]) - {0.0}))}
    rows = rows.assign(variant=[labels[(s, e)] for s, e in zip(rows["source"], rows["eps"])])
    table = rows.pivot_table(index="defense", columns="variant", values="miou", sort=False)
    table = table[[label for label in labels.values() if label in table.columns]]
    adversarial = rows[rows["source"] != "clean"].groupby("defense")
    table["mean mIoU (AE sets)"] = adversarial["miou"].mean()
    table["mean Q (AE sets)"] = adversarial["q"].mean()
    table["mean mIoU (all)"] = table[list(labels.values())].mean(axis=1)
    return table.sort_values("mean mIoU (all)", ascending=False)
