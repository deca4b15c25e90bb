"""The stages of a run, each reusing what is cached and still valid.

``bench run`` is the composition of these functions; every ``bench`` sub-command calls one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from attacks import build_attack
from bench import __version__
from bench.config import FinetuneConfig, RunConfig, save_config
from bench.data.cityscapes import CityscapesSegmentation
from bench.data.toycity import SceneStyle, generate_toycity
from bench.data.labels import CLASS_NAMES
from bench.errors import BenchError
from bench.evaluate import ForwardMemo, clean_confusion, evaluate_defenses
from bench.finetune import checkpoint_name, finetune_adaptive
from bench.metrics import ConfusionMatrix, q_ratio
from bench.models import build_model, count_parameters
from bench.report import METRICS_FILE, QUALITATIVE_FILE, RECORDS_FILE, write_report
from bench.store.aesets import STORE_FILE, AESet, build_ae_set
from bench.store.checkpoints import CheckpointError, ModelRecord, load_model, load_record, save_model
from bench.train import pretrain
from bench.variants import adaptive_variants
from defenses import BUILTINS, Defense, SingleNetwork, build_defense, load_defense, predict_labels

STATIC_NETS = ("T", "S")
# Reference checkpoints of T and S shipped with the package (a folder per preset), made by
# ``bench train`` of this code (recipe and sha256 in each JSON record); ``--retrain`` ignores them.
REFERENCE_DIR = Path(__file__).parent / "reference"


def open_run(config: RunConfig, run_dir: str | Path) -> Path:
    """Create the run directory and write the resolved config into it."""
    run_dir = Path(run_dir)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.toml")
    return run_dir


def resolve_data_root(config: RunConfig) -> RunConfig:
    """Make ``data.root`` absolute (relative paths are relative to the current directory)."""
    root = Path(config.data.root).expanduser().resolve()
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(root)))


def prepare_data(config: RunConfig, *, progress: bool = True) -> Path:
    """Return the data root; generate the toy city there first when it is missing and allowed."""
    root = Path(config.data.root)
    # generate_toycity returns at once for a finished tree of the same settings and stops with a
    # clear error for a tree made with other settings.
    if config.data.toycity:
        style = dict(config.data.toycity_style)
        if "exposure" in style:
            style["exposure"] = tuple(style["exposure"])
        options = {"seed": config.data.toycity_seed, "size": tuple(config.data.size),
                   "progress": progress, **config.data.toycity_counts}
        try:
            options["style"] = SceneStyle(**style)
            inspect.signature(generate_toycity).bind(root, **options)
        except TypeError as err:
            raise BenchError(f"bad data.toycity_style or data.toycity_counts: {err}") from None
        generate_toycity(root, **options)
    return root


def _data_key(config: RunConfig) -> str:
    """Identifies the training data independently of where it lies: the data settings without
    the root, plus the names of the labelled images."""
    settings = dataclasses.replace(config.data, root="")
    train = CityscapesSegmentation(config.data.root, config.data.train_split, size=tuple(config.data.size))
    return _digest(dataclasses.asdict(settings), train.fingerprint())


def _static_net_key(config: RunConfig, name: str) -> str:
    net = "teacher" if name == "T" else "student"
    return _digest(_data_key(config), config.digest(net, "pretrain"), config.seed)


def _reusable(models_dir: Path, name: str, key: str) -> ModelRecord | None:
    """The record of checkpoint ``name`` when it exists and was made with ``key``."""
    try:
        record = load_record(models_dir, name)
    except CheckpointError:
        return None
    return record if record.info.get("key") == key and (models_dir / f"{name}.pt").is_file() else None


def _install_reference(models_dir: Path, name: str, key: str) -> ModelRecord | None:
    """Copy a shipped reference checkpoint of ``name`` into the run when one was trained with
    exactly this recipe (same key, whatever the preset's name); None otherwise."""
    for reference in sorted(p.parent for p in REFERENCE_DIR.glob(f"*/{name}.json")):
        if _reusable(reference, name, key) is not None:
            for suffix in (".pt", ".json"):
                shutil.copyfile(reference / f"{name}{suffix}", models_dir / f"{name}{suffix}")
            return _reusable(models_dir, name, key)
    return None


def train_static(
    config: RunConfig,
    run_dir: Path,
    name: str,
    *,
    device: torch.device,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[ModelRecord, str]:
    """Pretrain T (the teacher architecture) or S (the student) unless a valid checkpoint exists.

    Returns the checkpoint record and where it came from: "trained" now, "cached" (a valid
    checkpoint in the run) or "reference" (the shipped checkpoint of this preset).
    """
    if name not in STATIC_NETS:
        raise ValueError(f"unknown static network {name!r}; choose from {', '.join(STATIC_NETS)}")
    models_dir = run_dir / "models"
    key = _static_net_key(config, name)
    if not retrain:
        if record := _reusable(models_dir, name, key):
            return record, "cached"
        if record := _install_reference(models_dir, name, key):
            return record, "reference"
    net = config.teacher if name == "T" else config.student
    # Distinct, fixed seeds for T and S: same config -> same weights, T and S never share an init.
    seed = config.seed * 1000 + STATIC_NETS.index(name)
    torch.manual_seed(seed)
    model = build_model(net.arch, **net.options)
    size = tuple(config.data.size)
    train_set = CityscapesSegmentation(config.data.root, config.data.train_split, size=size)
    stats = pretrain(
        model, train_set, config.pretrain, device=device, seed=seed, progress=progress,
        desc=f"pretrain {name}",
    )
    val_set = CityscapesSegmentation(config.data.root, config.data.val_subset, size=size)
    miou = clean_confusion(model, val_set, batch_size=config.pretrain.batch_size, progress=progress).miou()
    record = save_model(
        model, models_dir, name, net.arch, net.options,
        key=key,
        parameters=count_parameters(model),
        train_seconds=round(stats.seconds, 1),
        iterations=stats.iterations,
        final_loss=stats.final_loss,
        train_images=len(train_set),
        recipe=dataclasses.asdict(config.pretrain),
        seed=seed,
        device=str(device),
        **{f"miou_{config.data.val_subset}": miou},
    )
    return record, "trained"


def finetune_adaptive_student(
    config: RunConfig,
    run_dir: Path,
    settings: FinetuneConfig,
    *,
    device: torch.device,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[ModelRecord, str]:
    """Finetune an adaptive student A from S with ``settings`` (J_TS', eq. 8) unless a valid
    checkpoint exists; the checkpoint is named by its settings (``A_down2_a0.6_e10``).

    Returns the checkpoint record and "trained" or "cached".
    """
    models_dir = run_dir / "models"
    static = {n: load_record(models_dir, n) for n in STATIC_NETS}
    name = checkpoint_name(settings)
    key = dataclasses.asdict(settings) | {
        "T": static["T"].sha256, "S": static["S"].sha256, "seed": config.seed,
        "data": _data_key(config),
    }
    key_text = str(sorted(key.items()))
    if not retrain and (record := _reusable(models_dir, name, key_text)):
        return record, "cached"
    teacher = load_model(models_dir, "T", device)
    student = load_model(models_dir, "S", device)
    size = tuple(config.data.size)
    unlabeled = CityscapesSegmentation(
        config.data.root, config.data.unlabeled_split, size=size, with_labels=False
    )
    seed = config.seed * 1000 + 2
    start = time.perf_counter()
    adaptive = finetune_adaptive(
        teacher, student, unlabeled, settings, device=device, seed=seed, progress=progress
    )
    seconds = time.perf_counter() - start
    val_set = CityscapesSegmentation(config.data.root, config.data.val_subset, size=size)
    miou = clean_confusion(adaptive, val_set, batch_size=settings.batch_size, progress=progress).miou()
    record = save_model(
        adaptive, models_dir, name, config.student.arch, config.student.options,
        key=key_text, finetune=dataclasses.asdict(settings), seed=seed, device=str(device),
        train_seconds=round(seconds, 1),
        unlabeled_images=len(unlabeled), parameters=count_parameters(adaptive),
        **{f"miou_{config.data.val_subset}": miou},
    )
    return record, "trained"


def build_ae_sets(
    config: RunConfig, run_dir: Path, *, device: torch.device, progress: bool = True
) -> dict[tuple[str, str, float], AESet]:
    """Build (or reuse, or finish) every AE set of the run: subset x source x eps."""
    attack = build_attack(config.attack.name, **config.attack.options)
    models_dir, size = run_dir / "models", tuple(config.data.size)
    sets = {}
    for source in config.attack.sources:
        record = load_record(models_dir, source)
        model = load_model(models_dir, source, device)
        for subset in config.attack.subsets:
            dataset = CityscapesSegmentation(config.data.root, subset, size=size)
            for eps in config.attack.eps:
                sets[(subset, source, eps)] = build_ae_set(
                    run_dir / STORE_FILE, split=subset, source=source, source_sha256=record.sha256,
                    model=model, dataset=dataset, attack=attack, eps=eps,
                    batch_size=config.attack.batch_size, progress=progress,
                )
    return sets


def _networks(config: RunConfig, run_dir: Path, device: torch.device) -> dict[str, nn.Module]:
    """T, S and the main A of the run, each wrapped so defenses share forward passes."""
    models_dir = run_dir / "models"
    names = {"T": "T", "S": "S", "A": checkpoint_name(config.finetune)}
    return {key: ForwardMemo(load_model(models_dir, name, device)) for key, name in names.items()}


def _defense_factories(
    config: RunConfig, run_dir: Path, networks: dict[str, nn.Module], specs: tuple[str, ...],
    device: torch.device,
) -> dict[str, tuple[Callable[[], Defense], str]]:
    """{row name: (factory, fingerprint)} for the run's defenses and its extra adaptive students.

    The run's thresholds and J_TS' settings are offered to every defense that takes them. The
    fingerprint changes whenever the defense's result could: its spec and options, the networks'
    weights, and for a user's plug-in the source file of its class.
    """
    models_dir = run_dir / "models"
    weights = "|".join(load_record(models_dir, n).sha256 for n in ("T", "S", checkpoint_name(config.finetune)))
    offered = {"delta": config.detect.delta, "delta_t": config.detect.delta_t,
               "delta_s": config.detect.delta_s, "finetune": config.finetune}
    factories: dict[str, tuple[Callable[[], Defense], str]] = {}
    for spec in specs:
        factory = load_defense(spec)
        accepted = inspect.signature(factory).parameters
        options = {k: v for k, v in offered.items() if k in accepted}
        name = build_defense(spec, networks, **options).name
        if name in factories:
            raise BenchError(f"two defenses are named {name!r}; give one of them another name")
        source = "" if spec in BUILTINS else _source_digest(factory)
        factories[name] = (
            partial(build_defense, spec, networks, **options),
            _digest(spec, sorted(options.items(), key=str), weights, source, __version__),
        )
    for row, settings in adaptive_variants(config).all()[1:]:
        record = load_record(models_dir, row)
        nets = {"A": ForwardMemo(load_model(models_dir, row, device))}
        factories[row] = (partial(SingleNetwork, nets, net="A"), _digest(row, record.sha256, __version__))
    return factories


def _source_digest(obj: object) -> str:
    try:
        return hashlib.sha256(Path(inspect.getfile(obj)).read_bytes()).hexdigest()  # type: ignore[arg-type]
    except (TypeError, OSError):
        return ""


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _metric_row(
    name: str, key: str, subset: str, source: str, eps: float, confusion: ConfusionMatrix
) -> dict[str, object]:
    iou = confusion.iou()
    return {
        "defense": name, "subset": subset, "source": source, "eps": eps,
        "miou": 100 * confusion.miou(), "q": math.nan, "n_pixels": int(confusion.matrix.sum()),
        **{f"iou_{c.replace(' ', '_')}": 100 * float(v) for c, v in zip(CLASS_NAMES, iou)},
        "key": key,
    }


def _replace_rows(
    frame: pd.DataFrame, new: pd.DataFrame, names: list[str], subset: str, source: str, eps: float
) -> pd.DataFrame:
    """``frame`` without the rows of ``names`` on this variant, then ``new``."""
    if frame.empty:
        return new
    old = (frame["defense"].isin(names) & (frame["subset"] == subset)
           & (frame["source"] == source) & (frame["eps"] == eps))
    return pd.concat([frame[~old], new], ignore_index=True)


def _with_q(metrics: pd.DataFrame) -> pd.DataFrame:
    """Q = mIoU_adv / mIoU_clean of the same defense on the same subset (eq. 10), in %."""
    clean = metrics[metrics["source"] == "clean"].set_index(["defense", "subset"])["miou"]
    reference = [clean.get((d, s), math.nan) for d, s in zip(metrics["defense"], metrics["subset"])]
    q = [100 * q_ratio(m, r) for m, r in zip(metrics["miou"], reference)]
    return metrics.assign(q=q)


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def evaluate_run(
    config: RunConfig,
    run_dir: Path,
    ae_sets: dict[tuple[str, str, float], AESet],
    *,
    device: torch.device,
    defenses: tuple[str, ...],
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate every defense on every data variant (clean + AE sets) of every subset.

    Results go to ``metrics.csv`` (one row per defense x subset x variant, with Q) and
    ``records.csv`` (one row per image), rewritten atomically after each variant; a rerun skips
    every row whose key (defense fingerprint + data identity) is unchanged.
    """
    networks = _networks(config, run_dir, device)
    factories = _defense_factories(config, run_dir, networks, defenses, device)
    metrics_path, records_path = run_dir / METRICS_FILE, run_dir / RECORDS_FILE
    metrics = pd.read_csv(metrics_path) if metrics_path.is_file() else pd.DataFrame()
    records = pd.read_csv(records_path) if records_path.is_file() else pd.DataFrame()
    done = set(metrics["key"]) if len(metrics) else set()
    size = tuple(config.data.size)
    for subset in config.attack.subsets:
        dataset = CityscapesSegmentation(config.data.root, subset, size=size)
        variants = [("clean", 0.0, None)] + [
            (source, eps, ae_sets[(subset, source, eps)])
            for eps in config.attack.eps for source in config.attack.sources
        ]
        for source, eps, ae_set in variants:
            data_key = dataset.fingerprint() if ae_set is None else json.dumps(ae_set.attrs, sort_keys=True, default=str)
            keys = {name: _digest(fingerprint, data_key) for name, (_, fingerprint) in factories.items()}
            todo = {name: factories[name][0] for name, key in keys.items() if key not in done}
            if not todo:
                continue
            loader = DataLoader(dataset, batch_size=config.evaluate.batch_size)
            labels = (lab for _, lab in loader)
            images = (img for img, _ in loader) if ae_set is None else ae_set.batches(config.evaluate.batch_size)
            desc = f"evaluate {subset} {'clean' if ae_set is None else f'{source}-AE eps {eps:g}'}"
            results = evaluate_defenses(todo, zip(images, labels), progress=progress, desc=desc)
            rows, image_rows = [], []
            for name, (confusion, recs) in results.items():
                rows.append(_metric_row(name, keys[name], subset, source, eps, confusion))
                image_rows += [{"defense": name, "subset": subset, "source": source, "eps": eps,
                                "image": i, **r} for i, r in enumerate(recs)]
            where = (list(todo), subset, source, eps)
            metrics = _with_q(_replace_rows(metrics, pd.DataFrame(rows), *where))
            records = _replace_rows(records, pd.DataFrame(image_rows), *where)
            _atomic_csv(metrics, metrics_path)
            _atomic_csv(records, records_path)
            done |= {keys[name] for name in todo}
    return metrics


def save_qualitative(
    config: RunConfig, run_dir: Path, ae_sets: dict[tuple[str, str, float], AESet],
    *, device: torch.device,
) -> Path:
    """The first test image, clean and as the T- and S-AE at the largest eps, with the maps of
    T, S, A and the T/A vote: ``qualitative.npz`` for the report's grid."""
    subset, top = config.data.test_subset, max(config.attack.eps)
    if subset not in config.attack.subsets:
        subset = config.attack.subsets[0]
    image, label = CityscapesSegmentation(config.data.root, subset, size=tuple(config.data.size))[0]
    networks = _networks(config, run_dir, device)
    vote = build_defense("TA-vote", networks, delta=config.detect.delta,
                         delta_t=config.detect.delta_t, delta_s=config.detect.delta_s)
    grid: dict[str, np.ndarray] = {}
    rows = [("clean", image[None])] + [
        (f"{source}-AE eps {top:g}", next(ae_sets[(subset, source, top)].batches(1)))
        for source in config.attack.sources
    ]
    for row, images in rows:
        grid[f"{row}|image"] = images[0].numpy()
        grid[f"{row}|ground truth"] = label.numpy()
        for net in ("T", "S", "A"):
            grid[f"{row}|{net}"] = predict_labels(networks[net], images)[0].numpy()
        grid[f"{row}|T/A vote"] = vote.predict(images).labels[0].numpy()
    path = run_dir / QUALITATIVE_FILE
    np.savez_compressed(path, **grid)
    return path


@contextlib.contextmanager
def _stage(name: str, echo: Callable[[str], None]) -> Iterator[list[str]]:
    """Collects a stage's summary and prints it as one line with the stage's time."""
    start, summary = time.perf_counter(), []
    yield summary
    echo(f"[{name}] {'; '.join(summary)} ({time.perf_counter() - start:.1f} s)")


def run_benchmark(
    config: RunConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    extra_defenses: tuple[str, ...] = (),
    retrain: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Path:
    """The whole benchmark: data, T and S, the adaptive students, AE sets, evaluation, report.

    Every stage reuses what is cached and still valid, so a finished run re-run only
    regenerates the report. Prints one line per stage with its time. Returns ``report.md``.
    """
    with _stage("data", echo) as summary:
        summary.append(str(prepare_data(config, progress=progress)))
    run_dir = open_run(config, run_dir)
    with _stage("networks", echo) as summary:
        for name in STATIC_NETS:
            record, origin = train_static(
                config, run_dir, name, device=device, retrain=retrain, progress=progress
            )
            summary.append(_model_summary(config, record, origin))
        for _, settings in adaptive_variants(config).all():
            record, origin = finetune_adaptive_student(
                config, run_dir, settings, device=device, retrain=retrain, progress=progress
            )
            summary.append(_model_summary(config, record, origin))
    with _stage("attacks", echo) as summary:
        ae_sets = build_ae_sets(config, run_dir, device=device, progress=progress)
        summary.append(f"{len(ae_sets)} AE sets ({config.attack.name}) in {run_dir / STORE_FILE}")
    with _stage("evaluate", echo) as summary:
        specs = tuple(dict.fromkeys(config.evaluate.defenses + tuple(extra_defenses)))
        metrics = evaluate_run(
            config, run_dir, ae_sets, device=device, defenses=specs, progress=progress
        )
        if not (run_dir / QUALITATIVE_FILE).is_file():
            save_qualitative(config, run_dir, ae_sets, device=device)
        summary.append(f"{metrics['defense'].nunique()} defenses -> {run_dir / METRICS_FILE}")
    with _stage("report", echo) as summary:
        report = write_report(run_dir)
        summary.append(str(report))
    return report


def _model_summary(config: RunConfig, record: ModelRecord, origin: str) -> str:
    miou = record.info.get(f"miou_{config.data.val_subset}", math.nan)
    how = f"trained {record.info.get('train_seconds', 0):.0f} s" if origin == "trained" else origin
    return f"{record.name} {100 * miou:.1f}% ({how})"
