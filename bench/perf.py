"""``bench perf attack``: what LLCM costs, measured side by side in one run (not a timed test).

For each network and eps, on the same batch of images, three things are timed, interleaved and
repeated (medians reported):

- reference: 1 forward (the least-likely target) + n_iter x (forward + backward w.r.t. the input),
  the floor of any implementation of iterative LLCM;
- native: ``attacks.LLCM``;
- ART: ``BasicIterativeMethod`` through ``attacks.art.SegmentationEstimator`` (the same AEs).

Ratio (a) = native / reference (goal <= 1.03: the attack adds nothing to the network passes);
ratio (b) = ART / native (goal >= 1.4). The batch-1 vs batch-N line counts the values that
differ between attacking the images one by one and as one batch.

Then every attack that judges its iterates, per iteration against its floor, on T, on S and on
the joint objective of T and S (``Ensemble``; its floor is the sum of the members' floors):
APGD-CE (floor: N + 1 input gradients), SegPGD and CosPGD (floor: N input gradients and one
forward pass): ratio (c) = attack / floor (goal <= 1.05). What an attack adds to its floor is
the judging of every iterate (each decision's map, the marks) and its own arithmetic.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from attacks import APGD, LLCM, CosPGD, SegPGD, build_attack
from attacks.base import eval_mode, input_gradient, least_likely
from attacks.objectives import Ensemble
from bench.config import RunConfig
from bench.devices import module_device
from bench.errors import ConfigError, DataError
from bench.models import build_model
from bench.store.checkpoints import load_network


@dataclass(frozen=True)
class AttackTiming:
    """Median seconds of one batch, per method."""

    net: str
    eps: float
    n_iter: int
    images: int
    reference_s: float
    native_s: float
    art_s: float
    batch1_diff: float  # fraction of values that differ, images attacked one by one vs batched

    @property
    def ratio_a(self) -> float:
        return self.native_s / self.reference_s

    @property
    def ratio_b(self) -> float:
        return self.art_s / self.native_s


def toy_networks(
    config: RunConfig, device: torch.device, run_dir: Path | None = None
) -> dict[str, nn.Module]:
    """T and S of a run when ``run_dir`` is given (built as ``config`` asks, the run's own
    config), else the config's architectures, seeded."""
    if run_dir is not None:
        models = Path(run_dir) / "models"
        return {name: load_network(models, name, config.net(name), device) for name in ("T", "S")}
    nets = {}
    for name, net in (("T", config.teacher), ("S", config.student)):
        torch.manual_seed(config.seed)
        nets[name] = build_model(net.arch, **net.options).to(device).eval()
    return nets


def perf_images(config: RunConfig, batch_size: int) -> Tensor:
    """The first images of the config's validation subset when its data exist, else seeded noise
    of the config's size (timings do not depend on the content).

    Shapes:
        returns: (batch_size, 3, H, W) uint8.
    """
    from bench.data.cityscapes import CityscapesSegmentation

    size = tuple(config.data.size)
    try:
        dataset = CityscapesSegmentation(
            config.data.root, config.data.val_subset, size=size, with_labels=False
        )
        return torch.stack([dataset[i % len(dataset)][0] for i in range(batch_size)])
    except DataError:
        generator = torch.Generator().manual_seed(config.seed)
        return torch.randint(0, 256, (batch_size, 3, *size), generator=generator, dtype=torch.uint8)


def perf_labels(config: RunConfig, batch_size: int) -> Tensor:
    """The labels of ``perf_images``' images, or seeded random trainIds without data.

    Shapes:
        returns: (batch_size, H, W) int64.
    """
    from bench.data.cityscapes import CityscapesSegmentation

    size = tuple(config.data.size)
    try:
        dataset = CityscapesSegmentation(config.data.root, config.data.val_subset, size=size)
        return torch.stack([dataset[i % len(dataset)][1] for i in range(batch_size)])
    except DataError:
        generator = torch.Generator().manual_seed(config.seed)
        return torch.randint(0, 19, (batch_size, *size), generator=generator)


def _reference(model: nn.Module, x: Tensor, n_iter: int) -> None:
    with eval_mode(model):
        target = least_likely(model, x)
        for _ in range(n_iter):
            input_gradient(model, x, target)


