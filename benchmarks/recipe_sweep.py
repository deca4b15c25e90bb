"""Which toy-city recipe makes the paper's adversarial pattern visible? A measured sweep.

For one named recipe (resolution, scene style, training length, teacher size) this script draws a
toy city in memory (``bench.data.toycity.render_scene``, the same scenes ``bench data toycity``
writes), pretrains T and S with ``bench.train.pretrain``, builds LLCM AEs (``attacks.LLCM``, the
paper's settings) on the val images from T and from S at each eps, and evaluates both networks
on every set with ``bench.metrics.ConfusionMatrix``. Control: random +-eps sign noise. One JSON
record per recipe is appended to ``recipe_sweep.jsonl``; ``--table`` writes the Markdown table in
``recipe_sweep.md`` from those records.

    python benchmarks/recipe_sweep.py --recipe base64    # one recipe, a few CPU minutes
    python benchmarks/recipe_sweep.py --table            # rewrite the table in recipe_sweep.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from attacks import LLCM
from bench.config import PretrainConfig
from bench.data.labels import CLASS_NAMES, label_ids_to_train_ids
from bench.data.toycity.canvas import SceneStyle
from bench.data.toycity.scene import render_scene
from bench.metrics import ConfusionMatrix
from bench.models import build_model, count_parameters
from bench.train import pretrain
from defenses import predict_labels

HERE = Path(__file__).parent
RECORDS = HERE / "recipe_sweep.jsonl"
TABLE = HERE / "recipe_sweep.md"
EPS = (1.0, 10.0)


@dataclass(frozen=True)
class Recipe:
    size: tuple[int, int] = (64, 128)
    style: SceneStyle = field(default_factory=SceneStyle)
    train: int = 500
    val: int = 48
    epochs: int = 8
    lr: float = 1e-3
    teacher: dict = field(default_factory=lambda: {"depth": 18, "width": 32})
    student: dict = field(default_factory=lambda: {"width": 4})
    note: str = ""


# The generator's default style (NOISY) and the levers measured against it.
NOISY = SceneStyle()
DARK = dataclasses.replace(NOISY, noise=2.0)
BRIGHT = dataclasses.replace(DARK, contrast=1.0, exposure=(0.45, 0.9))
RECIPES: dict[str, Recipe] = {
    "base64": Recipe(style=BRIGHT, note="bright, full contrast, little noise"),
    "dark64": Recipe(style=DARK, note="low contrast, dark"),
    "darknoisy64": Recipe(style=NOISY, note="dark + 3x sensor noise (the default style)"),
    "noisylong64": Recipe(style=NOISY, epochs=20, note="default style, 2.5x training"),
    "noisy128": Recipe(style=NOISY, size=(128, 256), epochs=4, note="default style at 128x256"),
    "noisy128x8": Recipe(
        style=NOISY, size=(128, 256), epochs=8, note="default style at 128x256, 2x training"
    ),
    "midnoisy64": Recipe(
        style=dataclasses.replace(NOISY, contrast=0.8), note="default style, contrast 0.8"
    ),
    "noisysmallT64": Recipe(
        style=NOISY,
        teacher={"depth": 18, "width": 8, "aspp_channels": 64},
        note="default style, small teacher",
    ),
    "noisyhard64": Recipe(
        style=dataclasses.replace(NOISY, jitter=2.0, texture=1.6),
        note="default style, overlapping colours, strong texture",
    ),
}


def split_arrays(recipe: Recipe, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images 0..count-1 of ``split`` drawn in memory: uint8 (N, 3, H, W), trainIds (N, H, W)."""
    images, labels = zip(
        *(render_scene(0, split, i, recipe.size, recipe.style) for i in range(count))
    )
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack([label_ids_to_train_ids(lab) for lab in labels]).astype(np.int64))
    return x, y


