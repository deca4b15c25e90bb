"""The registry: built-ins by name, plug-ins by dotted name, file path and entry point."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch

import defenses.registry
from defenses import (
    BUILTINS,
    DefenseBase,
    DefenseError,
    Prediction,
    build_defense,
    load_defense,
    networks_needed,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _check_pixel_vote(defense) -> None:
    pred = defense.predict(torch.zeros(4, 3, 4, 5, dtype=torch.uint8))
    # label_maps(): T's and S's changes never overlap, so A (all 0) plus the other network
    # outvote each of them: the output is class 0 everywhere; T is overruled where it changed
    assert torch.equal(pred.labels, torch.zeros(4, 4, 5, dtype=torch.int64))
    assert [r["overruled"] for r in pred.records] == pytest.approx([0.6, 0.05, 0.05, 0.2])


def test_plugin_by_dotted_name(monkeypatch, const_networks):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    defense = build_defense("my_defense:PixelVote", const_networks)
    assert defense.name == "pixel-vote"
    _check_pixel_vote(defense)


def test_plugin_by_file_path(const_networks):
    _check_pixel_vote(build_defense(f"{EXAMPLES / 'my_defense.py'}:PixelVote", const_networks))


def test_plugin_by_entry_point(monkeypatch, const_networks):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    ep = importlib.metadata.EntryPoint("pixel", "my_defense:PixelVote", defenses.ENTRY_POINT_GROUP)
    monkeypatch.setattr(defenses.registry.REGISTRY, "entry_points", lambda: {"pixel": ep})
    assert "pixel" in defenses.available_defenses()
    _check_pixel_vote(build_defense("pixel", const_networks))


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_predicts_label_maps(name, tiny_networks, images):
    defense = build_defense(name, tiny_networks)
    pred = defense.predict(images)
    assert isinstance(pred, Prediction) and defense.name == name
    assert pred.labels.shape == (2, 32, 64) and pred.labels.dtype == torch.int64
    assert len(pred.records) == 2 and all("chosen" in r for r in pred.records)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_checks_its_images_through_the_base(name, tiny_networks):
    defense = build_defense(name, tiny_networks)
    assert isinstance(defense, DefenseBase)
    with pytest.raises(DefenseError, match="uint8"):
        defense.predict(torch.zeros(1, 3, 4, 5))


class _Constant(DefenseBase):
    name = "constant"

    def __init__(self, networks):
        self.calls = 0

    def _predict(self, images):
        self.calls += 1
        n, _, h, w = images.shape
        return Prediction(torch.zeros(n, h, w, dtype=torch.int64), [{}] * n)


def test_a_plugin_may_use_the_base(const_networks):
    defense = build_defense(f"{__name__}:_Constant", const_networks)
    assert defense.predict(torch.zeros(2, 3, 4, 5, dtype=torch.uint8)).labels.shape == (2, 4, 5)
    with pytest.raises(DefenseError, match="uint8"):
        defense.predict(torch.zeros(2, 3, 4, 5))
    assert defense.calls == 1  # the hook never sees unchecked images


class _NoPredict:
    name = "broken"

    def __init__(self, networks):
        pass


@pytest.mark.parametrize(
    "spec, options, message",
    [
        ("T/S", {}, "unknown defense 'T/S'; choose from T, S, A, TS-vote"),
        ("no_such_module_xyz:Thing", {}, "cannot import no_such_module_xyz"),
        ("defenses:Nope", {}, "has no 'Nope'"),
        ("missing_file.py:Thing", {}, "no file missing_file.py"),
        ("TS-vote", {"delta": 0.1, "colour": "red"}, "cannot be built.*colour"),
        (f"{__name__}:_NoPredict", {}, "lacks a str 'name' or a 'predict"),
    ],
    ids=["unknown", "no-module", "no-attr", "no-file", "bad-option", "no-predict"],
)
def test_loading_errors_say_what_to_do(spec, options, message, const_networks):
    with pytest.raises(DefenseError, match=message):
        build_defense(spec, const_networks, **options)


def test_missing_network_is_named(const_networks):
    with pytest.raises(DefenseError, match="needs networks A but got T, S"):
        build_defense("A", {k: const_networks[k] for k in "TS"})


def test_prediction_checks_what_a_plugin_returns():
    with pytest.raises(DefenseError, match="int64"):
        Prediction(torch.zeros(1, 2, 2), [{}])
    with pytest.raises(DefenseError, match="one record per image"):
        Prediction(torch.zeros(2, 2, 2, dtype=torch.int64), [{}])


def test_load_defense_returns_the_class_unbuilt(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert load_defense("my_defense:PixelVote").__name__ == "PixelVote"


_STDLIB_NAMED = """
import torch
from defenses import Prediction


