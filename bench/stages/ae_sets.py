"""The attacks stage: every AE set of the run, built, finished or reused from the HDF5 store.

For every attack of the suite, at each of its eps and on each of its subsets:

- ``transfer``: one set per source network (T, S) alone: the paper's protocol;
- ``joint``: one set on T and S at once (their losses summed towards one target): the paper's
  threat model, where A adapts and its weights are secret;
- ``white-box``: one set per attack surface of the run's defenses (their networks, A included,
  behind BPDA where a step is not differentiable; EOT for randomised ones): defenses with the
  same surface share it; a defense without a surface gets none. Surfaces that differ only in
  their decision (the three votes on T, S and A) are attacked on one trajectory with a best
  iterate per decision (``shared_attacks``) when the attack's steps do not depend on the
  decision: the same sets, bit for bit, for the cost of one.

Before white-box sets are planned every surface is probed once (``bench.stages.probes``): a
surface whose defense says ``random=True`` or is found random is attacked with EOT
(``attack.eot_samples`` forward samples per step, part of the set's key); one whose gradient is
found masked is also attacked by the gradient-free attack (``attack.gradient_free``) at the eps
and on the subsets of the suite's white-box attacks, unless every defense on it ignored its input
on the probe batch (then its zero gradient is the truth, and no query would move it).
``attack_findings`` says per defense which EOT, BPDA and gradient-free attack it got. The
evaluation's own checks of these sets live in ``bench.stages.evaluation_checks``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attacks import AttackResult, build_attack, run_attack
from attacks.base import expected_marks
from attacks.objectives import SINGLE, Ensemble, class_weights, shared_decisions
from bench.config import AttackSpec, RunConfig, apply_values
from bench.errors import ConfigError
from bench.keys import cache_key
from bench.stages.context import RunContext
from bench.stages.defense_rows import surface_networks
from bench.stages.probes import SurfaceProbe, probe_surfaces
from bench.store.aesets import STORE_DIR, AESet, SetSpec, build_ae_set
from bench.variants import JOINT, JOINT_SOURCE, TRANSFER, WHITE_BOX, Variant
from defenses import AttackSurface

#: the kinds of ``attack_findings``: what each defense was attacked with, not warnings
ATTACK_FINDINGS = ("eot", "bpda", "gradient-free", "gradient-free skipped")


@dataclass(frozen=True)
class Target:
    """What a set is built on: a network or an ensemble, and who is evaluated on the set."""

    threat: str
    source: str
    model: nn.Module
    networks: dict[str, str]
    surface: str = ""
    #: defense rows evaluated on the set; None: every row (the sweeps' students: transfer only)
    rows: tuple[str, ...] | None = None
    after_batch: Callable[[Tensor], None] | None = None
    #: white-box only: the surface attacked, what the probe found on it, forward samples per
    #: attack step (EOT when > 1)
    attack_surface: AttackSurface | None = None
    probe: SurfaceProbe | None = None
    samples: int = 1
    #: a white-box surface that is one transfer source alone: its set is that transfer set
    shares: str = ""


@dataclass(frozen=True)
class PlannedSet:
    """One AE set of the run and what it is evaluated with."""

    spec: SetSpec
    target: Target
    attack: AttackSpec
    #: planned because the probe found the surface's gradient masked (``attack.gradient_free``)
    gradient_free: bool = False

    @property
    def variant(self) -> Variant:
        return Variant(self.spec.source, self.spec.eps, self.spec.threat, self.spec.attack)


def _targets(ctx: RunContext, spec: AttackSpec, probes: dict[str, SurfaceProbe]) -> list[Target]:
    """The networks / surfaces ``spec`` attacks, under each of its threat models (white-box
    only when the context holds the defenses; ``probes`` by surface key)."""
    networks, defenses = ctx.require_networks(), ctx.defenses
    plain = networks.plain
    targets = []
    if TRANSFER in spec.threat_models:
        for source in ctx.config.attack.sources:
            sha = {source: networks.sha256[source]}
            targets.append(Target(TRANSFER, source, plain[source], sha))
    if JOINT in spec.threat_models:
        members = {n: plain[n] for n in ("T", "S")}
        sha = {n: networks.sha256[n] for n in ("T", "S")}
        rows = (
            None
            if defenses is None
            else tuple(name for name, e in defenses.entries.items() if not e.sweep)
        )
        targets.append(Target(JOINT, JOINT_SOURCE, Ensemble(members), sha, rows=rows))
    if WHITE_BOX in spec.threat_models and defenses is not None:
        by_key: dict[str, list[str]] = {}
        for name, entry in defenses.entries.items():
            if entry.surface is not None:
                by_key.setdefault(entry.surface_key, []).append(name)
        for key, rows in by_key.items():
            surface = defenses.entries[rows[0]].surface
            assert surface is not None
            probe = probes[key]
            random = surface.random or bool(probe.random_rows)
            samples = ctx.config.attack.eot_samples if random else 1
            twin = _transfer_twin(surface, spec, ctx) if samples == 1 else ""
            if twin:
                sha = {twin: networks.sha256[twin]}
                targets.append(
                    Target(WHITE_BOX, surface.name, plain[twin], sha, key, tuple(rows), shares=twin)
                )
                continue
            model = Ensemble(
                surface.networks,
                transform=surface.transform,
                decide=surface.decide,
                samples=samples,
            )
            targets.append(
                Target(
                    WHITE_BOX,
                    surface.name,
                    model,
                    surface_networks(surface, networks.sha256),
                    # the samples change the images: a set with EOT is another set
                    surface=key if samples == 1 else cache_key(key, {"eot_samples": samples}),
                    rows=tuple(rows),
                    after_batch=surface.after_batch,
                    attack_surface=surface,
                    probe=probe,
                    samples=samples,
                )
            )
    return targets


def _transfer_twin(surface: AttackSurface, spec: AttackSpec, ctx: RunContext) -> str:
    """The transfer source whose set a white-box attack on ``surface`` would build identically
    (the surface is that run network alone: no transform, decision, randomness or learning),
    or "" (then the white-box set is built on its own)."""
    if TRANSFER not in spec.threat_models or len(surface.networks) != 1:
        return ""
    (role, network), networks = next(iter(surface.networks.items())), ctx.require_networks()
    plain = surface.transform is None and surface.decide is None and surface.after_batch is None
    run_network = role in networks.memos and network in (networks.memos[role], networks.plain[role])
    sourced = role in ctx.config.attack.sources
    return role if plain and not surface.random and run_network and sourced else ""


def plan_sets(ctx: RunContext) -> list[PlannedSet]:
    """Every AE set of the run, in the order of the suite, threat models, subsets and eps.
    Without defenses in the context only transfer and joint sets are planned (``bench attack``)."""
    planned = []
    attack = ctx.config.attack
    white_box = [spec for spec in attack.suite if WHITE_BOX in spec.threat_models]
    probes = probe_surfaces(ctx) if white_box and ctx.defenses is not None else {}
    masked: dict[str, Target] = {}
    for spec in attack.suite:
        for target in _targets(ctx, spec, probes):
            probe = target.probe
            if probe is not None and probe.masked and not probe.ignores_input:
                masked.setdefault(target.surface, target)
            planned += _sets(spec, target, attack.subsets_of(spec), attack.eps_of(spec))
    if attack.gradient_free.queries > 0:
        # at the eps and on the subsets of the white-box attacks, each pair once
        subsets = tuple(dict.fromkeys(s for spec in white_box for s in attack.subsets_of(spec)))
        eps = tuple(dict.fromkeys(e for spec in white_box for e in attack.eps_of(spec)))
        for target in masked.values():
            planned += _sets(attack.gradient_free.spec, target, subsets, eps, gradient_free=True)
    return planned


def _sets(
    spec: AttackSpec,
    target: Target,
    subsets: Sequence[str],
    eps: Sequence[float],
    *,
    gradient_free: bool = False,
) -> list[PlannedSet]:
    """The sets of ``spec`` on ``target``, on each subset at each eps."""
    return [
        PlannedSet(
            SetSpec(
                subset, spec.tag, target.threat, target.source, e, target.networks, target.surface
            ),
            target,
            spec,
            gradient_free,
        )
        for subset in subsets
        for e in eps
    ]


def _attack(ctx: RunContext, spec: AttackSpec) -> Any:
    options = dict(spec.options)
    if options.get("loss") == "balanced-masked-ce" and "class_weights" not in options:
        options["class_weights"] = class_weights(ctx.data.class_pixel_counts())
    return build_attack(spec.name, **options)


def build_ae_sets(ctx: RunContext) -> list[tuple[PlannedSet, AESet]]:
    """Build (or reuse, or finish) every planned AE set of the run."""
    built: list[tuple[PlannedSet, AESet]] = []
    plans = plan_sets(ctx)
    attacks: dict[str, Any] = {}
    for plan in plans:
        if plan.attack.tag not in attacks:
            attacks[plan.attack.tag] = _attack(ctx, plan.attack)
    shared = shared_attacks(plans, attacks)
    for i, plan in enumerate(plans):
        if plan.target.shares:  # its transfer twin was planned (and built) before it
            twin = (plan.spec.subset, plan.spec.attack, TRANSFER, plan.target.shares, plan.spec.eps)
            shared_set = next(s for p, s in built if _identity(p) == twin)
            built.append((plan, shared_set))
            continue
        ae_set = build_ae_set(
            ctx.run.path / STORE_DIR,
            plan.spec,
            model=plan.target.model,
            dataset=ctx.data.split(plan.spec.subset),
            attack=shared.get(i, attacks[plan.attack.tag]),
            batch_size=ctx.config.attack.batch_size,
            progress=ctx.progress,
            after_batch=plan.target.after_batch,
        )
        built.append((plan, ae_set))
    return built


def attack_findings(plans: Sequence[PlannedSet]) -> list[dict[str, object]]:
    """What each defense row was attacked with, as findings of ``checks.csv`` (kinds
    ``ATTACK_FINDINGS``; informational, not warnings): EOT and why, BPDA through its surface's
    ``transform`` (when that gives a gradient), the gradient-free attack and its budget (or why
    it was skipped). One of each kind per row."""
    found: dict[tuple[str, str], str] = {}
    for plan in plans:
        target, surface = plan.target, plan.target.attack_surface
        if surface is None or target.probe is None:
            continue
        for row in target.rows or ():
            if target.samples > 1:
                why = (
                    "its surface says random=True"
                    if surface.random
                    else "found random (its surface does not say random=True)"
                )
                found.setdefault(
                    (row, "eot"),
                    f"{row} was attacked with EOT over {target.samples} samples: {why}",
                )
            if surface.transform is not None and not target.probe.masked:
                found.setdefault(
                    (row, "bpda"),
                    f"{row} was attacked white-box through its differentiable stand-in "
                    "`transform` (BPDA)",
                )
            if target.probe.masked and target.probe.ignores_input:
                found.setdefault(
                    (row, "gradient-free skipped"),
                    f"{row}: its gradient is zero because its output ignored its input on the "
                    "probe batch (clean, uniform noise, reversed): no gradient-free attack was "
                    "spent on it",
                )
            if plan.gradient_free:
                found.setdefault(
                    (row, "gradient-free"),
                    f"{row}: its gradient is masked ({100 * target.probe.masked_share:.0f}% of "
                    f"the input): also attacked by {plan.attack.name} random search, "
                    f"{plan.attack.options['queries']} queries per image",
                )
    return [{"check": c, "subject": row, "message": m} for (row, c), m in found.items()]


def _identity(plan: PlannedSet) -> tuple[str, str, str, str, float]:
    spec = plan.spec
    return spec.subset, spec.attack, spec.threat, spec.source, spec.eps


def shared_sets(ae_sets: Sequence[tuple[PlannedSet, AESet]]) -> list[tuple[PlannedSet, AESet]]:
    """The planned sets that reuse another threat model's set (white-box on T = transfer
    from T), each with the set it reuses."""
    return [(plan, ae_set) for plan, ae_set in ae_sets if plan.target.shares]


def shared_attacks(plans: Sequence[PlannedSet], attacks: dict[str, Any]) -> dict[int, Any]:
    """For the white-box sets whose surfaces differ only in their decision (same attack, subset
    and eps; ``attacks.objectives.shared_decisions``) and whose attack keeps a best iterate per
    decision on one trajectory: plan index -> the attack of that set's decision on the shared
    trajectory (``OneDecision``). Every other set keeps the suite's attack."""
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        target = plan.target
        alone = {target.surface: target.model}
        if target.threat == WHITE_BOX and target.after_batch is None and shared_decisions(alone):
            key = (plan.spec.attack, tuple(id(m) for m in target.model.members))
            groups.setdefault(key, []).append(i)
    shared: dict[int, Any] = {}
    for (tag, _), indices in groups.items():
        attack = attacks[tag]
        surfaces = {plans[i].target.surface: plans[i].target.model for i in indices}
        model = shared_decisions(surfaces) if len(surfaces) > 1 else None
        if model is None or not getattr(attack, "shares_trajectory", False):
            continue
        found: dict[tuple, AttackResult] = {}
        for i in indices:
            shared[i] = OneDecision(attack, model, plans[i].target.surface, found)
    return shared