def confusion(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> ConfusionMatrix:
    """One confusion matrix over all ``images`` (uint8) against trainId ``labels``."""
    cm = ConfusionMatrix()
    for i in range(0, len(images), 16):
        cm.update(predict_labels(model, images[i : i + 16]), labels[i : i + 16])
    return cm


def attack(model: torch.nn.Module, images: torch.Tensor, eps: float) -> torch.Tensor:
    """The paper's iterative LLCM AEs of ``model`` at ``eps``, 16 images at a time."""
    llcm = LLCM(rounding="ceil")
    return torch.cat([llcm(model, images[i : i + 16], eps=eps) for i in range(0, len(images), 16)])


def sign_noise(images: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """The control: every value moved by +eps or -eps at random (clipped to 0..255)."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, images.shape, generator=g) * 2 - 1
    return (images.float() + eps * sign).clamp(0, 255).to(torch.uint8)


def run(name: str, threads: int) -> dict:
    """Measure one recipe and append its record to ``recipe_sweep.jsonl``."""
    torch.set_num_threads(threads)
    recipe = RECIPES[name]
    start = time.perf_counter()
    x_train, y_train = split_arrays(recipe, "train", recipe.train)
    x_val, y_val = split_arrays(recipe, "val", recipe.val)
    record: dict = {"recipe": name, "note": recipe.note, **_flat(recipe)}
    record["data_seconds"] = round(time.perf_counter() - start, 1)
    nets, clean = {}, {}
    for seed, (net, arch, options) in enumerate(
        (("T", "deeplabv3plus", recipe.teacher), ("S", "erfnet", recipe.student))
    ):
        torch.manual_seed(seed)
        model = build_model(arch, **options)
        config = PretrainConfig(epochs=recipe.epochs, batch_size=8, lr=recipe.lr)
        stats = pretrain(model, TensorDataset(x_train, y_train), config, seed=seed, progress=False)
        nets[net] = model
        record[f"{net}_params_M"] = round(count_parameters(model) / 1e6, 2)
        record[f"{net}_train_s"] = round(stats.seconds)
        cm = confusion(model, x_val, y_val)
        clean[net] = cm.miou()
        record[f"{net}_clean"] = round(100 * clean[net], 1)
        record[f"{net}_class_iou"] = {
            name: round(100 * float(v), 1)
            for name, v in zip(CLASS_NAMES, cm.iou())
            if not math.isnan(v)
        }
        print(name, net, record[f"{net}_train_s"], "s, clean", record[f"{net}_clean"], flush=True)
    for eps in EPS:
        sets = {"T": attack(nets["T"], x_val, eps), "S": attack(nets["S"], x_val, eps)}
        sets["noise"] = sign_noise(x_val, eps, seed=int(eps))
        for src, adv in sets.items():
            for net, model in nets.items():
                # Q = mIoU_adv / mIoU_clean; key Q_<evaluated net>_<AE source>_eps<eps>.
                record[f"Q_{net}_{src}_eps{eps:g}"] = round(
                    100 * confusion(model, adv, y_val).miou() / clean[net], 1
                )
    record["total_s"] = round(time.perf_counter() - start)
    print(json.dumps(record), flush=True)
    with RECORDS.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def _flat(recipe: Recipe) -> dict:
    d = dataclasses.asdict(recipe)
    style = d.pop("style")
    d.pop("note")
    d["size"] = "x".join(map(str, recipe.size))
    d["style"] = ",".join(f"{k}={v}" for k, v in style.items())
    d["teacher"] = ",".join(f"{k}={v}" for k, v in recipe.teacher.items())
    d["student"] = ",".join(f"{k}={v}" for k, v in recipe.student.items())
    return d


def table() -> str:
    """The Markdown table of all records (cross: T on S-AEs / S on T-AEs)."""
    records = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    head = (
        "| recipe | what | size | T params M | epochs | T / S train s | clean T / S | "
        "Q own eps1 T / S | Q cross eps1 T / S | Q noise eps1 T / S | "
        "Q own eps10 T / S | Q cross eps10 T / S | Q noise eps10 T / S |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        cells = [
            r["recipe"],
            r["note"],
            r["size"],
            str(r["T_params_M"]),
            str(r["epochs"]),
            f"{r['T_train_s']} / {r['S_train_s']}",
            f"{r['T_clean']} / {r['S_clean']}",
        ]
        for eps in ("1", "10"):
            cells += [
                f"{r[f'Q_T_T_eps{eps}']} / {r[f'Q_S_S_eps{eps}']}",
                f"{r[f'Q_T_S_eps{eps}']} / {r[f'Q_S_T_eps{eps}']}",
                f"{r[f'Q_T_noise_eps{eps}']} / {r[f'Q_S_noise_eps{eps}']}",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), action="append", default=[])
    # One thread: on 2 shared cores, 2 torch threads next to other jobs ran 8x slower (spin-waits).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--table", action="store_true", help=f"write the table of all records into {TABLE.name}"
    )
    args = parser.parse_args()
    for name in args.recipe:
        run(name, args.threads)
    if args.table:
        text = TABLE.read_text()
        start = text.index("<!-- table")
        start = text.index("\n", start) + 1
        end = text.index("<!-- /table -->")
        TABLE.write_text(text[:start] + table() + "\n" + text[end:])
