"""Presets: every shipped preset loads and round-trips; every bad value is one clear error."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from bench.config import (
    PRESET_DIR,
    DefenseSpec,
    FinetuneConfig,
    RunConfig,
    adaptive_students,
    apply_overrides,
    load_config,
    load_run_config,
    parse_defense,
    resolve_config,
    save_run_config,
)
from bench.errors import ConfigError
from bench.keys import cache_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_shipped_presets_round_trip_through_a_run_directory(name, tmp_path):
    config = load_config(name)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, root=str(tmp_path / "d"))
    )
    save_run_config(config, tmp_path / "run")
    text = (tmp_path / "run" / "config.toml").read_text()
    assert 'root = "../d"' in text and str(tmp_path) not in text  # no machine path
    assert load_run_config(tmp_path / "run") == config


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[pretrain]\nepochz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key pretrain\.epochz; valid keys: epochs"):
        load_config(path)


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"smoke.*toy"):
        load_config("nonexistent")


def test_cache_key_is_canonical():
    assert cache_key({"b": 1, "a": (1, 2)}) == cache_key({"a": [1, 2], "b": 1})
    assert cache_key(RunConfig().pretrain) == cache_key(dataclasses.asdict(RunConfig().pretrain))
    assert cache_key(1.0) != cache_key(2.0) and len(cache_key("x")) == 16


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
    config = apply_overrides(
        RunConfig(), ["finetune.alpha=0.7", "attack.eps=[1, 4]", "finetune.optimizer=sgd"]
    )
    assert config.finetune.alpha == 0.7 and config.attack.eps == (1.0, 4.0)
    assert config.finetune.optimizer == "sgd"
    with pytest.raises(ConfigError, match=r"unknown key 'finetune\.alfa'"):
        apply_overrides(RunConfig(), ["finetune.alfa=0.7"])
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(RunConfig(), ["finetune.alpha"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attack.eps=[300]", "attack.eps = [300.0]: every eps must lie in (0, 255]"),
        ("attack.eps=[0]", "attack.eps = [0.0]: every eps must lie in (0, 255]"),
        ("attack.eps=[]", "attack.eps = []: name at least one eps"),
        ("attack.eps=[1, 1]", "attack.eps = [1.0, 1.0]: lists 1.0 twice"),
        ("attack.eps=['ten']", "attack.eps = 'ten' is not a number"),
        ("attack.eps=10", "attack.eps = 10 is not a list of numbers"),
        ("attack.eps=1,2", "attack.eps = '1,2' is not a list of numbers, e.g. [1, 2]; fix it"),
        (
            "finetune.layers=[down9]",
            "finetune.layers = '[down9]' is not a list of strings, e.g. [\"down9\"] (on the "
            "command line quote it whole: 'finetune.layers=[\"down9\"]')",
        ),
        ("finetune.alpha=abc", "finetune.alpha = 'abc' is not a number; fix it"),
        ("attack.batch_size=2.5", "attack.batch_size = 2.5 is not an integer"),
        ("attack.batch_size=0", "attack.batch_size = 0: must be >= 1"),
        ("attack.batch_size=true", "attack.batch_size = True is not an integer"),
        ("attack.sources=['X']", "unknown source 'X'; choose from T, S"),
        ("attack.subsets=['test']", "unknown subset 'test'; choose from train, val, mini_val"),
        ("detect.delta=nan", "detect.delta = nan is not a finite number"),
        ("detect.delta=2", "detect.delta = 2.0: d_AE lies in [-1, 1]"),
        ("detect.delta_t=0.2", "give both delta_t and delta_s"),
        ("detect.tau=1.5", "detect.tau = 1.5: is a share of pixels, so it must lie in [0, 1]"),
        ("detect.tau_quantile=1", "detect.tau_quantile = 1.0: must lie in (0, 1)"),
        ("evaluate.defenses=[]", "evaluate.defenses = []: name at least one defense"),
        ("evaluate.batch_size=-1", "evaluate.batch_size = -1: must be >= 1"),
        ("finetune.alpha=1", "finetune.alpha = 1.0: must lie in [0, 1)"),
        ("finetune.gamma=0", "finetune.gamma = 0.0: must be > 0"),
        ("finetune.optimizer=lbfgs", "finetune.optimizer = 'lbfgs': choose from adam, adamw, sgd"),
        ("finetune.layers=[]", "finetune.layers = []: name at least one IFM layer"),
        ("pretrain.epochs=0", "pretrain.epochs = 0: must be >= 1"),
        ("pretrain.lr=-1", "pretrain.lr = -1.0: must be > 0"),
        ("data.size=[64]", "data.size = [64] is not a list of 2 integers"),
        ("data.size=[4, 8]", "data.size = [4, 8]: height and width must be >= 8"),
        ("data.val_subset=test", "data.val_subset = 'test': choose from train, val, mini_val"),
        ("data.toycity_counts={trian=3}", "data.toycity_counts.trian = 3: valid keys are train"),
        ("sweep.alphas=[0.5, 1.5]", "sweep.alphas[1] = 1.5: must lie in [0, 1)"),
        ("seed=-3", "seed = -3: must be an integer >= 0"),
        ("name='my run'", "name = 'my run': use letters, digits"),
        ("teacher=3", "teacher must be a table"),
        (
            "attack.gradient_free.queries=-1",
            "attack.gradient_free.queries = -1: must be an integer >= 0 (0 turns",
        ),
        (
            "attack.gradient_free.options={queries=5}",
            "set the budget as attack.gradient_free.queries, not as an option",
        ),
        (
            "attack.gradient_free.label=apgd-ce",
            "attack.gradient_free.label = 'apgd-ce': an attack of attack.suite has this label",
        ),
        ("evaluate.defenses=[{options={step=8}}]", "evaluate.defenses[0].spec"),
        ("evaluate.defenses=[{spec='T', name='my row'}]", "evaluate.defenses[0].name = 'my row'"),
        ("evaluate.defenses=[{spec='T', colour=1}]", "unknown key evaluate.defenses[0].colour"),
        ("evaluate.defenses=[3]", "evaluate.defenses[0] must be a table"),
    ],
)
def test_every_bad_value_is_one_line_naming_key_value_and_fix(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_config("smoke"), [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_adaptive_students_name_their_checkpoints():
    config = apply_overrides(RunConfig(), ["sweep.layer_sets=['down,up']", "sweep.alphas=[0.7]"])
    rows = dict(adaptive_students(config).all())
    assert list(rows)[:2] == ["A", "A_all_a0.6_e10"]
    assert "A_down+up_a0.6_e10" in rows and "A_down1_a0.7_e10" in rows
    assert FinetuneConfig(layers=("all",), beta=0.25, optimizer="sgd").checkpoint_name == (
        "A_all_a0.6_e10_b0.25_sgd"
    )


def test_a_preset_file_names_its_runs_after_itself(tmp_path):
    (tmp_path / "mine.toml").write_text('base = "smoke"\n[attack]\neps = [2]\n')
    assert load_config(tmp_path / "mine.toml").name == "mine"
    (tmp_path / "named.toml").write_text('base = "smoke"\nname = "other"\n')
    assert load_config(tmp_path / "named.toml").name == "other"
    assert load_config("smoke").name == "smoke"


def test_a_preset_that_is_not_toml_keeps_the_parser_error_as_its_cause(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[attack\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as err:
        load_config(path)
    assert isinstance(err.value.__cause__, tomllib.TOMLDecodeError)
    assert "\n" not in str(err.value)


def test_the_gradient_free_attack_is_the_suite_entry_it_stands_for():
    config = apply_overrides(
        load_config("smoke"),
        ["attack.gradient_free.queries=200", "attack.gradient_free.options={p_init=0.5}"],
    )
    spec = config.attack.gradient_free.spec
    assert (spec.name, spec.tag, spec.threat_models) == ("square", "square", ("white-box",))
    assert spec.options == {"p_init": 0.5, "queries": 200}
    assert config.attack.tags == ("llcm", "apgd-ce", "square")  # the report keeps its rows
    off = apply_overrides(config, ["attack.gradient_free.queries=0"])
    assert off.attack.tags == ("llcm", "apgd-ce")


def test_a_defense_is_a_spec_or_a_table_with_options_and_a_row_name(tmp_path):
    masked = {"spec": "masked.py:Masked", "options": {"step": 8}, "name": "masked-8"}
    config = apply_overrides(
        load_config("smoke"),
        [
            'evaluate.defenses=["T", {spec = "masked.py:Masked", options = {step = 8}, '
            'name = "masked-8"}]'
        ],
    )
    assert config.evaluate.defenses == (DefenseSpec("T"), DefenseSpec(**masked))
    save_run_config(config, tmp_path)
    text = (tmp_path / "config.toml").read_text()
    assert '"T",' in text and 'options = { step = 8 }, name = "masked-8"' in text  # as written
    assert load_run_config(tmp_path, trust_code=True).evaluate.defenses == config.evaluate.defenses


def test_a_defense_on_the_command_line_is_a_spec_or_the_same_table():
    assert parse_defense(" examples/x.py:X ") == "examples/x.py:X"
    text = '{spec = "x.py:X", options = {step = 8, mode = "up"}, name = "x-8"}'
    assert parse_defense(text) == {
        "spec": "x.py:X",
        "options": {"step": 8, "mode": "up"},
        "name": "x-8",
    }
    with pytest.raises(ConfigError, match=r"is not a TOML inline table .*single quotes") as err:
        parse_defense("{spec = x.py:X}")
    assert "\n" not in str(err.value)


def test_the_toy_city_is_generated_once_into_the_shared_data_folder(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "shared"))
    smoke = resolve_config("smoke")
    root = Path(smoke.data.root)
    assert root.parent == tmp_path / "shared" and root.name.startswith("toycity-32x64-")
    assert resolve_config("smoke", seed=3).data.root == smoke.data.root  # every run shares it
    other = resolve_config("smoke", overrides=["data.toycity_seed=1"]).data.root
    assert Path(other).parent == root.parent and other != smoke.data.root
    mine = resolve_config("smoke", data_root=tmp_path / "mine").data
    assert mine.root == str(tmp_path / "mine") and not mine.toycity
    monkeypatch.delenv("BENCH_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Path(resolve_config("toy").data.root).parent == tmp_path / "xdg" / "segrobust-bench"
    assert not list((tmp_path / "work").iterdir())  # nothing next to the working directory


def test_a_tree_that_is_not_a_toy_city_needs_a_root():
    with pytest.raises(ConfigError, match=r"data.root = '': name your Cityscapes-layout tree"):
        apply_overrides(load_config("smoke"), ["data.toycity=false"])
