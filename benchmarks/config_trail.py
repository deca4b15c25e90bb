"""How far the run's config travels: follow it call by call through one ``bench run``.

Runs ``bench run --preset smoke`` in this process under ``sys.setprofile`` and records every call
of a project function (bench/, attacks/, defenses/) that receives the run's config, directly or
inside another argument that holds it (the run context). Methods of the config itself
(``config.net(...)``) and of the object that carries it (the context's accessors) do not count:
they are the carrier, not a stop on the trail. Prints:

- stays: such calls, in order;
- rooms: the modules they happen in (and how many distinct functions);
- climbs back: calls that re-enter a module the trail had already left (a stage returning to
  the data stage for its datasets counts once per return);
- per module, how often the trail enters it.

    PYTHONPATH=. python benchmarks/config_trail.py [--out DIR]

Used to measure the structure issue's goal (about half the stays and climbs of before); run it
on two checkouts to compare.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

PACKAGES = ("bench", "attacks", "defenses")


def _holds(value: object, config: object) -> bool:
    # the instance's own attributes only: a getattr could run a half-built object's __getattr__
    return value is config or getattr(value, "__dict__", {}).get("config") is config


def trail(out: Path) -> list[tuple[str, str]]:
    """(module, function) of every call that receives the run's config, in order."""
    import bench.stages.run as root
    from bench.config import load_config
    from bench.devices import resolve_device

    config = load_config("smoke")
    calls: list[tuple[str, str]] = []

    def profile(frame, event, _arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in PACKAGES:
            return
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(n) for n in names]
        if names and names[0] == "self" and _holds(values[0], config):
            return  # a method of the config itself or of its carrier
        if any(_holds(v, config) for v in values):
            calls.append((module, code.co_name))

    sys.setprofile(profile)
    try:
        root.run_benchmark(config, out, device=resolve_device("cpu"), progress=False, echo=print)
    finally:
        sys.setprofile(None)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="run directory [default: a temporary one]")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp()) / "smoke"
    calls = trail(out)
    modules = [m for m, _ in calls]
    entries = Counter()
    left: set[str] = set()
    climbs = 0
    for i, module in enumerate(modules):
        if i and module == modules[i - 1]:
            continue
        entries[module] += 1
        if module in left:
            climbs += 1
        if i:
            left.add(modules[i - 1])
    print(
        f"stays {len(calls)} (in {len(set(calls))} functions), rooms {len(set(modules))}, "
        f"climbs back {climbs}"
    )
    for module, count in entries.most_common():
        print(f"  {count:4d}  {module}")


if __name__ == "__main__":
    main()
