"""The configuration of a run: frozen dataclasses, read from TOML presets, validated whole.

A preset is a TOML file with one table per section below; keys left out take the defaults here,
and ``base = "toy"`` starts from another preset (a user's preset can change just a few keys).
Unknown keys are errors (a typo must not silently fall back to a default). Config text is parsed
as TOML, never evaluated. Every value is checked when the config is built, types included, so a
bad value stops a run before any work; each message names the key, the value and the fix.

``cache_key`` is the one way the project turns settings into a cache key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from bench.errors import ConfigError
from bench.files import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"
CONFIG_FILE = "config.toml"

#: The static networks: the teacher T and the static student S.
STATIC_NETS = ("T", "S")
#: Optimisers of the adaptive student's finetuning (built in ``defenses.adaptive``).
OPTIMIZERS = ("adam", "adamw", "sgd")
#: Splits of the Cityscapes layout, and the paper's named city subsets (Section 4.1).
SPLITS = ("train", "val", "test", "train_extra")
SUBSETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mini_val": ("val", ("lindau",)),
    "mini_test": ("val", ("frankfurt", "munster")),
}
#: Splits and subsets with real labels; Cityscapes' ``test`` labels are dummies.
EVALUATION_SUBSETS = ("train", "val", *SUBSETS)
#: What an attacker knows: one static network (the paper's protocol); T and S together; or
#: everything the attacked defense uses at test time.
THREAT_MODELS = ("transfer", "joint", "white-box")


def cache_key(*parts: Any) -> str:
    """A short, stable hash of settings: dataclasses, dicts, lists, numbers, strings, paths.

    Canonical JSON (sorted keys, tuples as lists), so equal settings give equal keys on every
    machine and in every process.
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(f"cache_key cannot hash {type(value).__name__}")

    text = json.dumps(parts, sort_keys=True, default=plain, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and at which size the networks see them."""

    root: str = "data/toycity"
    size: tuple[int, int] = (128, 256)
    # Generate the toy city at ``root`` when it is missing (the embedded default data).
    toycity: bool = True
    toycity_seed: int = 0
    toycity_counts: dict[str, int] = field(default_factory=dict)
    # SceneStyle fields of the toy city (contrast, exposure, texture, jitter, noise).
    toycity_style: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    unlabeled_split: str = "train_extra"
    val_subset: str = "mini_val"
    test_subset: str = "mini_test"


@dataclass(frozen=True)
class NetConfig:
    """A network: an architecture (a name of ``bench.models.ARCHITECTURES``, or the user's own
    ``package.module:factory`` / ``file.py:factory``) and its constructor options.

    ``weights``: a state_dict file of this architecture; the network is imported from it (its
    sha256 recorded) instead of pretrained. ``backbone``: a torchvision-layout ResNet state_dict
    that seeds a DeepLabv3+'s backbone before pretraining.
    """

    arch: str = "erfnet"
    options: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    backbone: str = ""


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining of T and S (Adam, poly learning-rate decay, cross-entropy)."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    workers: int = 0
    # SyncBatchNorm across the processes of a torchrun launch (BatchNorm statistics over the
    # global batch instead of each rank's share)
    sync_bn: bool = False


# Settings a checkpoint name spells out only when they differ from the paper's defaults.
_NAME_EXTRAS = (("p", "p"), ("beta", "b"), ("gamma", "g"), ("batch_size", "bs"), ("lr", "lr"))


@dataclass(frozen=True)
class FinetuneConfig:
    """Finetuning of the adaptive student A with J_TS' (eq. 8) on the unlabelled split."""

    layers: tuple[str, ...] = ("down2",)
    alpha: float = 0.6
    p: float = 1.0
    beta: float = 0.5
    gamma: float = 1.0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    optimizer: str = "adam"
    workers: int = 0

    @property
    def checkpoint_name(self) -> str:
        """The name of A's checkpoint, e.g. ``A_down2_a0.6_e10``.

        Layers, alpha and epochs always appear; p, beta, gamma, batch size, lr and the optimiser
        only when they differ from the defaults (``A_all_a0.6_e10_b0.25_sgd``), so different
        settings never share a file.
        """
        default = FinetuneConfig()
        parts = ["A", "+".join(self.layers), f"a{self.alpha:g}", f"e{self.epochs}"]
        parts += [
            f"{tag}{getattr(self, name):g}"
            for name, tag in _NAME_EXTRAS
            if getattr(self, name) != getattr(default, name)
        ]
        if self.optimizer != default.optimizer:
            parts.append(self.optimizer)
        return "_".join(parts)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a run's suite and the threat models it is run under.

    ``transfer`` builds its AE sets on each of ``attack.sources`` alone (shared by all
    defenses), ``joint`` on T and S together (shared by all defenses), ``white-box`` on each
    defense's own attack surface. ``eps`` and ``subsets`` default to the attack section's;
    ``label`` (default: the name, plus the loss for APGD) names the attack in sets and tables.
    """

    name: str = "llcm"
    options: dict[str, Any] = field(default_factory=dict)
    threat_models: tuple[str, ...] = ("transfer",)
    eps: tuple[float, ...] = ()
    subsets: tuple[str, ...] = ()
    label: str = ""

    @property
    def tag(self) -> str:
        if self.label:
            return self.label
        loss = self.options.get("loss")
        red = "-red" if self.options.get("red_eps") else ""
        return f"{self.name}-{loss}{red}" if loss else f"{self.name}{red}"


@dataclass(frozen=True)
class AttackConfig:
    """Which AE sets a run builds: every attack of the suite x threat model x eps x subset.

    The paper's tables read the first LLCM attack run under ``transfer`` (``paper_attack``).
    """

    eps: tuple[float, ...] = (1.0, 10.0)
    sources: tuple[str, ...] = ("T", "S")
    subsets: tuple[str, ...] = ("mini_val", "mini_test")
    batch_size: int = 8
    suite: tuple[AttackSpec, ...] = (AttackSpec(),)
    # gradient samples per step against a randomised defense (EOT)
    eot_samples: int = 8

    def eps_of(self, spec: AttackSpec) -> tuple[float, ...]:
        return spec.eps or self.eps

    def subsets_of(self, spec: AttackSpec) -> tuple[str, ...]:
        return spec.subsets or self.subsets

    @property
    def paper_attack(self) -> str | None:
        """The label of the attack the paper's tables read, or None when the suite has none."""
        return next(
            (s.tag for s in self.suite if s.name == "llcm" and "transfer" in s.threat_models), None
        )


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the AE detection (eq. 4): one delta, or delta_t / delta_s when both set;
    ``tau`` of the disagreement vote (``TA-vote-disagree``): a number, or None to calibrate it on
    the validation subset's clean images as the ``tau_quantile`` quantile of min(D(T,A), D(S,A))
    (so that share of clean validation images is not flagged)."""

    delta: float = 0.1
    delta_t: float | None = None
    delta_s: float | None = None
    tau: float | None = None
    tau_quantile: float = 0.95


@dataclass(frozen=True)
class SweepConfig:
    """Extra adaptive students for the paper's ablations (each is one more finetuning).

    ``baseline``: also train A on all layers, the baseline of [6] (Table 5). ``layer_sets``: IFM'
    layer sets for Table 2, each a comma-separated list of tap or group names (``"down,up"``).
    ``alphas`` x ``alpha_layers``: the alpha sweep of Table 3.
    """

    baseline: bool = True
    layer_sets: tuple[str, ...] = ()
    alphas: tuple[float, ...] = ()
    alpha_layers: tuple[str, ...] = ("down1", "down2")


@dataclass(frozen=True)
class EvaluateConfig:
    """Which defenses the run ranks (built-in names, ``pkg.module:Class`` or entry points), and
    at which resolution they are scored: ``full_resolution`` upsamples the logits (bilinear) to
    the labels' own resolution before the argmax, as Cityscapes' official evaluation scores;
    otherwise labels are resized (nearest) to ``data.size``."""

    defenses: tuple[str, ...] = (
        "T",
        "S",
        "A",
        "TS-vote",
        "TA-vote",
        "TA-vote-disagree",
        "jpeg",
        "spatial-smoothing",
        "feature-squeezing",
    )
    batch_size: int = 8
    full_resolution: bool = False


@dataclass(frozen=True)
class RunConfig:
    name: str = "toy"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: NetConfig = field(
        default_factory=lambda: NetConfig("deeplabv3plus", {"depth": 18, "width": 32})
    )
    student: NetConfig = field(default_factory=NetConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def net(self, name: str) -> NetConfig:
        """The architecture of a static network: T is the teacher, S the student."""
        return self.teacher if name == "T" else self.student

    def seed_for(self, name: str) -> int:
        """Distinct, fixed seeds per network: T, S and A never share an initialisation or a
        batch order, and the same config gives the same weights."""
        return self.seed * 1000 + ("T", "S", "A").index(name)


# --- adaptive students ---------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveStudents:
    """The main A (``finetune`` of the config, reported as "A") and the sweep's extra ones."""

    main: FinetuneConfig
    extra: tuple[FinetuneConfig, ...]

    def settings(self, layers: Sequence[str], alpha: float) -> FinetuneConfig:
        return dataclasses.replace(self.main, layers=tuple(layers), alpha=float(alpha))

    def row(self, layers: Sequence[str], alpha: float) -> str:
        """The defense row of the A trained on ``layers`` with ``alpha``."""
        settings = self.settings(layers, alpha)
        return "A" if settings == self.main else settings.checkpoint_name

    def all(self) -> list[tuple[str, FinetuneConfig]]:
        """(row name, settings) of every A to train, the main one first, no repeats."""
        named = [("A", self.main)] + [(c.checkpoint_name, c) for c in self.extra if c != self.main]
        return list(dict(named).items())


def adaptive_students(config: RunConfig) -> AdaptiveStudents:
    """The adaptive students a run trains: the main A, the baseline of [6], the sweeps."""
    base = AdaptiveStudents(config.finetune, ())
    alpha = config.finetune.alpha
    extra = [base.settings(["all"], alpha)] if config.sweep.baseline else []
    extra += [
        base.settings([p.strip() for p in s.split(",")], alpha) for s in config.sweep.layer_sets
    ]
    extra += [
        base.settings([lay], a) for lay in config.sweep.alpha_layers for a in config.sweep.alphas
    ]
    return AdaptiveStudents(config.finetune, tuple(extra))


# --- building and validating -----------------------------------------------------------------


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "a table"
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}s"
        return f"a list of {len(args)} {_type_name(args[0])}s"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` names (ints become floats where floats are wanted, lists
    become tuples); a ConfigError naming the key, the value and the expected type otherwise."""
    origin = typing.get_origin(hint)
    example = (
        f", e.g. [{value!r}]"
        if typing.get_origin(hint) is tuple and not isinstance(value, (list, tuple))
        else ""
    )
    bad = ConfigError(
        f"{key} = {value!r} is not {_type_name(hint)}{example}; fix it in the preset or --set"
    )
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            if dataclasses.is_dataclass(args[0]):
                return tuple(_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value))
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        value_hint = typing.get_args(hint)[1]
        if value_hint is Any:
            return dict(value)
        return {k: _coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} is not a finite number; give a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"no validation for {hint!r}")  # a field type this module does not know


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, recursing into nested dataclasses."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where.rstrip('.')} must be a table, e.g. [{where.rstrip('.')}]")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**kwargs)


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {fix}")


def _unique(values: Sequence[Any], key: str) -> None:
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    _require(not repeated, key, list(values), f"lists {', '.join(repeated)} twice; name each once")


def _eps_list(values: Sequence[float], key: str, *, allow_empty: bool) -> None:
    _require(
        allow_empty or len(values) > 0, key, list(values), "name at least one eps, e.g. [1, 10]"
    )
    for eps in values:
        _require(
            0 < eps <= 255,
            key,
            list(values),
            "every eps must lie in (0, 255] gray values, e.g. [1, 10]",
        )
    _unique(values, key)


def _choices(values: Sequence[str], key: str, valid: Sequence[str], what: str) -> None:
    """A non-empty list of distinct names, each one of ``valid``."""
    _require(len(values) > 0, key, list(values), f"name at least one {what}: {', '.join(valid)}")
    for value in values:
        _require(
            value in valid,
            key,
            list(values),
            f"unknown {what} {value!r}; choose from {', '.join(valid)}",
        )
    _unique(values, key)


def validate(config: RunConfig) -> RunConfig:
    """Check every value's range and every cross-field rule; returns ``config`` unchanged.

    What needs the registries (architectures, attacks, defenses, feature taps) is checked by
    ``bench.stages.checks`` before any work; this covers everything the config alone decides.
    """
    c = config
    _require(
        bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", c.name)),
        "name",
        c.name,
        "use letters, digits and _ . + - only (it names the run directory)",
    )
    _require(c.seed >= 0, "seed", c.seed, "must be an integer >= 0")
    d = c.data
    _require(min(d.size) >= 8, "data.size", list(d.size), "height and width must be >= 8")
    _require(d.toycity_seed >= 0, "data.toycity_seed", d.toycity_seed, "must be >= 0")
    for key, count in d.toycity_counts.items():
        _require(
            key in ("train", "train_extra", "val_per_city"),
            f"data.toycity_counts.{key}",
            count,
            "valid keys are train, train_extra, val_per_city",
        )
        _require(count >= 1, f"data.toycity_counts.{key}", count, "must be >= 1")
    _require(
        d.train_split in SPLITS and d.train_split != "test",
        "data.train_split",
        d.train_split,
        "choose train or val (the test split has no real labels)",
    )
    _require(
        d.unlabeled_split in SPLITS,
        "data.unlabeled_split",
        d.unlabeled_split,
        f"choose from {', '.join(SPLITS)}",
    )
    for key in ("val_subset", "test_subset"):
        value = getattr(d, key)
        _require(
            value in EVALUATION_SUBSETS,
            f"data.{key}",
            value,
            f"choose from {', '.join(EVALUATION_SUBSETS)} (test labels are dummies)",
        )
    p = c.pretrain
    _require(p.epochs >= 1, "pretrain.epochs", p.epochs, "must be >= 1")
    _require(p.batch_size >= 1, "pretrain.batch_size", p.batch_size, "must be >= 1")
    _require(p.lr > 0, "pretrain.lr", p.lr, "must be > 0")
    _require(p.weight_decay >= 0, "pretrain.weight_decay", p.weight_decay, "must be >= 0")
    _require(p.poly_power >= 0, "pretrain.poly_power", p.poly_power, "must be >= 0")
    _require(p.workers >= 0, "pretrain.workers", p.workers, "must be >= 0")
    _validate_finetune(c.finetune, "finetune")
    a = c.attack
    _eps_list(a.eps, "attack.eps", allow_empty=False)
    _choices(a.sources, "attack.sources", STATIC_NETS, "source")
    _choices(a.subsets, "attack.subsets", EVALUATION_SUBSETS, "subset")
    _require(a.batch_size >= 1, "attack.batch_size", a.batch_size, "must be >= 1")
    _require(a.eot_samples >= 1, "attack.eot_samples", a.eot_samples, "must be >= 1")
    _require(
        len(a.suite) > 0, "attack.suite", [], 'name at least one attack, e.g. [{name = "llcm"}]'
    )
    for i, spec in enumerate(a.suite):
        where = f"attack.suite[{i}]"
        _choices(spec.threat_models, f"{where}.threat_models", THREAT_MODELS, "threat model")
        _eps_list(spec.eps, f"{where}.eps", allow_empty=True)
        if spec.subsets:
            _choices(spec.subsets, f"{where}.subsets", EVALUATION_SUBSETS, "subset")
        _require(
            bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", spec.tag)),
            f"{where}.label",
            spec.tag,
            "use letters, digits and _ . + - only (it names AE sets and table columns)",
        )
    _unique([spec.tag for spec in a.suite], "attack.suite labels")
    t = c.detect
    for key in ("delta", "delta_t", "delta_s"):
        value = getattr(t, key)
        _require(
            value is None or -1 <= value <= 1,
            f"detect.{key}",
            value,
            "d_AE lies in [-1, 1], so a threshold must too (the paper uses 0.1)",
        )
    _require(
        (t.delta_t is None) == (t.delta_s is None),
        "detect.delta_t",
        t.delta_t,
        "give both delta_t and delta_s, or neither (then delta is used)",
    )
    _require(
        t.tau is None or 0 <= t.tau <= 1,
        "detect.tau",
        t.tau,
        "is a share of pixels in [0, 1]; leave it out to calibrate it on the validation subset",
    )
    _require(0 < t.tau_quantile < 1, "detect.tau_quantile", t.tau_quantile, "must lie in (0, 1)")
    if t.delta_t is not None and t.delta_s is not None:
        _require(
            t.delta_t >= t.delta_s,
            "detect.delta_t",
            t.delta_t,
            f"must be >= detect.delta_s ({t.delta_s}), else an image suspects T and S at once",
        )
    s = c.sweep
    for layer_set in s.layer_sets:
        parts = [part.strip() for part in layer_set.split(",")]
        _require(
            all(parts),
            "sweep.layer_sets",
            list(s.layer_sets),
            "each entry is a comma-separated list of layers, e.g. 'down,up'",
        )
        _unique(parts, "sweep.layer_sets")
    for alpha in s.alphas:
        _require(0 <= alpha < 1, "sweep.alphas", list(s.alphas), "every alpha must lie in [0, 1)")
    e = c.evaluate
    _require(
        len(e.defenses) > 0, "evaluate.defenses", list(e.defenses), "name at least one defense"
    )
    _unique(e.defenses, "evaluate.defenses")
    _require(e.batch_size >= 1, "evaluate.batch_size", e.batch_size, "must be >= 1")
    return config


def _validate_finetune(f: FinetuneConfig, where: str) -> None:
    _require(
        len(f.layers) > 0,
        f"{where}.layers",
        list(f.layers),
        "name at least one IFM layer, e.g. ['down2']",
    )
    _unique(f.layers, f"{where}.layers")
    _require(
        0 <= f.alpha < 1,
        f"{where}.alpha",
        f.alpha,
        "must lie in [0, 1): with alpha = 1 there is no J_CE, and J_IFM' has a zero "
        "gradient at the start (A = S), so A would never move",
    )
    for key in ("p", "beta", "gamma", "lr"):
        _require(getattr(f, key) > 0, f"{where}.{key}", getattr(f, key), "must be > 0")
    _require(f.epochs >= 0, f"{where}.epochs", f.epochs, "must be >= 0")
    _require(f.batch_size >= 1, f"{where}.batch_size", f.batch_size, "must be >= 1")
    _require(f.workers >= 0, f"{where}.workers", f.workers, "must be >= 0")
    _require(
        f.optimizer in OPTIMIZERS,
        f"{where}.optimizer",
        f.optimizer,
        f"choose from {', '.join(OPTIMIZERS)}",
    )


def validate_finetune(settings: FinetuneConfig) -> FinetuneConfig:
    """The finetune section's checks, for settings built in code (tests, the online vote)."""
    _validate_finetune(settings, "finetune")
    return settings


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Build and validate a config from nested tables (a parsed preset)."""
    return validate(_build(RunConfig, values, ""))


# --- presets, overrides, the saved config -----------------------------------------------------


def _preset_path(name: str | Path) -> Path:
    path = Path(name)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{path}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"no preset {str(name)!r}; pass a .toml file or one of: {names}")
    return path


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        both_tables = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = _merge(merged[key], value) if both_tables else value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path} ({err}); pass a readable TOML file") from None


def _read_preset(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The TOML table of a preset; ``base = "toy"`` starts from another preset's values."""
    path = _preset_path(path)
    if path.resolve() in seen:
        raise ConfigError(f"preset {path} names itself as a base (directly or not)")
    values = _read_toml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    return _merge(_read_preset(base, (*seen, path.resolve())), values)


def load_config(path: str | Path) -> RunConfig:
    """Read a preset by path, or by name from the shipped presets (``toy``, ``smoke``, ...).

    A relative ``data.root`` is relative to the current directory. A preset file that names no
    run (``name = ...``) is named after the file, not after its base: its runs never share the
    base preset's run directory.
    """
    values = _read_preset(path)
    preset = _preset_path(path)
    if preset.parent != PRESET_DIR and "name" not in _read_toml(preset):
        values["name"] = preset.stem
    return config_from_dict(values)


def parse_override(override: str) -> tuple[str, Any]:
    """``section.key=value`` -> (key path, value); values are TOML literals (``[1, 10]``,
    ``0.7``, ``"down2"``), and a bare word is taken as a string (``finetune.optimizer=sgd``)."""
    path, sep, text = override.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"override {override!r} is not key=value, e.g. finetune.alpha=0.7")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return path.strip(), value


def apply_values(config: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """The config with ``{"section.key": value}`` set, validated again."""
    table = config.to_dict()
    for path, value in values.items():
        *parents, key = path.split(".")
        node = table
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown section {part!r} in {path!r}")
            node = node[part]
        if key not in node:
            raise ConfigError(f"unknown key {path!r}; valid keys here: {', '.join(sorted(node))}")
        node[key] = value
    return config_from_dict(_drop_none(table))


def apply_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides (``--set``), in order."""
    return apply_values(config, dict(parse_override(o) for o in overrides))


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    # TOML has no null; a key left out reads back as its default, which is None.
    return {
        k: _drop_none(v) if isinstance(v, Mapping) else v
        for k, v in values.items()
        if v is not None
    }


def save_run_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved config as ``<run_dir>/config.toml``, atomically.

    Paths (``data.root``, networks' weights files) are written relative to the run directory, so
    a run directory names no machine path and keeps working when it moves with its data.
    """
    run_dir = Path(run_dir)
    values = config.to_dict()
    for section, key in PATH_KEYS:
        if values[section][key]:
            path = Path(values[section][key]).resolve()
            values[section][key] = os.path.relpath(path, run_dir.resolve())
    for section in ("teacher", "student"):
        file, sep, name = values[section]["arch"].rpartition(":")
        if sep and file.endswith(".py"):
            values[section]["arch"] = (
                f"{os.path.relpath(Path(file).resolve(), run_dir.resolve())}:{name}"
            )
    return atomic_write_text(run_dir / CONFIG_FILE, tomli_w.dumps(_drop_none(values)))


#: config values that are file or folder paths: absolute once resolved, relative to the run
#: directory in its config.toml
PATH_KEYS = (
    ("data", "root"),
    ("teacher", "weights"),
    ("teacher", "backbone"),
    ("student", "weights"),
    ("student", "backbone"),
)


def _resolved_paths(config: RunConfig, base: Path) -> RunConfig:
    """``config`` with its relative paths made absolute against ``base`` (the files of
    ``file.py:factory`` architectures too)."""
    values = {}
    for section, key in PATH_KEYS:
        value = getattr(getattr(config, section), key)
        if value:
            values[f"{section}.{key}"] = str((base / Path(value).expanduser()).resolve())
    for section in ("teacher", "student"):
        file, sep, name = getattr(config, section).arch.rpartition(":")
        if sep and file.endswith(".py"):
            values[f"{section}.arch"] = f"{(base / Path(file).expanduser()).resolve()}:{name}"
    return apply_values(config, values) if values else config


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was made with (its paths resolved against the run)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {run_dir}; run bench run (or bench train) there first"
        )
    values = _read_toml(path)
    missing = [k for k in ("name", "data", "attack", "evaluate") if k not in values]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(missing)}; it was not written by bench (or is damaged): "
            "rerun bench run there"
        )
    return _resolved_paths(config_from_dict(values), Path(run_dir))


def train_values(
    *, epochs: int | None = None, layers: Sequence[str] | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """``bench train``'s own options as config values (``--epochs`` sets both pretraining and
    finetuning), so that the saved config records what was trained."""
    values: dict[str, Any] = {
        "pretrain.epochs": epochs,
        "finetune.epochs": epochs,
        "finetune.layers": list(layers) if layers else None,
        "finetune.alpha": alpha,
    }
    return {k: v for k, v in values.items() if v is not None}


def resolve_config(
    preset: str | Path,
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    seed: int | None = None,
) -> RunConfig:
    """The config a command runs with: the preset, then ``--set`` overrides, then the values of
    dedicated options (``{"finetune.alpha": 0.7}``), ``--data`` and ``--seed``; validated, with
    ``data.root`` made absolute (a relative root is relative to the current directory).

    A user's own data (``data_root``) is never overwritten by a generated toy city.
    """
    config = apply_overrides(load_config(preset), overrides)
    extra = dict(values or {})
    if data_root is not None:
        extra |= {"data.root": str(data_root), "data.toycity": False}
    if seed is not None:
        extra["seed"] = seed
    if extra:
        config = apply_values(config, extra)
    return _resolved_paths(config, Path.cwd())
