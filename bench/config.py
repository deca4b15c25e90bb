"""The configuration of a run: frozen dataclasses, read from TOML presets, saved in the run dir.

A preset is a TOML file with one table per section below; keys left out take the defaults here.
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
class RunConfig:
    name: str = "toy"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: NetConfig = field(
        default_factory=lambda: NetConfig("deeplabv3plus", {"depth": 18, "width": 32})
    )
    student: NetConfig = field(default_factory=NetConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

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
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, values, "")


def load_config(path: str | Path) -> RunConfig:
    """Read a preset by path, or by name from the shipped presets (``toy``, ``smoke``, ...)."""
    path = Path(path)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{path}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"no preset {path}; pass a .toml file or one of: {names}")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return config_from_dict(values)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(config.to_dict()))
