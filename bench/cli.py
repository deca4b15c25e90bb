"""The ``bench`` command line: parsing only, one library call per command.

Errors the user can fix (``BenchError``, ``ValueError`` from validation) are printed as one line;
set ``BENCH_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import dataclasses
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


@data.command("toycity")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New (or empty) folder for the Cityscapes-layout tree.")
@click.option("--seed", default=0, show_default=True, help="Same seed -> byte-identical files.")
@click.option("--size", "size", default="128x256", show_default=True, callback=lambda c, p, v: _size(v),
              help="Image size HxW.")
@click.option("--train", default=500, show_default=True, help="Labelled training images.")
@click.option("--train-extra", default=500, show_default=True,
              help="Unlabelled finetuning images (coarse labels, never used to train).")
@click.option("--val-per-city", default=30, show_default=True,
              help="val images per city: lindau = mini_val, frankfurt + munster = mini_test.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def toycity(out, seed, size, train, train_extra, val_per_city, quiet) -> None:
    """Generate the toy city: procedural street scenes in the exact Cityscapes layout."""
    from bench.data.toycity import generate_toycity

    generate_toycity(
        out, seed=seed, size=size, train=train, train_extra=train_extra,
        val_per_city=val_per_city, progress=not quiet,
    )
    click.echo(f"toy city ({train} train, {train_extra} train_extra, {3 * val_per_city} val) in {out}")


def _run_options(func):
    """Options shared by the commands that work on a run directory."""
    for option in reversed(
        [
            click.option("--preset", default="toy", show_default=True,
                         help="Preset name (toy, smoke, toy-full, cityscapes) or a .toml file."),
            click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path),
                         help="Run directory [default: results/<preset name>]."),
            click.option("--data", "data_root", type=click.Path(path_type=Path),
                         help="Cityscapes-layout data root (overrides the preset's data.root)."),
            click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override a preset value, e.g. --set finetune.alpha=0.7 (repeatable)."),
            click.option("--device", default="auto", show_default=True,
                         help="cpu, cuda, cuda:N, or auto (cuda when available)."),
            click.option("--seed", type=int, help="Overrides the preset's seed."),
            click.option("--quiet", is_flag=True, help="No progress bars."),
        ]
    ):
        func = option(func)
    return func


def _resolve(preset: str, run_dir: Path | None, data_root: Path | None, overrides, seed: int | None):
    """The run's config (preset + --data + --set + --seed) and its directory."""
    from bench.config import apply_overrides, load_config
    from bench.stages import resolve_data_root

    config = apply_overrides(load_config(preset), list(overrides))
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
              help="Comma-separated networks: T (teacher), S (static student), A (adaptive "
                   "student, finetuned from S with J_TS' on the unlabelled split).")
@click.option("--epochs", type=int,
              help="Overrides pretrain.epochs (T, S) and finetune.epochs (A).")
@click.option("--layers", help="A: IFM' layers, comma-separated tap or group names "
                               "(down1..3, up1..2, down, up, rest, all) [default: down2].")
@click.option("--alpha", type=float, help="A: the loss weight alpha of eq. 8 [default: 0.6].")
@click.option("--retrain", is_flag=True, help="Train even when a valid checkpoint exists.")
def train(preset, run_dir, data_root, overrides, device, seed, quiet, nets, epochs, layers,
          alpha, retrain) -> None:
    """Pretrain T and S on the labelled split; finetune A (--net A) on the unlabelled one."""
    from bench.stages import (
        STATIC_NETS, finetune_adaptive_student, open_run, prepare_data, train_static,
    )
    from bench.train import resolve_device

    config, run_dir = _resolve(preset, run_dir, data_root, overrides, seed)
    finetune = config.finetune
    if layers:
        finetune = dataclasses.replace(finetune, layers=tuple(s.strip() for s in layers.split(",")))
    if alpha is not None:
        finetune = dataclasses.replace(finetune, alpha=alpha)
    if epochs is not None:
        finetune = dataclasses.replace(finetune, epochs=epochs)
        config = dataclasses.replace(
            config, pretrain=dataclasses.replace(config.pretrain, epochs=epochs)
        )
    names = [n.strip() for n in nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in (*STATIC_NETS, "A")]
    if unknown:
        raise click.UsageError(f"unknown network {unknown[0]!r} for --net; choose from T, S, A")
    torch_device = resolve_device(device)
    prepare_data(config, progress=not quiet)
    run_dir = open_run(config, run_dir)
    for name in names:
        if name == "A":
            record, origin = finetune_adaptive_student(
                config, run_dir, finetune, device=torch_device, retrain=retrain, progress=not quiet
            )
        else:
            record, origin = train_static(
                config, run_dir, name, device=torch_device, retrain=retrain, progress=not quiet
            )
        info = record.info
        miou = info[f"miou_{config.data.val_subset}"]
        what = {
            "trained": f"trained in {info['train_seconds']:.0f} s",
            "cached": "reused (valid checkpoint in the run)",
            "reference": "the shipped reference checkpoint (--retrain trains anew)",
        }[origin]
        click.echo(
            f"{record.name}: {record.arch}, {info['parameters'] / 1e6:.2f} M parameters, {what}; "
            f"clean mIoU on {config.data.val_subset}: {100 * miou:.1f}%  "
            f"-> {run_dir / 'models' / record.name}.pt"
        )


