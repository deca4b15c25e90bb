"""The ``bench`` command line: parsing only, one library call per command.

Errors the user can fix (``BenchError``, ``ValueError`` from validation) are printed as one line;
set ``BENCH_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from bench.errors import BenchError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (BenchError, ValueError) as err:
            if os.environ.get("BENCH_DEBUG"):
                raise
            raise click.ClickException(str(err)) from None


def _size(value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 128x256") from None
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"{value!r}: height and width must be positive")
    return h, w


@click.group(cls=_Group)
@click.version_option(package_name="segrobust-bench")
def main() -> None:
    """Adversarial robustness of semantic segmentation: train, attack, defend, report."""


@main.group(cls=_Group)
def data() -> None:
    """Generate or inspect data sets in the Cityscapes layout."""


@main.group(cls=_Group)
def perf() -> None:
    """Benchmarks that print speed ratios measured side by side in one run."""


# --- commands are added below, one block per stage -------------------------------------------
