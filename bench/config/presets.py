"""Presets and overrides: from TOML files and ``section.key=value`` text to a validated config.

A preset is a TOML file with one table per section of ``RunConfig``; keys left out take the
defaults, and ``base = "toy"`` starts from another preset (a user's preset can change just a few
keys). Unknown keys are errors (a typo must not silently fall back to a default). Config text is
parsed as TOML, never evaluated.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.config.convert import build_dataclass
from bench.config.schema import RunConfig
from bench.config.validation import validate
from bench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent.parent / "presets"


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Build and validate a config from nested tables (a parsed preset)."""
    return validate(build_dataclass(RunConfig, values, ""))


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of a TOML file; a one-line ``ConfigError`` when it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path} ({err}); pass a readable TOML file") from err


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


def _read_preset(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The TOML table of a preset; ``base = "toy"`` starts from another preset's values."""
    path = _preset_path(path)
    if path.resolve() in seen:
        raise ConfigError(f"preset {path} names itself as a base (directly or not)")
    values = read_toml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise ConfigError(
            f'{path}: base = {base!r} is not a preset; write base = "toy" (a preset name or '
            "a .toml file, in quotes)"
        )
    return _merge(_read_preset(base, (*seen, path.resolve())), values)


def load_config(path: str | Path) -> RunConfig:
    """Read a preset by path, or by name from the shipped presets (``toy``, ``smoke``, ...).

    A relative ``data.root`` is relative to the current directory. A preset file that names no
    run (``name = ...``) is named after the file, not after its base: its runs never share the
    base preset's run directory.
    """
    values = _read_preset(path)
    preset = _preset_path(path)
    if preset.parent != PRESET_DIR and "name" not in read_toml(preset):
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


def parse_defense(text: str) -> str | dict[str, Any]:
    """A ``--defense`` value as an entry of ``evaluate.defenses``: a spec (``T``,
    ``file.py:Class``), or the TOML inline table a preset writes, quoted whole in the shell:
    ``'{spec = "file.py:Class", options = {step = 8}, name = "masked-8"}'``."""
    if not text.lstrip().startswith("{"):
        return text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"--defense {text!r} is not a TOML inline table ({err}); write it as "
            '\'{spec = "file.py:Class", options = {step = 8}, name = "masked-8"}\' (keys '
            "separated by commas, strings in double quotes, the whole in single quotes)"
        ) from err


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
    return config_from_dict(drop_none(table))


def apply_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides (``--set``), in order."""
    return apply_values(config, dict(parse_override(o) for o in overrides))


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without its None entries, at every depth."""
    # TOML has no null; a key left out reads back as its default, which is None.
    return {
        k: drop_none(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None
    }
