"""``torchrun``: two processes (or two "nodes" on localhost) give the single process's results
bit for bit, a rank killed mid-attack loses nothing, and data-parallel finetuning keeps every
rank's A equal. CPU, gloo, on two cores; each launch takes seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench import dist
from bench.cli import main
from bench.config import EvaluateConfig
from bench.errors import ConfigError

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
_DEFENSES = [d.spec for d in EvaluateConfig().defenses]


def _run_args(out: Path, data: Path) -> list[str]:
    """The documented command line (``--out``, never ``--run``: torchrun would take that one),
    with the online vote among the defenses."""
    return [
        "-m",
        "bench",
        "run",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--set",
        f"data.root={data}",
        "--set",
        "attack.batch_size=1",
        "--set",  # the defaults and, amid them, the online vote, whose A learns on rank 0 alone
        f"evaluate.defenses={json.dumps([*_DEFENSES[:5], 'TA-vote-online', *_DEFENSES[5:]])}",
        "--device",
        "cpu",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """A single-process run of the smoke preset with attack batch size 1."""
    base = tmp_path_factory.mktemp("dist")
    result = CliRunner().invoke(main, _run_args(base / "single", base / "data")[2:])
    assert result.exit_code == 0, result.output
    return base / "single"


def _fresh(single: Path, name: str, networks: tuple[str, ...] = ("*",)) -> Path:
    """A run directory holding only the single run's networks (so only the sharded stages run),
    or those of them that match one of the patterns ``networks``."""
    out = single.parent / name
    (out / "models").mkdir(parents=True)
    for pattern in networks:
        for path in (single / "models").glob(f"{pattern}.*"):
            shutil.copy2(path, out / "models" / path.name)
    return out


def _sets(store: Path) -> dict[str, np.ndarray]:
    """The finished sets in the store folder, by name."""
    found = {}
    for path in store.rglob("*.h5"):
        with h5py.File(path, "r") as part:
            found["/" + path.relative_to(store).with_suffix("").as_posix()] = part["images"][()]
    return found


def _assert_same(single: Path, other: Path) -> None:
    ours, theirs = _sets(single / "aes"), _sets(other / "aes")
    assert ours.keys() == theirs.keys() and len(ours) == 21  # one against the online vote
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    for table in ("metrics.csv", "records.csv"):
        assert pd.read_csv(single / table).equals(pd.read_csv(other / table)), table
    assert not list((other / "aes").rglob("*.rank*.h5"))  # shards stitched into the sets, removed
    assert not list((other / "aes").rglob("*.partial.h5"))  # every set finished


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_single_process_results_bit_for_bit(single):
    # the two students are spread, one per rank (AT, trained by both ranks, is the single's)
    out = _fresh(single, "two", networks=("T", "S", "AT"))
    command = [str(TORCHRUN), "--nproc-per-node", "2", *_run_args(out, single.parent / "data")]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report:") == 1 and result.stdout.count("[attacks]") == 1
    students = sorted(p.name for p in (single / "models").glob("A_*.json"))
    assert len(students) == 2
    for name in students:
        ours, theirs = (json.loads((d / "models" / name).read_text()) for d in (single, out))
        assert ours["sha256"] == theirs["sha256"] and theirs["info"]["processes"] == 1
    _assert_same(single, out)


def test_two_nodes_on_localhost_work_the_same(single):
    out, port = _fresh(single, "nodes"), _free_port()
    nodes = [
        subprocess.Popen(
            [
                str(TORCHRUN),
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                *_run_args(out, single.parent / "data"),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    _assert_same(single, out)


def _worker_pid(rank: int, out: Path) -> int | None:
    """The pid of the torchrun worker with this RANK writing to ``out`` (read from /proc; the
    run directory tells this test's workers from those of any other torchrun on the machine)."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            f"RANK={rank}".encode() in environ
            and b"bench" in cmdline
            and str(out).encode() in cmdline
            and b"torchrun" not in cmdline
        ):
            return int(proc.name)
    return None


