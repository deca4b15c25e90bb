"""The ``bench`` command line: parsing only, one library call per command.

Errors the user can fix (``BenchError``) are printed as one line and exit with status 1; set
``BENCH_DEBUG=1`` to see the traceback instead. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from bench.errors import BenchError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            result = super().invoke(ctx)
        except BenchError as err:
            if os.environ.get("BENCH_DEBUG"):
                raise
            rank = int(os.environ.get("RANK", "0"))  # set by torchrun: say which rank failed
            prefix = f"rank {rank}: " if rank else ""
            raise click.ClickException(prefix + str(err)) from None
        _leave_process_group()
        return result


def _leave_process_group() -> None:
    """The processes of a torchrun launch leave their group after a command that succeeded
    (NCCL warns of a group never destroyed otherwise). A failed one just exits: leaving would
    wait for ranks still inside a collective, and torchrun stops them all anyway."""
    dist = sys.modules.get("bench.dist")  # loaded only by the commands that can run in one
    if dist is not None:
        dist.shutdown()


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW, e.g. 128x256") from None
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"{value!r}: height and width must be positive")
    return h, w


def _names(value: str | None) -> tuple[str, ...] | None:
    """``"T, S"`` -> ("T", "S"); None stays None."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _eps_list(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in _names(value) or ())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


def _device(ctx: click.Context, param: click.Parameter, value: str):
    from bench.devices import resolve_device

    try:
        return resolve_device(value)
    except BenchError as err:
        raise click.BadParameter(str(err)) from None


_device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help="cpu, cuda, cuda:N, or auto (cuda when available).",
)


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


