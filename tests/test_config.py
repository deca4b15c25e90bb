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


def test_a_preset_can_start_from_another(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "toy"\nname = "mine"\n[attack]\neps = [1, 2, 4, 8]\n')
    config, toy = load_config(path), load_config("toy")
    assert config.attack.eps == (1.0, 2.0, 4.0, 8.0) and config.name == "mine"
    assert config.data == toy.data and config.pretrain == toy.pretrain
    path.write_text('base = "' + str(path) + '"\n')
    with pytest.raises(ConfigError, match="names itself as a base"):
        load_config(path)


def test_overrides_are_typed_and_checked():
    from bench.config import apply_overrides

    config = apply_overrides(RunConfig(), ["finetune.alpha=0.7", "attack.eps=[1, 4]", "finetune.optimizer=sgd"])
    assert config.finetune.alpha == 0.7 and config.attack.eps == (1.0, 4.0)
    assert config.finetune.optimizer == "sgd"
    with pytest.raises(ConfigError, match="unknown key 'finetune.alfa'"):
        apply_overrides(RunConfig(), ["finetune.alfa=0.7"])
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(RunConfig(), ["finetune.alpha"])
