"""The ranges and cross-field rules of a config, one function per section.

What needs the registries (architectures, attacks, defenses, feature taps) is checked by
``bench.stages.preflight`` before any work; this covers everything the config alone decides. The
rules a constructor checks too live in ``bench.config.rules``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bench.config.rules import check_alpha, check_ifm_weights, check_tau, check_thresholds, require
from bench.config.schema import (
    EVALUATION_SUBSETS,
    OPTIMIZERS,
    SPLITS,
    STATIC_NETS,
    THREAT_MODELS,
    AdversarialConfig,
    AttackConfig,
    DataConfig,
    DetectConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    RunConfig,
    SweepConfig,
)

# A run's name and an attack's label name directories and files.
_FILE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def validate(config: RunConfig) -> RunConfig:
    """Check every value's range and every cross-field rule; returns ``config`` unchanged."""
    require(
        bool(_FILE_NAME.fullmatch(config.name)),
        "name",
        config.name,
        "use letters, digits and _ . + - only (it names the run directory)",
    )
    require(config.seed >= 0, "seed", config.seed, "must be an integer >= 0")
    _validate_data(config.data)
    _validate_pretrain(config.pretrain)
    _validate_finetune(config.finetune, "finetune")
    validate_adversarial(config.adversarial)
    _validate_attack(config.attack)
    _validate_detect(config.detect)
    _validate_sweep(config.sweep)
    _validate_evaluate(config.evaluate)
    return config


def validate_finetune(settings: FinetuneConfig) -> FinetuneConfig:
    """The finetune section's checks, for settings built in code (tests, the online vote)."""
    _validate_finetune(settings, "finetune")
    return settings


def validate_adversarial(settings: AdversarialConfig, where: str = "adversarial") -> None:
    """The adversarial section's checks (also for settings built in code)."""
    require(
        settings.base in STATIC_NETS,
        f"{where}.base",
        settings.base,
        "choose S (start from the student) or T (start from the teacher)",
    )
    require(settings.eps > 0, f"{where}.eps", settings.eps, "must be > 0 gray values, e.g. 4")
    require(settings.steps >= 1, f"{where}.steps", settings.steps, "must be an integer >= 1")
    require(
        settings.step is None or settings.step > 0,
        f"{where}.step",
        settings.step,
        "must be > 0 gray values (leave it out for 2.5 eps / steps)",
    )
    require(
        0 <= settings.clean_weight <= 1,
        f"{where}.clean_weight",
        settings.clean_weight,
        "must lie in [0, 1] (0: adversarial examples only; 1: clean images only)",
    )
    require(settings.epochs >= 0, f"{where}.epochs", settings.epochs, "must be >= 0")
    require(settings.batch_size >= 1, f"{where}.batch_size", settings.batch_size, "must be >= 1")
    require(settings.lr > 0, f"{where}.lr", settings.lr, "must be > 0")
    require(
        settings.weight_decay >= 0, f"{where}.weight_decay", settings.weight_decay, "must be >= 0"
    )
    require(settings.poly_power >= 0, f"{where}.poly_power", settings.poly_power, "must be >= 0")
    require(settings.workers >= 0, f"{where}.workers", settings.workers, "must be >= 0")


def _validate_data(data: DataConfig) -> None:
    require(
        data.toycity or bool(data.root),
        "data.root",
        data.root,
        "name your Cityscapes-layout tree: --data PATH (or data.toycity = true)",
    )
    require(min(data.size) >= 8, "data.size", list(data.size), "height and width must be >= 8")
    require(data.toycity_seed >= 0, "data.toycity_seed", data.toycity_seed, "must be >= 0")
    for key, count in data.toycity_counts.items():
        require(
            key in ("train", "train_extra", "val_per_city"),
            f"data.toycity_counts.{key}",
            count,
            "valid keys are train, train_extra, val_per_city",
        )
        require(count >= 1, f"data.toycity_counts.{key}", count, "must be >= 1")
    require(
        data.train_split in SPLITS and data.train_split != "test",
        "data.train_split",
        data.train_split,
        "choose train or val (the test split has no real labels)",
    )
    require(
        data.unlabeled_split in SPLITS,
        "data.unlabeled_split",
        data.unlabeled_split,
        f"choose from {', '.join(SPLITS)}",
    )
    for key in ("val_subset", "test_subset"):
        value = getattr(data, key)
        require(
            value in EVALUATION_SUBSETS,
            f"data.{key}",
            value,
            f"choose from {', '.join(EVALUATION_SUBSETS)} (test labels are dummies)",
        )


def _validate_pretrain(pretrain: PretrainConfig) -> None:
    require(pretrain.epochs >= 1, "pretrain.epochs", pretrain.epochs, "must be >= 1")
    require(pretrain.batch_size >= 1, "pretrain.batch_size", pretrain.batch_size, "must be >= 1")
    require(pretrain.lr > 0, "pretrain.lr", pretrain.lr, "must be > 0")
    require(
        pretrain.weight_decay >= 0, "pretrain.weight_decay", pretrain.weight_decay, "must be >= 0"
    )
    require(pretrain.poly_power >= 0, "pretrain.poly_power", pretrain.poly_power, "must be >= 0")
    require(pretrain.workers >= 0, "pretrain.workers", pretrain.workers, "must be >= 0")


