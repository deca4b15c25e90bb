"""Attack budgets chosen by measurement: every attack that judges its iterates (APGD with each
of its losses, SegPGD, CosPGD) at several iteration counts and eps, white-box on each defense's
own attack surface, on the shipped reference networks T and S of the ``toy`` preset and the
first images of mini test. Prints, per defense and eps, the robust mIoU each attack leaves
against its cost (seconds and network passes per image), the worst case over all attacks at
each budget (SEA's greedy per-image assignment, what the benchmark's ensemble reports), and the
cheapest attack within 1 point of the strongest measured.

    PYTHONPATH=. python benchmarks/attack_budget.py --data data/toycity --images 16 --iterations 5,10,20 \
        --defenses T,S,jpeg,spatial-smoothing,feature-squeezing --out benchmarks/attack_budget.md

The defenses that need the adaptive student A (the votes) take it from the shipped reference
checkpoints, or from a finished run of the toy preset: ``--run runs/toy``; AT (and TAT-vote)
from the shipped reference checkpoints. Seconds are wall-clock on this machine (compare them side by
side in one run only); network passes are counted (forward calls x images; every pass of an
iteration also runs backward, the judging of the last iterate does not).
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from attacks import build_attack
from attacks.objectives import Ensemble, class_weights
from bench.config import RunConfig, resolve_config
from bench.metrics import image_counts, worst_case_miou
from bench.stages.context import Datasets
from bench.stages.networks import REFERENCE_DIR
from bench.store.checkpoints import load_network
from defenses import attack_surface, build_defense, load_defense

#: label -> (registry name, options besides n_iter)
ATTACKS = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-masked-ce": ("apgd", {"loss": "masked-ce"}),
    "apgd-js": ("apgd", {"loss": "js"}),
    "apgd-balanced-masked-ce": ("apgd", {"loss": "balanced-masked-ce"}),
    "segpgd": ("segpgd", {}),
    "cospgd": ("cospgd", {}),
}
#: within this many mIoU points of the strongest measured counts as as strong
WITHIN_POINTS = 1.0


class PassCounter:
    """Counts the images every network of a surface sees (forward hooks)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        self.images = 0
        self._hooks = [net.register_forward_hook(self._count) for net in networks]

    def _count(self, _module: nn.Module, inputs: tuple, _output: object) -> None:
        self.images += len(inputs[0])

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", help="a toy city (default: the toy preset's, which bench run makes)"
    )
    parser.add_argument(
        "--run", default=None, help="a toy run whose A to use (default: the shipped A)"
    )
    parser.add_argument("--iterations", default="5,10,20,50,100")
    parser.add_argument("--eps", default="4,10")
    parser.add_argument("--defenses", default="T,S,jpeg,spatial-smoothing,feature-squeezing")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--images", type=int, default=60, help="the first images of mini test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    parser.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        metavar="FILE",
        help="measure nothing: the proposal from the tables of earlier runs' --out files",
    )
    return parser.parse_args()


def _read_rows(paths: Sequence[str]) -> list[tuple]:
    """The measured rows of earlier ``--out`` files."""
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 7 and cells[3].isdigit():
                defense, eps, attack, n_iter, miou, seconds, passes = cells
                rows.append(
                    (
                        defense,
                        float(eps),
                        attack,
                        int(n_iter),
                        float(miou),
                        float(seconds),
                        float(passes),
                    )
                )
    return rows


def _networks(config, run: str | None) -> dict[str, nn.Module]:
    nets = {n: load_network(REFERENCE_DIR / "toy", n, config.net(n)) for n in ("T", "S", "AT")}
    models = REFERENCE_DIR / "toy" if run is None else Path(run) / "models"
    nets["A"] = load_network(models, config.finetune.checkpoint_name, config.student)
    return nets


def _surface_model(defense, eot_samples: int) -> tuple[Ensemble, list[nn.Module]]:
    surface = attack_surface(defense)
    if surface is None:
        raise SystemExit(f"defense {defense.name} has no attack surface: nothing to measure")
    model = Ensemble(
        surface.networks,
        transform=surface.transform,
        decide=surface.decide,
        samples=eot_samples if surface.random else 1,
    )
    return model, list(surface.networks.values())


def _measure(attack, model, members, defense, images, labels, eps, batch_size):
    """The attack on every batch: per-image counts of the defense's output, seconds, passes."""
    counter = PassCounter(members)
    counts, start = [], time.perf_counter()
    adversarial = []
    for first in range(0, len(images), batch_size):
        batch = slice(first, first + batch_size)
        index = torch.arange(first, min(first + batch_size, len(images)))
        adversarial.append(attack(model, images[batch], eps=eps, labels=labels[batch], index=index))
    seconds = time.perf_counter() - start
    counter.close()
    for adv, batch_start in zip(adversarial, range(0, len(images), batch_size)):
        with torch.no_grad():
            predicted = defense.predict(adv).labels
        counts.append(image_counts(predicted, labels[batch_start : batch_start + len(adv)]))
    return torch.cat(counts), seconds, counter.images / len(images)


def _miou(counts: torch.Tensor) -> float:
    c = counts.shape[1] // 2 - 1
    miou, _ = worst_case_miou(counts[None, :, :c], counts[None, :, c : 2 * c])
    return 100 * miou


def toy_setup(threads: int | None, data_root: str | None) -> tuple[RunConfig, Datasets]:
    """The toy preset's config and data, with ``threads`` torch threads when given."""
    if threads:
        torch.set_num_threads(threads)
    config = resolve_config("toy", data_root=data_root)
    return config, Datasets(config.data)


