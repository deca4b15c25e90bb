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


def _run_options(func):
    """Options shared by the commands that work on a run directory."""
    for option in reversed(
        [
            click.option("--preset", default="toy", show_default=True,
                         help="Preset name (toy, smoke, ...) or a .toml file."),
            click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path),
                         help="Run directory [default: results/<preset name>]."),
            click.option("--data", "data_root", type=click.Path(path_type=Path),
                         help="Cityscapes-layout data root (overrides the preset's data.root)."),
            click.option("--device", default="auto", show_default=True,
                         help="cpu, cuda, cuda:N, or auto (cuda when available)."),
            click.option("--seed", type=int, help="Overrides the preset's seed."),
            click.option("--quiet", is_flag=True, help="No progress bars."),
        ]
    ):
        func = option(func)
    return func


def _resolve(preset: str, run_dir: Path | None, data_root: Path | None, seed: int | None):
    import dataclasses

    from bench.config import load_config
    from bench.stages import resolve_data_root

    config = load_config(preset)
    if data_root is not None:
        # A user's own data is never overwritten by a generated toy city.
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, root=str(data_root), toycity=False)
        )
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    return resolve_data_root(config), run_dir or Path("results") / config.name


@main.command()
@_run_options
@click.option("--net", "nets", default="T,S", show_default=True,
              help="Comma-separated networks to train: T (teacher), S (static student).")
@click.option("--epochs", type=int, help="Overrides pretrain.epochs of the preset.")
@click.option("--retrain", is_flag=True, help="Train even when a valid checkpoint exists.")
def train(preset, run_dir, data_root, device, seed, quiet, nets, epochs, retrain) -> None:
    """Pretrain the static teacher T and static student S on the labelled split."""
    import dataclasses

    from bench.stages import open_run, prepare_data, train_static
    from bench.train import resolve_device

    config, run_dir = _resolve(preset, run_dir, data_root, seed)
    if epochs is not None:
        config = dataclasses.replace(
            config, pretrain=dataclasses.replace(config.pretrain, epochs=epochs)
        )
    names = [n.strip() for n in nets.split(",") if n.strip()]
    torch_device = resolve_device(device)
    prepare_data(config, progress=not quiet)
    run_dir = open_run(config, run_dir)
    for name in names:
        record, trained = train_static(
            config, run_dir, name, device=torch_device, retrain=retrain, progress=not quiet
        )
        info = record.info
        miou = info[f"miou_{config.data.val_subset}"]
        what = f"trained in {info['train_seconds']:.0f} s" if trained else "reused (valid checkpoint)"
        click.echo(
            f"{name}: {record.arch}, {info['parameters'] / 1e6:.2f} M parameters, {what}; "
            f"clean mIoU on {config.data.val_subset}: {100 * miou:.1f}%  -> {run_dir / 'models' / name}.pt"
        )
