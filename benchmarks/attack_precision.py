"""What computing an attack's passes in bfloat16 costs in strength and buys in time: each attack
that judges its iterates, with ``precision`` float32 and bfloat16 side by side, white-box on each
defense's own attack surface, on the shipped reference networks of the ``toy`` preset and the
first images of mini test. Prints per defense, eps and attack the robust mIoU each precision
leaves (evaluated in float32, as ``bench run`` evaluates AE sets), the seconds of each and their
ratio; then the mean ratio and the largest mIoU the bfloat16 attack leaves above float32's.

    PYTHONPATH=. python benchmarks/attack_precision.py --images 16 --iterations 20 \
        --defenses T,S,jpeg,TA-vote,AT --attacks cospgd,apgd-js --eps 4,10

The two precisions of a row run one after the other in one process, so their ratio is measured
side by side; the order alternates between rows, so a load that changes during the run does not
favour one of them.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from attacks import build_attack
from attacks.objectives import class_weights
from benchmarks.attack_budget import (
    ATTACKS,
    _measure,
    _miou,
    _networks,
    first_test_images,
    surface_of,
    toy_setup,
)

PRECISIONS = ("float32", "bfloat16")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a toy city (default: the toy preset's)")
    parser.add_argument("--run", default=None, help="a toy run whose A to use (default: shipped)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--eps", default="4,10")
    parser.add_argument("--defenses", default="T,S,jpeg,TA-vote,AT")
    parser.add_argument("--attacks", default="cospgd,apgd-js")
    parser.add_argument("--red-eps", action="store_true", help="APGD with SEA's red_eps")
    parser.add_argument("--images", type=int, default=16, help="the first images of mini test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    config, data = toy_setup(args.threads, args.data)
    images, labels = first_test_images(config, data, args.images)
    n = len(images)
    weights = class_weights(data.class_pixel_counts())
    networks = _networks(config, args.run)
    print(
        f"Images: the first {n} of {config.data.test_subset} ({tuple(images.shape)}); "
        f"{torch.get_num_threads()} threads; {args.iterations} iterations"
        f"{' (APGD with red_eps)' if args.red_eps else ''}; white-box on each "
        "defense's own surface.\n\n"
        "| defense | eps | attack | mIoU float32 | mIoU bfloat16 | s float32 | s bfloat16 | "
        "speed-up |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    ratios, gaps, row = [], [], 0
    for spec in args.defenses.split(","):
        defense, model, members = surface_of(spec, networks, config)
        for eps in (float(e) for e in args.eps.split(",")):
            for name in args.attacks.split(","):
                registry_name, extra = ATTACKS[name]
                if extra.get("loss") == "balanced-masked-ce":
                    extra = {**extra, "class_weights": weights}
                if args.red_eps and registry_name == "apgd":
                    extra = {**extra, "red_eps": True}
                found = {}
                order = PRECISIONS if row % 2 == 0 else PRECISIONS[::-1]
                for precision in order:
                    attack = build_attack(
                        registry_name, n_iter=args.iterations, precision=precision, **extra
                    )
                    counts, seconds, _ = _measure(
                        attack, model, members, defense, images, labels, eps, args.batch_size
                    )
                    found[precision] = (_miou(counts), seconds)
                row += 1
                (m32, s32), (m16, s16) = found["float32"], found["bfloat16"]
                ratios.append(s32 / s16)
                gaps.append(m16 - m32)
                print(
                    f"| {defense.name} | {eps:g} | {name} | {m32:.1f} | {m16:.1f} | {s32:.1f} | "
                    f"{s16:.1f} | {s32 / s16:.2f} |",
                    flush=True,
                )
    print(
        f"\nspeed-up of bfloat16: mean {statistics.mean(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}); mIoU bfloat16 - float32: mean "
        f"{statistics.mean(gaps):+.2f}, largest {max(gaps):+.2f}, smallest {min(gaps):+.2f} "
        f"over {len(gaps)} rows"
    )


if __name__ == "__main__":
    main()
