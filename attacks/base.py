"""The Attack protocol, its one entry point, and the template of iterative L_inf attacks.

Every attack maps clean images to adversarial examples (paper eqs. 5-6)

    x_adv = x + r,   ||r||_inf <= eps,

with eps in gray values 0..255 (the networks normalise inside themselves). ``AttackBase.__call__``
is the one entry point (Foolbox-style): it validates the images, eps and labels, runs the network
in eval mode, calls the subclass's ``_run`` hook on float pixels, and turns whatever comes back
into whole gray values within eps, so no attack can break the uint8 / eps contract.
``IterativeAttack`` is the sign-step template; a subclass supplies its number of iterations and,
through the ``loss`` hook, what it descends or ascends.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, final, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.best_iterate import Iterates
from attacks.objectives import SINGLE, Ensemble, least_likely_target, members_of
from bench.data.labels import IGNORE_INDEX
from bench.data.tensors import check_images
from bench.devices import module_device
from bench.errors import AttackError

# Bump whenever the output of every attack changes for the same inputs: AE sets stored under
# another version are rebuilt (bench.store.aesets keys them by it). A change to one attack bumps
# its own ``revision`` instead, so the other attacks' sets are kept.
ATTACKS_VERSION = 1


@runtime_checkable
class Attack(Protocol):
    """What the store and the runner rely on.

    Hyper-parameters are keyword-only constructor arguments; the model, the images and eps are
    given at call time, so one attack object serves every network and every eps.
    """

    name: str
    #: True when the attack needs the ground-truth labels (untargeted attacks on the GT).
    needs_labels: bool

    def params(self) -> dict[str, Any]:
        """The hyper-parameters that change the output (for cache keys)."""
        ...

    def __call__(
        self, model: nn.Module, images: Tensor, *, eps: float, labels: Tensor | None = None
    ) -> Tensor:
        """images uint8 (N, 3, H, W) -> adversarial uint8 (N, 3, H, W), ||x_adv - x||_inf <= eps."""
        ...


def check_eps(eps: float) -> float:
    """eps as a float; a clear error unless it is a number in [0, 255]."""
    try:
        value = float(eps)
    except (TypeError, ValueError) as err:
        raise AttackError(f"eps must be a number of gray values, got {eps!r}") from err
    if not math.isfinite(value) or not 0 <= value <= 255:
        raise AttackError(
            f"eps must lie in [0, 255] gray values, got {eps!r}; e.g. eps=1 or eps=10"
        )
    return value


#: what an attack's forward and backward passes may compute in (its ``precision`` option):
#: float32, or bfloat16 under autocast with channels-last images (about 1.5x faster per pass on
#: a CPU with native bfloat16, benchmarks/attack_precision.md). The outputs are handed back cast
#: to float32 and the losses are computed from them in float32, but they are bfloat16 predictions:
#: the best iterate, the early stop and the marks judge those. The AE sets are evaluated in
#: float32 whatever the attack computed in.
PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str | None) -> str | None:
    """``precision``, None for float32 (the default: its AE sets keep their keys); a clear
    error unless it is None or one of ``PRECISIONS``."""
    if precision is None or precision in PRECISIONS:
        return None if precision == "float32" else precision
    raise AttackError(
        f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}; e.g. "
        'precision = "bfloat16"'
    )


def forward_in(model: nn.Module, x: Tensor, precision: str | None) -> Tensor | tuple[Tensor, ...]:
    """``model(x)`` with its passes (and the backward pass through them) in ``precision``
    (None: float32); the outputs in float32.

    Shapes:
        x: (N, 3, H, W) float gray values on the model's device.
        returns: what the model returns, (N, C, H, W) logits or a tuple of them, float32.
    """
    if precision in (None, "float32"):
        return model(x)
    # channels-last images: oneDNN's bfloat16 convolutions are fastest on them (the weights are
    # the defenses' too, and stay as they are)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        outputs = model(x.contiguous(memory_format=torch.channels_last))
    if isinstance(outputs, (tuple, list)):
        return tuple(out.float() for out in outputs)
    return outputs.float()


def check_step(step: float) -> float:
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise AttackError(
            f"step must be a positive number of gray values, got {step!r}; e.g. step=1"
        )
    return float(step)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Attack the network as it is deployed (BatchNorm statistics, no dropout), then restore the
    mode every module was in (an ensemble's members are shared with the defenses)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def least_likely(model: nn.Module, x: Tensor) -> Tensor:
    """The least-likely class per pixel of a network (or of an ensemble, see
    ``attacks.objectives.least_likely_target``).

    Shapes:
        x: (N, 3, H, W) float gray values on the model's device.
        returns: (N, H, W) int64 trainIds.
    """
    return least_likely_target(model(x))


def cross_entropy_sum(logits: Tensor, target: Tensor) -> Tensor:
    """The per-pixel cross-entropy summed over pixels and images (255 ignored).

    Summed, not averaged, so an image's gradient does not depend on how many images share its
    batch.
    """
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")


def input_gradient(
    model: nn.Module, x: Tensor, target: Tensor | None, loss=cross_entropy_sum
) -> tuple[Tensor, Tensor]:
    """Gradient of ``loss(logits, target)`` w.r.t. the input (summed over the members of an
    ensemble); and the target.

    ``target=None`` means the least-likely class of ``x`` itself, read off this very forward pass
    (so LLCM needs no extra forward pass for its target). Only the input gradient is computed
    (``autograd.grad``): nothing accumulates in the parameters' ``.grad``.

    Shapes:
        x: (N, 3, H, W) float gray values on the model's device.
        target: (N, H, W) int64 trainIds, 255 = ignore; or None.
        returns: gradient (N, 3, H, W) float; the target used (N, H, W) int64.
    """
    x = x.detach().requires_grad_(True)
    outputs = members_of(model(x))
    if target is None:
        target = least_likely_target(outputs)
    (grad,) = torch.autograd.grad(sum(loss(out, target) for out in outputs), x)
    return grad, target


def project(adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Back into the eps ball around ``x`` (eq. 6) and into the valid range [0, 255]."""
    delta = torch.clamp(adv - x, -eps, eps)
    return torch.clamp(x + delta, 0, 255)


