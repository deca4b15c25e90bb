"""The evaluation stage: every defense on every data variant (clean + AE sets) of every subset.

Each (defense, data variant) result is cached in ``<run>/cache`` under a key made of the
defense's fingerprint (its spec and options, the weights of the networks it uses, the source of a
plug-in, the code version) and the data's identity (the subset's files, or the AE set's store
attributes), so a re-run computes only what changed. The stage returns exactly the rows of the
current config, which are the ones published.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench import __version__
from bench.config import STATIC_NETS, RunConfig, adaptive_students, cache_key
from bench.data.labels import CLASS_NAMES
from bench.errors import DefenseError, RunDirError
from bench.evaluate import ForwardMemo, evaluate_defenses
from bench.files import sha256_file
from bench.metrics import ConfusionMatrix, q_ratio
from bench.stages.attacks import AESets
from bench.stages.data import dataset
from bench.store.checkpoints import load_meta, load_model
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
from bench.variants import variants
from defenses import BUILTINS, Defense, SingleNetwork, build_defense, load_defense, predict_labels

ROW_KEYS = ["defense", "subset", "source", "eps"]
IOU_COLUMNS = [f"iou_{c.replace(' ', '_')}" for c in CLASS_NAMES]
METRIC_COLUMNS = [*ROW_KEYS, "miou", "q", "n_pixels", *IOU_COLUMNS, "key"]


@dataclass(frozen=True)
class DefenseEntry:
    """How to build a fresh instance of a defense, and what its results depend on."""

    make: Callable[[], Defense]
    fingerprint: str


def load_networks(config: RunConfig, run: RunDir, device: torch.device) -> dict[str, nn.Module]:
    """T, S and the main A of the run, each wrapped so defenses share forward passes."""
    names = {"T": "T", "S": "S", "A": config.finetune.checkpoint_name}
    return {key: ForwardMemo(load_model(run.models, name, device)) for key, name in names.items()}


def defense_entries(
    config: RunConfig, run: RunDir, networks: dict[str, nn.Module], device: torch.device
) -> dict[str, DefenseEntry]:
    """{row name: entry} for the config's defenses and the sweeps' extra adaptive students.

    The run's thresholds and J_TS' settings are offered to every defense that takes them.
    """
    names = {"T": "T", "S": "S", "A": config.finetune.checkpoint_name}
    weights = {k: load_meta(run.models, n).sha256 for k, n in names.items()}
    offered = {
        "delta": config.detect.delta,
        "delta_t": config.detect.delta_t,
        "delta_s": config.detect.delta_s,
        "finetune": config.finetune,
    }
    entries: dict[str, DefenseEntry] = {}
    for spec in config.evaluate.defenses:
        factory = load_defense(spec)
        accepted = inspect.signature(factory).parameters
        options = {k: v for k, v in offered.items() if k in accepted}
        name = build_defense(spec, networks, **options).name
        if name in entries:
            raise DefenseError(f"two defenses are named {name!r}; give one of them another name")
        source = "" if spec in BUILTINS else _source_digest(factory)
        entries[name] = DefenseEntry(
            partial(build_defense, spec, networks, **options),
            cache_key(spec, options, weights, source, __version__),
        )
    for row, settings in adaptive_students(config).all()[1:]:
        sha256 = load_meta(run.models, settings.checkpoint_name).sha256
        nets = {"A": ForwardMemo(load_model(run.models, settings.checkpoint_name, device))}
        entries[row] = DefenseEntry(
            partial(SingleNetwork, nets, net="A"), cache_key(row, sha256, __version__)
        )
    return entries


def _source_digest(obj: object) -> str:
    """The sha256 of the file that defines a plug-in: editing it re-evaluates the plug-in."""
    try:
        return sha256_file(Path(inspect.getfile(obj)))  # type: ignore[arg-type]
    except (TypeError, OSError):
        return ""


def _metric_row(row: dict[str, object], key: str, confusion: ConfusionMatrix) -> dict[str, object]:
    iou = confusion.iou()
    return {
        **row,
        "miou": 100 * confusion.miou(),
        "q": math.nan,
        "n_pixels": int(confusion.matrix.sum()),
        **{c: 100 * float(v) for c, v in zip(IOU_COLUMNS, iou)},
        "key": key,
    }


def with_q(metrics: pd.DataFrame) -> pd.DataFrame:
    """Q = mIoU_adv / mIoU_clean of the same defense on the same subset (eq. 10), in %."""
    clean = metrics[metrics["source"] == "clean"].set_index(["defense", "subset"])["miou"]
    reference = [clean.get((d, s), math.nan) for d, s in zip(metrics["defense"], metrics["subset"])]
    return metrics.assign(q=[100 * q_ratio(m, r) for m, r in zip(metrics["miou"], reference)])


@dataclass(frozen=True)
class Evaluation:
    """The rows of the current config: ``metrics`` per defense x variant, ``records`` per image."""

    metrics: pd.DataFrame
    records: pd.DataFrame


def evaluate_run(
    config: RunConfig,
    run: RunDir,
    ae_sets: AESets,
    *,
    device: torch.device,
    progress: bool = True,
) -> Evaluation:
    """Evaluate every defense on every data variant, computing only what the cache lacks.

    The cache (``<run>/cache/metrics.csv``, ``records.csv``) is rewritten atomically after each
    variant, so an interrupted stage resumes with the next variant.
    """
    networks = load_networks(config, run, device)
    entries = defense_entries(config, run, networks, device)
    metrics_path, records_path = run.cache / METRICS_FILE, run.cache / RECORDS_FILE
    metrics = read_cached_table(metrics_path, METRIC_COLUMNS)
    records = read_cached_table(records_path, [*ROW_KEYS, "image", "key"])
    wanted: list[str] = []
    for subset in config.attack.subsets:
        clean = dataset(config, subset)
        for variant in variants(config.attack.eps, config.attack.sources):
            ae_set = None if variant.is_clean else ae_sets[(subset, variant.source, variant.eps)]
            data_key = clean.fingerprint() if ae_set is None else cache_key(ae_set.attrs)
            keys = {name: cache_key(e.fingerprint, data_key) for name, e in entries.items()}
            wanted += keys.values()
            done = set(metrics["key"])
            todo = {n: entries[n].make for n, k in keys.items() if k not in done}
            if not todo:
                continue
            loader = DataLoader(clean, batch_size=config.evaluate.batch_size)
            labels = (lab for _, lab in loader)
            images = (
                (img for img, _ in loader)
                if ae_set is None
                else ae_set.batches(config.evaluate.batch_size)
            )
            desc = f"evaluate {subset} {variant.label}"
            results = evaluate_defenses(todo, zip(images, labels), progress=progress, desc=desc)
            row = {"subset": subset, "source": variant.source, "eps": variant.eps}
            new_metrics, new_records = [], []
            for name, (confusion, image_records) in results.items():
                new_metrics.append(_metric_row({"defense": name, **row}, keys[name], confusion))
                new_records += [
                    {"defense": name, **row, "image": i, **r, "key": keys[name]}
                    for i, r in enumerate(image_records)
                ]
            metrics = pd.concat([metrics, pd.DataFrame(new_metrics)], ignore_index=True)
            records = pd.concat([records, pd.DataFrame(new_records)], ignore_index=True)
            write_table(metrics, metrics_path)
            write_table(records, records_path)
    selected = metrics[metrics["key"].isin(wanted)].drop_duplicates("key", keep="last")
    chosen_records = records[records["key"].isin(wanted)]
    return Evaluation(
        with_q(selected.reset_index(drop=True)), chosen_records.reset_index(drop=True)
    )


def qualitative_grid(
    config: RunConfig, run: RunDir, ae_sets: AESets, *, device: torch.device
) -> Path:
    """The first test image, clean and as every source's AE at the largest eps, with the maps
    of T, S, A and the T/A vote: ``<run>/cache/qualitative.npz``, rebuilt when what it shows
    changes (its key is stored inside) and written atomically."""
    subset = config.data.test_subset
    if subset not in config.attack.subsets:
        subset = config.attack.subsets[0]
    top = max(config.attack.eps)
    shown = {source: ae_sets[(subset, source, top)] for source in config.attack.sources}
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
    networks = load_networks(config, run, device)
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