def _seconds(func: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    func()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def perf_attack(
    networks: dict[str, nn.Module],
    images: Tensor,
    *,
    eps: tuple[float, ...] = (1.0, 10.0),
    repeats: int = 3,
    echo: Callable[[str], object] | None = None,
) -> list[AttackTiming]:
    """Time reference, native LLCM and ART BIM on ``images`` for every network and eps.

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255 (one batch).
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    llcm, bim = LLCM(), build_attack("bim")
    rows = []
    for name, model in networks.items():
        device = module_device(model)
        x = images.to(device)
        llcm(model, x, eps=1)  # warm-up: allocator, kernels, ART's first call
        bim(model, x, eps=1)
        for e in eps:
            n_iter = llcm.n_iter(e)
            runs: dict[str, list[float]] = {"reference": [], "native": [], "art": []}
            for _ in range(repeats):  # interleaved, so drifts in machine load hit all three alike
                calls = {
                    "reference": partial(_reference, model, x.float(), n_iter),
                    "native": partial(llcm, model, x, eps=e),
                    "art": partial(bim, model, x, eps=e),
                }
                for method, call in calls.items():
                    runs[method].append(_seconds(call, device))
            batched = llcm(model, x, eps=e)
            single = torch.cat([llcm(model, x[i : i + 1], eps=e) for i in range(len(x))])
            row = AttackTiming(
                name,
                e,
                n_iter,
                len(x),
                *(statistics.median(runs[k]) for k in ("reference", "native", "art")),
                batch1_diff=(batched != single).float().mean().item(),
            )
            rows.append(row)
            if echo is not None:
                echo(format_timing(row))
    return rows


@dataclass(frozen=True)
class IterationTiming:
    """Median seconds of an iterative attack on one batch and of its floor."""

    attack: str
    target: str
    n_iter: int
    images: int
    floor_s: float
    attack_s: float

    @property
    def ratio_c(self) -> float:
        return self.attack_s / self.floor_s


def _judged_attacks(n_iter: int) -> dict[str, tuple[object, int, int]]:
    """The attacks timed per iteration: name -> (the attack of ``n_iter`` iterations, its floor
    in input gradients and forward passes)."""
    return {
        "apgd-ce": (APGD(loss="ce", n_iter=n_iter), n_iter + 1, 0),
        "segpgd": (SegPGD(n_iter=n_iter), n_iter, 1),
        "cospgd": (CosPGD(n_iter=n_iter), n_iter, 1),
    }


def _floor(
    models: list[nn.Module], x: Tensor, labels: Tensor, gradients: int, forwards: int
) -> None:
    """``gradients`` input gradients of the cross-entropy and ``forwards`` forward passes per
    member: the network passes an attack cannot avoid."""
    for model in models:
        with eval_mode(model):
            for _ in range(gradients):
                input_gradient(model, x, labels)
            with torch.no_grad():
                for _ in range(forwards):
                    model(x)


def perf_iterative(
    networks: dict[str, nn.Module],
    images: Tensor,
    labels: Tensor,
    *,
    eps: float = 10.0,
    n_iter: int = 10,
    repeats: int = 3,
    echo: Callable[[str], object] | None = None,
) -> list[IterationTiming]:
    """Time APGD-CE, SegPGD and CosPGD and their floors on T, S and the joint objective of T
    and S, interleaved (medians).

    Shapes:
        images: (N, 3, H, W) uint8; labels: (N, H, W) int64 trainIds.
    """
    targets = {name: (net, [net]) for name, net in networks.items()}
    targets["joint T+S"] = (Ensemble(networks), list(networks.values()))
    rows = []
    for attack_name, (attack, gradients, forwards) in _judged_attacks(n_iter).items():
        for name, (model, members) in targets.items():
            device = module_device(members[0])
            x, y = images.to(device), labels.to(device)
            attack(model, x, eps=eps, labels=y)  # warm-up
            runs: dict[str, list[float]] = {"floor": [], "attack": []}
            for _ in range(repeats):  # interleaved, as above
                floor = partial(_floor, members, x.float(), y, gradients, forwards)
                runs["floor"].append(_seconds(floor, device))
                runs["attack"].append(
                    _seconds(partial(attack, model, x, eps=eps, labels=y), device)
                )
            row = IterationTiming(
                attack_name,
                name,
                n_iter,
                len(x),
                *(statistics.median(runs[k]) for k in ("floor", "attack")),
            )
            rows.append(row)
            if echo is not None:
                echo(format_iteration(row, eps))
    return rows


def format_iteration(row: IterationTiming, eps: float) -> str:
    return (
        f"{row.attack} on {row.target} ({row.n_iter} iterations, {row.images} images, eps "
        f"{eps:g}): {1000 * row.attack_s / row.n_iter:.1f} ms per iteration, floor "
        f"{1000 * row.floor_s / row.n_iter:.1f} ms | (c) attack/floor = {row.ratio_c:.3f} "
        "(goal <= 1.05)"
    )


def run_perf_attack(
    config: RunConfig,
    *,
    device: torch.device,
    run_dir: Path | None = None,
    eps: tuple[float, ...] = (1.0, 10.0),
    batch_size: int | None = None,
    repeats: int = 3,
    threads: int | None = None,
    echo: Callable[[str], object] = print,
) -> list[AttackTiming]:
    """``bench perf attack``: the config's T and S (or a run's), one batch of its images."""
    if threads:
        torch.set_num_threads(threads)
    images = perf_images(config, batch_size or config.attack.batch_size)
    echo(
        f"{config.name}: images {tuple(images.shape)}, device {device}, "
        f"{torch.get_num_threads()} threads, {repeats} interleaved repeats, medians"
    )
    networks = toy_networks(config, device, run_dir)
    rows = perf_attack(networks, images, eps=eps, repeats=repeats, echo=echo)
    labels = perf_labels(config, len(images))
    perf_iterative(networks, images, labels, eps=max(eps), repeats=repeats, echo=echo)
    return rows


def format_timing(row: AttackTiming) -> str:
    return (
        f"{row.net} eps={row.eps:g} ({row.n_iter} iterations, {row.images} images): "
        f"reference {row.reference_s:.3f} s, native LLCM {row.native_s:.3f} s, "
        f"ART BIM {row.art_s:.3f} s | (a) native/reference = {row.ratio_a:.3f} (goal <= 1.03), "
        f"(b) ART/native = {row.ratio_b:.2f} (goal >= 1.4) | batch 1 vs {row.images}: "
        f"{100 * row.batch1_diff:.4f}% of values differ"
    )