class OneDecision:
    """The attack of one decision on a trajectory shared with others (the ``Attack`` protocol,
    with ``run`` and ``budget_marks``): the first set of the group that asks for a batch runs
    the attack once on every decision; the others' images and marks wait in ``found`` for their
    own sets, which take them (the same images and indices, the same eps) instead of attacking.

    Args:
        attack: the suite's attack (``shares_trajectory``).
        model: the ensemble with every decision of the group (``Ensemble(decisions=...)``).
        decision: this set's decision (its surface key).
        found: the group's results waiting for their sets, shared by the group's views.
    """

    def __init__(
        self, attack: Any, model: Ensemble, decision: str, found: dict[tuple, AttackResult]
    ) -> None:
        self.attack, self.model, self.decision, self.found = attack, model, decision, found
        self.name, self.needs_labels = attack.name, attack.needs_labels

    def params(self) -> dict[str, Any]:
        return self.attack.params()  # the same key as the suite's attack: the same set

    def budget_marks(self, model: nn.Module, eps: float) -> tuple[int, ...]:
        return expected_marks(self.attack, self.model, eps)

    def run(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        eps: float,
        labels: Tensor | None = None,
        index: Tensor | None = None,
    ) -> AttackResult:
        batch = (
            float(eps),
            hashlib.sha256(images.cpu().numpy().tobytes()).hexdigest(),
            None if index is None else tuple(index.tolist()),
        )
        if (batch, self.decision) not in self.found:
            result = run_attack(
                self.attack, self.model, images, eps=eps, labels=labels, index=index
            )
            for name, adv in result.images.items():
                marks = {SINGLE: result.marks[name]} if name in result.marks else {}
                self.found[(batch, name)] = AttackResult(
                    {SINGLE: adv}, marks, result.mark_iterations
                )
        return self.found.pop((batch, self.decision))

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        eps: float,
        labels: Tensor | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        return self.run(model, images, eps=eps, labels=labels, index=index).images[SINGLE]


