"""The evaluation stage: every defense on every data variant it is attacked with.

Variants per subset: the clean images, every transfer and joint set (all defenses; the sweeps'
extra students only the transfer sets) and every white-box set (the defenses of its surface).
Each (defense, variant) result is cached in ``<run>/cache`` under a key made of the defense's
fingerprint (its spec and options, the weights of its networks, the source of a plug-in, the
code version) and the data's identity (the subset's files, or the AE set's store attributes), so
a re-run computes only what changed. The stage returns exactly the rows of the current config,
which are the ones published, plus per defense and eps the worst case over every attack and
threat model (SEA's greedy assignment for mIoU, the per-image minimum for pixel accuracy), and
that worst case at each mark of the attacks' budgets (``mark_worst_case_rows``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from bench import dist
from bench.data.labels import CLASS_NAMES, NUM_CLASSES
from bench.keys import cache_key
from bench.metrics import ConfusionMatrix, q_ratio, worst_case_miou, worst_pixel_accuracy
from bench.scoring import COUNT_COLUMNS, evaluate_defenses, scored_at, stacked_counts
from bench.stages.ae_sets import PlannedSet
from bench.stages.context import RunContext, RunDefenses
from bench.store.aesets import AESet
from bench.store.rundir import METRICS_FILE, RECORDS_FILE, read_cached_table, write_table
from bench.variants import (
    CLEAN_VARIANT,
    MARK_NAMES,
    WHITE_BOX,
    WORST_CASE,
    WORST_CASE_AT_MARK,
    Variant,
)

ROW_KEYS = ["defense", "subset", "threat", "attack", "source", "eps"]
IOU_COLUMNS = [f"iou_{c.replace(' ', '_')}" for c in CLASS_NAMES]
METRIC_COLUMNS = [*ROW_KEYS, "miou", "q", "acc", "n_pixels", *IOU_COLUMNS, "key"]


def _metric_row(row: dict[str, object], key: str, confusion: ConfusionMatrix) -> dict[str, object]:
    iou = confusion.iou()
    matrix = confusion.matrix
    return {
        **row,
        "miou": 100 * confusion.miou(),
        "q": math.nan,
        "acc": 100 * float(matrix.diag().sum() / matrix.sum().clamp(min=1)),
        "n_pixels": int(matrix.sum()),
        **{c: 100 * float(v) for c, v in zip(IOU_COLUMNS, iou)},
        "key": key,
    }


def with_q(metrics: pd.DataFrame) -> pd.DataFrame:
    """Q = mIoU_adv / mIoU_clean of the same defense on the same subset (eq. 10), in %."""
    clean = metrics[metrics["threat"] == "clean"].set_index(["defense", "subset"])["miou"]
    reference = [clean.get((d, s), math.nan) for d, s in zip(metrics["defense"], metrics["subset"])]
    return metrics.assign(q=[100 * q_ratio(m, r) for m, r in zip(metrics["miou"], reference)])


@dataclass(frozen=True)
class Evaluation:
    """The rows of the current config: ``metrics`` per defense x variant (worst case included)
    and ``records`` per image."""

    metrics: pd.DataFrame
    records: pd.DataFrame


def _variants(
    subset: str, sets: Sequence[tuple[PlannedSet, AESet]], rows: Sequence[str]
) -> list[tuple[Variant, AESet | None, tuple[str, ...]]]:
    """(variant, AE set or None for clean, the rows evaluated on it) of one subset."""
    found: list[tuple[Variant, AESet | None, tuple[str, ...]]] = [
        (CLEAN_VARIANT, None, tuple(rows))
    ]
    for plan, ae_set in sets:
        if plan.spec.subset == subset:
            found.append((plan.variant, ae_set, plan.target.rows or tuple(rows)))
    return found


def _stream(clean: Dataset, ae_set: AESet | None, spans: Sequence[tuple[int, int]]):
    """(images, labels) of the given spans: the clean images or the AE set's, the labels of the
    clean subset."""
    adversarial = ae_set.batches(spans=spans) if ae_set is not None else None
    for start, stop in spans:
        items = [clean[i] for i in range(start, stop)]
        images = torch.stack([image for image, _ in items])
        yield (
            next(adversarial) if adversarial is not None else images,
            torch.stack([label for _, label in items]),
        )


def _evaluate_variant(
    defenses: RunDefenses,
    memos: dict[str, nn.Module],
    todo: Sequence[str],
    clean: Dataset,
    ae_set: AESet | None,
    *,
    label_size: tuple[int, int] | None,
    batch_size: int,
    desc: str,
    progress: bool,
) -> dict[str, tuple[ConfusionMatrix, list[dict]]]:
    """Every defense of ``todo`` on one data variant, the batches shared among the ranks (a
    defense that learns from the stream sees all of it, on rank 0); the merged results on
    rank 0 (confusion matrices summed, per-image records in image order), {} elsewhere.
    ``memos``: every ForwardMemo the defenses run on (scored at ``label_size`` when given)."""
    spans = dist.batch_spans(len(clean), batch_size)
    # one process runs every defense in one pass (they share the networks' forward passes)
    learning = [n for n in todo if defenses.entries[n].learns] if dist.size() > 1 else []
    shared = [n for n in todo if n not in learning]
    runs = [(shared, dist.mine(spans))]
    if learning and dist.is_main():
        runs.append((learning, spans))
    mine: dict[str, tuple[torch.Tensor, list[tuple[int, dict]]]] = {}
    with scored_at(memos, label_size):
        for names, share in runs:
            if not names or not share:
                continue
            results = evaluate_defenses(
                {n: defenses.entries[n].make for n in names},
                _stream(clean, ae_set, share),
                progress=progress,
                desc=desc,
                upsample=label_size is not None,
                plugins={
                    n: defenses.entries[n].plugin for n in names if defenses.entries[n].plugin
                },
            )
            indices = [i for start, stop in share for i in range(start, stop)]
            for name, (confusion, records) in results.items():
                mine[name] = (confusion.matrix, list(zip(indices, records)))
    merged: dict[str, tuple[ConfusionMatrix, list[dict]]] = {}
    for part in dist.gather(mine):
        for name, (matrix, records) in part.items():
            confusion, rows = merged.setdefault(name, (ConfusionMatrix(), []))
            confusion.matrix += matrix
            rows.extend(records)
    if not dist.is_main():
        return {}
    return {  # in the config's order, whichever pass ran a defense
        n: (merged[n][0], [r for _, r in sorted(merged[n][1], key=lambda x: x[0])])
        for n in todo
        if n in merged
    }


class _ResultCache:
    """The evaluation's cache of rows, ``<run>/cache/metrics.csv`` and ``records.csv``: read and
    written by rank 0 alone, rewritten atomically after each variant."""

    def __init__(self, folder: Path) -> None:
        self.metrics_path = folder / METRICS_FILE
        self.records_path = folder / RECORDS_FILE
        self.metrics = read_cached_table(self.metrics_path, METRIC_COLUMNS)
        self.records = read_cached_table(
            self.records_path, [*ROW_KEYS, "image", *COUNT_COLUMNS, "key"]
        )

    def missing(self, keys: dict[str, str]) -> list[str]:
        """The rows of ``keys`` (row name -> key) not done yet: done only when both tables hold
        it (a kill between the two writes, or a damaged cache of one, recomputes the variant)."""
        done = set(self.metrics["key"]) & set(self.records["key"])
        return [n for n, k in keys.items() if k not in done]

    def add(
        self,
        row: dict[str, object],
        keys: dict[str, str],
        results: dict[str, tuple[ConfusionMatrix, list[dict]]],
    ) -> None:
        """Store one variant's results (replacing rows of the same keys) and write both tables."""
        new_metrics, new_records = [], []
        for name, (confusion, image_records) in results.items():
            new_metrics.append(_metric_row({"defense": name, **row}, keys[name], confusion))
            # the row's identity last: a defense's record cannot overwrite it
            new_records += [
                {**r, "defense": name, **row, "image": i, "key": keys[name]}
                for i, r in enumerate(image_records)
            ]
        fresh = {keys[name] for name in results}
        self.metrics = pd.concat(
            [self.metrics[~self.metrics["key"].isin(fresh)], pd.DataFrame(new_metrics)],
            ignore_index=True,
        )
        self.records = pd.concat(
            [self.records[~self.records["key"].isin(fresh)], pd.DataFrame(new_records)],
            ignore_index=True,
        )
        write_table(self.records, self.records_path)  # records first: metrics mark it done
        write_table(self.metrics, self.metrics_path)

    def selected(self, wanted: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The metrics and records rows of the wanted keys (the current config's)."""
        metrics = self.metrics[self.metrics["key"].isin(wanted)].drop_duplicates("key", keep="last")
        records = self.records[self.records["key"].isin(wanted)].drop_duplicates(
            ["key", "image"], keep="last"
        )
        return metrics, records


def evaluate_run(ctx: RunContext, ae_sets: Sequence[tuple[PlannedSet, AESet]]) -> Evaluation | None:
    """Evaluate every defense on every data variant, computing only what the cache lacks.

    An interrupted stage resumes with the next variant. Under torchrun the batches are shared
    among the ranks and rank 0 alone reads and writes the cache and returns the evaluation
    (None elsewhere).
    """
    defenses = ctx.require_defenses()
    entries = defenses.entries
    memos = {**ctx.require_networks().memos, **defenses.students}
    main = dist.is_main()
    cache = _ResultCache(ctx.run.cache) if main else None
    wanted: list[str] = []
    for subset in ctx.config.attack.subsets:
        clean = ctx.data.scoring(subset)
        label_size = tuple(clean[0][1].shape) if ctx.config.evaluate.full_resolution else None
        for variant, ae_set, rows in _variants(subset, ae_sets, list(entries)):
            data_key = clean.fingerprint() if ae_set is None else cache_key(ae_set.attrs)
            if ae_set is not None and ae_set.attrs.get("threat") != variant.threat:
                data_key = cache_key(ae_set.attrs, variant.threat)  # a set shared by two rows
            keys = {name: cache_key(entries[name].fingerprint, data_key) for name in rows}
            wanted += keys.values()
            todo = dist.broadcast(cache.missing(keys) if cache is not None else None)
            if not todo:
                continue
            desc = f"evaluate {subset} {variant.label}"
            results = _evaluate_variant(
                defenses,
                memos,
                todo,
                clean,
                ae_set,
                label_size=label_size,
                batch_size=ctx.config.evaluate.batch_size,
                desc=desc,
                progress=ctx.progress,
            )
            if cache is not None:
                row = {
                    "subset": subset,
                    "threat": variant.threat,
                    "attack": variant.attack,
                    "source": variant.source,
                    "eps": variant.eps,
                }
                cache.add(row, keys, results)
    if cache is None:
        return None
    selected, chosen = cache.selected(wanted)
    marked = _marked_sets(ae_sets)
    worst = [worst_case_rows(chosen), mark_worst_case_rows(chosen, marked)]
    rows = with_q(pd.concat([selected, *worst], ignore_index=True))
    return Evaluation(rows.reset_index(drop=True), chosen.reset_index(drop=True))


def worst_case_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per defense, subset and eps: the worst case over every attack and threat model the
    defense was evaluated with (mIoU by SEA's greedy assignment, pixel accuracy per image)."""
    attacked = records[records["threat"] != "clean"]
    rows = []
    for (defense, subset, eps), group in attacked.groupby(["defense", "subset", "eps"], sort=False):
        inter, union, correct, valid = stacked_counts(group)
        miou, _ = worst_case_miou(inter, union)
        accuracy = worst_pixel_accuracy(correct, valid)
        rows.append(
            {
                "defense": defense,
                "subset": subset,
                "threat": WORST_CASE,
                "attack": f"{len(inter)} sets",
                "source": "all",
                "eps": eps,
                "miou": 100 * miou,
                "q": math.nan,
                "acc": 100
                * float((accuracy.nan_to_num(0) * valid).sum() / valid.sum().clamp(min=1)),
                "n_pixels": int(valid.sum()),
                "key": "",
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


#: (subset, threat, attack, source, eps) of a set -> its marks ((N, M, 2, C), iterations)
MarkedSets = dict[tuple[str, str, str, str, float], tuple[np.ndarray, tuple[int, ...]]]


def _marked_sets(ae_sets: Sequence[tuple[PlannedSet, AESet]]) -> MarkedSets:
    """The white-box sets with marks: there the attacked output is the defense's own."""
    marked: MarkedSets = {}
    for plan, ae_set in ae_sets:
        found = ae_set.marks() if plan.spec.threat == WHITE_BOX else None
        if found is not None and found[0].shape[1] == len(MARK_NAMES):
            spec = plan.spec
            marked[(spec.subset, spec.threat, spec.attack, spec.source, float(spec.eps))] = found
    return marked


def mark_worst_case_rows(records: pd.DataFrame, marked: MarkedSets) -> pd.DataFrame:
    """Per defense, subset and eps with a marked set: the worst-case mIoU (SEA's greedy
    assignment) over every attack and threat model at each mark of the attacks' budgets
    (threat ``worst-case-at-mark``, attack ``1/4``, ``1/2``, ``1/1``; source: each marked
    attack's iterations there).

    A white-box set's marks are the defense's own output at the attack's best iterate so far,
    before the rounding to whole gray values and, for an attack with ``precision = "bfloat16"``,
    as its bfloat16 passes predicted it (so the last mark may differ slightly from the evaluated
    set, which is float32); every other set (LLCM, joint sets: no single output was judged) counts with
    its evaluated numbers at every mark.
    """
    attacked = records[records["threat"] != "clean"]
    inter_cols = [f"i{c}" for c in range(NUM_CLASSES)]
    union_cols = [f"u{c}" for c in range(NUM_CLASSES)]
    rows = []
    for (defense, subset, eps), group in attacked.groupby(["defense", "subset", "eps"], sort=False):
        variants = [
            (key[1], marked.get((subset, *key, float(eps))), g.sort_values("image"))
            for key, g in group.groupby(["threat", "attack", "source"], sort=False)
        ]
        if all(found is None for _, found, _ in variants):
            continue
        for m, mark in enumerate(MARK_NAMES):
            inter, union, iterations = [], [], []
            for attack, found, g in variants:
                if found is None:
                    inter.append(g[inter_cols].to_numpy(np.int64))
                    union.append(g[union_cols].to_numpy(np.int64))
                else:
                    inter.append(found[0][:, m, 0])
                    union.append(found[0][:, m, 1])
                    iterations.append(f"{attack} {found[1][m]}/{found[1][-1]}")
            miou, _ = worst_case_miou(torch.tensor(np.stack(inter)), torch.tensor(np.stack(union)))
            rows.append(
                {
                    "defense": defense,
                    "subset": subset,
                    "threat": WORST_CASE_AT_MARK,
                    "attack": mark,
                    "source": ", ".join(dict.fromkeys(iterations)),
                    "eps": eps,
                    "miou": 100 * miou,
                    "q": math.nan,
                    "acc": math.nan,
                    "n_pixels": int(variants[0][2]["valid"].sum()),
                    "key": "",
                }
            )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
