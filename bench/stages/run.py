"""``bench run``: the composition of the stages, and the library calls behind every command.

Every command checks the whole config first (``bench.config`` and ``bench.stages.checks``), then
holds the run directory's lock while it works. ``bench run`` publishes config, rows, tables,
plots and report together at the very end (``RunDir.publish``), so a failed or refused run never
touches a finished one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from bench import dist
from bench.config import RunConfig, adaptive_students, apply_values, save_run_config
from bench.files import atomic_copy
from bench.report import write_report
from bench.stages.attacks import build_ae_sets, gradient_checks
from bench.stages.checks import check_run
from bench.stages.data import check_data, data_reads, prepare_data
from bench.stages.defenses import run_defenses
from bench.stages.evaluate import Evaluation, evaluate_run, qualitative_grid
from bench.stages.networks import (
    check_network_names,
    check_replacements,
    describe,
    finetune_students,
    report_line,
    train_networks,
    train_static,
)
from bench.store.aesets import STORE_FILE, AESet
from bench.store.rundir import (
    CHECKS_FILE,
    METRICS_FILE,
    QUALITATIVE_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    RunDir,
    write_table,
)


@contextlib.contextmanager
def _stage(name: str, echo: Callable[[str], None]) -> Iterator[list[str]]:
    """Collects a stage's summary and prints it as one line with the stage's time."""
    start, summary = time.perf_counter(), []
    yield summary
    echo(f"[{name}] {'; '.join(summary)} ({time.perf_counter() - start:.1f} s)")


def with_defenses(config: RunConfig, extra: Sequence[str]) -> RunConfig:
    """The config with extra defenses appended (``--defense``), so config.toml records them."""
    specs = list(dict.fromkeys((*config.evaluate.defenses, *extra)))
    return apply_values(config, {"evaluate.defenses": specs}) if extra else config


def run_benchmark(
    config: RunConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    retrain: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Path | None:
    """The whole benchmark: data, T and S, the adaptive students, AE sets, evaluation, report.

    Every stage reuses what is cached and still valid, so a finished run re-run only
    regenerates the report. Prints one line per stage with its time. Returns ``report.md`` (None
    on ranks other than 0).
    Launched by torchrun, every rank runs this: training is data-parallel, AE sets and the
    evaluation are shared by batch, and rank 0 alone holds the lock, writes and prints.
    """
    device, main, progress = _begin(config, device, progress)
    echo = echo if main else _silent
    run = RunDir(run_dir)
    with _locked(run):
        with _stage("data", echo) as summary:
            _prepare_data(config, progress)
            data_warnings = check_data(config, data_reads(config))
            summary.append(f"{config.data.root} checked")
        for message in data_warnings:
            echo(f"warning: {message}")
        with _stage("networks", echo) as summary:
            for name in ("T", "S"):
                meta, origin = train_static(
                    config, run, name, device=device, retrain=retrain, progress=progress
                )
                summary.append(describe(config, meta, origin))
            students = [settings for _, settings in adaptive_students(config).all()]
            for meta, origin in finetune_students(
                config, run, students, device=device, retrain=retrain, progress=progress
            ):
                summary.append(describe(config, meta, origin))
        with _stage("attacks", echo) as summary:
            defenses = run_defenses(config, run, device)
            ae_sets = build_ae_sets(
                config, run, device=device, defenses=defenses, progress=progress
            )
            threats = sorted({plan.spec.threat for plan, _ in ae_sets})
            summary.append(
                f"{len(ae_sets)} AE sets ({', '.join(threats)}) in {run.path / STORE_FILE}"
            )
        with _stage("evaluate", echo) as summary:
            evaluation = evaluate_run(config, run, defenses, ae_sets, progress=progress)
            if not main:
                return None  # rank 0 writes the report
            data_checks = [
                {"check": "data", "subject": config.data.root, "message": m} for m in data_warnings
            ]
            gradient_warnings = gradient_checks(config, [plan for plan, _ in ae_sets])
            evaluation = evaluation.with_checks(data_checks + gradient_warnings)
            qualitative = qualitative_grid(config, run, defenses, ae_sets)
            summary.append(
                f"{evaluation.metrics['defense'].nunique()} defenses, "
                f"{len(evaluation.metrics)} rows, tau {defenses.tau:.3f}"
            )
        with _stage("report", echo) as summary:
            report = publish_run(config, run, evaluation, qualitative)
            summary.append(str(report))
        checks = evaluation.checks
        for message in checks[checks["check"] != "data"]["message"]:  # data: said up front
            echo(f"warning: {message}")
    return report


def _begin(
    config: RunConfig, device: torch.device, progress: bool
) -> tuple[torch.device, bool, bool]:
    """Join the torchrun launch, if any, and check the config before any work. Returns this
    process's device, whether it is rank 0, and whether it shows progress (rank 0 only)."""
    device = dist.init(device)
    check_run(config, device)
    return device, dist.is_main(), progress and dist.is_main()


