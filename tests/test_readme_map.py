"""The README's map of where things live stays true: every path it names exists, and every
module of the stages is on it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _map_paths() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # past the head
    paths = [p for row in rows for p in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[1])]
    return [p for p in paths if "/" in p or p.endswith(".py")]


def test_every_path_on_the_map_exists():
    paths = _map_paths()
    assert len(paths) > 30  # the table was found and read
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the README's map names paths that do not exist: {missing}"


def test_every_stage_module_is_on_the_map():
    named = set(_map_paths())
    stages = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "bench" / "stages").glob("*.py")
        if p.name != "__init__.py"
    }
    assert not stages - named, f"stage modules missing from the README's map: {stages - named}"