@main.command()
@_run_options
@click.option("--defense", "extra_defenses", multiple=True, metavar="SPEC",
              help="An extra defense to rank: package.module:Class, path/file.py:Class or an "
                   "entry-point name of the group bench.defenses (repeatable).")
@click.option("--retrain", is_flag=True, help="Retrain every network, ignoring checkpoints.")
def run(preset, run_dir, data_root, overrides, device, seed, quiet, extra_defenses, retrain) -> None:
    """Run the whole benchmark: data, networks, AE sets, defenses, tables, plots, report."""
    from bench.stages import run_benchmark
    from bench.train import resolve_device

    config, run_dir = _resolve(preset, run_dir, data_root, overrides, seed)
    report = run_benchmark(
        config, run_dir, device=resolve_device(device), extra_defenses=extra_defenses,
        retrain=retrain, progress=not quiet, echo=click.echo,
    )
    click.echo(f"report: {report}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A run directory (holding metrics.csv).")
def report(run_dir: Path) -> None:
    """Regenerate tables, plots and report.md of a run from its stored metrics alone."""
    from bench.report import write_report

    click.echo(f"report: {write_report(run_dir)}")


def _eps_list(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, ...] | None:
    from attacks.base import AttackError, check_eps

    if value is None:
        return None
    try:
        return tuple(check_eps(v) for v in value.split(",") if v.strip())
    except AttackError as err:
        raise click.BadParameter(str(err)) from None


@main.command()
@click.option("--run", "run_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A run directory holding config.toml and models/ (bench train).")
@click.option("--source",
              help="Comma-separated attacked networks, T and/or S [default: the run's].")
@click.option("--eps", callback=_eps_list, help="Comma-separated eps in gray values, e.g. 1,10 "
                                                "[default: the run's].")
@click.option("--attack", "attack_name",
              help="llcm (paper), fgsm, bim, pgd, mifgsm [default: the run's].")
@click.option("--subset", help="Comma-separated splits, e.g. mini_val [default: the run's].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per batch [default: the run's].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (cuda when available).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def attack(run_dir, source, eps, attack_name, subset, batch_size, device, quiet) -> None:
    """Build (or reuse, or finish) the AE sets of a run in <run>/aes.h5."""
    from bench.config import load_config
    from bench.stages import build_ae_sets
    from bench.train import resolve_device

    config = load_config(run_dir / "config.toml")
    settings = config.attack
    if attack_name and attack_name != settings.name:  # the run's options belong to its attack
        settings = dataclasses.replace(settings, name=attack_name, options={})
    overrides = {"sources": source, "subsets": subset}
    settings = dataclasses.replace(
        settings,
        **{k: tuple(s.strip() for s in v.split(",") if s.strip())
           for k, v in overrides.items() if v},
        **({"eps": eps} if eps else {}),
        **({"batch_size": batch_size} if batch_size else {}),
    )
    config = dataclasses.replace(config, attack=settings)
    sets = build_ae_sets(config, run_dir, device=resolve_device(device), progress=not quiet)
    for ae_set in sets.values():
        what = f"built {ae_set.built} images" if ae_set.built else "reused"
        click.echo(f"{ae_set.name}: {len(ae_set)} images, {what} -> {ae_set.path}")


@perf.command("attack")
@click.option("--preset", default="toy", show_default=True,
              help="Networks and image size of this preset.")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Time a run's trained T and S instead of freshly initialised ones.")
@click.option("--eps", callback=_eps_list, default="1,10", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1),
              help="[default: the preset's attack batch size]")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (cuda when available).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch [default: torch's]; 1 is steadiest on a shared machine.")
def perf_attack_command(preset, run_dir, eps, batch_size, repeats, device, threads) -> None:
    """LLCM vs its floor (n_iter x (forward + input backward) + 1 forward) and vs ART's BIM."""
    from bench.config import load_config
    from bench.perf import run_perf_attack
    from bench.train import resolve_device

    config = load_config(run_dir / "config.toml" if run_dir else preset)
    run_perf_attack(
        config, device=resolve_device(device), run_dir=run_dir, eps=eps, batch_size=batch_size,
        repeats=repeats, threads=threads, echo=click.echo,
    )
