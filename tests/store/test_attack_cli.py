"""``bench attack`` and ``bench perf attack`` on a hand-made run directory."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from attacks import LLCM
from bench.cli import main
from bench.config import NetConfig, load_config, save_run_config
from bench.data.cityscapes import CityscapesSegmentation
from bench.models import ERFNet
from bench.store import load_model, open_ae_set, save_model

from testdata import load_split


@pytest.fixture
def run_dir(tmp_path, toy_root):
    config = load_config("smoke")
    tiny = NetConfig("erfnet", {"width": 1})  # T and S as the checkpoints below are made
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, root=str(toy_root), size=(32, 64)),
        teacher=tiny,
        student=tiny,
    )
    save_run_config(config, tmp_path)
    for seed, name in enumerate("TS"):
        torch.manual_seed(seed)
        save_model(ERFNet(width=1), tmp_path / "models", name, "erfnet", {"width": 1})
    return tmp_path


def test_attack_builds_then_reuses(run_dir, toy_root):
    args = [
        "attack",
        "--run",
        str(run_dir),
        "--source",
        "T",
        "--eps",
        "1,2",
        "--subset",
        "mini_val",
        "--quiet",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "/mini_val/llcm/transfer/T/eps1: 2 images, built 2 images" in first.output
    assert "/mini_val/llcm/transfer/T/eps2: 2 images, built 2 images" in first.output
    second = CliRunner().invoke(main, args)
    assert second.output.count("reused") == 2
    images, _ = load_split(CityscapesSegmentation(toy_root, "mini_val", size=(32, 64)))
    model = load_model(run_dir / "models", "T", "erfnet", {"width": 1})
    stored = open_ae_set(run_dir / "aes", "/mini_val/llcm/transfer/T/eps2")
    assert torch.equal(stored.read(), LLCM()(model, images, eps=2))  # same batch (run's batch size)


def test_attack_errors_are_one_line(run_dir):
    bad_eps = CliRunner().invoke(main, ["attack", "--run", str(run_dir), "--eps", "1,-1"])
    assert bad_eps.exit_code == 1
    assert "attack.eps = [1.0, -1.0]: every eps must lie in (0, 255]" in bad_eps.output
    assert not (run_dir / "aes").exists()
    bad_name = CliRunner().invoke(main, ["attack", "--run", str(run_dir), "--attack", "cw"])
    assert bad_name.exit_code == 1
    assert "unknown attack 'cw'; choose from llcm, apgd, " in bad_name.output
    assert "Traceback" not in bad_name.output


def test_perf_attack_prints_both_ratios():
    result = CliRunner().invoke(
        main,
        [
            "perf",
            "attack",
            "--preset",
            "smoke",
            "--eps",
            "1",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "(a) native/reference" in result.output and "(b) ART/native" in result.output
    assert result.output.count("eps=1 (2 iterations, 2 images)") == 2  # T and S
    # APGD-CE, SegPGD and CosPGD on T, S and the joint objective
    assert result.output.count("(c) attack/floor") == 9
    assert all(f"{name} on joint T+S" in result.output for name in ("apgd-ce", "segpgd", "cospgd"))
