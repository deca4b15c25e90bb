"""The settings of a run: one frozen dataclass per preset section, and the names they choose from.

The defaults here are the paper's; a preset's keys override them (``bench.config.presets``),
and ``bench.config.validation`` checks the values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: The static networks: the teacher T and the static student S.
STATIC_NETS = ("T", "S")
#: The adversarially trained network (``adversarial`` section), named by this role and checkpoint.
ROBUST_NET = "AT"
#: Optimisers of the adaptive student's finetuning (built in ``defenses.adaptive``).
OPTIMIZERS = ("adam", "adamw", "sgd")
#: Splits of the Cityscapes layout, and the paper's named city subsets (Section 4.1).
SPLITS = ("train", "val", "test", "train_extra")
SUBSETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mini_val": ("val", ("lindau",)),
    "mini_test": ("val", ("frankfurt", "munster")),
}
#: Splits and subsets with real labels; Cityscapes' ``test`` labels are dummies.
EVALUATION_SUBSETS = ("train", "val", *SUBSETS)
#: What an attacker knows: one static network (the paper's protocol); T and S together; or
#: everything the attacked defense uses at test time.
THREAT_MODELS = ("transfer", "joint", "white-box")


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and at which size the networks see them."""

    # "" with ``toycity``: the shared folder of generated toy cities (bench.config.resolve)
    root: str = ""
    size: tuple[int, int] = (128, 256)
    # Generate the toy city at ``root`` when it is missing (the embedded default data).
    toycity: bool = True
    toycity_seed: int = 0
    toycity_counts: dict[str, int] = field(default_factory=dict)
    # SceneStyle fields of the toy city (contrast, exposure, texture, jitter, noise).
    toycity_style: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    unlabeled_split: str = "train_extra"
    val_subset: str = "mini_val"
    test_subset: str = "mini_test"


@dataclass(frozen=True)
class NetConfig:
    """A network: an architecture (a name of ``bench.models.ARCHITECTURES``, or the user's own
    ``package.module:factory`` / ``file.py:factory``) and its constructor options.

    ``weights``: a state_dict file of this architecture; the network is imported from it (its
    sha256 recorded) instead of pretrained. ``backbone``: a torchvision-layout ResNet state_dict
    that seeds a DeepLabv3+'s backbone before pretraining.
    """

    arch: str = "erfnet"
    options: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    backbone: str = ""


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining of T and S (Adam, poly learning-rate decay, cross-entropy)."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    workers: int = 0
    # SyncBatchNorm across the processes of a torchrun launch (BatchNorm statistics over the
    # global batch instead of each rank's share)
    sync_bn: bool = False


# Settings a checkpoint name spells out only when they differ from the paper's defaults.
_NAME_EXTRAS = (("p", "p"), ("beta", "b"), ("gamma", "g"), ("batch_size", "bs"), ("lr", "lr"))


