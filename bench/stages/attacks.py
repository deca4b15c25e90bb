"""The attacks stage: every AE set of the run, built, finished or reused from the HDF5 store.

For every attack of the suite, at each of its eps and on each of its subsets:

- ``transfer``: one set per source network (T, S) alone: the paper's protocol;
- ``joint``: one set on T and S at once (their losses summed towards one target): the paper's
  threat model, where A adapts and its weights are secret;
- ``white-box``: one set per attack surface of the run's defenses (their networks, A included,
  behind BPDA where a step is not differentiable; EOT for randomised ones): defenses with the
  same surface share it; a defense without a surface gets none.

``sanity_checks`` runs AutoAttack-style checks of the evaluation itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attacks import build_attack
from attacks.objectives import Ensemble, ce_loss, class_weights, summed_loss
from bench.config import AttackSpec, RunConfig, apply_values
from bench.errors import ConfigError
from bench.stages.data import class_pixel_counts, dataset
from bench.stages.defenses import RunDefenses, surface_networks
from bench.store.aesets import STORE_FILE, AESet, SetSpec, build_ae_set
from bench.store.checkpoints import load_meta, load_model
from bench.store.rundir import RunDir
from bench.variants import JOINT, JOINT_SOURCE, TRANSFER, WHITE_BOX, Variant

#: a white-box gradient that is zero or NaN on more than this share of the input warns
MASKED_GRADIENT_SHARE = 0.5


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


@dataclass(frozen=True)
class PlannedSet:
    """One AE set of the run and what it is evaluated with."""

    spec: SetSpec
    target: Target
    attack: AttackSpec

    @property
    def variant(self) -> Variant:
        return Variant(self.spec.source, self.spec.eps, self.spec.threat, self.spec.attack)


def _targets(
    config: RunConfig,
    run: RunDir,
    spec: AttackSpec,
    defenses: RunDefenses | None,
    device: torch.device,
) -> list[Target]:
    """The networks / surfaces ``spec`` attacks, under each of its threat models."""
    targets = []
    if TRANSFER in spec.threat_models:
        for source in config.attack.sources:
            sha = load_meta(run.models, source).sha256
            targets.append(
                Target(TRANSFER, source, load_model(run.models, source, device), {source: sha})
            )
    if JOINT in spec.threat_models:
        members = {n: load_model(run.models, n, device) for n in ("T", "S")}
        sha = {n: load_meta(run.models, n).sha256 for n in ("T", "S")}
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
            model = Ensemble(
                surface.networks,
                transform=surface.transform,
                decide=surface.decide,
                samples=config.attack.eot_samples if surface.random else 1,
            )
            targets.append(
                Target(
                    WHITE_BOX,
                    surface.name,
                    model,
                    surface_networks(surface, defenses.weights),
                    surface=key,
                    rows=tuple(rows),
                    after_batch=surface.after_batch,
                )
            )
    return targets


def plan_sets(
    config: RunConfig, run: RunDir, *, device: torch.device, defenses: RunDefenses | None = None
) -> list[PlannedSet]:
    """Every AE set of the run, in the order of the suite, threat models, subsets and eps.
    Without ``defenses`` only transfer and joint sets are planned (``bench attack``)."""
    planned = []
    for spec in config.attack.suite:
        for target in _targets(config, run, spec, defenses, device):
            for subset in config.attack.subsets_of(spec):
                for eps in config.attack.eps_of(spec):
                    set_spec = SetSpec(
                        subset,
                        spec.tag,
                        target.threat,
                        target.source,
                        eps,
                        target.networks,
                        target.surface,
                    )
                    planned.append(PlannedSet(set_spec, target, spec))
    return planned


def _attack(config: RunConfig, spec: AttackSpec) -> Any:
    options = dict(spec.options)
    if options.get("loss") == "balanced-masked-ce" and "class_weights" not in options:
        options["class_weights"] = class_weights(class_pixel_counts(config))
    return build_attack(spec.name, **options)


def build_ae_sets(
    config: RunConfig,
    run: RunDir,
    *,
    device: torch.device,
    defenses: RunDefenses | None = None,
    progress: bool = True,
) -> list[tuple[PlannedSet, AESet]]:
    """Build (or reuse, or finish) every planned AE set of the run."""
    built = []
    attacks = {spec.tag: _attack(config, spec) for spec in config.attack.suite}
    for plan in plan_sets(config, run, device=device, defenses=defenses):
        ae_set = build_ae_set(
            run.path / STORE_FILE,
            plan.spec,
            model=plan.target.model,
            dataset=dataset(config, plan.spec.subset),
            attack=attacks[plan.spec.attack],
            batch_size=config.attack.batch_size,
            progress=progress,
            after_batch=plan.target.after_batch,
        )
        built.append((plan, ae_set))
    return built


def masked_gradient_share(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The share of input pixels whose gradient of the summed cross-entropy is zero or NaN on
    one batch: near 1 means gradient masking (a white-box attack would be blind)."""
    device = next(model.parameters()).device
    x = images.to(device).float().requires_grad_(True)
    with torch.enable_grad():
        loss = summed_loss(ce_loss, model(x), labels.to(device)).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return float(((grad == 0) | grad.isnan()).float().mean())


def gradient_checks(config: RunConfig, plans: Sequence[PlannedSet]) -> list[dict[str, object]]:
    """One warning per white-box surface whose gradient is masked on its first batch."""
    warnings, seen = [], set()
    for plan in plans:
        if plan.spec.threat != WHITE_BOX or plan.spec.source in seen:
            continue
        seen.add(plan.spec.source)
        images, labels = next(
            iter(
                torch.utils.data.DataLoader(
                    dataset(config, plan.spec.subset), batch_size=config.attack.batch_size
                )
            )
        )
        share = masked_gradient_share(plan.target.model, images, labels)
        if share > MASKED_GRADIENT_SHARE or math.isnan(share):
            warnings.append(
                {
                    "check": "gradient masking",
                    "subject": plan.spec.source,
                    "message": f"the white-box gradient of {plan.spec.source} is zero or NaN for "
                    f"{100 * share:.0f}% of the input: gradient masking; its white-box "
                    "numbers are upper bounds (give its surface a differentiable transform)",
                }
            )
    return warnings


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