def attack_settings(
    config: RunConfig,
    *,
    name: str | None = None,
    threat: str = TRANSFER,
    eps: Sequence[float] | None = None,
    sources: Sequence[str] | None = None,
    subsets: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> RunConfig:
    """The config of ``bench attack``: the suite's attacks run under ``threat`` (transfer or
    joint), or the attack ``name`` (with its options from the suite when it is there), with the
    given eps, sources, subsets and batch size in place of the run's."""
    if threat not in (TRANSFER, JOINT):
        raise ConfigError(
            f"bench attack builds transfer or joint sets, not {threat!r}; white-box sets need "
            "the defenses: bench run builds them"
        )
    suite = [
        s
        for s in config.attack.suite
        if (threat in s.threat_models if name is None else name in (s.name, s.tag))
    ]
    specs = [dataclasses.asdict(s) for s in suite] or [{"name": name}]
    for spec in specs:
        spec["threat_models"] = [threat]
        if eps is not None:
            spec["eps"] = []
        if subsets is not None:
            spec["subsets"] = []
    values: dict[str, Any] = {"attack.suite": specs}
    given = {"eps": eps, "sources": sources, "subsets": subsets, "batch_size": batch_size}
    values |= {
        f"attack.{k}": list(v) if isinstance(v, (list, tuple)) else v
        for k, v in given.items()
        if v is not None
    }
    return apply_values(config, values)