@dataclass(frozen=True)
class FinetuneConfig:
    """Finetuning of the adaptive student A with J_TS' (eq. 8) on the unlabelled split."""

    layers: tuple[str, ...] = ("down2",)
    alpha: float = 0.6
    p: float = 1.0
    beta: float = 0.5
    gamma: float = 1.0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    optimizer: str = "adam"
    workers: int = 0

    @property
    def checkpoint_name(self) -> str:
        """The name of A's checkpoint, e.g. ``A_down2_a0.6_e10``.

        Layers, alpha and epochs always appear; p, beta, gamma, batch size, lr and the optimiser
        only when they differ from the defaults (``A_all_a0.6_e10_b0.25_sgd``), so different
        settings never share a file.
        """
        default = FinetuneConfig()
        parts = ["A", "+".join(self.layers), f"a{self.alpha:g}", f"e{self.epochs}"]
        parts += [
            f"{tag}{getattr(self, name):g}"
            for name, tag in _NAME_EXTRAS
            if getattr(self, name) != getattr(default, name)
        ]
        if self.optimizer != default.optimizer:
            parts.append(self.optimizer)
        return "_".join(parts)


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial training of AT (Madry et al. 2018; SEA's PIR-AT, Croce et al. 2024): starting
    from the clean network ``base`` (S: the student's architecture, T: the teacher's), every
    step trains on ``steps``-step PGD examples inside the L_inf ball of ``eps`` gray values.

    The loss per batch is (1 - clean_weight) CE(f(x_adv), y) + clean_weight CE(f(x), y): Madry's
    PGD-AT at 0, a clean term beside it above 0. ``step``: PGD's step in gray values (None:
    2.5 eps / steps, Madry's). Adam with poly learning-rate decay, random horizontal flips.
    """

    base: str = "S"
    eps: float = 4.0
    steps: int = 3
    step: float | None = None
    clean_weight: float = 0.0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    workers: int = 0

    @property
    def pgd_step(self) -> float:
        """PGD's step in gray values: ``step``, or 2.5 eps / steps (Madry et al. 2018)."""
        return self.step if self.step is not None else 2.5 * self.eps / self.steps


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a run's suite and the threat models it is run under.

    ``transfer`` builds its AE sets on each of ``attack.sources`` alone (shared by all
    defenses), ``joint`` on T and S together (shared by all defenses), ``white-box`` on each
    defense's own attack surface. ``eps`` and ``subsets`` default to the attack section's;
    ``label`` (default: the name, plus the loss for APGD) names the attack in sets and tables.
    """

    name: str = "llcm"
    options: dict[str, Any] = field(default_factory=dict)
    threat_models: tuple[str, ...] = ("transfer",)
    eps: tuple[float, ...] = ()
    subsets: tuple[str, ...] = ()
    label: str = ""

    @property
    def tag(self) -> str:
        if self.label:
            return self.label
        loss = self.options.get("loss")
        red = "-red" if self.options.get("red_eps") else ""
        return f"{self.name}-{loss}{red}" if loss else f"{self.name}{red}"


@dataclass(frozen=True)
class GradientFreeConfig:
    """The gradient-free attack of every white-box surface whose gradient the probe finds masked
    (``bench.stages.probes``), run at the eps and on the subsets of the suite's white-box
    attacks; its sets are white-box sets like the others and enter the worst case.

    ``queries``: forward passes per image (0 turns it off); ``options``: the attack's other
    options (Square's ``p_init``, ``seed``); ``label`` names its sets (default: the name).
    """

    name: str = "square"
    queries: int = 1000
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def spec(self) -> AttackSpec:
        """The attack as a white-box entry of the suite would be."""
        options = {**self.options, "queries": self.queries}
        return AttackSpec(self.name, options, ("white-box",), label=self.label)


@dataclass(frozen=True)
class AttackConfig:
    """Which AE sets a run builds: every attack of the suite x threat model x eps x subset.

    The paper's tables read the first LLCM attack run under ``transfer`` (``paper_attack``).
    """

    eps: tuple[float, ...] = (1.0, 10.0)
    sources: tuple[str, ...] = ("T", "S")
    subsets: tuple[str, ...] = ("mini_val", "mini_test")
    batch_size: int = 8
    suite: tuple[AttackSpec, ...] = (AttackSpec(),)
    # gradient samples per step against a randomised defense (EOT): one that says so, or that
    # the probe finds random
    eot_samples: int = 8
    gradient_free: GradientFreeConfig = field(default_factory=GradientFreeConfig)

    def eps_of(self, spec: AttackSpec) -> tuple[float, ...]:
        return spec.eps or self.eps

    def subsets_of(self, spec: AttackSpec) -> tuple[str, ...]:
        return spec.subsets or self.subsets

    @property
    def tags(self) -> tuple[str, ...]:
        """The labels of every attack the run may build sets of: the suite's, and the
        gradient-free attack's when it is on."""
        extra = (self.gradient_free.spec.tag,) if self.gradient_free.queries > 0 else ()
        return (*(spec.tag for spec in self.suite), *extra)

    @property
    def paper_attack(self) -> str | None:
        """The label of the attack the paper's tables read, or None when the suite has none."""
        return next(
            (s.tag for s in self.suite if s.name == "llcm" and "transfer" in s.threat_models), None
        )


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the AE detection (eq. 4): one delta, or delta_t / delta_s when both set;
    ``tau`` of the disagreement vote (``TA-vote-disagree``): a number, or None to calibrate it on
    the validation subset's clean images as the ``tau_quantile`` quantile of min(D(T,A), D(S,A))
    (so that share of clean validation images is not flagged)."""

    delta: float = 0.1
    delta_t: float | None = None
    delta_s: float | None = None
    tau: float | None = None
    tau_quantile: float = 0.95


@dataclass(frozen=True)
class SweepConfig:
    """Extra adaptive students for the paper's ablations (each is one more finetuning).

    ``baseline``: also train A on all layers, the baseline of [6] (Table 5). ``layer_sets``: IFM'
    layer sets for Table 2, each a comma-separated list of tap or group names (``"down,up"``).
    ``alphas`` x ``alpha_layers``: the alpha sweep of Table 3.
    """

    baseline: bool = True
    layer_sets: tuple[str, ...] = ()
    alphas: tuple[float, ...] = ()
    alpha_layers: tuple[str, ...] = ("down1", "down2")


@dataclass(frozen=True)
class DefenseSpec:
    """One defense the run ranks: ``spec`` (a built-in name, ``pkg.module:Class``,
    ``file.py:Class`` or an entry point), the keyword ``options`` its constructor is called
    with, and ``name``, its result row ("" = the defense's own name; two settings of one class
    side by side need one each). A preset writes a bare string for a spec alone, or a table:
    ``{spec = "masked.py:Masked", options = {step = 8}, name = "masked-8"}``."""

    #: a string in place of the table sets this field
    TEXT_FIELD: ClassVar[str] = "spec"

    spec: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def label(self) -> str:
        """How messages name it: its spec, with the row name and options when it has them."""
        extras = [f"name {self.name!r}"] if self.name else []
        extras += [f"options {self.options}"] if self.options else []
        return f"{self.spec!r}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class EvaluateConfig:
    """Which defenses the run ranks (``DefenseSpec``: built-in names, ``pkg.module:Class`` or
    entry points, with options and row names), and at which resolution they are scored:
    ``full_resolution`` upsamples the logits (bilinear) to the labels' own resolution before the
    argmax, as Cityscapes' official evaluation scores; otherwise labels are resized (nearest) to
    ``data.size``."""

    defenses: tuple[DefenseSpec, ...] = tuple(
        DefenseSpec(name)
        for name in (
            "T",
            "S",
            "A",
            "TS-vote",
            "TA-vote",
            "TA-vote-disagree",
            "AT",
            "TAT-vote",
            "jpeg",
            "spatial-smoothing",
            "feature-squeezing",
        )
    )
    batch_size: int = 8
    full_resolution: bool = False


@dataclass(frozen=True)
class RunConfig:
    name: str = "toy"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: NetConfig = field(
        default_factory=lambda: NetConfig("deeplabv3plus", {"depth": 18, "width": 32})
    )
    student: NetConfig = field(default_factory=NetConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def net(self, name: str) -> NetConfig:
        """The architecture of a network: T is the teacher, S (and A) the student, AT its base's."""
        if name == ROBUST_NET:
            name = self.adversarial.base
        return self.teacher if name == "T" else self.student

    def seed_for(self, name: str) -> int:
        """Distinct, fixed seeds per network: T, S, A and AT never share an initialisation or a
        batch order, and the same config gives the same weights."""
        return self.seed * 1000 + ("T", "S", "A", ROBUST_NET).index(name)


# --- adaptive students ---------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveStudents:
    """The main A (``finetune`` of the config, reported as "A") and the sweep's extra ones."""

    main: FinetuneConfig
    extra: tuple[FinetuneConfig, ...]

    def settings(self, layers: Sequence[str], alpha: float) -> FinetuneConfig:
        return dataclasses.replace(self.main, layers=tuple(layers), alpha=float(alpha))

    def row(self, layers: Sequence[str], alpha: float) -> str:
        """The defense row of the A trained on ``layers`` with ``alpha``."""
        settings = self.settings(layers, alpha)
        return "A" if settings == self.main else settings.checkpoint_name

    def all(self) -> list[tuple[str, FinetuneConfig]]:
        """(row name, settings) of every A to train, the main one first, no repeats."""
        named = [("A", self.main)] + [(c.checkpoint_name, c) for c in self.extra if c != self.main]
        return list(dict(named).items())


def adaptive_students(config: RunConfig) -> AdaptiveStudents:
    """The adaptive students a run trains: the main A, the baseline of [6], the sweeps."""
    base = AdaptiveStudents(config.finetune, ())
    alpha = config.finetune.alpha
    extra = [base.settings(["all"], alpha)] if config.sweep.baseline else []
    extra += [
        base.settings([p.strip() for p in s.split(",")], alpha) for s in config.sweep.layer_sets
    ]
    extra += [
        base.settings([lay], a) for lay in config.sweep.alpha_layers for a in config.sweep.alphas
    ]
    return AdaptiveStudents(config.finetune, tuple(extra))
