"""The command line: user errors are one clear line (exit 1 or 2), never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import BenchError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--preset", "nope"],
            "no preset 'nope'; pass a .toml file or one of: cityscapes, smoke",
        ),
        (
            ["train", "--preset", "smoke", "--data", "/no/such/dir"],
            "data root /no/such/dir does not exist",
        ),
        (
            ["train", "--preset", "smoke", "--set", "pretrain.epochz=1"],
            "unknown key 'pretrain.epochz'",
        ),
        (["train", "--preset", "smoke", "--net", "X"], "unknown network 'X'; choose from T, S, A"),
        (["data", "toycity", "--out", "x", "--size", "big"], "is not HxW"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_ifm_layer_is_named(toy_root, tmp_path):
    from bench.models import ERFNet
    from bench.store import save_model

    run = tmp_path / "run"
    for name in ("T", "S"):
        save_model(ERFNet(width=1), run / "models", name, "erfnet", {"width": 1})
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--preset",
            "smoke",
            "--data",
            str(toy_root),
            "--run",
            str(run),
            "--net",
            "A",
            "--layers",
            "down4",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    assert "unknown layer 'down4'" in result.output and "down1, down2, down3" in result.output


@pytest.mark.parametrize("debug", [False, True], ids=["one-line", "BENCH_DEBUG"])
def test_a_broken_plugin_keeps_its_own_exception_for_debugging(debug, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text("RATIO = 1 / 0\n")
    if debug:
        monkeypatch.setenv("BENCH_DEBUG", "1")
    else:
        monkeypatch.delenv("BENCH_DEBUG", raising=False)
    args = ["run", "--preset", "smoke", "--out", "run", "--quiet", "--defense", "broken.py:Thing"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    if debug:  # the traceback of the plug-in's own error, under the one-line message
        assert isinstance(result.exception, BenchError)
        assert isinstance(result.exception.__cause__, ZeroDivisionError)
    else:
        assert result.output.strip().count("\n") == 0
        assert "importing broken.py failed with ZeroDivisionError" in result.output
        assert "Traceback" not in result.output


def test_train_help_names_the_student_taps():
    from bench.models import ERFNet

    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    assert ", ".join(ERFNet.tap_names()) in " ".join(result.output.split())
