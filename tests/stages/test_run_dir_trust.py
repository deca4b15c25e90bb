"""A run directory is data: nothing in it decides what code runs.

Run directories are shared (their caches are the point), so their files may be hostile. A
checkpoint's metadata never decides what is imported or built (the config does, and the
metadata must agree), and a run's own ``config.toml`` may name built-in architectures and
built-in or installed defenses only, unless the user names the plug-in again on the command line
(``--trust-plugin``) or says the run is theirs (``--trust-run-code``). Each hostile file below
carries a payload that leaves a marker file when it runs: the marker must never appear.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import load_run_config, read_run_config
from bench.errors import ConfigError

from smokerun import EXAMPLE, invoke, run_args

PLUGIN = Path(__file__).with_name("plugin_nets.py")
FIX = "delete the checkpoint or retrain it (bench train --retrain)"
REFUSED = (
    "names code to import, and a run directory cannot choose code to run: name it again with "
    "--trust-plugin {spec!r}, or pass --trust-run-code if you wrote this run"
)


def _net_plugin(folder: Path, marker: Path) -> Path:
    """An architecture plug-in (a real ERFNet) that leaves ``marker`` when imported."""
    path = folder / "evilnet.py"
    path.write_text(
        f"from pathlib import Path\n\nPath({str(marker)!r}).touch()\n\n"
        "from bench.models import ERFNet  # noqa: E402, F401\n"
    )
    return path


def _defense_plugin(folder: Path, marker: Path) -> Path:
    """A defense plug-in that leaves ``marker`` when imported."""
    path = folder / "evildefense.py"
    path.write_text(
        f"from pathlib import Path\n\nPath({str(marker)!r}).touch()\n\n\n"
        "class Marked:\n"
        '    name = "marked"\n\n'
        "    def __init__(self, networks):\n"
        "        self.networks = networks\n\n"
        "    def predict(self, images):\n"
        "        raise NotImplementedError\n"
    )
    return path


def _edit_json(path: Path, **values: object) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


def _edit_config(run_dir: Path, old: str, new: str) -> None:
    path = run_dir / "config.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _one_line(result) -> str:
    """The one line of a refused command's error (exit status 1, no traceback; bench perf
    prints its settings line first)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines[-1].startswith("Error: "), result.output
    assert len(lines) == 1 or lines[0].startswith("smoke: images"), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def _attack(run_dir: Path, *extra: object, ok: bool = False):
    return invoke("attack", "--out", run_dir, "--device", "cpu", "--quiet", *extra, ok=ok)


def _perf(run_dir: Path, *extra: object):
    args = ["--eps", "1", "--batch-size", "1", "--repeats", "1", "--device", "cpu"]
    return invoke("perf", "attack", "--out", run_dir, *args, *extra, ok=False)


@pytest.mark.parametrize("name", ["T", "S"])
def test_hostile_checkpoint_metadata_is_one_line_before_anything_runs(smoke_copy, tmp_path, name):
    """T.json names ``os:system`` with a command as options, S.json a file plug-in (a working
    ERFNet): bench attack and bench perf attack refuse the checkpoint, naming file and key."""
    marker = tmp_path / "pwned"
    meta = smoke_copy / "models" / f"{name}.json"
    if name == "T":
        arch, wanted = "os:system", "deeplabv3plus"
        _edit_json(meta, arch=arch, options={"command": f"touch {marker}"})
    else:
        arch, wanted = f"{_net_plugin(tmp_path, marker)}:ERFNet", "erfnet"
        _edit_json(meta, arch=arch)
    expected = f"Error: {meta} names arch {arch!r} but the config asks for {wanted!r}; {FIX}"
    trusted = ("--trust-plugin", f"{EXAMPLE}:PixelVote")  # the smoke run's own defense plug-in
    assert _one_line(_attack(smoke_copy, *trusted)) == expected
    assert _one_line(_perf(smoke_copy, *trusted)) == expected
    assert not marker.exists()


