"""The probes before the attacks, and what the attacks stage plans from them: EOT for a defense
found random (declared or not), the gradient-free attack for a masked surface only (and not
for one whose defense ignores its input), and the findings that say which defense got what."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from attacks.objectives import Ensemble
from bench.config import apply_values, load_config
from bench.keys import cache_key
from bench.scoring import ForwardMemo
from bench.stages.ae_sets import attack_findings, build_ae_sets, plan_sets
from bench.stages.context import DefenseEntry, RunContext, RunDefenses, RunNetworks
from bench.stages.defense_rows import surface_key
from bench.stages.evaluation_checks import input_checks, random_checks
from bench.stages.probes import answers_differ, masked_gradient_share, probe_surfaces
from bench.store.rundir import RunDir
from bench.variants import WHITE_BOX
from defenses import AttackSurface, Prediction, predict_labels


class Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 19, 1)

    def forward(self, x):
        return self.conv(x / 255)


def _quantize(x):
    """8 gray levels: zero gradient everywhere, and no stand-in."""
    return (x / 32).round() * 32


def _contrast(x):
    """Half the contrast: differentiable, a transform with a gradient."""
    return x / 2 + 64


def _blank(x):
    """Every image the same: the output ignores the input, its gradient is zero."""
    return x * 0


TRANSFORMS = {"quant": _quantize, "contrast": _contrast, "fixed": _blank}


class OnT:
    """A defense on T: deterministic, or random (noise before T) without saying so, or saying
    random=True, or behind a quantizer, or behind a differentiable transform."""

    def __init__(self, name: str, net: nn.Module) -> None:
        self.name, self.net = name, net

    def predict(self, images):
        x = images.float()
        if self.name == "noisy":
            x = x + 40 * torch.randn_like(x)
        if self.name in TRANSFORMS:
            x = TRANSFORMS[self.name](x)
        labels = predict_labels(self.net, x.clamp(0, 255).to(torch.uint8))
        return Prediction(labels, [{} for _ in labels])

    def attack_surface(self):
        return AttackSurface(
            f"{self.name}(T)",
            {"T": self.net},
            transform=TRANSFORMS.get(self.name),
            random=self.name == "declared",
        )


ROWS = ("plain", "noisy", "declared", "quant", "contrast")


def _context(toy_root, tmp_path, rows=ROWS, **values) -> RunContext:
    config = load_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(toy_root)))
    config = apply_values(config, values)
    ctx = RunContext.open(config, RunDir(tmp_path), torch.device("cpu"), progress=False)
    nets = {"T": Net(0), "S": Net(1)}
    sha = {"T": "t" * 64, "S": "s" * 64}
    ctx = ctx.with_networks(RunNetworks({k: ForwardMemo(v) for k, v in nets.items()}, sha, {}))
    entries = {}
    for row in rows:
        surface = OnT(row, nets["T"]).attack_surface()
        make = lambda row=row: OnT(row, nets["T"])  # noqa: E731 - a fresh instance per call
        entries[row] = DefenseEntry(make, row, surface, surface_key(surface, sha))
    return ctx.with_defenses(RunDefenses(entries, 0.0))


def _white_box(plans, attack="apgd-ce"):
    return {
        p.target.rows[0]: p for p in plans if p.spec.threat == WHITE_BOX and p.spec.attack == attack
    }


def test_the_probes_find_the_random_defense_and_the_masked_surface(toy_root, tmp_path):
    ctx = _context(toy_root, tmp_path)
    probes = probe_surfaces(ctx)
    entries = ctx.require_defenses().entries
    found = {row: probes[entries[row].surface_key] for row in ROWS}
    assert [row for row in ROWS if found[row].random_rows] == ["noisy"]
    assert [row for row in ROWS if found[row].masked] == ["quant"]
    assert found["quant"].masked_share == 1.0 and found["plain"].masked_share < 0.1
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 19, (2, 8, 8))
    assert masked_gradient_share(Ensemble({"T": Net(0)}, transform=_quantize), images, labels) == 1
    assert answers_differ(entries["noisy"].make, images, "noisy", False)
    assert not answers_differ(entries["declared"].make, images, "declared", False)


def test_a_random_defense_with_a_surface_got_eot_so_the_randomness_check_is_quiet(
    toy_root, tmp_path
):
    ctx = _context(toy_root, tmp_path)
    assert random_checks(ctx) == []  # "noisy" is random, and its white-box sets had EOT
    entries = dict(ctx.require_defenses().entries)
    entries["noisy"] = dataclasses.replace(entries["noisy"], surface=None, surface_key="")
    (warning,) = random_checks(ctx.with_defenses(RunDefenses(entries, 0.0)))
    assert warning["subject"] == "noisy" and "no attack surface" in warning["message"]


def test_eot_for_the_random_defenses_declared_or_found_and_its_own_set_key(toy_root, tmp_path):
    ctx = _context(toy_root, tmp_path, **{"attack.eot_samples": 4})
    white = _white_box(plan_sets(ctx))
    entries = ctx.require_defenses().entries
    assert {row: white[row].target.samples for row in ROWS} == {
        "plain": 1,
        "noisy": 4,  # found random: its surface does not say random=True
        "declared": 4,
        "quant": 1,
        "contrast": 1,
    }
    assert white["noisy"].target.model.samples == 4
    # the samples are part of the set's identity (the store keys a set by its spec's surface)
    for row in ("noisy", "declared"):
        key = entries[row].surface_key
        assert white[row].spec.surface == cache_key(key, {"eot_samples": 4}) != key
    assert white["plain"].spec.surface == entries["plain"].surface_key


def test_the_gradient_free_attack_only_on_the_masked_surface(toy_root, tmp_path):
    ctx = _context(toy_root, tmp_path, **{"attack.gradient_free.queries": 50})
    plans = plan_sets(ctx)
    square = [p for p in plans if p.gradient_free]
    # the smoke suite's white-box attack: eps 10 on mini test
    assert [(p.target.rows, p.spec.subset, p.spec.eps) for p in square] == [
        (("quant",), "mini_test", 10.0)
    ]
    (plan,) = square
    assert (plan.spec.attack, plan.spec.threat, plan.attack.options) == (
        "square",
        WHITE_BOX,
        {"queries": 50},
    )
    assert plan.spec.surface == _white_box(plans)["quant"].spec.surface
    off = _context(toy_root, tmp_path, **{"attack.gradient_free.queries": 0})
    assert not [p for p in plan_sets(off) if p.gradient_free]


def test_no_gradient_free_attack_on_a_masked_surface_whose_defense_ignores_its_input(
    toy_root, tmp_path
):
    """Its zero gradient is the truth: no query could move it, so none is spent (the evaluation's
    input check flags the row instead)."""
    ctx = _context(
        toy_root, tmp_path, rows=("quant", "fixed"), **{"attack.gradient_free.queries": 50}
    )
    entries = ctx.require_defenses().entries
    probes = probe_surfaces(ctx)
    fixed, quant = (probes[entries[row].surface_key] for row in ("fixed", "quant"))
    assert fixed.masked and fixed.ignores_input
    assert quant.masked and not quant.ignores_input
    plans = plan_sets(ctx)
    assert [p.target.rows for p in plans if p.gradient_free] == [("quant",)]
    by = {(f["subject"], f["check"]): f["message"] for f in attack_findings(plans)}
    assert ("fixed", "gradient-free") not in by
    assert "no gradient-free attack was spent" in by["fixed", "gradient-free skipped"]
    assert ("quant", "gradient-free skipped") not in by
    assert [w["subject"] for w in input_checks(ctx)] == ["fixed"]  # it is flagged instead


def test_the_findings_say_which_eot_bpda_and_gradient_free_attack_each_defense_got(
    toy_root, tmp_path
):
    ctx = _context(toy_root, tmp_path)
    findings = attack_findings(plan_sets(ctx))
    by = {(f["subject"], f["check"]): f["message"] for f in findings}
    assert sorted(by) == [
        ("contrast", "bpda"),
        ("declared", "eot"),
        ("noisy", "eot"),
        ("quant", "gradient-free"),  # no BPDA: its transform gives no gradient
    ]
    assert by["noisy", "eot"] == (
        "noisy was attacked with EOT over 8 samples: found random (its surface does not say "
        "random=True)"
    )
    assert by["declared", "eot"].endswith("8 samples: its surface says random=True")
    assert by["contrast", "bpda"] == (
        "contrast was attacked white-box through its differentiable stand-in `transform` (BPDA)"
    )
    assert by["quant", "gradient-free"] == (
        "quant: its gradient is masked (100% of the input): also attacked by square random "
        "search, 20 queries per image"  # the smoke preset's budget
    )


def test_the_gradient_free_set_is_built_within_eps_for_the_masked_defense(toy_root, tmp_path):
    ctx = _context(toy_root, tmp_path, **{"attack.gradient_free.queries": 20})
    built = {plan.spec.name: (plan, ae_set) for plan, ae_set in build_ae_sets(ctx)}
    plan, ae_set = built["/mini_test/square/white-box/quant(T)/eps10"]
    assert plan.target.rows == ("quant",)  # evaluated with the defenses of its surface
    adv, clean = ae_set.read(), torch.stack([img for img, _ in ctx.data.split("mini_test")])
    assert 0 < (adv.int() - clean.int()).abs().max() <= 10
