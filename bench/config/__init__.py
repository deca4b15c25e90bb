"""The configuration of a run: frozen dataclasses, read from TOML presets, validated whole.

Every value is checked when the config is built, types included, so a bad value stops a run
before any work; each message names the key, the value and the fix. This package only
re-exports; the modules are split by job:

- ``schema``: the dataclasses of each section and the names they choose from;
- ``convert``: TOML tables to those dataclasses, types checked;
- ``rules``: the rules the config and the constructors (losses, defenses) both check;
- ``validation``: every range and cross-field rule of a config, one function per section;
- ``presets``: presets (``base = ...``), ``--set`` overrides, ``config_from_dict``;
- ``runfile``: a run directory's ``config.toml`` and its relative paths;
- ``resolve``: the config a command runs with (preset, overrides, options).

Cache keys are made from configs but are not part of them: ``bench.keys.cache_key``.
"""

from bench.config.presets import (
    PRESET_DIR,
    apply_overrides,
    apply_values,
    config_from_dict,
    load_config,
    parse_defense,
    parse_override,
)
from bench.config.resolve import resolve_config, train_values
from bench.config.runfile import (
    CODE_KEYS,
    CONFIG_FILE,
    PATH_KEYS,
    code_specs,
    load_run_config,
    read_run_config,
    save_run_config,
)
from bench.config.schema import (
    EVALUATION_SUBSETS,
    OPTIMIZERS,
    ROBUST_NET,
    SPLITS,
    STATIC_NETS,
    SUBSETS,
    THREAT_MODELS,
    AdaptiveStudents,
    AdversarialConfig,
    AttackConfig,
    AttackSpec,
    DataConfig,
    DefenseSpec,
    DetectConfig,
    EvaluateConfig,
    FinetuneConfig,
    NetConfig,
    PretrainConfig,
    RunConfig,
    SweepConfig,
    adaptive_students,
)
from bench.config.validation import validate, validate_finetune

__all__ = [
    "CODE_KEYS",
    "CONFIG_FILE",
    "EVALUATION_SUBSETS",
    "OPTIMIZERS",
    "PATH_KEYS",
    "PRESET_DIR",
    "ROBUST_NET",
    "SPLITS",
    "STATIC_NETS",
    "SUBSETS",
    "THREAT_MODELS",
    "AdaptiveStudents",
    "AdversarialConfig",
    "AttackConfig",
    "AttackSpec",
    "DataConfig",
    "DefenseSpec",
    "DetectConfig",
    "EvaluateConfig",
    "FinetuneConfig",
    "NetConfig",
    "PretrainConfig",
    "RunConfig",
    "SweepConfig",
    "adaptive_students",
    "apply_overrides",
    "apply_values",
    "code_specs",
    "config_from_dict",
    "load_config",
    "load_run_config",
    "parse_defense",
    "parse_override",
    "read_run_config",
    "resolve_config",
    "save_run_config",
    "train_values",
    "validate",
    "validate_finetune",
]
