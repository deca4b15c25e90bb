"""How much faster ``torchrun`` makes the benchmark on this machine: 2 processes x 1 thread
against 1 process x 1 thread, measured side by side in one run on the toy preset.

Each figure is a time the command records itself (no process start-up in it):

- a finetuning epoch of A: ``bench train --net A --epochs 1 --retrain``, ``train_seconds`` in
  the checkpoint's JSON, with DistributedDataParallel over both processes;
- the networks, attack and evaluation stages of ``bench run`` (their stage lines) from T and S
  alone: the two adaptive students (layers down2 and all, one epoch) spread one per process,
  LLCM at eps 10 on mini test from T, S and the students, every defense evaluated;
- the choice for the students: the two trained one after the other with DistributedDataParallel
  against spread one per process (their ``train_seconds``).

    python benchmarks/dist_speedup.py        # about 6 minutes on 2 cores; keep the machine idle

The results are in the README ("Many GPUs, many machines").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STAGE_SETTINGS = [
    "--set",
    "finetune.epochs=1",
    "--set",
    'attack.suite=[{name="llcm"}]',
    "--set",
    "attack.eps=[10]",
    "--set",
    'attack.subsets=["mini_test"]',
]
STAGES = {
    "networks": "networks stage (2 students, spread)",
    "attacks": "attacks stage",
    "evaluate": "evaluate stage",
}


def bench(args: list[str], processes: int) -> subprocess.Popen:
    """``bench ARGS`` started in one process, or under torchrun in ``processes``."""
    if processes == 1:
        command = [sys.executable, "-m", "bench", *args]
    else:
        command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(processes)]
        command += ["-m", "bench", *args]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)


def finish(launch: subprocess.Popen) -> str:
    out, _ = launch.communicate()
    if launch.returncode:
        sys.exit(f"{' '.join(map(str, launch.args))} failed with exit code {launch.returncode}")
    return out


def with_models(source: Path, out: Path) -> Path:
    """A fresh run directory holding a copy of ``source``'s networks."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source / "models", out / "models")
    return out


def finetune(base: Path, out: Path, processes: int, layers: str) -> subprocess.Popen:
    run = with_models(base, out)
    args = ["train", "--net", "A", "--epochs", "1", "--layers", layers, "--retrain"]
    return bench([*args, "--out", str(run), "--device", "cpu", "--quiet"], processes)


def train_seconds(run: Path, layers: str) -> float:
    name = f"A_{layers.replace(',', '+')}_a0.6_e1"
    return json.loads((run / "models" / f"{name}.json").read_text())["info"]["train_seconds"]


def stage_seconds(output: str, stage: str) -> float:
    found = re.search(rf"^\[{stage}\] .*\(([\d.]+) s\)$", output, re.MULTILINE)
    if found is None:
        sys.exit(f"no [{stage}] line in the output of bench run:\n{output}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="scratch folder [default: a temporary one]")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dist_speedup_"))
    start = time.perf_counter()
    print(f"scratch folder {work}; T and S from the shipped references ...", flush=True)
    base = work / "base"
    finish(bench(["train", "--out", str(base), "--device", "cpu", "--quiet"], 1))

    rows, epoch = [], {}
    for processes in (1, 2):
        finish(finetune(base, work / f"finetune{processes}", processes, "down2"))
        epoch[processes] = train_seconds(work / f"finetune{processes}", "down2")
    rows.append(("finetuning epoch of A (DDP)", epoch[1], epoch[2]))
    finish(finetune(base, work / "ddp_all", 2, "all"))
    ddp = epoch[2] + train_seconds(work / "ddp_all", "all")

    stages, students = {}, {}
    for processes in (1, 2):
        run = with_models(base, work / f"stages{processes}")
        args_ = ["run", "--out", str(run), *STAGE_SETTINGS, "--device", "cpu", "--quiet"]
        output = finish(bench(args_, processes))
        stages[processes] = {s: stage_seconds(output, s) for s in STAGES}
        students[processes] = [train_seconds(run, layers) for layers in ("down2", "all")]
    for stage, what in STAGES.items():
        rows.append((what, stages[1][stage], stages[2][stage]))
    spread = max(students[2])  # the two trained at once, one per process

    print(f"\n{'':36} {'1 process':>10} {'2 processes':>12} {'speed-up':>9}")
    for what, one, two in rows:
        print(f"{what:36} {one:>9.1f}s {two:>11.1f}s {one / two:>8.2f}x")
    print(
        f"\ntwo students on 2 processes (train_seconds): one after the other with DDP "
        f"{ddp:.1f} s, spread one per process {spread:.1f} s ({ddp / spread:.2f}x as fast); "
        f"one process {sum(students[1]):.1f} s"
    )
    print(f"(whole benchmark {time.perf_counter() - start:.0f} s; scratch folder {work})")


if __name__ == "__main__":
    main()
