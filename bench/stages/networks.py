"""The networks stage: T and S pretrained (or the shipped reference checkpoints), then every
adaptive student the config asks for and the adversarially trained AT when a defense reads it,
each reused while its cache key matches.

Keys (``bench.keys.cache_key``): a static network's key is its architecture, the pretraining
settings, its seed, the image size and the identity of the labelled split it learns from; an
adaptive student's key is its J_TS' settings, the sha256 of T and S, its seed and the identity of
the unlabelled split; AT's is its adversarial-training settings, the architecture and sha256 of
the network it starts from, its seed and the identity of the labelled split.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from bench import dist
from bench.config import (
    ROBUST_NET,
    STATIC_NETS,
    FinetuneConfig,
    NetConfig,
    RunConfig,
    adaptive_students,
)
from bench.errors import CheckpointError, ConfigError, ModelError, RunDirError
from bench.files import atomic_copy, sha256_file
from bench.keys import cache_key
from bench.models import (
    build_model,
    check_output,
    count_parameters,
    load_weights,
    read_state_dict,
    seed_backbone,
)
from bench.scoring import ForwardMemo, clean_confusion
from bench.stages.context import RunContext, RunNetworks
from bench.store.checkpoints import (
    CheckpointMeta,
    check_meta,
    load_meta,
    load_network,
    save_model,
)
from bench.store.rundir import METRICS_FILE
from bench.train import TrainStats, adversarial_train, pretrain
from defenses import networks_needed
from defenses.adaptive import finetune_adaptive

# Reference checkpoints of T and S shipped with the package (a folder per preset), made by
# ``bench train`` of this code (recipe and sha256 in each JSON); ``--retrain`` ignores them.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
ORIGINS = {
    "trained": "trained in {seconds:.0f} s",
    "cached": "reused (valid checkpoint in the run)",
    "reference": "the shipped reference checkpoint (--retrain trains anew)",
    "imported": "imported from its weights file",
}


def static_key(ctx: RunContext, name: str) -> str:
    """Imported: the architecture and the weights file's sha256. Pretrained: the architecture,
    the pretraining settings, the seed, the seeding backbone's sha256 and the labelled data."""
    config = ctx.config
    net = config.net(name)
    if net.weights:
        return cache_key("imported", name, net.arch, net.options, sha256_file(net.weights))
    train_split = ctx.data.split(config.data.train_split)
    backbone = sha256_file(net.backbone) if net.backbone else ""
    pretraining = dataclasses.asdict(config.pretrain)
    if not pretraining["sync_bn"]:
        del pretraining["sync_bn"]  # absent when off: checkpoints made before it existed stay valid
    return cache_key(
        "static",
        name,
        {"arch": net.arch, "options": net.options},
        pretraining,
        config.seed_for(name),
        train_split.fingerprint(),
        *([backbone] if backbone else []),
    )


def adaptive_key(ctx: RunContext, settings: FinetuneConfig) -> str:
    """An adaptive student's J_TS' settings, the sha256 of T and S, its seed and the identity of
    the unlabelled split."""
    sha = {n: load_meta(ctx.run.models, n).sha256 for n in STATIC_NETS}
    unlabeled = ctx.data.unlabeled()
    return cache_key("adaptive", settings, sha, ctx.config.seed_for("A"), unlabeled.fingerprint())


def robust_key(ctx: RunContext) -> str:
    """AT's adversarial-training settings, the architecture and sha256 of the network it starts
    from (``adversarial.base``), its seed and the identity of the labelled split."""
    config = ctx.config
    settings, net = config.adversarial, config.net(ROBUST_NET)
    return cache_key(
        "adversarial",
        dataclasses.asdict(settings),
        {"arch": net.arch, "options": net.options},
        load_meta(ctx.run.models, settings.base).sha256,
        config.seed_for(ROBUST_NET),
        ctx.data.split(config.data.train_split).fingerprint(),
    )