def test_a_rank_killed_during_the_attacks_loses_nothing(single):
    out = _fresh(single, "killed")
    command = [str(TORCHRUN), "--nproc-per-node", "2", *_run_args(out, single.parent / "data")]
    launch = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((out / "aes").rglob("*.rank1.h5")) and time.monotonic() < deadline:
        time.sleep(0.05)  # rank 1 has started its share of the AE sets
    pid = _worker_pid(1, out)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    launch.communicate(timeout=300)
    assert launch.returncode != 0
    assert not (out / "report.md").exists()
    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same(single, out)


FINETUNE = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from bench import dist
    from bench.config import FinetuneConfig
    from bench.data.cityscapes import CityscapesSegmentation
    from bench.models import ERFNet
    from defenses.adaptive import AdaptiveTrainer, finetune_adaptive
    import defenses.adaptive as adaptive

    dist.init(torch.device("cpu"))
    torch.manual_seed(0)
    t, s = ERFNet(width=1).eval(), ERFNet(width=1).eval()
    losses = []
    step = AdaptiveTrainer.step
    AdaptiveTrainer.step = lambda self, images: losses.append(step(self, images)["loss"]) or {}
    data = CityscapesSegmentation(sys.argv[1], "train_extra", size=(32, 64), with_labels=False)
    a = finetune_adaptive(t, s, data, FinetuneConfig(epochs=12, batch_size=2, lr=1e-2),
                          progress=False, distributed=True)
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in a.state_dict().values()))
    with open(f"{sys.argv[2]}/rank{dist.rank()}.json", "w") as handle:
        json.dump({"losses": losses, "weights": digest.hexdigest()}, handle)
    """
)


def test_data_parallel_finetuning_lowers_the_loss_and_keeps_a_equal(toy_root, tmp_path):
    command = [
        str(TORCHRUN),
        "--nproc-per-node",
        "2",
        "--no-python",
        sys.executable,
        "-c",
        FINETUNE,
        str(toy_root),
        str(tmp_path),
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one A, however many processes
    losses = ranks[0]["losses"]
    assert len(losses) == 12 * 3  # 6 images, 3 a rank: 3 steps of one image per epoch
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_bench_train_under_torchrun_writes_one_plain_checkpoint(single):
    out = _fresh(single, "train")
    data = single.parent / "data"
    command = [str(TORCHRUN), "--nproc-per-node", "2", "-m", "bench", "train", "--net", "A,AT"]
    command += ["--preset", "smoke", "--out", str(out), "--set", f"data.root={data}"]
    result = subprocess.run(
        [*command, "--retrain", "--quiet"], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name = "A_down2_a0.6_e1_bs4"  # the smoke preset's main student
    assert result.stdout.count(f"{name}: erfnet") == 1  # rank 0 alone reports
    meta = json.loads((out / "models" / f"{name}.json").read_text())
    assert meta["info"]["processes"] == 2  # trained by both, with DistributedDataParallel
    assert json.loads((out / "models" / "AT.json").read_text())["info"]["processes"] == 2
    assert result.stdout.count("AT: erfnet") == 1
    for trained in (name, "AT"):
        weights = torch.load(out / "models" / f"{trained}.pt", weights_only=True)
        assert weights.keys() == torch.load(single / "models" / "S.pt", weights_only=True).keys()
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(
        p.name for p in (single / "models").iterdir()
    )  # no temporary file left behind


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "finetune.batch_size=3",
            "finetune.batch_size = 3 does not divide among 2 processes; make it a multiple of 2",
        ),
        ("pretrain.sync_bn=true", "pretrain.sync_bn = true needs GPUs (SyncBatchNorm)"),
    ],
)
def test_an_error_on_a_rank_stops_all_before_any_work(tmp_path, single, setting, message):
    data = single.parent / "data"
    command = [str(TORCHRUN), "--nproc-per-node", "2", "-m", "bench", "train", "--net", "S"]
    command += ["--preset", "smoke", "--out", str(tmp_path), "--set", f"data.root={data}"]
    command += ["--set", setting, "--device", "cpu", "--quiet"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"Error: rank 1: {message}" in result.stderr
    assert "bench/" not in result.stderr  # no traceback of ours (torchrun's summary follows)
    assert not (tmp_path / "models").exists()


def test_a_gpu_index_other_than_the_local_rank_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="pass --device cuda"):
        dist.init(torch.device("cuda:0"))  # both processes would share one GPU
