"""A run directory's ``config.toml``: the resolved config a run was made with.

Paths (``data.root``, networks' weights files, the files of ``file.py:factory`` architectures)
are written relative to the run directory, so a run directory names no machine path and keeps
working when it moves with its data; reading it back makes them absolute again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import tomli_w

from bench.config.presets import apply_values, config_from_dict, drop_none, read_toml
from bench.config.schema import RunConfig
from bench.errors import ConfigError
from bench.files import atomic_write_text

CONFIG_FILE = "config.toml"

#: config values that are file or folder paths: absolute once resolved, relative to the run
#: directory in its config.toml
PATH_KEYS = (
    ("data", "root"),
    ("teacher", "weights"),
    ("teacher", "backbone"),
    ("student", "weights"),
    ("student", "backbone"),
)


def _converted_paths(config: RunConfig, convert: Callable[[str], str]) -> dict[str, str]:
    """``{"section.key": convert(path)}`` for every path ``config`` names (``PATH_KEYS`` and
    the files of ``file.py:factory`` architectures)."""
    values = {}
    for section, key in PATH_KEYS:
        value = getattr(getattr(config, section), key)
        if value:
            values[f"{section}.{key}"] = convert(value)
    for section in ("teacher", "student"):
        file, sep, name = getattr(config, section).arch.rpartition(":")
        if sep and file.endswith(".py"):
            values[f"{section}.arch"] = f"{convert(file)}:{name}"
    return values


def resolved_paths(config: RunConfig, base: Path) -> RunConfig:
    """``config`` with its relative paths made absolute against ``base``."""
    values = _converted_paths(config, lambda p: str((base / Path(p).expanduser()).resolve()))
    return apply_values(config, values) if values else config


def save_run_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved config as ``<run_dir>/config.toml``, atomically, its paths relative
    to ``run_dir``."""
    run_dir = Path(run_dir)
    values = config.to_dict()
    relative = _converted_paths(
        config, lambda p: os.path.relpath(Path(p).resolve(), run_dir.resolve())
    )
    for path, value in relative.items():
        section, key = path.split(".")
        values[section][key] = value
    return atomic_write_text(run_dir / CONFIG_FILE, tomli_w.dumps(drop_none(values)))


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was made with (its paths resolved against the run)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {run_dir}; run bench run (or bench train) there first"
        )
    values = read_toml(path)
    missing = [k for k in ("name", "data", "attack", "evaluate") if k not in values]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(missing)}; it was not written by bench (or is damaged): "
            "rerun bench run there"
        )
    return resolved_paths(config_from_dict(values), Path(run_dir))