def to_uint8(adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Whole gray values as uint8, still within eps of ``x``.

    A no-op on integer-valued results (LLCM with integer eps and step); attacks with fractional
    steps or random starts are rounded to the nearest gray value and re-projected to
    ||r||_inf <= floor(eps), so AE sets store losslessly as uint8.
    """
    delta = torch.clamp((adv - x).round(), -math.floor(eps), math.floor(eps))
    return torch.clamp(x + delta, 0, 255).to(torch.uint8)


@dataclass(frozen=True)
class AttackResult:
    """What one attack call yields: the adversarial images per decision of the attacked system
    (``SINGLE`` unless an ``Ensemble`` has several ``decisions``), and the marks of an attack
    that judges its iterates (``attacks.best_iterate``).

    Shapes:
        images: decision -> (N, 3, H, W) uint8, within eps of the clean images.
        marks: decision -> (N, M, 2, C) int64 intersections and unions per class at each mark;
            empty when the attack records none.
        mark_iterations: (M,) the iteration counts of the marks.
    """

    images: dict[str, Tensor]
    marks: dict[str, Tensor] = field(default_factory=dict)
    mark_iterations: tuple[int, ...] = ()


def run_attack(
    attack: Attack,
    model: nn.Module,
    images: Tensor,
    *,
    eps: float,
    labels: Tensor | None = None,
    index: Tensor | None = None,
) -> AttackResult:
    """``attack.run`` for the attacks of this package (marks, several decisions); any other
    object of the ``Attack`` protocol is called and its images returned as ``SINGLE``."""
    if isinstance(attack, AttackBase) or hasattr(attack, "run"):
        return attack.run(model, images, eps=eps, labels=labels, index=index)  # type: ignore[attr-defined]
    return AttackResult({SINGLE: attack(model, images, eps=eps, labels=labels)})


def expected_marks(attack: Attack, model: nn.Module, eps: float) -> tuple[int, ...]:
    """The iteration counts of the marks ``attack`` records on ``model`` at ``eps`` (none for
    attacks that do not judge their iterates, or a system without one output to judge)."""
    marks = getattr(attack, "budget_marks", None)
    return tuple(marks(model, eps)) if marks is not None else ()


def _options(cls: type) -> list[str]:
    """The keyword-only options of ``cls``'s constructor; an ``__init__`` that passes
    ``**kwargs`` on (a test's counting subclass) has its parent's options too."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


class AttackBase(ABC):
    """What every attack here shares: the one entry point, parameters, a readable repr.

    A subclass's hyper-parameters are the keyword-only arguments of its ``__init__``, each
    stored under its own name (as the value ``params()`` reports, e.g. class weights as a list
    of floats): ``params()`` reads them off the signature, so no option can be missing from the
    AE sets' cache keys.
    """

    name: ClassVar[str]
    needs_labels: bool = False
    #: False for an attack that only queries forward passes (it moves a masked surface too)
    needs_gradient: ClassVar[bool] = True

    @final
    def params(self) -> dict[str, Any]:
        """The constructor's options as stored, in signature order; options left at None are
        omitted (so an optional option added later keeps the keys of existing AE sets)."""
        values = {name: getattr(self, name) for name in _options(type(self))}
        return {k: v for k, v in values.items() if v is not None}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    #: the attack keeps a best iterate per decision on one trajectory: its steps do not depend
    #: on the decision, so several decisions on the same networks can share it
    shares_trajectory: bool = False

    #: bumped when this attack's output changes for the same ``params()``: it enters its AE
    #: sets' keys (0, the default, is omitted, so the keys of unchanged attacks stay)
    revision: int = 0

    def budget_marks(self, model: nn.Module, eps: float) -> tuple[int, ...]:
        """The iteration counts at which the attack records its marks on ``model`` at ``eps``
        (``attacks.best_iterate``); none by default."""
        return ()

    @final
    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        eps: float,
        labels: Tensor | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """Attack ``model`` (a network, or an ``attacks.objectives.Ensemble``); returns the
        adversarial images on the device of ``images``.

        Shapes:
            images: (N, 3, H, W) uint8, gray values 0..255.
            labels: (N, H, W) int64 trainIds, 255 = ignore (only attacks that need labels).
            index: (N,) int64, the images' positions in their data set (seeds per-image random
                starts, so results do not depend on how images are batched); default 0..N-1.
            returns: (N, 3, H, W) uint8, ||returned - images||_inf <= eps.
        """
        if isinstance(model, Ensemble) and model.decisions:
            raise AttackError(
                f"{self!r}: the ensemble has {len(model.decisions)} decisions; call run() for "
                "one set of images per decision"
            )
        result = self.run(model, images, eps=eps, labels=labels, index=index)
        return result.images[SINGLE]

    @final
    def run(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        eps: float,
        labels: Tensor | None = None,
        index: Tensor | None = None,
    ) -> AttackResult:
        """As ``__call__``, with everything the attack found: the images per decision of the
        model and the marks (``AttackResult``)."""
        check_images(images, "attacks", AttackError)
        eps = check_eps(eps)
        if self.needs_labels and labels is None:
            raise AttackError(
                f"{self!r} needs the ground-truth labels; pass labels= (N, H, W) trainIds"
            )
        if isinstance(model, Ensemble) and model.decisions and not self.shares_trajectory:
            raise AttackError(
                f"{self!r} cannot follow several decisions on one trajectory; attack each "
                "defense's surface on its own"
            )
        device = module_device(model)
        x = images.to(device).float()
        if labels is not None:
            labels = labels.to(device)
        index = torch.arange(len(images)) if index is None else index.cpu()
        with eval_mode(model):
            found = self._run(model, x, eps, labels, index)
        if not isinstance(found, Iterates):
            found = Iterates({SINGLE: found}, {}, ())
        return AttackResult(
            {k: to_uint8(adv, x, eps).to(images.device) for k, adv in found.best.items()},
            {k: marks.cpu() for k, marks in found.marks.items()},
            found.mark_iterations,
        )

    @abstractmethod
    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Tensor | Iterates:
        """The attack proper, on a model in eval mode.

        Shapes:
            x: (N, 3, H, W) float gray values on the model's device.
            labels: (N, H, W) int64 on the same device, or None.
            index: (N,) int64 on the CPU, the images' positions in their data set.
            returns: (N, 3, H, W) float, within eps of ``x`` up to rounding; or, for an attack
                that judges its iterates, its ``Iterates`` (one best iterate per decision).
        """


class IterativeAttack(AttackBase):
    """Template of an iterative L_inf attack with sign steps (BIM / iterative LLCM).

    Each iteration: one forward and one backward pass w.r.t. the input, a step of size ``step``
    along the gradient sign (down the ``loss`` when targeted, up it otherwise), projection onto
    the eps ball and clipping to [0, 255]. Subclasses supply ``n_iter``; the target is the
    least-likely class of the clean images, read off the first step's own forward pass, and kept
    for every later step unless ``target_per_step``.
    """

    targeted: ClassVar[bool]
    #: re-read the least-likely target from the current image at every step
    target_per_step: bool = False

    def __init__(self, *, step: float = 1.0) -> None:
        self.step = check_step(step)

    @abstractmethod
    def n_iter(self, eps: float) -> int:
        """Number of iterations at ``eps``."""

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """The scalar the steps follow (summed over pixels): cross-entropy to ``target``."""
        return cross_entropy_sum(logits, target)

    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Tensor:
        sign = -1.0 if self.targeted else 1.0  # targeted: descend the loss towards the target
        target = None if self.targeted else labels
        adv = x.clone()
        for _ in range(self.n_iter(eps)):
            grad, used = input_gradient(model, adv, target, self.loss)
            if not self.target_per_step:
                target = used  # fixed from the first step on: the clean image's target
            # x_adv = x + r (eq. 5), then ||r||_inf <= eps (eq. 6) and [0, 255]
            adv = project(adv + sign * self.step * grad.sign(), x, eps)
        return adv