def _validate_finetune(finetune: FinetuneConfig, where: str) -> None:
    require(
        len(finetune.layers) > 0,
        f"{where}.layers",
        list(finetune.layers),
        "name at least one IFM layer, e.g. ['down2']",
    )
    _unique(finetune.layers, f"{where}.layers")
    check_alpha(finetune.alpha, f"{where}.alpha")
    check_ifm_weights(finetune.p, finetune.beta, finetune.gamma, f"{where}.")
    require(finetune.lr > 0, f"{where}.lr", finetune.lr, "must be > 0")
    require(finetune.epochs >= 0, f"{where}.epochs", finetune.epochs, "must be >= 0")
    require(finetune.batch_size >= 1, f"{where}.batch_size", finetune.batch_size, "must be >= 1")
    require(finetune.workers >= 0, f"{where}.workers", finetune.workers, "must be >= 0")
    require(
        finetune.optimizer in OPTIMIZERS,
        f"{where}.optimizer",
        finetune.optimizer,
        f"choose from {', '.join(OPTIMIZERS)}",
    )


def _validate_attack(attack: AttackConfig) -> None:
    _eps_list(attack.eps, "attack.eps", allow_empty=False)
    _choices(attack.sources, "attack.sources", STATIC_NETS, "source")
    _choices(attack.subsets, "attack.subsets", EVALUATION_SUBSETS, "subset")
    require(attack.batch_size >= 1, "attack.batch_size", attack.batch_size, "must be >= 1")
    require(attack.eot_samples >= 1, "attack.eot_samples", attack.eot_samples, "must be >= 1")
    require(
        len(attack.suite) > 0,
        "attack.suite",
        [],
        'name at least one attack, e.g. [{name = "llcm"}]',
    )
    for i, spec in enumerate(attack.suite):
        where = f"attack.suite[{i}]"
        _choices(spec.threat_models, f"{where}.threat_models", THREAT_MODELS, "threat model")
        _eps_list(spec.eps, f"{where}.eps", allow_empty=True)
        if spec.subsets:
            _choices(spec.subsets, f"{where}.subsets", EVALUATION_SUBSETS, "subset")
        require(
            bool(_FILE_NAME.fullmatch(spec.tag)),
            f"{where}.label",
            spec.tag,
            "use letters, digits and _ . + - only (it names AE sets and table columns)",
        )
    _unique([spec.tag for spec in attack.suite], "attack.suite labels")
    _validate_gradient_free(attack)


def _validate_gradient_free(attack: AttackConfig) -> None:
    gradient_free = attack.gradient_free
    require(
        gradient_free.queries >= 0,
        "attack.gradient_free.queries",
        gradient_free.queries,
        "must be an integer >= 0 (0 turns the gradient-free attack off)",
    )
    require(
        "queries" not in gradient_free.options,
        "attack.gradient_free.options",
        gradient_free.options,
        "set the budget as attack.gradient_free.queries, not as an option",
    )
    tag = gradient_free.spec.tag
    require(
        bool(_FILE_NAME.fullmatch(tag)),
        "attack.gradient_free.label",
        tag,
        "use letters, digits and _ . + - only (it names AE sets and table columns)",
    )
    require(
        tag not in [spec.tag for spec in attack.suite],
        "attack.gradient_free.label",
        tag,
        "an attack of attack.suite has this label too; give one of them another label",
    )


def _validate_detect(detect: DetectConfig) -> None:
    check_thresholds(detect.delta, detect.delta_t, detect.delta_s, "detect.")
    if detect.tau is not None:  # None: calibrated on the validation subset
        check_tau(detect.tau, "detect.tau")
    require(
        0 < detect.tau_quantile < 1,
        "detect.tau_quantile",
        detect.tau_quantile,
        "must lie in (0, 1)",
    )


def _validate_sweep(sweep: SweepConfig) -> None:
    for layer_set in sweep.layer_sets:
        parts = [part.strip() for part in layer_set.split(",")]
        require(
            all(parts),
            "sweep.layer_sets",
            list(sweep.layer_sets),
            "each entry is a comma-separated list of layers, e.g. 'down,up'",
        )
        _unique(parts, "sweep.layer_sets")
    for i, alpha in enumerate(sweep.alphas):
        check_alpha(alpha, f"sweep.alphas[{i}]")


def _validate_evaluate(evaluate: EvaluateConfig) -> None:
    require(
        len(evaluate.defenses) > 0,
        "evaluate.defenses",
        list(evaluate.defenses),
        "name at least one defense",
    )
    _unique(evaluate.defenses, "evaluate.defenses")
    for i, defense in enumerate(evaluate.defenses):
        require(
            bool(defense.spec.strip()),
            f"evaluate.defenses[{i}].spec",
            defense.spec,
            "name a defense: a built-in, package.module:Class or file.py:Class",
        )
        require(
            not defense.name or bool(_FILE_NAME.fullmatch(defense.name)),
            f"evaluate.defenses[{i}].name",
            defense.name,
            "use letters, digits and _ . + - only (it names the result row and its AE sets)",
        )
    require(evaluate.batch_size >= 1, "evaluate.batch_size", evaluate.batch_size, "must be >= 1")


def _unique(values: Sequence[Any], key: str) -> None:
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    require(not repeated, key, list(values), f"lists {', '.join(repeated)} twice; name each once")


def _eps_list(values: Sequence[float], key: str, *, allow_empty: bool) -> None:
    require(
        allow_empty or len(values) > 0, key, list(values), "name at least one eps, e.g. [1, 10]"
    )
    for eps in values:
        require(
            0 < eps <= 255,
            key,
            list(values),
            "every eps must lie in (0, 255] gray values, e.g. [1, 10]",
        )
    _unique(values, key)


def _choices(values: Sequence[str], key: str, valid: Sequence[str], what: str) -> None:
    """A non-empty list of distinct names, each one of ``valid``."""
    require(len(values) > 0, key, list(values), f"name at least one {what}: {', '.join(valid)}")
    for value in values:
        require(
            value in valid,
            key,
            list(values),
            f"unknown {what} {value!r}; choose from {', '.join(valid)}",
        )
    _unique(values, key)
