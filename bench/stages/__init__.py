"""The stages of a run (data, networks, attacks, evaluate, report) and their composition."""

from bench.stages.attacks import attack_settings, build_ae_sets, plan_sets
from bench.stages.checks import check_run
from bench.stages.data import dataset, prepare_data
from bench.stages.defenses import run_defenses
from bench.stages.evaluate import evaluate_run, qualitative_grid
from bench.stages.networks import finetune_students, train_networks, train_static
from bench.stages.run import (
    attack_command,
    regenerate_report,
    run_benchmark,
    train_command,
    with_defenses,
)

__all__ = [
    "attack_command",
    "attack_settings",
    "build_ae_sets",
    "check_run",
    "dataset",
    "evaluate_run",
    "finetune_students",
    "plan_sets",
    "prepare_data",
    "qualitative_grid",
    "regenerate_report",
    "run_benchmark",
    "run_defenses",
    "train_command",
    "train_networks",
    "train_static",
    "with_defenses",
]
