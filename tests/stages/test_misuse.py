"""Every misuse a real user commits: one clear line, exit status != 0, a finished run untouched."""

from __future__ import annotations

import errno
import logging
import os
import tempfile

import numpy as np
import pandas as pd
import pytest

from bench.config import apply_values, load_config
from bench.errors import ConfigError, DefenseError
from bench.files import atomic_write
from bench.stages import with_defenses
from bench.stages.preflight import check_run
from bench.store.rundir import RunDir
from defenses import load_defense

from smokerun import EXAMPLE, invoke, published, run_args
from testdata import FullDiskFile

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
BAD_PLUGINS = """
import torch
from defenses import AttackSurface, Prediction, predict_labels


class _Base:
    def __init__(self, networks):
        self.net = networks["T"]

    def labels(self, images):
        return predict_labels(self.net, images)

    def predict(self, images):
        labels = self.labels(images)
        return Prediction(labels, [{} for _ in labels])


class RaisesInPredict(_Base):
    name = "raises-in-predict"

    def predict(self, images):
        raise ValueError("no prediction today")


class RaisesInSurface(_Base):
    name = "raises-in-surface"

    def attack_surface(self):
        raise ValueError("no surface today")


def _no_transform(pixels):
    raise ValueError("no transform today")


class RaisesInTransform(_Base):
    name = "raises-in-transform"

    def attack_surface(self):
        return AttackSurface("T:raises", {"T": self.net}, transform=_no_transform)


class _NoForward(torch.nn.Module):  # no parameters either
    def forward(self, pixels):
        raise ValueError("no forward today")


class OwnNetworkRaises(_Base):
    name = "own-network-raises"

    def attack_surface(self):
        return AttackSurface("own:raises", {"own": _NoForward()})


class RaisesInInit(_Base):
    name = "raises-in-init"

    def __init__(self, networks):
        raise ValueError("no construction today")


class ObjectRecord(_Base):
    name = "object-record"

    def predict(self, images):
        labels = self.labels(images)
        return Prediction(labels, [{"x": object()} for _ in labels])


class Int32Labels(_Base):
    name = "int32-labels"

    def predict(self, images):
        labels = self.labels(images)
        return Prediction(labels.int(), [{} for _ in labels])


class OneRecord(_Base):
    name = "one-record"

    def predict(self, images):
        return Prediction(self.labels(images), [{}])


class Class19(_Base):
    name = "class-19"

    def predict(self, images):
        labels = self.labels(images)
        return Prediction(torch.full_like(labels, 19), [{} for _ in labels])


class Twin(_Base):
    name = "twin"


class OtherTwin(Twin):
    pass
"""
EXITING_PLUGIN = "import sys\nsys.exit(3)\n"
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
        (["--set", "attack.batch_size=2.5"], "attack.batch_size = 2.5 is not an integer"),
        (["--set", "detect.delta=nan"], "detect.delta = nan is not a finite number"),
        (["--set", "attack.sources=['T', 'X']"], "unknown source 'X'; choose from T, S"),
        (["--set", "attack.suite=[{name='cw'}]"], "unknown attack 'cw'; choose from llcm"),
        (
            ["--set", "attack.suite=[{name='llcm', options={rounding='up'}}]"],
            "unknown LLCM rounding 'up'",
        ),
        (
            ["--set", "attack.suite=[{name='cospgd', options={precision='half'}}]"],
            "attack.suite[0] (cospgd): precision must be one of float32, bfloat16, got 'half'",
        ),
        (["--set", "evaluate.defenses=['T', 'nope']"], "unknown defense 'nope'; choose from T"),
        (
            ["--set", "evaluate.defenses=[{spec='TA-vote', options={adaptive='AT'}}]"],
            "defense 'TA-vote': option 'adaptive' is what the built-in's name fixes",
        ),
        (["--set", "adversarial.base='A'"], "adversarial.base = 'A': choose S (start from"),
        (["--set", "adversarial.clean_weight=1.5"], "adversarial.clean_weight = 1.5: must lie in"),
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
            "defense 'tuple-defense' ({tmp}/tuple.py:TupleDefense): predict returned a tuple; it "
            "must return defenses.Prediction",
        ),
        (
            ["--defense", "{tmp}/bad.py:RaisesInPredict"],
            "defense 'raises-in-predict' ({tmp}/bad.py:RaisesInPredict): predict failed with "
            "ValueError: no prediction today; fix the plug-in",
        ),
        (
            ["--defense", "{tmp}/bad.py:RaisesInInit"],
            "defense '{tmp}/bad.py:RaisesInInit': its constructor failed with ValueError: no "
            "construction today; fix the plug-in",
        ),
        (
            ["--defense", "{tmp}/bad.py:RaisesInSurface"],
            "defense '{tmp}/bad.py:RaisesInSurface': attack_surface() failed with ValueError: "
            "no surface today; fix the plug-in",
        ),
        (
            ["--defense", "{tmp}/bad.py:RaisesInTransform"],
            "defense 'raises-in-transform' ({tmp}/bad.py:RaisesInTransform): its attack "
            "surface's transform failed with ValueError: no transform today; fix the plug-in",
        ),
        (
            ["--defense", "{tmp}/bad.py:OwnNetworkRaises"],
            "defense 'own-network-raises' ({tmp}/bad.py:OwnNetworkRaises): its network 'own' "
            "failed with ValueError: no forward today; fix the plug-in",
        ),
        (
            ["--defense", "{tmp}/bad.py:ObjectRecord"],
            "defense 'object-record' ({tmp}/bad.py:ObjectRecord): a defense's record holds 'x': "
            "object; records hold numbers, strings, bools or None",
        ),
        (
            ["--defense", "{tmp}/bad.py:Int32Labels"],
            "defense 'int32-labels' ({tmp}/bad.py:Int32Labels): a defense must return labels "
            "int64 (N, H, W), got torch.int32",
        ),
        (
            ["--defense", "{tmp}/bad.py:OneRecord"],
            "defense 'one-record' ({tmp}/bad.py:OneRecord): a defense must return one record per "
            "image: 2 images, 1 records",
        ),
        (
            ["--defense", "{tmp}/bad.py:Class19"],
            "defense 'class-19' ({tmp}/bad.py:Class19): a defense must return trainIds 0..18, got "
            "values 19..19",
        ),
        (
            ["--defense", "{tmp}/exits.py:Thing"],
            "defense '{tmp}/exits.py:Thing': importing {tmp}/exits.py called sys.exit(3); a "
            "plug-in must not exit when imported",
        ),
        (["--data", "{tmp}/bad.py"], "data root {tmp}/bad.py is a file, not a folder"),
    ],
    ids=[
        "eps-300",
        "eps-empty",
        "batch-float",
        "delta-nan",
        "source",
        "attack",
        "attack-option",
        "attack-precision",
        "defense",
        "builtin-redefined",
        "adversarial-base",
        "adversarial-clean-weight",
        "layer",
        "arch-option",
        "size",
        "style",
        "device",
        "data",
        "plugin-import",
        "plugin-tuple",
        "plugin-predict-raises",
        "plugin-init-raises",
        "plugin-surface-raises",
        "plugin-transform-raises",
        "plugin-own-network-raises",
        "plugin-object-record",
        "plugin-int32",
        "plugin-record-count",
        "plugin-class-19",
        "plugin-exits",
        "data-file",
    ],
)
def test_bad_input_is_one_line_and_leaves_the_finished_run_untouched(
    smoke_copy, tmp_path, extra, message
):
    (tmp_path / "broken.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "tuple.py").write_text(TUPLE_PLUGIN)
    (tmp_path / "void.py").write_text(VOID_PLUGIN)
    (tmp_path / "bad.py").write_text(BAD_PLUGINS)
    (tmp_path / "exits.py").write_text(EXITING_PLUGIN)
    before = published(smoke_copy)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    result = invoke(*run_args(smoke_copy, *args), ok=False)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") or "Invalid value" in lines[-1], result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.exit_code == 1 or "Invalid value" in lines[-1]
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
    with caplog.at_level(logging.WARNING, logger="bench.store.aeset_files"):
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


def _one_line(result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.output, result.output
    for part in parts:
        assert part in lines[-1], result.output


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_the_next_run_resumes(
    smoke_copy, monkeypatch
):
    import bench.store.checkpoints as checkpoints

    before, weights = published(smoke_copy), (smoke_copy / "models" / "T.pt").read_bytes()
    monkeypatch.setattr(checkpoints, "open", FullDiskFile, raising=False)
    result = invoke(*run_args(smoke_copy, "--retrain"), ok=False)
    _one_line(result, f"disk full while writing {smoke_copy / 'models'}", "free space and re-run")
    monkeypatch.undo()
    assert published(smoke_copy) == before
    assert (smoke_copy / "models" / "T.pt").read_bytes() == weights
    assert not list((smoke_copy / "models").glob(".*.tmp"))
    assert "(cached)" in invoke(*run_args(smoke_copy)).output  # resumes from what was kept


@pytest.mark.parametrize("where", ["plot", "table", "report"])
def test_a_full_disk_while_writing_the_report_is_one_line(smoke_copy, monkeypatch, where):
    import matplotlib.figure

    import bench.report.report as report

    before = published(smoke_copy)
    if where == "plot":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _disk_full)
        named = ".png"
    else:  # the first table file, or report.md
        named = "tables" if where == "table" else "report.md"
        real = report.atomic_write_text

        def full_disk(path, text):
            if named in str(path):  # the write itself finds the disk full
                return atomic_write(path, _disk_full)
            return real(path, text)

        monkeypatch.setattr(report, "atomic_write_text", full_disk)
    _one_line(invoke("report", "--out", smoke_copy, ok=False), "disk full while writing", named)
    monkeypatch.undo()
    assert published(smoke_copy) == before
    invoke("report", "--out", smoke_copy)
    assert published(smoke_copy) == before


def test_a_full_disk_while_publishing_a_run_is_one_line_and_the_next_run_finishes(
    smoke_copy, monkeypatch
):
    import bench.store.rundir as rundir

    before = published(smoke_copy)

    def full(what, path):
        if what == "move the staged folder in":
            _disk_full()

    monkeypatch.setattr(rundir, "_step", full)
    result = invoke(*run_args(smoke_copy, "--set", "detect.delta=0.3"), ok=False)
    _one_line(result, f"disk full while writing {smoke_copy / '.published'}")
    monkeypatch.undo()
    assert published(smoke_copy) == before
    invoke(*run_args(smoke_copy, "--set", "detect.delta=0.3"))
    assert published(smoke_copy) != before and "delta 0.3" in (smoke_copy / "report.md").read_text()


def test_a_kill_at_every_step_of_bench_report_leaves_the_run_whole(smoke_copy, monkeypatch):
    import bench.store.rundir as rundir

    invoke("report", "--out", smoke_copy)  # the copy (plain files) is adopted
    before = published(smoke_copy)
    steps: list[str] = []
    monkeypatch.setattr(rundir, "_step", lambda what, path: steps.append(what))
    invoke("report", "--out", smoke_copy)
    monkeypatch.undo()
    assert len(steps) == 4  # move in, make the new link, switch, remove the old publication
    for k in range(1, len(steps) + 1):
        pid = os.fork()
        if pid == 0:  # the child is killed before its k-th step (no cleanup at all)
            count = [0]

            def step(what, path, k=k, count=count):
                count[0] += 1
                if count[0] == k:
                    os._exit(9)

            rundir._step = step
            try:
                invoke("report", "--out", smoke_copy)
            finally:
                os._exit(0)
        assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 9
        assert published(smoke_copy) == before
    invoke(*run_args(smoke_copy))
    assert published(smoke_copy) == before
    assert len(list((smoke_copy / ".published").iterdir())) == 2  # current and its publication


def test_plugin_errors_keep_their_cause_for_bench_debug(smoke_copy, tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text(BAD_PLUGINS)
    monkeypatch.setenv("BENCH_DEBUG", "1")
    for name, cause in (("RaisesInInit", "no construction"), ("RaisesInPredict", "no prediction")):
        result = invoke(*run_args(smoke_copy, "--defense", f"{tmp_path}/bad.py:{name}"), ok=False)
        assert isinstance(result.exception, DefenseError)
        assert isinstance(result.exception.__cause__, ValueError)
        assert cause in str(result.exception.__cause__)


def test_a_plugin_interrupted_at_import_is_not_swallowed(tmp_path):
    (tmp_path / "interrupted.py").write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_defense(f"{tmp_path}/interrupted.py:Thing")


def test_duplicate_defense_names_stop_before_the_networks(tmp_path):
    (tmp_path / "bad.py").write_text(BAD_PLUGINS)
    run_dir = tmp_path / "run"
    args = run_args(run_dir, "--defense", f"{tmp_path}/bad.py:Twin")
    args += ["--defense", f"{tmp_path}/bad.py:OtherTwin"]
    result = invoke(*args, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"'{tmp_path}/bad.py:OtherTwin' and '{tmp_path}/bad.py:Twin' are both named 'twin'"
        in result.output
    )
    assert "[data]" not in result.output and not (run_dir / "models").exists()


def test_a_plugin_named_like_a_builtin_stops_before_the_networks(tmp_path):
    (tmp_path / "bad.py").write_text(BAD_PLUGINS.replace('name = "twin"', 'name = "TA-vote"'))
    config = with_defenses(load_config("smoke"), [f"{tmp_path}/bad.py:Twin"])
    with pytest.raises(DefenseError, match=r"bad.py:Twin' and 'TA-vote' are both named 'TA-vote'"):
        check_run(config)


def test_a_preset_whose_base_is_not_a_name_is_one_line(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text("base = 5\n")
    result = invoke("run", "--preset", preset, "--out", tmp_path / "run", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f'{preset}: base = 5 is not a preset; write base = "toy"' in result.output


def _set_eps(config_file, old, new):
    text = config_file.read_text()
    assert old in text
    config_file.write_text(text.replace(old, new, 1))


def test_report_refuses_a_config_that_asks_for_rows_metrics_lack(smoke_copy):
    before = published(smoke_copy)
    _set_eps(
        smoke_copy / "config.toml",
        "eps = [\n    1.0,\n    10.0,\n]",
        "eps = [\n    1.0,\n    4.0,\n]",
    )
    result = invoke("report", "--out", smoke_copy, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"{smoke_copy / 'config.toml'} does not match {smoke_copy / 'metrics.csv'}" in result.output
    )
    assert "the config asks for eps 4, which the metrics hold no rows of (they hold eps 1, 10" in (
        result.output
    )
    published_now = published(smoke_copy)
    published_now.pop("config.toml"), before.pop("config.toml")
    assert published_now == before


def test_report_warns_of_rows_the_config_leaves_out(smoke_copy):
    _set_eps(smoke_copy / "config.toml", "eps = [\n    1.0,\n    10.0,\n]", "eps = [\n    10.0,\n]")
    result = invoke("report", "--out", smoke_copy)
    assert "warning: metrics.csv also holds rows of eps 1 that config.toml does not ask for" in (
        result.output
    )
    assert "eps=1 " not in (smoke_copy / "tables" / "table1.md").read_text()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "apgd",
            "attack.gradient_free.name = 'apgd' needs gradients; choose a gradient-free "
            "attack: square (or set attack.gradient_free.queries = 0)",
        ),
        ("nope", "attack.gradient_free: unknown attack 'nope'"),
    ],
)
def test_a_gradient_free_attack_that_is_not_one_stops_before_any_work(name, message):
    config = apply_values(load_config("smoke"), {"attack.gradient_free.name": name})
    with pytest.raises(ConfigError) as err:
        check_run(config)
    assert message in str(err.value)
    check_run(apply_values(config, {"attack.gradient_free.queries": 0}))  # off: not checked


QUANTIZE = str(EXAMPLE.parent / "noisy_quantize.py") + ":NoisyQuantize"


def test_options_a_defense_does_not_take_stop_before_the_networks():
    extra = f'{{spec = "{QUANTIZE}", options = {{stride = 8}}}}'
    config = with_defenses(load_config("smoke"), [extra])
    with pytest.raises(DefenseError, match=r"with options \{'stride': 8\}: .*'stride'"):
        check_run(config)


def test_two_settings_of_one_class_without_row_names_are_told_to_name_them():
    extra = [f'{{spec = "{QUANTIZE}", options = {{step = {s}}}}}' for s in (8, 16)]
    config = with_defenses(load_config("smoke"), extra)
    with pytest.raises(
        DefenseError, match=r"both named 'noisy-quantize'.*name = \"noisy-quantize-2\""
    ):
        check_run(config)