def _locked(run: RunDir) -> contextlib.AbstractContextManager:
    """The run directory's lock, held by rank 0 for every process of a launch."""
    return run.lock() if dist.is_main() else contextlib.nullcontext()


def _prepare_data(config: RunConfig, progress: bool) -> None:
    """Rank 0 generates the toy city when needed; every process waits for it."""
    if dist.is_main():
        prepare_data(config, progress=progress)
    dist.barrier()


def _silent(_line: str) -> None:
    """The echo of ranks other than 0: one process prints."""


def publish_run(
    config: RunConfig, run: RunDir, evaluation: Evaluation, qualitative: Path | None
) -> Path:
    """Stage config, rows, grid and report in a sibling folder, then move them into the run."""
    with run.staging() as staged:
        save_run_config(config, staged)
        write_table(evaluation.metrics, staged / METRICS_FILE)
        write_table(evaluation.records, staged / RECORDS_FILE)
        write_table(evaluation.checks, staged / CHECKS_FILE)
        if qualitative is not None:
            atomic_copy(qualitative, staged / QUALITATIVE_FILE)
        write_report(staged)
        run.publish(staged)
    return run.path / REPORT_FILE


def regenerate_report(run_dir: str | Path) -> Path:
    """``bench report``: tables, plots and report.md anew from the run's published rows (built
    beside the run, then moved in; the rows themselves are left as they are)."""
    run = RunDir(run_dir)
    run.require_published()
    with run.lock(), run.staging() as staged:
        write_report(run.path, out=staged)
        run.publish(staged)
    return run.path / REPORT_FILE


def train_command(
    config: RunConfig,
    run_dir: str | Path,
    names: Sequence[str],
    *,
    device: torch.device,
    retrain: bool = False,
    progress: bool = True,
) -> list[str]:
    """``bench train``: the named networks; returns one line per network.

    A run directory without a finished run gets this config as its ``config.toml`` (what
    ``bench attack`` reads); a finished run keeps the config it published, and its T and S are
    never replaced by networks of other settings.
    """
    check_network_names(tuple(names))
    device, main, progress = _begin(config, device, progress)
    run = RunDir(run_dir)
    with _locked(run):
        check_replacements(config, run, tuple(names))
        _prepare_data(config, progress)
        check_data(config, data_reads(config, finetune="A" in names, attack=False))
        done = train_networks(
            config, run, tuple(names), device=device, retrain=retrain, progress=progress
        )
        if main and not (run.path / METRICS_FILE).is_file():
            save_run_config(config, run.path)
    return [report_line(config, run, meta, origin) for meta, origin in done] if main else []


def attack_command(
    config: RunConfig, run_dir: str | Path, *, device: torch.device, progress: bool = True
) -> list[AESet]:
    """``bench attack``: the config's transfer and joint AE sets in the run's store (its
    config.toml unchanged); white-box sets need the defenses and are built by ``bench run``."""
    device, main, progress = _begin(config, device, progress)
    run = RunDir(run_dir)
    with _locked(run):
        check_data(config, data_reads(config, train=False, finetune=False))
        sets = [s for _, s in build_ae_sets(config, run, device=device, progress=progress)]
    return sets if main else []