def test_hostile_checkpoints_are_trained_anew_by_bench_run(smoke_copy, tmp_path):
    """T.json names ``os:system`` with a command, S.json a file plug-in, both with the right
    cache key: neither is reusable, both are trained anew, and no payload runs."""
    marker = tmp_path / "pwned"
    models = smoke_copy / "models"
    _edit_json(models / "T.json", arch="os:system", options={"command": f"touch {marker}"})
    _edit_json(models / "S.json", arch=f"{_net_plugin(tmp_path, marker)}:ERFNet")
    output = invoke(*run_args(smoke_copy)).output
    assert "T 0.0% (trained" in output and "S 1.4% (trained" in output, output
    assert not marker.exists()
    assert json.loads((models / "T.json").read_text())["arch"] == "deeplabv3plus"
    assert json.loads((models / "S.json").read_text())["arch"] == "erfnet"


@pytest.mark.parametrize("key", ["teacher.arch", "student.arch", "evaluate.defenses"])
def test_a_run_config_naming_code_is_refused(smoke_copy, tmp_path, key):
    """bench attack and bench perf attack refuse, before importing anything; bench report
    imports none of the code a config names (it refuses a defense that has no rows)."""
    marker = tmp_path / "pwned"
    if key == "teacher.arch":
        spec = "os:system"
        _edit_config(smoke_copy, '[teacher]\narch = "deeplabv3plus"', f'[teacher]\narch = "{spec}"')
        _edit_config(
            smoke_copy, "[teacher.options]\n", f'[teacher.options]\ncommand = "touch {marker}"\n'
        )
    elif key == "student.arch":
        spec = f"{_net_plugin(tmp_path, marker)}:ERFNet"
        _edit_config(smoke_copy, '[student]\narch = "erfnet"', f'[student]\narch = "{spec}"')
    else:
        spec = f"{_defense_plugin(tmp_path, marker)}:Marked"
        _edit_config(smoke_copy, '"feature-squeezing",\n', f'"feature-squeezing",\n    "{spec}",\n')
    pixel_vote = ("--trust-plugin", f"{EXAMPLE}:PixelVote")
    expected = f"Error: {smoke_copy / 'config.toml'}: {key} = {spec!r} " + REFUSED.format(spec=spec)
    assert _one_line(_attack(smoke_copy, *pixel_vote)) == expected
    assert _one_line(_perf(smoke_copy, *pixel_vote)) == expected
    assert not marker.exists()
    report = invoke("report", "--out", smoke_copy, ok=key != "evaluate.defenses")
    if key == "evaluate.defenses":  # a defense the metrics hold no rows of: refused as such
        assert "does not match" in _one_line(report)
    else:
        assert "report: " in report.output
    assert not marker.exists()


def test_the_plugin_named_again_or_a_trusted_run_still_works(smoke_copy, tmp_path, monkeypatch):
    """Positive controls: the smoke run names a defense plug-in of its own (the example), so
    bench attack refuses it until it is named again or the run is trusted; a plug-in named
    again by a path relative to here is the same code."""
    example = f"{EXAMPLE}:PixelVote"
    assert _one_line(_attack(smoke_copy)) == (
        f"Error: {smoke_copy / 'config.toml'}: evaluate.defenses = {example!r} "
        + REFUSED.format(spec=example)
    )
    marker = tmp_path / "imported"
    spec = f"{_defense_plugin(tmp_path, marker)}:Marked"
    _edit_config(smoke_copy, '"feature-squeezing",\n', f'"feature-squeezing",\n    "{spec}",\n')
    assert "evaluate.defenses = " in _one_line(_attack(smoke_copy, "--trust-plugin", example))
    assert not marker.exists()
    output = _attack(smoke_copy, "--trust-plugin", example, "--trust-plugin", spec, ok=True)
    assert "reused" in output.output and marker.exists()  # the trusted plug-in was imported
    marker.unlink()
    monkeypatch.chdir(tmp_path)
    relative = ("--trust-plugin", "evildefense.py:Marked")
    assert _attack(smoke_copy, "--trust-plugin", example, *relative, ok=True).exit_code == 0
    marker.unlink()
    assert _attack(smoke_copy, "--trust-run-code", ok=True).exit_code == 0
    assert marker.exists()


def test_load_run_config_trusts_what_the_caller_names(smoke_copy):
    example = f"{EXAMPLE}:PixelVote"
    with pytest.raises(ConfigError, match=r"evaluate\.defenses = .*names code to import"):
        load_run_config(smoke_copy)
    config = load_run_config(smoke_copy, trusted_specs=[example])
    assert config == load_run_config(smoke_copy, trust_code=True) == read_run_config(smoke_copy)
