"""The stages of a run (data tree, networks, defense rows, AE sets, results, report) and their
composition root (``bench.stages.run``), which builds the run context once and hands it down."""

from bench.stages.ae_sets import attack_settings, build_ae_sets, plan_sets
from bench.stages.context import RunContext
from bench.stages.data_tree import prepare_data
from bench.stages.preflight import check_run
from bench.stages.run import (
    attack_command,
    regenerate_report,
    run_benchmark,
    train_command,
    with_defenses,
)

__all__ = [
    "RunContext",
    "attack_command",
    "attack_settings",
    "build_ae_sets",
    "check_run",
    "plan_sets",
    "prepare_data",
    "regenerate_report",
    "run_benchmark",
    "train_command",
    "with_defenses",
]
