"""Is ``torch.compile`` a lever for the attacks? One attack step's passes, eager against compiled.

An attack step is a forward pass and a backward pass to the input (``attacks.base.forward_in``),
here in the ``toy-full`` preset's bfloat16 on the shipped reference networks, a batch of mini test
images, with the thread count torchrun gives each rank on two cores. Both versions run in one
process, alternating by rounds; the script prints the compile time and the median milliseconds
per step. Results and the decision: ``benchmarks/torch_compile.md``.

    PYTHONPATH=. python benchmarks/torch_compile.py --network T
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from attacks.base import forward_in
from benchmarks.attack_budget import _networks, first_test_images, toy_setup


def _step(model: nn.Module, images: Tensor, labels: Tensor, precision: str | None) -> Tensor:
    """One attack step's passes: the cross-entropy's gradient with respect to the images."""
    x = images.float().requires_grad_(True)
    out = forward_in(model, x, precision)
    out = out[0] if isinstance(out, tuple) else out
    loss = torch.nn.functional.cross_entropy(out, labels.long(), ignore_index=255)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="T", help="T, S, A or AT (default: T)")
    parser.add_argument("--images", type=int, default=4, help="batch size (default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default: 6)")
    parser.add_argument("--precision", default="bfloat16", help="bfloat16 or float32")
    args = parser.parse_args()
    config, data = toy_setup(args.threads, None)
    images, labels = first_test_images(config, data, args.images)
    network = _networks(config, None)[args.network].eval().requires_grad_(False)
    precision = None if args.precision == "float32" else args.precision
    compiled = torch.compile(network)
    start = time.perf_counter()
    for _ in range(2):  # the first call compiles forward and backward
        _step(compiled, images, labels, precision)
    print(f"{args.network}: compile and first two steps {time.perf_counter() - start:.1f} s")
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, model in (("eager", network), ("compiled", compiled)):
            start = time.perf_counter()
            for _ in range(5):
                _step(model, images, labels, precision)
            times[name].append((time.perf_counter() - start) / 5 * 1000)
    eager, fast = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(
        f"{args.network}: median ms per step, batch {args.images}, {args.threads} thread(s), "
        f"{args.precision}: eager {eager:.1f}, compiled {fast:.1f}, speed-up {eager / fast:.2f}x"
    )


if __name__ == "__main__":
    main()