@data.command("toycity")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New (or empty) folder for the Cityscapes-layout tree.",
)
@click.option("--seed", default=0, show_default=True, help="Same seed -> byte-identical files.")
@click.option(
    "--size", "size", default="128x256", show_default=True, callback=_size, help="Image size HxW."
)
@click.option("--train", default=500, show_default=True, help="Labelled training images.")
@click.option(
    "--train-extra",
    default=500,
    show_default=True,
    help="Unlabelled finetuning images (coarse labels, never used to train).",
)
@click.option(
    "--val-per-city",
    default=30,
    show_default=True,
    help="val images per city: lindau = mini_val, frankfurt + munster = mini_test.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def toycity(out, seed, size, train, train_extra, val_per_city, quiet) -> None:
    """Generate the toy city: procedural street scenes in the exact Cityscapes layout."""
    from bench.data.toycity.tree import generate_toycity

    generate_toycity(
        out,
        seed=seed,
        size=size,
        train=train,
        train_extra=train_extra,
        val_per_city=val_per_city,
        progress=not quiet,
    )
    click.echo(
        f"toy city ({train} train, {train_extra} train_extra, {3 * val_per_city} val) in {out}"
    )


def _existing_run(help_text: str):
    """``--out`` / ``--run``: a run directory that must exist."""
    return click.option(
        "--out",
        "--run",
        "run_dir",
        required=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=help_text,
    )


def _trust_options(func):
    """``--trust-plugin`` / ``--trust-run-code``: the plug-ins a run directory's config.toml
    may name (by default none: a run directory cannot choose code to run)."""
    func = click.option(
        "--trust-run-code",
        "trust_code",
        is_flag=True,
        help="Import every plug-in the run's config.toml names (teacher.arch, student.arch, "
        "evaluate.defenses: module:name or file.py:name), i.e. run that code as yours. Only for "
        "a run directory you wrote or checked.",
    )(func)
    return click.option(
        "--trust-plugin",
        "trusted_specs",
        multiple=True,
        metavar="SPEC",
        help="Allow this one plug-in (module:name or file.py:name) that the run's config.toml "
        "names; without it (or --trust-run-code) the run may name built-in architectures and "
        "built-in or installed defenses only (repeatable).",
    )(func)


def _run_options(func):
    """Options shared by the commands that work on a run directory."""
    for option in reversed(
        [
            click.option(
                "--preset",
                default="toy",
                show_default=True,
                help="Preset name (toy, smoke, toy-full, cityscapes) or a .toml file.",
            ),
            click.option(
                "--out",
                "--run",
                "run_dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Run directory [default: runs/<preset name>].",
            ),
            click.option(
                "--data",
                "data_root",
                type=click.Path(path_type=Path),
                help="Cityscapes-layout data root (overrides the preset's data.root).",
            ),
            click.option(
                "--set",
                "overrides",
                multiple=True,
                metavar="KEY=VALUE",
                help="Override a preset value, e.g. --set finetune.alpha=0.7 (repeatable).",
            ),
            _device_option,
            click.option("--seed", type=int, help="Overrides the preset's seed."),
            click.option("--quiet", is_flag=True, help="No progress bars."),
        ]
    ):
        func = option(func)
    return func


def _config(preset, run_dir, data_root, overrides, seed, values=None):
    """The run's config (preset + --set + dedicated options + --data + --seed) and directory."""
    from bench.config import resolve_config

    config = resolve_config(
        preset, overrides=overrides, values=values, data_root=data_root, seed=seed
    )
    return config, run_dir or Path("runs") / config.name


class _LayersOption(click.Option):
    """Names the student's taps (``ERFNet.tap_names``) when the help is shown: importing the
    models (torch) for every command would slow them all."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from bench.models import ERFNet

        record = super().get_help_record(ctx)
        if record is None:
            return None
        names, text = record
        return names, text.replace("{taps}", ", ".join(ERFNet.tap_names()))


@main.command()
@_run_options
@click.option(
    "--net",
    "nets",
    default="T,S",
    show_default=True,
    help="Comma-separated networks: T (teacher), S (static student), A (adaptive "
    "student, finetuned from S with J_TS' on the unlabelled split), AT (adversarially "
    "trained from S, or T: the [adversarial] section).",
)
@click.option(
    "--epochs",
    type=int,
    help="Sets pretrain.epochs (T, S), finetune.epochs (A) and adversarial.epochs (AT).",
)
@click.option(
    "--layers",
    cls=_LayersOption,
    help="A: IFM' layers, comma-separated tap or group names ({taps}) [default: down2].",
)
@click.option("--alpha", type=float, help="A: the loss weight alpha of eq. 8 [default: 0.6].")
@click.option("--retrain", is_flag=True, help="Train even when a valid checkpoint exists.")
def train(
    preset, run_dir, data_root, overrides, device, seed, quiet, nets, epochs, layers, alpha, retrain
) -> None:
    """Pretrain T and S on the labelled split; finetune A (--net A) on the unlabelled one;
    train AT (--net AT) on PGD examples of the labelled split."""
    from bench.config import train_values
    from bench.stages import train_command

    values = train_values(epochs=epochs, layers=_names(layers), alpha=alpha)
    config, run_dir = _config(preset, run_dir, data_root, overrides, seed, values)
    for line in train_command(
        config, run_dir, _names(nets) or (), device=device, retrain=retrain, progress=not quiet
    ):
        click.echo(line)


@main.command()
@_run_options
@click.option(
    "--defense",
    "extra_defenses",
    multiple=True,
    metavar="SPEC",
    help="An extra defense to rank: package.module:Class, path/file.py:Class or an "
    "entry-point name of the group bench.defenses; with options and a row name, the TOML "
    'table a preset writes, quoted whole: \'{spec = "file.py:Class", options = {step = 8}, '
    'name = "masked-8"}\' (repeatable).',
)
@click.option("--retrain", is_flag=True, help="Retrain every network, ignoring checkpoints.")
def run(
    preset, run_dir, data_root, overrides, device, seed, quiet, extra_defenses, retrain
) -> None:
    """Run the whole benchmark: data, networks, AE sets, defenses, tables, plots, report."""
    from bench.stages import run_benchmark, with_defenses

    config, run_dir = _config(preset, run_dir, data_root, overrides, seed)
    report = run_benchmark(
        with_defenses(config, extra_defenses),
        run_dir,
        device=device,
        retrain=retrain,
        progress=not quiet,
        echo=click.echo,
    )
    if report is not None:  # None on the ranks of a torchrun launch other than 0
        click.echo(f"report: {report}")


@main.command()
@_existing_run("A run directory (holding config.toml and metrics.csv).")
def report(run_dir: Path) -> None:
    """Regenerate tables, plots and report.md of a run from its stored rows alone."""
    from bench.stages import regenerate_report

    click.echo(f"report: {regenerate_report(run_dir, echo=click.echo)}")


@main.command()
@_existing_run("A run directory holding config.toml and models/ (bench train).")
@click.option(
    "--source", help="Comma-separated attacked networks, T and/or S [default: the run's]."
)
@click.option(
    "--eps",
    callback=_eps_list,
    help="Comma-separated eps in gray values, e.g. 1,10 [default: the run's].",
)
@click.option(
    "--attack",
    "attack_name",
    help="An attack of the run's suite (its label or name), or llcm, apgd, fgsm, bim, pgd, "
    "mifgsm [default: the attacks the run's suite runs under --threat].",
)
@click.option(
    "--threat",
    type=click.Choice(["transfer", "joint"]),
    default="transfer",
    show_default=True,
    help="transfer: one set per source network; joint: one set on T and S at once. White-box "
    "sets need the defenses: bench run builds them.",
)
@click.option("--subset", help="Comma-separated subsets, e.g. mini_val [default: the run's].")
@click.option("--batch-size", type=int, help="Images per batch [default: the run's].")
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_trust_options
def attack(
    run_dir,
    source,
    eps,
    attack_name,
    threat,
    subset,
    batch_size,
    device,
    quiet,
    trusted_specs,
    trust_code,
) -> None:
    """Build (or reuse, or finish) AE sets of a run in <run>/aes/."""
    from bench.config import load_run_config
    from bench.stages import attack_command, attack_settings

    config = attack_settings(
        load_run_config(run_dir, trusted_specs=trusted_specs, trust_code=trust_code),
        name=attack_name,
        threat=threat,
        eps=eps,
        sources=_names(source),
        subsets=_names(subset),
        batch_size=batch_size,
    )
    for ae_set in attack_command(config, run_dir, device=device, progress=not quiet):
        what = f"built {ae_set.built} images" if ae_set.built else "reused"
        click.echo(f"{ae_set.name}: {len(ae_set)} images, {what} -> {ae_set.path}")


@perf.command("attack")
@click.option(
    "--preset", default="toy", show_default=True, help="Networks and image size of this preset."
)
@click.option(
    "--out",
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Time a run's trained T and S instead of freshly initialised ones.",
)
@click.option("--eps", callback=_eps_list, default="1,10", show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="[default: the preset's attack batch size]"
)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@_device_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for torch [default: torch's]; 1 is steadiest on a shared machine.",
)
@_trust_options
def perf_attack_command(
    preset, run_dir, eps, batch_size, repeats, device, threads, trusted_specs, trust_code
) -> None:
    """LLCM vs its floor (n_iter x (forward + input backward) + 1 forward) and vs ART's BIM;
    APGD, SegPGD and CosPGD per iteration on T, S and the joint objective vs their floors."""
    from bench.config import load_run_config, resolve_config
    from bench.perf import run_perf_attack

    config = (
        load_run_config(run_dir, trusted_specs=trusted_specs, trust_code=trust_code)
        if run_dir
        else resolve_config(preset)
    )
    run_perf_attack(
        config,
        device=device,
        run_dir=run_dir,
        eps=eps,
        batch_size=batch_size,
        repeats=repeats,
        threads=threads,
        echo=click.echo,
    )