class Zeros:
    name = "zeros"

    def __init__(self, networks):
        pass

    def predict(self, images):
        n, _, h, w = images.shape
        return Prediction(torch.zeros(n, h, w, dtype=torch.int64), [{}] * n)
"""


def test_a_plugin_module_named_like_the_standard_library(monkeypatch, tmp_path, const_networks):
    (tmp_path / "random.py").write_text(_STDLIB_NAMED)
    monkeypatch.syspath_prepend(str(tmp_path))
    stdlib_random = sys.modules["random"]
    defense = build_defense("random:Zeros", const_networks)
    assert defense.name == "zeros"
    assert defense.predict(torch.zeros(1, 3, 2, 3, dtype=torch.uint8)).labels.shape == (1, 2, 3)
    assert sys.modules["random"] is stdlib_random and hasattr(stdlib_random, "randint")


def test_a_standard_library_module_without_the_class_says_to_name_the_file(const_networks):
    with pytest.raises(DefenseError, match=r"standard library's json; .*path/to/json.py:Nope"):
        build_defense("json:Nope", const_networks)


QUANTIZE = f"{EXAMPLES / 'noisy_quantize.py'}:NoisyQuantize"


def test_the_readme_s_second_example_crosses_its_rounding_by_bpda(tiny_networks, images):
    defense = build_defense(QUANTIZE, tiny_networks, step=16)
    surface = defenses.attack_surface(defense)
    assert surface.random and surface.settings == {"step": 16}
    assert surface.networks == {"T": tiny_networks["T"]} and surface.decide is None
    pixels = torch.tensor([[0.0, 7.0, 100.0, 255.0]]).repeat(3, 1)[None, :, :, None]
    pixels.requires_grad_(True)
    out = surface.transform(pixels)
    # noise of at most +-8, then multiples of 16 (255 at the top): within 16 of the input
    values = out.detach()
    assert ((values % 16 == 0) | (values == 255)).all() and 0 <= values.min() <= values.max() <= 255
    assert (out.detach() - pixels.detach()).abs().max() <= 16
    out.sum().backward()  # BPDA: the identity backward
    assert torch.equal(pixels.grad, torch.ones_like(pixels))
    prediction = defense.predict(images)
    assert prediction.labels.shape == (2, 32, 64) and prediction.records == [{"step": 16}] * 2


def test_the_constructor_s_refusal_of_an_option_is_one_line(tiny_networks):
    with pytest.raises(DefenseError, match=r"constructor failed with ValueError: step must be"):
        build_defense(QUANTIZE, tiny_networks, step=1)


class _ReadsT:
    name = "reads-t"
    needs = ("T",)


class _BadNeeds:
    name = "bad-needs"
    needs = "T"


def test_the_networks_a_defense_reads():
    assert networks_needed("jpeg") == ("T",) and networks_needed("TS-vote") == ("T", "S", "A")
    assert networks_needed(f"{__name__}:_ReadsT") == ("T",)
    assert networks_needed(f"{__name__}:_Constant") == ("T", "S", "A")  # unsaid: all three
    with pytest.raises(DefenseError, match=r"needs = 'T' must be a tuple of the roles it reads"):
        networks_needed(f"{__name__}:_BadNeeds")
