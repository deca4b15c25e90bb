"""The layer cake: imports only go down the floors listed below (and in the README's map of where
things live), and no module imports a cycle.

Floors, bottom up: errors/config -> data, models, metrics -> train, store, attacks, defenses ->
scoring, report -> the run context, probes -> stages -> cli. A module may import its own floor or
lower ones (never its own package's ``__init__``, which only re-exports), and the graph of
modules has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "attacks", "defenses")
FLOORS = [
    (
        "bench",
        "bench.errors",
        "bench.files",
        "bench.keys",
        "bench.config",
        "bench.devices",
        "bench.dist",
        "bench.plugins",
        "bench.registry",
        "bench.variants",
    ),
    ("bench.data", "bench.models", "bench.metrics"),
    ("bench.train", "bench.store", "attacks", "defenses"),
    ("bench.scoring", "bench.report", "bench.perf"),
    # the run context and the probes that the attacks stage plans with and the checks reuse
    ("bench.stages.context", "bench.stages.probes"),
    ("bench.stages",),
    ("bench.cli", "bench.__main__"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _floor(module: str) -> int:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    assert best is not None, f"{module} is on no floor; add it to FLOORS"
    return best[0]


def _imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` counts a.b when a.b is one)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    for target in GRAPH[module]:
        assert _floor(target) <= _floor(module), f"{module} imports {target}, a higher floor"
        package = module.rsplit(".", 1)[0] if MODULES[module].name != "__init__.py" else None
        assert target != package, f"{module} imports its own package's __init__ ({target})"


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in GRAPH[module]:
            if state.get(target) == 1:
                cycle = (
                    [*path[path.index(target) :], target] if target in path else [module, target]
                )
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
