"""``bench run``: the composition of the stages, and the library calls behind every command.

Every command checks the whole config first (``bench.config`` and ``bench.stages.preflight``),
builds the run context (``bench.stages.context``) once, then holds the run directory's lock
while it hands the context from stage to stage. ``bench run`` publishes config, rows, tables,
plots and report together at the very end, in one step (``RunDir.publish``), so a failed, refused
or killed run never touches a finished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch

from bench import dist
from bench.config import (
    ROBUST_NET,
    RunConfig,
    apply_values,
    parse_defense,
    save_run_config,
)
from bench.devices import native_bfloat16
from bench.files import atomic_copy
from bench.report import check_rows, write_report
from bench.report.tables import convergence_checks
from bench.stages.ae_sets import (
    ATTACK_FINDINGS,
    PlannedSet,
    attack_findings,
    build_ae_sets,
    shared_sets,
)
from bench.stages.context import RunContext
from bench.stages.data_tree import check_data, data_reads, prepare_data
from bench.stages.defense_rows import build_defense_rows
from bench.stages.evaluation_checks import (
    CHECK_COLUMNS,
    Finding,
    data_checks,
    gradient_checks,
    input_checks,
    random_checks,
    weaker_checks,
)
from bench.stages.networks import (
    check_network_names,
    check_replacements,
    describe,
    finetune_students,
    load_networks,
    needed_students,
    report_line,
    robust_needed,
    run_roles,
    train_networks,
    train_robust,
    train_static,
)
from bench.stages.preflight import check_run
from bench.stages.qualitative import qualitative_grid
from bench.stages.results import Evaluation, evaluate_run
from bench.store.aesets import STORE_DIR, AESet
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
    """The config with extra defenses appended (``--defense``: a spec, or a TOML inline table
    with options and a row name, ``bench.config.parse_defense``), so config.toml records them;
    one the config already names is not added twice."""
    if not extra:
        return config
    table = list(config.to_dict()["evaluate"]["defenses"])
    table += [parse_defense(text) for text in extra]
    added = apply_values(config, {"evaluate.defenses": table}).evaluate.defenses
    distinct = [d for i, d in enumerate(added) if d not in added[:i]]
    return apply_values(config, {"evaluate.defenses": [dataclasses.asdict(d) for d in distinct]})


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
    ctx = _begin(config, run_dir, device, progress)
    echo = echo if dist.is_main() else _silent
    with _locked(ctx.run):
        if dist.is_main():
            ctx.run.require_links()  # publishing needs them: say so before hours of work
        with _stage("data", echo) as summary:
            generated = _prepare_data(ctx)
            data_warnings = check_data(config, data_reads(config))
            made = "toy city generated and checked" if generated else "checked"
            summary.append(f"{config.data.root}: {made}")
        for message in [*data_warnings, *precision_warnings(config, ctx.device)]:
            echo(f"warning: {message}")
        with _stage("networks", echo) as summary:
            ctx = _networks_stage(ctx, retrain, summary)
        with _stage("attacks", echo) as summary:
            ctx = ctx.with_defenses(build_defense_rows(ctx))
            ae_sets = build_ae_sets(ctx)
            threats = sorted({plan.spec.threat for plan, _ in ae_sets})
            shared = len(shared_sets(ae_sets))
            reused = f", {shared} of them another threat model's set" if shared else ""
            summary.append(
                f"{len(ae_sets)} AE sets ({', '.join(threats)}{reused}) in "
                f"{ctx.run.path / STORE_DIR}"
            )
        with _stage("evaluate", echo) as summary:
            evaluation = evaluate_run(ctx, ae_sets)
            if evaluation is None:
                return None  # rank 0 writes the report
            checks = _checks(ctx, ae_sets, evaluation, data_warnings)
            qualitative = qualitative_grid(ctx, ae_sets)
            tau = ctx.require_defenses().tau
            summary.append(
                f"{evaluation.metrics['defense'].nunique()} defenses, "
                f"{len(evaluation.metrics)} rows" + ("" if math.isnan(tau) else f", tau {tau:.3f}")
            )
        with _stage("report", echo) as summary:
            report = publish_run(ctx, evaluation, checks, qualitative)
            summary.append(str(report))
        # data: said up front; what each defense was attacked with is no warning
        for message in checks[~checks["check"].isin(["data", *ATTACK_FINDINGS])]["message"]:
            echo(f"warning: {message}")
    return report


def _networks_stage(ctx: RunContext, retrain: bool, summary: list[str]) -> RunContext:
    """T and S, then every adaptive student of the run; the context with the networks loaded."""
    val_subset = ctx.config.data.val_subset
    for name in ("T", "S"):
        meta, origin = train_static(ctx, name, retrain=retrain)
        summary.append(describe(meta, origin, val_subset))
    students = [settings for _, settings in needed_students(ctx.config)]
    for meta, origin in finetune_students(ctx, students, retrain=retrain):
        summary.append(describe(meta, origin, val_subset))
    if not students:
        summary.append("no adaptive student (no evaluated defense reads A)")
    if robust_needed(ctx.config):
        summary.append(describe(*train_robust(ctx, retrain=retrain), val_subset))
    return ctx.with_networks(load_networks(ctx, run_roles(ctx.config)))


def _checks(
    ctx: RunContext,
    ae_sets: Sequence[tuple[PlannedSet, AESet]],
    evaluation: Evaluation,
    data_warnings: Sequence[str],
) -> pd.DataFrame:
    """Every finding of the evaluation's own checks (``bench.stages.evaluation_checks``)."""
    ignoring = input_checks(ctx)
    findings: list[Finding] = [
        *data_checks(ctx.config.data.root, data_warnings),
        *ignoring,
        *gradient_checks([plan for plan, _ in ae_sets], {f["subject"] for f in ignoring}),
        *random_checks(ctx),
        *weaker_checks(evaluation.metrics),
        *attack_findings([plan for plan, _ in ae_sets]),
        *convergence_checks(evaluation.metrics),
    ]
    return pd.DataFrame(findings, columns=CHECK_COLUMNS)


