"""Bring your own networks: weights files with the official key layouts, and architectures of
the user's own, through ``bench run`` on the smoke settings."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.config import (
    STATIC_NETS,
    AdversarialConfig,
    adaptive_students,
    load_config,
    train_values,
)
from bench.models import ERFNet
from bench.stages.context import RunContext, RunNetworks
from bench.stages.data_tree import data_reads, prepare_data
from bench.stages.defense_rows import _networks_for
from bench.stages.networks import REFERENCE_DIR, adaptive_key, robust_key, static_key
from bench.store.checkpoints import check_meta, load_meta
from bench.store.rundir import RunDir

from smokerun import EXAMPLE, invoke, run_args

PLUGIN = Path(__file__).with_name("plugin_nets.py")


def test_an_official_20_class_erfnet_checkpoint_is_imported(smoke_copy, tmp_path):
    torch.manual_seed(5)
    official = ERFNet(num_classes=20, width=1)
    path = tmp_path / "erfnet_pretrained.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}, path)
    output = invoke(*run_args(smoke_copy, "--set", f"student.weights='{path}'")).output
    assert "S " in output and "(imported)" in output
    meta = json.loads((smoke_copy / "models" / "S.json").read_text())
    assert meta["info"]["imported_from"] == "erfnet_pretrained.pth"
    weights = torch.load(smoke_copy / "models" / "S.pt", weights_only=True)
    expected = official.state_dict()["decoder.output_conv.weight"][:, :19]
    assert torch.equal(weights["decoder.output_conv.weight"], expected)  # void channel cut
    config = (smoke_copy / "config.toml").read_text()
    assert "erfnet_pretrained.pth" in config and str(tmp_path) not in config  # relative path
    again = invoke(*run_args(smoke_copy, "--set", f"student.weights='{path}'")).output
    assert "S " in again and "(cached)" in again


def test_an_architecture_of_the_users_own_runs_the_benchmark(smoke_copy):
    output = invoke(
        *run_args(
            smoke_copy,
            "--set",
            f"teacher.arch='{PLUGIN}:build'",
            "--set",
            "teacher.options={width=4}",
            "--set",
            f"student.arch='{PLUGIN}:build'",
            "--set",
            "student.options={width=4}",
            "--set",
            "finetune.layers=['body.2']",
            "--set",
            "sweep.baseline=false",
        )
    ).output
    assert "T " in output and "trained" in output
    meta = json.loads((smoke_copy / "models" / "A_body.2_a0.6_e1_bs4.json").read_text())
    assert meta["arch"].endswith("plugin_nets.py:build")
    # bench attack builds T and S from the run's config.toml: its plug-ins named again
    attack = ("attack", "--out", smoke_copy, "--device", "cpu", "--quiet")
    refused = invoke(*attack, ok=False).output
    assert f"teacher.arch = '{PLUGIN}:build' names code to import" in refused
    trusted = ["--trust-plugin", f"{PLUGIN}:build", "--trust-plugin", f"{EXAMPLE}:PixelVote"]
    assert "reused" in invoke(*attack, *trusted).output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["student.weights='/no/such.pth'"], "student.weights = '/no/such.pth': no such file"),
        (
            [f"teacher.arch='{PLUGIN}:build_ten_classes'", "teacher.options={}"],
            "returns 10 classes",
        ),
        (
            [f"teacher.arch='{PLUGIN}:build_half_size'", "teacher.options={}"],
            "returns logits of 16x32 for a 32x64 input",
        ),
        (["student.backbone='{tmp}/x.pth'"], "no such file"),
        ([f"teacher.arch='{PLUGIN}:missing'"], "has no 'missing'"),
    ],
    ids=["no-file", "classes", "output-size", "backbone-file", "no-factory"],
)
def test_bad_networks_are_one_line_before_any_work(smoke_copy, tmp_path, values, message):
    args = [a for v in values for a in ("--set", v.replace("{tmp}", str(tmp_path)))]
    result = invoke(*run_args(smoke_copy, *args), ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "[data]" not in result.output and "Traceback" not in result.output


def test_a_checkpoint_of_another_architecture_lists_the_keys(smoke_copy, tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save(ERFNet(width=2).state_dict(), path)
    result = invoke(*run_args(smoke_copy, "--set", f"student.weights='{path}'"), ok=False)
    assert result.exit_code == 1 and "does not fit ERFNet: other shapes:" in result.output
    assert "is it the architecture and options the preset names?" in result.output
    assert (
        "set student.options (now {'width': 1}) to the options the file was made" in result.output
    )


def test_weights_made_with_the_default_options_name_the_option_to_set(smoke_copy, tmp_path):
    path = tmp_path / "erfnet_default.pt"
    torch.save(ERFNet().state_dict(), path)
    result = invoke(*run_args(smoke_copy, "--set", f"student.weights='{path}'"), ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "the file fits erfnet with its default options, not the preset's {'width': 1}: set them "
        "with --set 'student.options={}'" in result.output
    )


def test_the_toy_preset_uses_the_shipped_reference_networks(tmp_path):
    """A new setting of the pretraining or of the networks must not silently change the keys of
    the toy preset's shipped networks: every user would then train them anew (half an hour)."""
    config = load_config("toy")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=tmp_path))
    prepare_data(config, progress=False)  # the toy city exactly as bench run draws it
    ctx = RunContext.open(config, RunDir(tmp_path / "run"), torch.device("cpu"), progress=False)
    for name in STATIC_NETS:
        meta = load_meta(REFERENCE_DIR / "toy", name)
        assert static_key(ctx, name) == meta.info["key"]
        net = config.net(name)  # installed only when its metadata agrees with the config too
        check_meta(REFERENCE_DIR / "toy", name, meta, net.arch, net.options)
    # the adaptive students (A and the baseline of [6]) too: their keys name T's and S's weights
    ctx.run.models.mkdir(parents=True)
    for name in STATIC_NETS:
        for suffix in (".pt", ".json"):
            shutil.copy(REFERENCE_DIR / "toy" / f"{name}{suffix}", ctx.run.models)
    students = adaptive_students(config)
    for settings in (students.main, *students.extra):
        meta = load_meta(REFERENCE_DIR / "toy", settings.checkpoint_name)
        assert adaptive_key(ctx, settings) == meta.info["key"]
        check_meta(
            REFERENCE_DIR / "toy", meta.name, meta, config.student.arch, config.student.options
        )
    # and the adversarially trained AT: its key names S's weights and the adversarial section
    meta = load_meta(REFERENCE_DIR / "toy", "AT")
    assert robust_key(ctx) == meta.info["key"]
    check_meta(REFERENCE_DIR / "toy", "AT", meta, config.student.arch, config.student.options)


