"""The evaluation stage: every defense on every data variant it is attacked with.

Variants per subset: the clean images, every transfer and joint set (all defenses; the sweeps'
extra students only the transfer sets) and every white-box set (the defenses of its surface).
Each (defense, variant) result is cached in ``<run>/cache`` under a key made of the defense's
fingerprint (its spec and options, the weights of its networks, the source of a plug-in, the
code version) and the data's identity (the subset's files, or the AE set's store attributes), so
a re-run computes only what changed. The stage returns exactly the rows of the current config,
which are the ones published, plus per defense and eps the worst case over every attack and
threat model (SEA's greedy assignment for mIoU, the per-image minimum for pixel accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from bench import __version__, dist
from bench.config import STATIC_NETS, RunConfig, cache_key
from bench.data.labels import CLASS_NAMES, NUM_CLASSES
from bench.errors import RunDirError
from bench.evaluate import COUNT_COLUMNS, evaluate_defenses, scored_at
from bench.metrics import ConfusionMatrix, q_ratio, worst_case_miou, worst_pixel_accuracy
from bench.report.findings import TIE_POINTS
from bench.stages.attacks import PlannedSet
from bench.stages.data import dataset, scoring_dataset
from bench.stages.defenses import RunDefenses
from bench.store.aesets import AESet
from bench.store.checkpoints import load_meta
from bench.store.rundir import (
    METRICS_FILE,
    QUALITATIVE_FILE,
    RECORDS_FILE,
    RunDir,
    read_arrays,
    read_cached_table,
    write_arrays,
    write_table,
)
from bench.variants import CLEAN_VARIANT, TRANSFER, WHITE_BOX, WORST_CASE, Variant
from defenses import build_defense, predict_labels

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
    """The rows of the current config: ``metrics`` per defense x variant (worst case included),
    ``records`` per image, and the warnings of the evaluation's own checks."""

    metrics: pd.DataFrame
    records: pd.DataFrame
    checks: pd.DataFrame

    def with_checks(self, warnings: Sequence[dict[str, object]]) -> Evaluation:
        """The same evaluation with more warnings of its own checks."""
        more = pd.DataFrame(list(warnings), columns=self.checks.columns)
        return Evaluation(
            self.metrics, self.records, pd.concat([more, self.checks], ignore_index=True)
        )


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
    config: RunConfig,
    defenses: RunDefenses,
    todo: Sequence[str],
    clean: Dataset,
    ae_set: AESet | None,
    label_size: tuple[int, int] | None,
    desc: str,
    progress: bool,
) -> dict[str, tuple[ConfusionMatrix, list[dict]]]:
    """Every defense of ``todo`` on one data variant, the batches shared among the ranks (a
    defense that learns from the stream sees all of it, on rank 0); the merged results on
    rank 0 (confusion matrices summed, per-image records in image order), {} elsewhere."""
    spans = dist.batch_spans(len(clean), config.evaluate.batch_size)
    # one process runs every defense in one pass (they share the networks' forward passes)
    learning = [n for n in todo if defenses.entries[n].learns] if dist.size() > 1 else []
    shared = [n for n in todo if n not in learning]
    runs = [(shared, dist.mine(spans))]
    if learning and dist.is_main():
        runs.append((learning, spans))
    memos = {**defenses.networks, **defenses.students}
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


def evaluate_run(
    config: RunConfig,
    run: RunDir,
    defenses: RunDefenses,
    ae_sets: Sequence[tuple[PlannedSet, AESet]],
    *,
    progress: bool = True,
) -> Evaluation | None:
    """Evaluate every defense on every data variant, computing only what the cache lacks.

    The cache (``<run>/cache/metrics.csv``, ``records.csv``) is rewritten atomically after each
    variant, so an interrupted stage resumes with the next variant. Under torchrun the batches
    are shared among the ranks and rank 0 alone reads and writes the cache and returns the
    evaluation (None elsewhere).
    """
    entries = defenses.entries
    metrics_path, records_path = run.cache / METRICS_FILE, run.cache / RECORDS_FILE
    main = dist.is_main()
    metrics = read_cached_table(metrics_path, METRIC_COLUMNS) if main else None
    records = (
        read_cached_table(records_path, [*ROW_KEYS, "image", *COUNT_COLUMNS, "key"])
        if main
        else None
    )
    wanted: list[str] = []
    full = config.evaluate.full_resolution
    for subset in config.attack.subsets:
        clean = scoring_dataset(config, subset)
        label_size = tuple(clean[0][1].shape) if full else None
        for variant, ae_set, rows in _variants(subset, ae_sets, list(entries)):
            data_key = clean.fingerprint() if ae_set is None else cache_key(ae_set.attrs)
            keys = {name: cache_key(entries[name].fingerprint, data_key) for name in rows}
            wanted += keys.values()
            todo = None
            if main:
                # done only when both tables hold it (a kill between the two writes, or a
                # damaged cache of one, recomputes the variant)
                done = set(metrics["key"]) & set(records["key"])
                todo = [n for n, k in keys.items() if k not in done]
            todo = dist.broadcast(todo)
            if not todo:
                continue
            desc = f"evaluate {subset} {variant.label}"
            results = _evaluate_variant(
                config, defenses, todo, clean, ae_set, label_size, desc, progress and main
            )
            if not main:
                continue
            row = {
                "subset": subset,
                "threat": variant.threat,
                "attack": variant.attack,
                "source": variant.source,
                "eps": variant.eps,
            }
            new_metrics, new_records = [], []
            for name, (confusion, image_records) in results.items():
                new_metrics.append(_metric_row({"defense": name, **row}, keys[name], confusion))
                # the row's identity last: a defense's record cannot overwrite it
                new_records += [
                    {**r, "defense": name, **row, "image": i, "key": keys[name]}
                    for i, r in enumerate(image_records)
                ]
            fresh = {keys[name] for name in results}
            metrics = pd.concat(
                [metrics[~metrics["key"].isin(fresh)], pd.DataFrame(new_metrics)],
                ignore_index=True,
            )
            records = pd.concat(
                [records[~records["key"].isin(fresh)], pd.DataFrame(new_records)],
                ignore_index=True,
            )
            write_table(records, records_path)  # records first: metrics mark the variant done
            write_table(metrics, metrics_path)
    if not main:
        return None
    selected = metrics[metrics["key"].isin(wanted)].drop_duplicates("key", keep="last")
    chosen = records[records["key"].isin(wanted)].drop_duplicates(["key", "image"], keep="last")
    worst = worst_case_rows(chosen)
    rows = with_q(pd.concat([selected, worst], ignore_index=True))
    checks = pd.DataFrame(
        random_checks(config, defenses) + weaker_checks(rows),
        columns=["check", "subject", "message"],
    )
    return Evaluation(rows.reset_index(drop=True), chosen.reset_index(drop=True), checks)


