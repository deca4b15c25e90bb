"""Every misuse a real user commits: one clear line, exit status != 0, a finished run untouched."""

from __future__ import annotations

import errno
import logging
import os
import tempfile

import numpy as np
import pandas as pd
import pytest

from bench.store.rundir import RunDir

from smokerun import invoke, published, run_args

BROKEN_PLUGIN = "import torch\nraise RuntimeError('the plug-in is broken')\n"
SHADOW_PLUGIN = """
from defenses import Prediction, predict_labels

class Shadow:
    name = "shadow"

    def __init__(self, networks):
        self.net = networks["T"]

    def predict(self, images):
        labels = predict_labels(self.net, images)
        return Prediction(labels, [{"defense": "T", "eps": "boom", "note": 1} for _ in labels])
"""
VOID_PLUGIN = """
import torch
from defenses import Prediction

class Void:
    name = "void"

    def __init__(self, networks):
        pass

    def predict(self, images):
        n, _, h, w = images.shape
        return Prediction(torch.full((n, h, w), 255), [{} for _ in range(n)])
"""
TUPLE_PLUGIN = """
from defenses import predict_labels

class TupleDefense:
    name = "tuple-defense"

    def __init__(self, networks):
        self.net = networks["T"]

    def predict(self, images):
        labels = predict_labels(self.net, images)
        return labels, [{} for _ in labels]
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "attack.eps=[300]"], "attack.eps = [300.0]: every eps must lie in (0, 255]"),
        (["--set", "attack.eps=[]"], "attack.eps = []: name at least one eps"),
        (["--set", "attack.batch_size=2.5"], "attack.batch_size = 2.5 is not integer"),
        (["--set", "detect.delta=nan"], "detect.delta = nan is not a finite number"),
        (["--set", "attack.sources=['T', 'X']"], "unknown source 'X'; choose from T, S"),
        (["--set", "attack.suite=[{name='cw'}]"], "unknown attack 'cw'; choose from llcm"),
        (
            ["--set", "attack.suite=[{name='llcm', options={rounding='up'}}]"],
            "unknown LLCM rounding 'up'",
        ),
        (["--set", "evaluate.defenses=['T', 'nope']"], "unknown defense 'nope'; choose from T"),
        (["--set", "finetune.layers=['down4']"], "unknown layer 'down4' for ERFNet"),
        (["--set", "teacher.options={depth=19}"], "teacher: bad options for deeplabv3plus"),
        (["--set", "data.size=[36, 64]"], "needs H and W divisible by 16, got 36x64"),
        (["--set", "data.toycity_style={glare=1}"], "unknown key data.toycity_style.glare"),
        (["--device", "tpu"], "unknown device 'tpu'; use cpu, cuda, cuda:N or auto"),
        (["--data", "/no/such/tree"], "data root /no/such/tree does not exist"),
        (
            ["--defense", "{tmp}/broken.py:Thing"],
            "importing {tmp}/broken.py failed with RuntimeError: the plug-in is broken",
        ),
        (
            ["--defense", "{tmp}/tuple.py:TupleDefense"],
            "defense 'tuple-defense': predict returned a tuple; it must return defenses.Prediction",
        ),
    ],
    ids=[
        "eps-300",
        "eps-empty",
        "batch-float",
        "delta-nan",
        "source",
        "attack",
        "attack-option",
        "defense",
        "layer",
        "arch-option",
        "size",
        "style",
        "device",
        "data",
        "plugin-import",
        "plugin-tuple",
    ],
)
def test_bad_input_is_one_line_and_leaves_the_finished_run_untouched(
    smoke_copy, tmp_path, extra, message
):
    (tmp_path / "broken.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "tuple.py").write_text(TUPLE_PLUGIN)
    (tmp_path / "void.py").write_text(VOID_PLUGIN)
    before = published(smoke_copy)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    result = invoke(*run_args(smoke_copy, *args), ok=False)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") or "Invalid value" in lines[-1], result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert published(smoke_copy) == before


def test_a_busy_run_directory_stops_a_second_command_at_once(smoke_copy):
    before = published(smoke_copy)
    with RunDir(smoke_copy).lock():
        result = invoke(*run_args(smoke_copy), ok=False)
        report = invoke("report", "--out", smoke_copy, ok=False)
    assert result.exit_code == 1 and report.exit_code == 1
    assert f"run directory {smoke_copy} is in use by another bench command" in result.output
    assert f"(held by bench process {os.getpid()})" in result.output
    assert "[data]" not in result.output  # stopped before any stage
    assert published(smoke_copy) == before
    invoke(*run_args(smoke_copy))  # the lock went with its holder


def test_a_read_only_run_directory_is_one_line(smoke_copy, monkeypatch):
    before = published(smoke_copy)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = invoke(*run_args(smoke_copy, "--set", "detect.delta=0.3"), ok=False)
    assert result.exit_code == 1
    assert "is read-only; choose a writable folder (--out DIR)" in result.output
    assert "Traceback" not in result.output
    monkeypatch.undo()
    assert published(smoke_copy) == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("metrics.csv", b"", "metrics.csv is not a readable table"),
        ("metrics.csv", b"a,b\n1,2\n", "metrics.csv lacks the columns defense, subset"),
        ("records.csv", b"\x00\xff garbage", "records.csv"),
        ("qualitative.npz", b"PK\x03\x04 torn", "qualitative.npz is damaged"),
        ("qualitative.npz", b"", "qualitative.npz is damaged"),
    ],
    ids=["metrics-empty", "metrics-foreign", "records-garbage", "npz-torn", "npz-empty"],
)
def test_damaged_published_files_are_one_line_for_report(smoke_copy, name, content, message):
    (smoke_copy / name).write_bytes(content)
    before = published(smoke_copy)
    result = invoke("report", "--out", smoke_copy, ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert str(smoke_copy / name) in result.output  # the user's file, not a staging copy
    assert "rerun bench run there" in result.output and "Traceback" not in result.output
    assert published(smoke_copy) == before
    invoke(*run_args(smoke_copy))  # a run republishes everything from its caches
    invoke("report", "--out", smoke_copy)


@pytest.mark.parametrize("name", ["metrics.csv", "records.csv", "qualitative.npz"])
def test_damaged_caches_are_rebuilt_with_a_warning(smoke_copy, name, caplog):
    metrics, records = (pd.read_csv(smoke_copy / f) for f in ("metrics.csv", "records.csv"))
    (smoke_copy / "cache" / name).write_bytes(b"PK\x03\x04 torn by a kill")
    invoke(*run_args(smoke_copy))
    if name.endswith(".csv"):
        assert (smoke_copy / "cache" / f"{name}.corrupt").is_file()
        assert "recomputing" in caplog.text
    # the same rows, once each: nothing lost, nothing doubled
    assert len(pd.read_csv(smoke_copy / "records.csv")) == len(records)
    assert len(pd.read_csv(smoke_copy / "metrics.csv")) == len(metrics)


def test_a_damaged_ae_set_is_moved_aside_and_rebuilt_by_the_next_run(smoke_copy, caplog):
    """The probe's case: a set file left unreadable (here zeroed) by a kill or a full disk."""
    path = smoke_copy / "aes" / "mini_test" / "llcm" / "transfer" / "T" / "eps10.h5"
    path.write_bytes(bytes(path.stat().st_size))
    before = {f: (smoke_copy / f).read_bytes() for f in ("metrics.csv", "records.csv")}
    with caplog.at_level(logging.WARNING, logger="bench.store.aesets"):
        invoke(*run_args(smoke_copy))
    assert caplog.text.count("cannot be read") == 1 and ".damaged-" in caplog.text
    assert len(list(path.parent.glob("eps10.h5.damaged-*"))) == 1
    assert {f: (smoke_copy / f).read_bytes() for f in before} == before


