"""Presets: every shipped preset loads, round-trips through TOML, and typos are errors."""

from __future__ import annotations

import pytest

from bench.config import PRESET_DIR, ConfigError, RunConfig, load_config, save_config


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_shipped_presets_round_trip(name, tmp_path):
    config = load_config(name)
    save_config(config, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == config


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[pretrain]\nepochz = 3\n")
    with pytest.raises(ConfigError, match="unknown key pretrain.'epochz'; valid keys: batch_size"):
        load_config(path)


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="smoke.*toy"):
        load_config("nonexistent")


def test_digest_depends_only_on_the_named_sections():
    base = RunConfig()
    other = RunConfig(name="other")
    assert base.digest("pretrain") == other.digest("pretrain")
    assert base.digest() != other.digest()