def first_test_images(config: RunConfig, data: Datasets, count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` images of the test subset and their labels."""
    split = data.split(config.data.test_subset)
    n = min(count, len(split))
    return torch.stack([split[i][0] for i in range(n)]), torch.stack(
        [split[i][1] for i in range(n)]
    )


def surface_of(
    spec: str, networks: dict[str, nn.Module], config: RunConfig
) -> tuple[object, Ensemble, list[nn.Module]]:
    """The defense ``spec`` on ``networks`` with the config's detection thresholds, its attack
    surface as a model and the networks whose passes count."""
    detect = config.detect
    offered = {"delta": detect.delta, "delta_t": detect.delta_t, "delta_s": detect.delta_s}
    accepted = inspect.signature(load_defense(spec)).parameters
    options = {k: v for k, v in offered.items() if v is not None and k in accepted}
    defense = build_defense(spec, networks, **options)
    return (defense, *_surface_model(defense, config.attack.eot_samples))


def main() -> None:
    args = _arguments()
    if args.summarize:
        print("\n".join(_proposal(_read_rows(args.summarize))))
        return
    config, data = toy_setup(args.threads, args.data)
    images, labels = first_test_images(config, data, args.images)
    n = len(images)
    weights = class_weights(data.class_pixel_counts())
    networks = _networks(config, args.run)
    iterations = [int(i) for i in args.iterations.split(",")]
    eps_list = [float(e) for e in args.eps.split(",")]
    names = args.attacks.split(",")
    lines = [
        f"Images: the first {n} of {config.data.test_subset} ({tuple(images.shape)}); "
        f"{torch.get_num_threads()} threads; white-box on each defense's own surface.",
        "",
        "| defense | eps | attack | iterations | robust mIoU | seconds | passes per image |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results = []  # (defense, eps, attack, iterations, miou, seconds, passes)
    for spec in args.defenses.split(","):
        defense, model, members = surface_of(spec, networks, config)
        for eps in eps_list:
            for n_iter in iterations:
                per_attack = []
                for name in names:
                    registry_name, extra = ATTACKS[name]
                    if extra.get("loss") == "balanced-masked-ce":
                        extra = {**extra, "class_weights": weights}
                    attack = build_attack(registry_name, n_iter=n_iter, **extra)
                    counts, seconds, passes = _measure(
                        attack, model, members, defense, images, labels, eps, args.batch_size
                    )
                    per_attack.append(counts)
                    row = (defense.name, eps, name, n_iter, _miou(counts), seconds, passes)
                    results.append(row)
                    line = _row(row)
                    lines.append(line)
                    print(line, flush=True)
                c = per_attack[0].shape[1] // 2 - 1
                stacked = torch.stack(per_attack)
                worst, _ = worst_case_miou(stacked[..., :c], stacked[..., c : 2 * c])
                cost = [r for r in results if r[:2] == (defense.name, eps) and r[3] == n_iter]
                row = (
                    defense.name,
                    eps,
                    f"ensemble of {len(names)}",
                    n_iter,
                    100 * worst,
                    sum(r[5] for r in cost[-len(names) :]),
                    sum(r[6] for r in cost[-len(names) :]),
                )
                results.append(row)
                line = _row(row)
                lines.append(line)
                print(line, flush=True)
    lines += ["", *_proposal(results)]
    print("\n".join(_proposal(results)))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def _row(row: tuple) -> str:
    defense, eps, attack, n_iter, miou, seconds, passes = row
    return (
        f"| {defense} | {eps:g} | {attack} | {n_iter} | {miou:.1f} | {seconds:.1f} | {passes:.0f} |"
    )


def _proposal(results: list[tuple]) -> list[str]:
    """Per defense and eps, the strongest measured and the cheapest (in passes; then the lowest
    mIoU) within ``WITHIN_POINTS`` of it; then the single (attack, iterations) within it
    everywhere."""
    lines = [
        f"Cheapest within {WITHIN_POINTS:g} point of the strongest measured (by network passes):",
        "",
    ]
    keys = list(dict.fromkeys(r[:2] for r in results))
    everywhere = None
    for key in keys:
        rows = [r for r in results if r[:2] == key]
        strongest = min(r[4] for r in rows)
        good = [r for r in rows if r[4] <= strongest + WITHIN_POINTS]
        cheapest = min(good, key=lambda r: (r[6], r[4]))  # equal passes: the stronger
        lines.append(
            f"- {key[0]} eps {key[1]:g}: strongest {strongest:.1f}; cheapest within: "
            f"{cheapest[2]} x {cheapest[3]} ({cheapest[4]:.1f}, {cheapest[6]:.0f} passes)"
        )
        found = {(r[2], r[3]) for r in good}
        everywhere = found if everywhere is None else everywhere & found
    costs = {(r[2], r[3]): 0.0 for r in results}
    for r in results:
        costs[(r[2], r[3])] += r[6]
    if everywhere:
        best = min(everywhere, key=lambda k: costs[k])
        lines.append(
            f"\nWithin {WITHIN_POINTS:g} point for every defense and eps: "
            + ", ".join(f"{a} x {i}" for a, i in sorted(everywhere, key=lambda k: costs[k]))
            + f"; the cheapest: {best[0]} x {best[1]}."
        )
    else:
        lines.append(f"\nNo single attack and budget is within {WITHIN_POINTS:g} point everywhere.")
    return lines


if __name__ == "__main__":
    main()