def _reusable(models_dir: Path, name: str, key: str, net: NetConfig) -> CheckpointMeta | None:
    """The metadata of checkpoint ``name`` when it exists, was made with ``key``, names the
    config's architecture and options (``net``) and its weights are the ones the metadata names
    (a damaged or disagreeing file is trained anew, not reported cached)."""
    try:
        meta = load_meta(models_dir, name)
        check_meta(models_dir, name, meta, net.arch, net.options)
    except CheckpointError:
        return None
    weights = models_dir / f"{name}.pt"
    found = (
        meta.info.get("key") == key and weights.is_file() and sha256_file(weights) == meta.sha256
    )
    return meta if found else None


def check_replacements(ctx: RunContext, names: tuple[str, ...]) -> None:
    """Refuse to overwrite T, S or AT of a finished run with networks of other settings: its
    published results were computed with them (train into another folder instead)."""
    run = ctx.run
    if not (run.path / METRICS_FILE).is_file():
        return
    for name in (n for n in names if n in (*STATIC_NETS, ROBUST_NET)):
        try:
            stored = load_meta(run.models, name).info.get("key")
            wanted = robust_key(ctx) if name == ROBUST_NET else static_key(ctx, name)
        except CheckpointError:
            continue
        if stored != wanted:
            raise RunDirError(
                f"{run.path} holds a finished run whose results use its {name}; training {name} "
                "with other settings would replace it: choose another --out DIR"
            )


def _install_reference(
    ctx: RunContext, name: str, key: str, net: NetConfig
) -> CheckpointMeta | None:
    """Copy a shipped reference checkpoint of ``name`` (built as ``net``) into the run when one
    was trained with exactly this recipe (same key, whatever the preset's name); None otherwise."""
    for reference in sorted(p.parent for p in REFERENCE_DIR.glob(f"*/{name}.json")):
        if _reusable(reference, name, key, net) is not None:
            models = ctx.run.models
            for suffix in (".pt", ".json"):
                atomic_copy(reference / f"{name}{suffix}", models / f"{name}{suffix}")
            return _reusable(models, name, key, net)
    return None


def _clean_miou(val: Dataset, model: nn.Module, batch_size: int, progress: bool) -> float:
    return clean_confusion(model, val, batch_size=batch_size, progress=progress).miou()


def train_static(
    ctx: RunContext, name: str, *, retrain: bool = False
) -> tuple[CheckpointMeta, str]:
    """Pretrain T (the teacher architecture) or S (the student) unless a valid checkpoint exists.

    Returns the checkpoint's metadata and where it came from: "trained" now, "cached" (a valid
    checkpoint in the run) or "reference" (a shipped checkpoint of the same recipe).
    """
    config, models = ctx.config, ctx.run.models
    key = static_key(ctx, name)
    origin = None
    if not retrain and dist.is_main():  # rank 0 decides, every rank follows
        if _reusable(models, name, key, config.net(name)):
            origin = "cached"
        elif _install_reference(ctx, name, key, config.net(name)):
            origin = "reference"
    if origin := dist.broadcast(origin):
        return load_meta(models, name), origin
    net, seed = config.net(name), config.seed_for(name)
    torch.manual_seed(seed)
    model = build_model(net.arch, **net.options)
    if net.weights:
        return import_network(ctx, name, model, key)
    if net.backbone:
        seed_backbone(model, net.backbone)
    train_set = ctx.data.split(config.data.train_split)
    stats = pretrain(
        model,
        train_set,
        config.pretrain,
        device=ctx.device,
        seed=seed,
        progress=ctx.progress,
        desc=f"pretrain {name}",
    )
    return _save_static(
        ctx,
        name,
        model,
        key,
        origin="trained",
        recipe=dataclasses.asdict(config.pretrain),
        **_training_meta(stats, len(train_set), seed),
    )


def _training_meta(stats: TrainStats, train_images: int, seed: int) -> dict[str, Any]:
    """What a checkpoint trained on the labelled split records of its training."""
    return {
        "train_seconds": round(stats.seconds, 1),
        "iterations": stats.iterations,
        "final_loss": stats.final_loss,
        "train_images": train_images,
        "seed": seed,
        "processes": dist.size(),
    }


