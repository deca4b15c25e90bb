"""The gradient-free attack on a masked surface, measured: the shipped toy T behind a quantizer
(its gradient is zero everywhere), APGD-CE against ``square`` at each eps, and what a query
costs, side by side in one process.

Prints the CPU model, pixel accuracy and mIoU (clean, APGD, square), the forward passes of T
that square made (counted), seconds per image per 100 queries, and a query's and an APGD
iteration's cost in plain forward passes of the batch timed beside them.

    python benchmarks/square_cost.py --images 8 --queries 100
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attacks import APGD, Square
from attacks.objectives import Ensemble, pixel_accuracy
from bench.config import resolve_config
from bench.data.cityscapes import CityscapesSegmentation
from bench.metrics import ConfusionMatrix
from bench.stages.networks import REFERENCE_DIR
from bench.store.checkpoints import load_network


class Counting(nn.Module):
    """A network that counts its forward calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x)


def _quantize(x: Tensor) -> Tensor:
    """16 gray levels: no gradient, and no stand-in."""
    return (x / 16).round() * 16


def _score(model: Ensemble, images: Tensor, labels: Tensor) -> str:
    """Pixel accuracy and mIoU (in %) of the model's output."""
    with torch.no_grad():
        outputs = model(images.float())
        confusion = ConfusionMatrix()
        confusion.update(outputs[0].argmax(1), labels)
        accuracy = 100 * float(pixel_accuracy(model, outputs, labels).mean())
    return f"accuracy {accuracy:.1f}%, mIoU {100 * confusion.miou():.1f}"


def _forward_seconds(net: nn.Module, images: Tensor, repeat: int = 5) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeat):
            net(images.float())
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", help="a toy city (default: the toy preset's, which bench run makes)"
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--apgd-iter", type=int, default=5)
    parser.add_argument("--eps", type=float, nargs="+", default=[4, 10])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(next((line for line in cpu.splitlines() if "Model name" in line), "CPU unknown"))
    toy = resolve_config("toy")
    data = CityscapesSegmentation(
        args.data or toy.data.root, toy.data.test_subset, size=tuple(toy.data.size)
    )
    images, labels = next(iter(DataLoader(data, args.images)))
    net = load_network(REFERENCE_DIR / "toy", "T", toy.net("T"))
    counting = Counting(net)
    masked = Ensemble({"T": counting}, transform=_quantize)
    print(f"{len(images)} images {tuple(images.shape[2:])}, toy T behind a 16-level quantizer")
    print(f"clean: {_score(masked, images, labels)}")
    for eps in args.eps:
        start = time.perf_counter()
        apgd = APGD(n_iter=args.apgd_iter)(masked, images, eps=eps, labels=labels)
        apgd_seconds = time.perf_counter() - start
        counting.calls = 0
        start = time.perf_counter()
        square = Square(queries=args.queries)(masked, images, eps=eps, labels=labels)
        square_seconds, calls = time.perf_counter() - start, counting.calls
        forward = _forward_seconds(net, images)
        print(
            f"eps {eps:g}: APGD-CE {args.apgd_iter} iterations: {_score(masked, apgd, labels)}; "
            f"square {args.queries} queries: {_score(masked, square, labels)}; "
            f"{calls} forward passes of T, "
            f"{square_seconds / len(images) * 100 / args.queries:.2f} s per image per 100 "
            f"queries; a query {square_seconds / calls / forward:.2f} x a forward of the batch, "
            f"an APGD iteration {apgd_seconds / (args.apgd_iter + 1) / forward:.2f} x"
        )


if __name__ == "__main__":
    main()