def worst_case_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per defense, subset and eps: the worst case over every attack and threat model the
    defense was evaluated with (mIoU by SEA's greedy assignment, pixel accuracy per image)."""
    attacked = records[records["threat"] != "clean"]
    inter_cols = [f"i{c}" for c in range(NUM_CLASSES)]
    union_cols = [f"u{c}" for c in range(NUM_CLASSES)]
    rows = []
    for (defense, subset, eps), group in attacked.groupby(["defense", "subset", "eps"], sort=False):
        by_variant = [
            g.sort_values("image")
            for _, g in group.groupby(["threat", "attack", "source"], sort=False)
        ]
        counts = {
            name: torch.tensor(np.stack([g[c].to_numpy(np.int64) for g in by_variant]))
            for name, c in (("inter", inter_cols), ("union", union_cols), ("correct", "correct"))
        }
        inter, union, correct = counts["inter"], counts["union"], counts["correct"]
        valid = torch.tensor(by_variant[0]["valid"].to_numpy(np.int64))
        miou, _ = worst_case_miou(inter, union)
        accuracy = worst_pixel_accuracy(correct, valid)
        rows.append(
            {
                "defense": defense,
                "subset": subset,
                "threat": WORST_CASE,
                "attack": f"{len(by_variant)} sets",
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


@torch.no_grad()
def random_checks(config: RunConfig, defenses: RunDefenses) -> list[dict[str, object]]:
    """A defense that gives two fresh instances of itself the same batch and answers differently
    is randomised: its numbers need EOT, and its surface must say ``random=True``."""
    images, _ = next(
        iter(
            DataLoader(
                dataset(config, config.data.val_subset), batch_size=config.evaluate.batch_size
            )
        )
    )
    warnings = []
    for name, entry in defenses.entries.items():
        first, second = entry.make().predict(images), entry.make().predict(images)
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


def weaker_checks(metrics: pd.DataFrame) -> list[dict[str, object]]:
    """An adaptive (white-box) attack that leaves a defense a higher mIoU than a transfer
    attack at the same eps is too weak: the defense's white-box number is not its worst case."""
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


def qualitative_grid(
    config: RunConfig,
    run: RunDir,
    defenses: RunDefenses,
    ae_sets: Sequence[tuple[PlannedSet, AESet]],
) -> Path:
    """The first test image, clean and as every transfer source's AE at the largest eps of the
    paper's attack, with the maps of T, S, A and the T/A vote: ``<run>/cache/qualitative.npz``,
    rebuilt when what it shows changes (its key is stored inside) and written atomically."""
    subset = config.data.test_subset
    if subset not in config.attack.subsets:
        subset = config.attack.subsets[0]
    transfer = [
        (p, s)
        for p, s in ae_sets
        if p.spec.subset == subset
        and p.spec.threat == TRANSFER
        and p.spec.attack == config.attack.paper_attack
    ]
    top = max((p.spec.eps for p, _ in transfer), default=0.0)
    shown = {p.spec.source: s for p, s in transfer if p.spec.eps == top}
    weights = {
        n: load_meta(run.models, n).sha256 for n in (*STATIC_NETS, config.finetune.checkpoint_name)
    }
    images = dataset(config, subset)
    key = cache_key(
        weights,
        images.fingerprint(),
        {s: a.attrs for s, a in shown.items()},
        config.detect,
        __version__,
    )
    path = run.cache / QUALITATIVE_FILE
    if path.is_file():
        try:
            if str(read_arrays(path).get("__key__")) == key:
                return path
        except RunDirError:
            pass  # damaged (a kill mid-write with an old version): rebuilt below
    image, label = images[0]
    networks = defenses.networks
    vote = build_defense(
        "TA-vote",
        networks,
        delta=config.detect.delta,
        delta_t=config.detect.delta_t,
        delta_s=config.detect.delta_s,
    )
    rows = [("clean", image[None])] + [
        (f"{source}-AE eps {top:g}", next(ae_set.batches(1))) for source, ae_set in shown.items()
    ]
    grid: dict[str, np.ndarray] = {"__key__": np.array(key)}
    for row, batch in rows:
        grid[f"{row}|image"] = batch[0].numpy()
        grid[f"{row}|ground truth"] = label.numpy()
        for net in ("T", "S", "A"):
            grid[f"{row}|{net}"] = predict_labels(networks[net], batch)[0].numpy()
        grid[f"{row}|T/A vote"] = vote.predict(batch).labels[0].numpy()
    write_arrays(path, grid)
    return path