def _save_static(
    ctx: RunContext, name: str, model: nn.Module, key: str, *, origin: str, **meta: Any
) -> tuple[CheckpointMeta, str]:
    """Save T or S with its clean mIoU and ``meta``: rank 0 writes the checkpoint (atomically)
    while the others wait; then all read it."""
    config, models = ctx.config, ctx.run.models
    if dist.is_main():
        net = config.net(name)
        val = ctx.data.split(config.data.val_subset)
        miou = _clean_miou(val, model, config.pretrain.batch_size, ctx.progress)
        save_model(
            model,
            models,
            name,
            net.arch,
            net.options,
            key=key,
            parameters=count_parameters(model),
            device=str(ctx.device),
            **meta,
            **{f"miou_{config.data.val_subset}": miou},
        )
    dist.barrier()
    return load_meta(models, name), origin


def import_network(
    ctx: RunContext, name: str, model: nn.Module, key: str
) -> tuple[CheckpointMeta, str]:
    """T or S from the user's weights file (``teacher.weights`` / ``student.weights``): key
    mappings applied, output checked, saved into the run with the file's sha256."""
    net = ctx.config.net(name)
    role = "teacher" if name == "T" else "student"
    source = f"{role}.weights {net.weights}"
    state = read_state_dict(net.weights)
    try:
        load_weights(model, state, source)
    except ModelError as err:
        raise ModelError(f"{err}; {_options_hint(role, net, state)}") from err
    model.to(ctx.device)
    check_output(model, tuple(ctx.config.data.size), source)
    return _save_static(
        ctx,
        name,
        model,
        key,
        origin="imported",
        imported_from=Path(net.weights).name,
        source_sha256=sha256_file(net.weights),
    )


def _options_hint(role: str, net: NetConfig, state: dict[str, Any]) -> str:
    """What to set when a weights file does not fit the network the preset builds: the
    architecture's default options when the file fits those, else the key to set."""
    if net.options:
        try:
            load_weights(build_model(net.arch), state, "")
            return (
                f"the file fits {net.arch} with its default options, not the preset's "
                f"{net.options}: set them with --set '{role}.options={{}}'"
            )
        except (ModelError, ConfigError):
            pass
    return (
        f"set {role}.options (now {net.options}) to the options the file was made with, e.g. "
        f"--set '{role}.options={{width = 2}}', or {role}.arch to its architecture"
    )


def finetune_students(
    ctx: RunContext, students: Sequence[FinetuneConfig], *, retrain: bool = False
) -> list[tuple[CheckpointMeta, str]]:
    """Finetune adaptive students A from S with J_TS' (eq. 8), each unless a valid checkpoint
    exists; a checkpoint is named by its settings (``A_down2_a0.6_e10``).

    Launched by torchrun on W processes, whole rounds of W students are spread one per rank,
    each trained by its rank alone (exactly as in one process); the rest are trained one after
    the other by all ranks together with DistributedDataParallel. Measured on 2 CPU processes
    (benchmarks/dist_speedup.py): two students spread took 32 s, with DDP 39 s.

    Returns (metadata, "trained", "cached" or "reference") per student, in order.
    """
    models, net = ctx.run.models, ctx.config.student
    keys = [adaptive_key(ctx, settings) for settings in students]
    origins = None
    if dist.is_main():  # rank 0 decides, every rank follows
        origins = [
            _found_checkpoint(ctx, settings.checkpoint_name, key, net, retrain)
            for settings, key in zip(students, keys)
        ]
    origins = dist.broadcast(origins)
    todo = [i for i, origin in enumerate(origins) if origin is None]
    spread = len(todo) - len(todo) % dist.size()
    for turn, i in enumerate(todo):
        alone = turn < spread
        if not alone or turn % dist.size() == dist.rank():
            _finetune(ctx, students[i], keys[i], alone=alone)
    dist.barrier()  # every checkpoint written before any rank reads one
    return [
        (load_meta(models, settings.checkpoint_name), origin or "trained")
        for settings, origin in zip(students, origins)
    ]


