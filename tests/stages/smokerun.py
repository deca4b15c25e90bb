"""Helpers of the stage tests: run the CLI, the smoke run's arguments, published files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner, Result

from bench.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_defense.py"
PUBLISHED = ("config.toml", "metrics.csv", "records.csv", "qualitative.npz", "report.md")


def invoke(*args: object, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def run_args(run_dir: Path, *extra: object) -> list[object]:
    """``bench run`` of the session's smoke run (same data, same plug-in) into ``run_dir``."""
    data = run_dir.parent / "data"
    return [
        "run",
        "--preset",
        "smoke",
        "--out",
        run_dir,
        "--set",
        f"data.root={data}",
        "--device",
        "cpu",
        "--quiet",
        "--defense",
        f"{EXAMPLE}:PixelVote",
        *extra,
    ]


def published(run_dir: Path) -> dict[str, str]:
    """sha256 of every published file of a run (what a failed run must never change)."""
    files = [run_dir / name for name in PUBLISHED]
    files += sorted((run_dir / "tables").glob("*")) + sorted((run_dir / "plots").glob("*"))
    return {
        str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in files
        if f.is_file()
    }
