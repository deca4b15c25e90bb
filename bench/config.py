"""The configuration of a run: frozen dataclasses, read from TOML presets, saved in the run dir.

A preset is a TOML file with one table per section below; keys left out take the defaults here,
and ``base = "toy"`` starts from another preset (a user's preset can change just a few keys).
Unknown keys are errors (a typo must not silently fall back to a default). Config text is parsed
as TOML, never evaluated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from bench.errors import BenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(BenchError, ValueError):
    """A preset or override is invalid."""


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
    """An architecture from ``bench.models.ARCHITECTURES`` and its constructor options."""

    arch: str = "erfnet"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining of T and S (Adam, poly learning-rate decay, cross-entropy)."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    workers: int = 0


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


@dataclass(frozen=True)
class AttackConfig:
    """Which AE sets a run builds: every source x eps x subset."""

    name: str = "llcm"
    eps: tuple[float, ...] = (1.0, 10.0)
    sources: tuple[str, ...] = ("T", "S")
    subsets: tuple[str, ...] = ("mini_val", "mini_test")
    batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the AE detection (eq. 4): one delta, or delta_t / delta_s when both set."""

    delta: float = 0.1
    delta_t: float | None = None
    delta_s: float | None = None


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
    """Which defenses the run ranks (built-in names, ``pkg.module:Class`` or entry points)."""

    defenses: tuple[str, ...] = (
        "T", "S", "A", "TS-vote", "TA-vote", "jpeg", "spatial-smoothing", "feature-squeezing",
    )
    batch_size: int = 8


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

    def digest(self, *sections: str) -> str:
        """A stable hash of the named sections (all when none), for cache keys."""
        full = self.to_dict()
        chosen = {s: full[s] for s in sections} if sections else full
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, recursing into nested dataclasses."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be a table")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
            continue
        # TOML writes 10 for 10.0; float fields get floats so that hashes do not depend on it.
        wants_float = "float" in str(known[name].type)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}{name} must be a list, e.g. [1, 10]")
            value = tuple(_as_float(v) if wants_float else v for v in value)
        elif wants_float:
            value = _as_float(value)
        kwargs[name] = value
    return cls(**kwargs)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, values, "")


def _preset_path(name: str | Path) -> Path:
    path = Path(name)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{path}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"no preset {str(name)!r}; pass a .toml file or one of: {names}")
    return path


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_tables else value
    return merged


def _read_preset(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The TOML table of a preset; ``base = "toy"`` starts from another preset's values."""
    path = _preset_path(path)
    if path.resolve() in seen:
        raise ConfigError(f"preset {path} names itself as a base (directly or not)")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    base = values.pop("base", None)
    if base is None:
        return values
    return _merge(_read_preset(base, (*seen, path.resolve())), values)


def load_config(path: str | Path) -> RunConfig:
    """Read a preset by path, or by name from the shipped presets (``toy``, ``smoke``, ...)."""
    return config_from_dict(_read_preset(path))


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides; values are TOML literals (``[1, 10]``, ``0.7``,
    ``"down2"``), and a bare word is taken as a string (``finetune.optimizer=sgd``)."""
    values = config.to_dict()
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path:
            raise ConfigError(f"override {override!r} is not key=value, e.g. finetune.alpha=0.7")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, key = path.strip().split(".")
        table = values
        for part in parents:
            if not isinstance(table.get(part), dict):
                raise ConfigError(f"unknown section {part!r} in override {override!r}")
            table = table[part]
        if key not in table:
            raise ConfigError(
                f"unknown key {path!r} in override; valid keys here: {', '.join(sorted(table))}"
            )
        table[key] = value
    return config_from_dict(_drop_none(values))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    # TOML has no null; a key left out reads back as its default, which is None.
    return {
        k: _drop_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None
    }


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as TOML; ``load_config`` reads it back equal."""
    Path(path).write_text(tomli_w.dumps(_drop_none(config.to_dict())))
