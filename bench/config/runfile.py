"""A run directory's ``config.toml``: the resolved config a run was made with.

Paths (``data.root``, networks' weights files, the files of ``file.py:factory`` architectures)
are written relative to the run directory, so a run directory names no machine path and keeps
working when it moves with its data; reading it back makes them absolute again.

A run directory is data, and it may be shared: its ``config.toml`` must not choose code to run.
``load_run_config`` (what ``bench attack --out`` and ``bench perf attack --out`` build networks
and defenses from) refuses a plug-in spec (``module:name``, ``file.py:name``) in ``CODE_KEYS``
unless the caller trusts it: the user named it again, or said the run is theirs. Built-in names
and installed entry points are always allowed. Nothing is imported before that check (reading and
validating a config never imports plug-ins). ``read_run_config`` reads the names alone, for
callers that import none of them (the report).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import tomli_w

from bench.config.presets import apply_values, config_from_dict, drop_none, read_toml
from bench.config.schema import RunConfig
from bench.errors import ConfigError
from bench.files import atomic_write_text
from bench.plugins import is_spec

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

#: config values that may name code to import (a plug-in spec, ``bench.plugins.is_spec``)
CODE_KEYS = ("teacher.arch", "student.arch", "evaluate.defenses")


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
    values["evaluate"]["defenses"] = [  # a spec alone as the bare string a preset writes
        d["spec"] if not d["options"] and not d["name"] else d
        for d in values["evaluate"]["defenses"]
    ]
    return atomic_write_text(run_dir / CONFIG_FILE, tomli_w.dumps(drop_none(values)))


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was made with (its paths resolved against the run), its
    plug-in specs unchecked: for callers that import none of the code it names (the report);
    anything that builds networks or defenses from it uses ``load_run_config``."""
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


def code_specs(config: RunConfig) -> list[tuple[str, str]]:
    """``(key, spec)`` for every plug-in spec the config names in ``CODE_KEYS``, in order."""
    named = [(f"{role}.arch", getattr(config, role).arch) for role in ("teacher", "student")]
    named += [("evaluate.defenses", defense.spec) for defense in config.evaluate.defenses]
    return [(key, spec) for key, spec in named if is_spec(spec)]


def same_code(spec: str) -> str:
    """A plug-in spec as the code it names: a ``file.py`` made absolute (against the current
    directory, as its import would find it), a module name as it is."""
    module, _, name = spec.rpartition(":")
    if module.endswith(".py"):
        return f"{Path(module).expanduser().resolve()}:{name}"
    return spec


def load_run_config(
    run_dir: str | Path, *, trusted_specs: Iterable[str] = (), trust_code: bool = False
) -> RunConfig:
    """The config a run directory was made with (its paths resolved against the run), for
    building its networks and defenses.

    A run directory cannot choose code to run: a plug-in spec in ``CODE_KEYS`` is refused (a
    one-line ``ConfigError`` naming the file, the key and the fix) unless it names the same code
    as one of ``trusted_specs`` (the user named it again) or ``trust_code`` (the user wrote this
    run). Nothing is imported here.
    """
    config = read_run_config(run_dir)
    if trust_code:
        return config
    trusted = {same_code(spec) for spec in trusted_specs}
    for key, spec in code_specs(config):
        if same_code(spec) not in trusted:
            raise ConfigError(
                f"{Path(run_dir) / CONFIG_FILE}: {key} = {spec!r} names code to import, and a "
                "run directory cannot choose code to run: name it again with --trust-plugin "
                f"{spec!r}, or pass --trust-run-code if you wrote this run"
            )
    return config