def _begin(
    config: RunConfig, run_dir: str | Path, device: torch.device, progress: bool
) -> RunContext:
    """Join the torchrun launch, if any, check the config before any work, and build the run
    context (this process's device; progress bars on rank 0 only)."""
    device = dist.init(device)
    check_run(config, device)
    return RunContext.open(config, RunDir(run_dir), device, progress=progress and dist.is_main())


def _locked(run: RunDir) -> contextlib.AbstractContextManager:
    """The run directory's lock, held by rank 0 for every process of a launch."""
    return run.lock() if dist.is_main() else contextlib.nullcontext()


def _prepare_data(ctx: RunContext) -> bool:
    """Rank 0 generates the toy city when needed; every process waits for it. Whether it was
    generated now (on rank 0; False elsewhere)."""
    generated = prepare_data(ctx.config, progress=ctx.progress) if dist.is_main() else False
    dist.barrier()
    return generated


def precision_warnings(config: RunConfig, device: torch.device) -> list[str]:
    """A warning when the suite asks for bfloat16 passes and ``device`` has no native bfloat16
    (they then run slower than float32, not faster)."""
    low = [s.tag for s in config.attack.suite if s.options.get("precision") == "bfloat16"]
    if not low or native_bfloat16(device) is not False:
        return []
    return [
        f"attacks {', '.join(low)} compute in bfloat16, which {device} has no native support "
        "for (a CPU without avx512_bf16 or amx_bf16, a GPU before Ampere): they may run slower "
        'than in float32; set their options\' precision = "float32" in a copy of the preset '
        "(--preset FILE.toml)"
    ]


def _silent(_line: str) -> None:
    """The echo of ranks other than 0: one process prints."""


def publish_run(
    ctx: RunContext, evaluation: Evaluation, checks: pd.DataFrame, qualitative: Path
) -> Path:
    """Stage config, rows, checks, grid and report in a sibling folder, then publish them as the
    run's publication in one step (``RunDir.publish``)."""
    run = ctx.run
    with run.staging() as staged:
        save_run_config(ctx.config, staged)
        write_table(evaluation.metrics, staged / METRICS_FILE)
        write_table(evaluation.records, staged / RECORDS_FILE)
        write_table(checks, staged / CHECKS_FILE)
        atomic_copy(qualitative, staged / QUALITATIVE_FILE)
        write_report(staged)
        run.publish(staged)
    return run.path / REPORT_FILE


def regenerate_report(run_dir: str | Path, *, echo: Callable[[str], None] = print) -> Path:
    """``bench report``: tables, plots and report.md anew from the run's published rows (built
    beside the run with the rows unchanged, then published in one step). A config.toml that
    asks for rows metrics.csv lacks is refused (``check_rows``) before anything is written."""
    run = RunDir(run_dir)
    run.require_published()
    with run.lock(), run.staging() as staged:
        run.require_links()
        for message in check_rows(run.path):
            echo(f"warning: {message}")
        write_report(run.path, out=staged)
        run.stage_rows(staged)
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
    ctx = _begin(config, run_dir, device, progress)
    with _locked(ctx.run):
        check_replacements(ctx, tuple(names))
        _prepare_data(ctx)
        reads = data_reads(config, finetune="A" in names, attack=False, robust=ROBUST_NET in names)
        check_data(config, reads)
        done = train_networks(ctx, tuple(names), retrain=retrain)
        if dist.is_main() and not (ctx.run.path / METRICS_FILE).is_file():
            save_run_config(config, ctx.run.path)
    return [report_line(ctx, meta, origin) for meta, origin in done] if dist.is_main() else []


def attack_command(
    config: RunConfig, run_dir: str | Path, *, device: torch.device, progress: bool = True
) -> list[AESet]:
    """``bench attack``: the config's transfer and joint AE sets in the run's store (its
    config.toml unchanged); white-box sets need the defenses and are built by ``bench run``."""
    ctx = _begin(config, run_dir, device, progress)
    with _locked(ctx.run):
        check_data(config, data_reads(config, train=False, finetune=False))
        ctx = ctx.with_networks(load_networks(ctx, roles=("T", "S")))
        sets = [s for _, s in build_ae_sets(ctx)]
    return sets if dist.is_main() else []