#: a value other than the default for every setting of the adversarial section
OTHER_ADVERSARIAL = {
    "base": "T",
    "eps": 8.0,
    "steps": 5,
    "step": 1.0,
    "clean_weight": 0.5,
    "epochs": 3,
    "batch_size": 2,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "poly_power": 1.0,
    "workers": 1,
}


def _smoke_context(run_dir: Path, **adversarial: object) -> RunContext:
    config = load_config("smoke")
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, root=str(run_dir.parent / "data")),
        adversarial=dataclasses.replace(config.adversarial, **adversarial),
    )
    return RunContext.open(config, RunDir(run_dir), torch.device("cpu"), progress=False)


def test_the_adversarial_recipe_key_changes_with_every_setting(smoke_copy):
    assert set(OTHER_ADVERSARIAL) == {f.name for f in dataclasses.fields(AdversarialConfig)}
    keys = {robust_key(_smoke_context(smoke_copy))}
    for name, value in OTHER_ADVERSARIAL.items():
        keys.add(robust_key(_smoke_context(smoke_copy, **{name: value})))
    assert len(keys) == 1 + len(OTHER_ADVERSARIAL)
    # and with the weights it starts from
    before = robust_key(_smoke_context(smoke_copy))
    meta = json.loads((smoke_copy / "models" / "S.json").read_text())
    meta["sha256"] = "0" * 64
    (smoke_copy / "models" / "S.json").write_text(json.dumps(meta))
    assert robust_key(_smoke_context(smoke_copy)) != before


def test_bench_train_trains_at_from_its_base_and_reuses_it(smoke_copy, tmp_path):
    data = f"data.root={smoke_copy.parent / 'data'}"
    args = ["train", "--preset", "smoke", "--set", data, "--device", "cpu", "--quiet"]
    fresh = tmp_path / "fresh"
    missing = invoke(*args, "--out", fresh, "--net", "AT", ok=False)
    assert missing.exit_code != 0 and len(missing.output.strip().splitlines()) == 1
    assert "AT starts from S (adversarial.base), which the run lacks" in missing.output
    assert "bench train --net S,AT" in missing.output
    done = invoke(*args, "--out", fresh, "--net", "S,AT").output
    assert "AT: erfnet" in done and "trained in" in done
    meta = json.loads((fresh / "models" / "AT.json").read_text())
    assert meta["info"]["adversarial"]["eps"] == 4.0
    assert (
        meta["info"]["base_sha256"]
        == json.loads((fresh / "models" / "S.json").read_text())["sha256"]
    )
    again = invoke(*args, "--out", fresh, "--net", "AT").output
    assert "reused (valid checkpoint in the run)" in again
    other = invoke(*args, "--out", fresh, "--net", "AT", "--set", "adversarial.eps=2").output
    assert "trained in" in other


def test_at_is_given_only_to_the_defenses_that_read_it():
    """An existing plug-in that iterates over its networks (no ``needs``) keeps getting T, S and
    A, and its row's key stays the same, when another defense makes the run train AT."""
    memos = {role: torch.nn.Identity() for role in ("T", "S", "A", "AT")}
    networks = RunNetworks(memos, {role: role.lower() for role in memos}, {})
    assert set(_networks_for("TA-vote", networks)) == {"T", "S", "A"}
    assert set(_networks_for(f"{EXAMPLE}:PixelVote", networks)) == {"T", "S", "A"}
    assert set(_networks_for("TAT-vote", networks)) == {"T", "S", "A", "AT"}
    assert set(_networks_for("AT", networks)) == {"T", "S", "A", "AT"}


def test_bench_train_checks_the_training_split_for_at_even_with_imported_t_and_s():
    config = load_config("smoke")
    imported = dataclasses.replace(
        config,
        teacher=dataclasses.replace(config.teacher, weights="t.pt"),
        student=dataclasses.replace(config.student, weights="s.pt"),
    )
    train = (config.data.train_split, True)
    assert train not in data_reads(imported, robust=False)
    assert train in data_reads(imported, robust=True)
    assert train_values(epochs=2)["adversarial.epochs"] == 2  # bench train --epochs
