"""The adversarial-training recipe of AT chosen by measurement: for each setting of the grid,
train AT from the shipped reference S (or T, with ``base=T``) of the ``toy`` preset (``bench.train.adversarial_train``)
and print what it cost and what it buys: clean mIoU on the whole validation subset, and the
worst case of CosPGD and APGD-JS (the two strongest attacks of benchmarks/attack_budget.md) at
each eps on its first images, white-box on the network itself. S itself is the first row.

    PYTHONPATH=. python benchmarks/adversarial_training.py \
        --grid "steps=3,epochs=5;steps=1,epochs=5;steps=3,epochs=5,clean_weight=0.5" \
        --eps 4,10 --images 30 --attack-iterations 20 --out /tmp/at.md

A grid entry overrides the ``adversarial`` section of the toy preset (``bench.config``); the
recipe is chosen on the validation subset, never on the test subset the leaderboard ranks on.
Seconds are wall-clock on this machine: compare them side by side in one run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from attacks import build_attack
from bench.config import ROBUST_NET
from bench.config.validation import validate_adversarial
from bench.metrics import image_counts, worst_case_miou
from bench.scoring import clean_confusion
from bench.stages.networks import REFERENCE_DIR
from bench.store.checkpoints import load_network
from bench.train import adversarial_train
from benchmarks.attack_budget import toy_setup
from defenses import predict_labels

#: the attacks of the robust columns: label -> (registry name, options besides n_iter)
ATTACKS = {"cospgd": ("cospgd", {}), "apgd-js": ("apgd", {"loss": "js"})}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid", required=True, help="settings separated by ';', e.g. steps=3,epochs=5"
    )
    parser.add_argument("--eps", default="4,10", help="eps in gray values, comma-separated")
    parser.add_argument("--images", type=int, default=30, help="validation images attacked")
    parser.add_argument("--attack-iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--data", help="toy city root (default: where the preset puts it)")
    parser.add_argument("--save", help="folder to keep each trained AT in (state_dict files)")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    return parser.parse_args()


def _settings(entry: str, base):
    values = {}
    for item in filter(None, (p.strip() for p in entry.split(","))):
        key, value = item.split("=")
        field = {f.name: f for f in dataclasses.fields(base)}[key.strip()]
        kind = str if field.type == "str" else int if field.type == "int" else float
        values[key.strip()] = kind(value)
    settings = dataclasses.replace(base, **values)
    validate_adversarial(settings)
    return settings


def _robust_miou(model: nn.Module, images, labels, eps: float, n_iter: int, batch: int) -> float:
    """The worst case over ``ATTACKS`` (SEA's per-image greedy assignment), in percent."""
    per_attack = []
    for name, options in ATTACKS.values():
        attack = build_attack(name, n_iter=n_iter, **options)
        counts = []
        for first in range(0, len(images), batch):
            part = slice(first, first + batch)
            index = torch.arange(first, min(first + batch, len(images)))
            adv = attack(model, images[part], eps=eps, labels=labels[part], index=index)
            counts.append(image_counts(predict_labels(model, adv), labels[part]))
        per_attack.append(torch.cat(counts))
    stacked = torch.stack(per_attack)
    c = stacked.shape[-1] // 2 - 1
    worst, _ = worst_case_miou(stacked[..., :c], stacked[..., c : 2 * c])
    return 100 * worst


def main() -> None:
    args = _arguments()
    config, data = toy_setup(args.threads, args.data)
    train = data.split(config.data.train_split)
    val = data.split(config.data.val_subset)
    n = min(args.images, len(val))
    images = torch.stack([val[i][0] for i in range(n)])
    labels = torch.stack([val[i][1] for i in range(n)])
    eps_list = [float(e) for e in args.eps.split(",")]
    header = [
        f"AT from the shipped toy S (T where base=T); train split {len(train)} images; clean mIoU on all "
        f"{len(val)} images of {config.data.val_subset}; robust: worst case of "
        f"{' and '.join(ATTACKS)} x {args.attack_iterations} on its first {n}; "
        f"{torch.get_num_threads()} threads.",
        "",
        "| setting | train seconds | clean mIoU | "
        + " | ".join(f"robust eps {e:g}" for e in eps_list)
        + " |",
        "|---|---|---|" + "---|" * len(eps_list),
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    for entry in ["S (the start)", *args.grid.split(";")]:
        settings = config.adversarial
        if not entry.startswith("S "):
            settings = _settings(entry, config.adversarial)
        # the shipped network the entry starts from (adversarial.base: S, or T with base=T)
        model = load_network(REFERENCE_DIR / "toy", settings.base, config.net(settings.base))
        seconds = 0.0
        if not entry.startswith("S "):
            began = time.perf_counter()
            adversarial_train(
                model, train, settings, seed=config.seed_for(ROBUST_NET), desc=entry.strip()
            )
            seconds = time.perf_counter() - began
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                name = entry.strip().replace(",", "_").replace("=", "")
                torch.save(model.state_dict(), Path(args.save) / f"{name}.pt")
        model.eval()
        clean = 100 * clean_confusion(model, val, batch_size=args.batch_size, progress=False).miou()
        robust = [
            _robust_miou(model, images, labels, eps, args.attack_iterations, args.batch_size)
            for eps in eps_list
        ]
        line = (
            f"| {entry.strip()} | {seconds:.0f} | {clean:.1f} | "
            + " | ".join(f"{r:.1f}" for r in robust)
            + " |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