def _found_checkpoint(
    ctx: RunContext, name: str, key: str, net: NetConfig, retrain: bool
) -> str | None:
    """ "cached" (a valid checkpoint in the run), "reference" (a shipped one of the same key,
    installed now) or None (to be finetuned)."""
    if retrain:
        return None
    if _reusable(ctx.run.models, name, key, net):
        return "cached"
    return "reference" if _install_reference(ctx, name, key, net) else None


def _finetune(ctx: RunContext, settings: FinetuneConfig, key: str, *, alone: bool) -> None:
    """Finetune one student and save it: by this rank ``alone``, or by all ranks with DDP
    (then rank 0 writes the checkpoint)."""
    config, models = ctx.config, ctx.run.models
    teacher = load_network(models, "T", config.net("T"), ctx.device)
    student = load_network(models, "S", config.net("S"), ctx.device)
    unlabeled = ctx.data.unlabeled()
    seed = config.seed_for("A")
    start = time.perf_counter()
    adaptive = finetune_adaptive(
        teacher,
        student,
        unlabeled,
        settings,
        device=ctx.device,
        seed=seed,
        progress=ctx.progress,
        distributed=not alone,
    )
    seconds = time.perf_counter() - start
    if alone or dist.is_main():
        save_model(
            adaptive,
            models,
            settings.checkpoint_name,
            config.student.arch,
            config.student.options,
            key=key,
            finetune=dataclasses.asdict(settings),
            seed=seed,
            device=str(ctx.device),
            train_seconds=round(seconds, 1),
            unlabeled_images=len(unlabeled),
            parameters=count_parameters(adaptive),
            processes=1 if alone else dist.size(),
            **{
                f"miou_{config.data.val_subset}": _clean_miou(
                    ctx.data.split(config.data.val_subset),
                    adaptive,
                    settings.batch_size,
                    ctx.progress,
                )
            },
        )


def train_robust(ctx: RunContext, *, retrain: bool = False) -> tuple[CheckpointMeta, str]:
    """AT: the network ``adversarial.base`` (S or T, already in the run) trained further on PGD
    examples (``bench.train.adversarial_train``), unless a valid checkpoint exists or a shipped
    one has the same key. Returns its metadata and origin ("trained", "cached", "reference")."""
    config, models = ctx.config, ctx.run.models
    settings, net = config.adversarial, config.net(ROBUST_NET)
    key = robust_key(ctx)
    origin = None
    if dist.is_main():  # rank 0 decides, every rank follows
        origin = _found_checkpoint(ctx, ROBUST_NET, key, net, retrain)
    if origin := dist.broadcast(origin):
        return load_meta(models, ROBUST_NET), origin
    model = load_network(models, settings.base, net, ctx.device)
    train_set = ctx.data.split(config.data.train_split)
    seed = config.seed_for(ROBUST_NET)
    stats = adversarial_train(
        model,
        train_set,
        settings,
        device=ctx.device,
        seed=seed,
        progress=ctx.progress,
        desc=f"adversarial training {ROBUST_NET}",
    )
    return _save_static(
        ctx,
        ROBUST_NET,
        model,
        key,
        origin="trained",
        adversarial=dataclasses.asdict(settings),
        base_sha256=load_meta(models, settings.base).sha256,
        **_training_meta(stats, len(train_set), seed),
    )


def robust_needed(config: RunConfig) -> bool:
    """Whether a defense of the run reads AT: only then is it trained."""
    return any(ROBUST_NET in networks_needed(d.spec) for d in config.evaluate.defenses)


def adaptive_needed(config: RunConfig) -> bool:
    """Whether a defense of the run reads A (``defenses.networks_needed``): only then are A and
    the sweeps' students (ablations of A) finetuned."""
    return any("A" in networks_needed(d.spec) for d in config.evaluate.defenses)