def test_a_defense_record_cannot_rename_its_row(smoke_copy, tmp_path):
    (tmp_path / "shadow.py").write_text(SHADOW_PLUGIN)
    invoke(*run_args(smoke_copy, "--defense", f"{tmp_path}/shadow.py:Shadow"))
    records = pd.read_csv(smoke_copy / "records.csv")
    shadow = records[records["note"] == 1]
    assert set(shadow["defense"]) == {"shadow"} and shadow["eps"].dtype.kind == "f"
    # a plug-in without an attack surface: transfer and joint only, and marked so
    board = pd.read_csv(smoke_copy / "tables" / "leaderboard_mini_test.csv", index_col=0)
    assert board.loc["shadow", "threat models"] == "transfer + joint (not adaptively evaluated)"
    assert board.loc["TA-vote", "threat models"] == "transfer + joint + white-box"


def test_report_on_a_folder_without_a_finished_run_is_one_line(tmp_path):
    result = invoke("report", "--out", tmp_path, ok=False)
    assert result.exit_code == 1 and "holds no finished run" in result.output
    assert not (tmp_path / ".lock").exists()


def test_train_never_replaces_the_networks_of_a_finished_run(smoke_copy):
    before = published(smoke_copy)
    weights = (smoke_copy / "models" / "T.pt").read_bytes()
    data = f"data.root={smoke_copy.parent / 'data'}"
    result = invoke(
        "train",
        "--preset",
        "smoke",
        "--out",
        smoke_copy,
        "--set",
        data,
        "--set",
        "pretrain.lr=0.01",
        "--quiet",
        ok=False,
    )
    assert result.exit_code == 1 and "would replace it: choose another --out DIR" in result.output
    assert (smoke_copy / "models" / "T.pt").read_bytes() == weights
    assert published(smoke_copy) == before


def test_a_kill_while_the_qualitative_grid_is_written_breaks_nothing(smoke_copy, monkeypatch):
    before = published(smoke_copy)
    grid = smoke_copy / "cache" / "qualitative.npz"
    old = grid.read_bytes()

    def killed(handle, **arrays):
        handle.write(b"PK\x03\x04 half of a zip")
        raise KeyboardInterrupt  # what a kill looks like to the code around it

    monkeypatch.setattr(np, "savez_compressed", killed)
    result = invoke(*run_args(smoke_copy, "--set", "detect.delta=0.3"), ok=False)
    assert result.exit_code != 0 and "Aborted" in result.output
    assert grid.read_bytes() == old  # the old grid, whole
    assert not list(grid.parent.glob("*.tmp"))
    assert published(smoke_copy) == before
    monkeypatch.undo()
    invoke(*run_args(smoke_copy, "--set", "detect.delta=0.3"))
    assert grid.read_bytes() != old  # the grid shows the new delta's vote: rebuilt
    invoke("report", "--out", smoke_copy)
