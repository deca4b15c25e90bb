"""``params()`` keys the AE sets: it covers every constructor option and its values never drift."""

from __future__ import annotations

import inspect

import pytest

from attacks import ATTACK_NAMES, AttackError, attack_class, build_attack

# Non-default values to try per option, in order; the first one the attack accepts is used.
ALTERNATIVES = {
    "rounding": ("floor",),
    "target": ("per_step", "labels"),
    "step": (2.0,),
    "iterations": (5,),
    "loss": ("js",),
    "n_iter": (7,),
    "red_eps": (True,),
    "momentum": (0.5,),
    "rho": (0.5,),
    "seed": (3,),
    "class_weights": ([2.0] * 19,),
    "random_init": (False,),
    "decay": (0.5,),
    "queries": (50,),
    "p_init": (0.5,),
    "precision": ("bfloat16",),
}


def _options(name: str) -> list[inspect.Parameter]:
    return list(inspect.signature(attack_class(name).__init__).parameters.values())[1:]


def _non_default(name: str, option: str):
    for value in ALTERNATIVES[option]:
        try:
            return build_attack(name, **{option: value})
        except AttackError:
            continue
    raise AssertionError(f"no value in ALTERNATIVES[{option!r}] builds {name}")


@pytest.mark.parametrize(
    "name, option",
    [(name, p.name) for name in ATTACK_NAMES for p in _options(name)],
)
def test_every_option_changes_the_params(name, option):
    assert option in ALTERNATIVES, f"add a non-default value of {name}'s {option!r} here"
    default = build_attack(name).params()
    changed = _non_default(name, option).params()
    assert changed != default, f"{name}: {option} is missing from params(), the AE-set key"


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_options_are_keyword_only(name):
    kinds = {p.name: p.kind for p in _options(name)}
    assert set(kinds.values()) <= {inspect.Parameter.KEYWORD_ONLY}, kinds


# The keys of AE sets already in users' stores: a change here rebuilds every one of them.
DEFAULT_PARAMS = {
    "llcm": {"rounding": "ceil", "target": "fixed", "step": 1.0},
    "apgd": {
        "loss": "ce",
        "n_iter": 100,
        "red_eps": False,
        "momentum": 0.75,
        "rho": 0.75,
        "seed": 0,
    },
    "fgsm": {"target": "least_likely"},
    "bim": {"target": "least_likely", "step": 1.0, "iterations": "llcm"},
    "pgd": {
        "target": "least_likely",
        "step": 1.0,
        "iterations": "llcm",
        "random_init": True,
        "seed": 0,
    },
    "mifgsm": {"target": "least_likely", "step": 1.0, "iterations": "llcm", "decay": 1.0},
    "square": {"queries": 1000, "p_init": 0.8, "seed": 0},
    "segpgd": {"n_iter": 20, "seed": 0},  # step None (the papers' share of eps) is omitted
    "cospgd": {"n_iter": 20, "seed": 0},
}


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_default_params_keep_existing_keys(name):
    params = build_attack(name).params()
    assert params == DEFAULT_PARAMS[name]
    assert list(params) == list(DEFAULT_PARAMS[name])  # the order of repr() too


def test_stored_forms_are_plain_values():
    params = build_attack("apgd", class_weights=(1, 2) * 9 + (3,), red_eps=1).params()
    assert params["class_weights"] == [1.0, 2.0] * 9 + [3.0]
    assert params["red_eps"] is True