def needed_students(config: RunConfig) -> list[tuple[str, FinetuneConfig]]:
    """(row name, settings) of every adaptive student the run uses, the main A first: all of
    ``adaptive_students`` when a defense reads A, none otherwise."""
    return adaptive_students(config).all() if adaptive_needed(config) else []


def run_roles(config: RunConfig) -> tuple[str, ...]:
    """The roles of the run's networks: T and S, A when a defense reads it, AT likewise."""
    return (
        *STATIC_NETS,
        *(("A",) if adaptive_needed(config) else ()),
        *((ROBUST_NET,) if robust_needed(config) else ()),
    )


#: the networks ``bench train`` can name, in the order it trains them
TRAINABLE = (*STATIC_NETS, "A", ROBUST_NET)


def check_network_names(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in TRAINABLE]
    if unknown or not names:
        raise ConfigError(
            f"unknown network {(unknown or [''])[0]!r}; choose from {', '.join(TRAINABLE)}"
        )


def train_networks(
    ctx: RunContext, names: tuple[str, ...] = ("T", "S", "A"), *, retrain: bool = False
) -> list[tuple[CheckpointMeta, str]]:
    """The networks named, in the order T, S, A, AT; "A" is the config's main adaptive student
    (``finetune``) and needs T and S in the run, AT the network ``adversarial.base`` names.
    ``bench run`` adds the sweeps' students.

    Returns (metadata, origin) per network.
    """
    check_network_names(names)
    done = []
    for name in STATIC_NETS:
        if name in names:
            done.append(train_static(ctx, name, retrain=retrain))
    if "A" in names:
        done += finetune_students(ctx, [ctx.config.finetune], retrain=retrain)
    if ROBUST_NET in names:
        base = ctx.config.adversarial.base
        try:
            load_meta(ctx.run.models, base)
        except CheckpointError as err:
            raise CheckpointError(
                f"{ROBUST_NET} starts from {base} (adversarial.base), which the run lacks: "
                f"train it first (bench train --net {base},{ROBUST_NET})"
            ) from err
        done.append(train_robust(ctx, retrain=retrain))
    return done


def load_networks(ctx: RunContext, roles: Sequence[str] = ("T", "S", "A")) -> RunNetworks:
    """The run's networks by role (T, S, the config's main adaptive student as A, the
    adversarially trained AT), each wrapped so defenses share forward passes."""
    config = ctx.config
    checkpoints = {"T": "T", "S": "S", "A": config.finetune.checkpoint_name, ROBUST_NET: ROBUST_NET}
    nets = {role: config.net(role) for role in (*STATIC_NETS, ROBUST_NET)} | {"A": config.student}
    names = {role: checkpoints[role] for role in roles}
    return RunNetworks(
        memos={
            role: ForwardMemo(load_network(ctx.run.models, name, nets[role], ctx.device))
            for role, name in names.items()
        },
        sha256={role: load_meta(ctx.run.models, name).sha256 for role, name in names.items()},
        checkpoints=names,
    )


def report_line(ctx: RunContext, meta: CheckpointMeta, origin: str) -> str:
    """The line ``bench train`` prints for a network."""
    info = meta.info
    miou = info.get(f"miou_{ctx.config.data.val_subset}", math.nan)
    how = ORIGINS[origin].format(seconds=info.get("train_seconds", 0))
    return (
        f"{meta.name}: {meta.arch}, {info.get('parameters', 0) / 1e6:.2f} M parameters, {how}; "
        f"clean mIoU on {ctx.config.data.val_subset}: {100 * miou:.1f}%  -> "
        f"{ctx.run.models / meta.name}.pt"
    )


def describe(meta: CheckpointMeta, origin: str, val_subset: str) -> str:
    """A few words about a network for the stage line: its clean mIoU on ``val_subset`` and
    where it came from."""
    miou = meta.info.get(f"miou_{val_subset}", math.nan)
    how = f"trained {meta.info.get('train_seconds', 0):.0f} s" if origin == "trained" else origin
    return f"{meta.name} {100 * miou:.1f}% ({how})"
