"""The Attack protocol and the one template of iterative L_inf attacks on uint8 images.

Every attack maps clean images to adversarial examples (paper eqs. 5-6)

    x_adv = x + r,   ||r||_inf <= eps,

with eps in gray values 0..255 (the networks normalise inside themselves). The shared pieces live
here once: validation, the input gradient of the per-pixel cross-entropy, the step / project /
clip of an iterative attack, and the final quantisation to uint8. An iterative attack supplies
only what differs: its number of iterations and its target.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data.labels import IGNORE_INDEX
from bench.errors import BenchError

# Bump whenever an attack's output changes for the same inputs: AE sets stored under another
# version are rebuilt (bench.store.aesets keys them by it).
ATTACKS_VERSION = 1


class AttackError(BenchError, ValueError):
    """An attack was asked for something it cannot do (bad eps, unknown name, missing labels)."""


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
    """eps as a float; a clear error when it is negative or not a number."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise AttackError(f"eps must be a number of gray values, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise AttackError(
            f"eps must be a finite number >= 0 (gray values 0..255), got {eps!r}; "
            "e.g. eps=1 or eps=10"
        )
    return value


def check_step(step: float) -> float:
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise AttackError(
            f"step must be a positive number of gray values, got {step!r}; e.g. step=1"
        )
    return float(step)


def check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise AttackError(
            f"attacks take uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}; "
            "pass gray values 0..255 as torch.uint8"
        )


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Attack the network as it is deployed (BatchNorm statistics, no dropout), then restore the
    mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def least_likely(model: nn.Module, x: Tensor) -> Tensor:
    """The network's least-likely class per pixel.

    Shapes:
        x: (N, 3, H, W) float gray values on the model's device.
        returns: (N, H, W) int64 trainIds.
    """
    return model(x).argmin(1)


def input_gradient(
    model: nn.Module, x: Tensor, target: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Gradient w.r.t. the input of the per-pixel cross-entropy against ``target``; and the target.

    ``target=None`` means the least-likely class of ``x`` itself, read off this very forward pass
    (so LLCM needs no extra forward pass for its target). The loss is summed, not averaged, so
    an image's gradient does not depend on how many images share its batch. Pixels labelled 255
    are ignored. Only the input gradient is computed (``autograd.grad``): nothing accumulates in
    the parameters' ``.grad``.

    Shapes:
        x: (N, 3, H, W) float gray values on the model's device.
        target: (N, H, W) int64 trainIds, 255 = ignore; or None.
        returns: gradient (N, 3, H, W) float; the target used (N, H, W) int64.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if target is None:
        target = logits.detach().argmin(1)
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
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


def prepare(model: nn.Module, images: Tensor, eps: float) -> tuple[Tensor, float]:
    """Validate the inputs; the clean images as float on the model's device, and eps."""
    check_images(images)
    eps = check_eps(eps)
    return images.to(model_device(model)).float(), eps


class AttackBase:
    """What every attack here shares: a name, its parameters, a readable repr."""

    name: ClassVar[str]
    needs_labels: bool = False

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class IterativeAttack(AttackBase, ABC):
    """Template of an iterative L_inf attack with sign steps (BIM / iterative LLCM).

    Each iteration: one forward and one backward pass w.r.t. the input, a step of size ``step``
    along the gradient sign (towards the target when targeted), projection onto the eps ball and
    clipping to [0, 255]. Subclasses supply ``n_iter`` and, when it is not the least-likely class
    of the clean images, the target.
    """

    targeted: ClassVar[bool]
    #: re-read the least-likely target from the current image at every step
    target_per_step: bool = False

    def __init__(self, *, step: float = 1.0) -> None:
        self.step = check_step(step)

    @abstractmethod
    def n_iter(self, eps: float) -> int:
        """Number of iterations at ``eps``."""

    def initial_target(self, labels: Tensor | None) -> Tensor | None:
        """The target of the first step. None (the default): the least-likely class of the clean
        images, read off the first step's own forward pass and kept for every later step (unless
        ``target_per_step``), which saves the extra forward pass of computing it beforehand."""
        return None

    def params(self) -> dict[str, Any]:
        return {"step": self.step}

    def __call__(
        self, model: nn.Module, images: Tensor, *, eps: float, labels: Tensor | None = None
    ) -> Tensor:
        """Attack ``model``; returns the adversarial images on the device of ``images``.

        Shapes:
            images: (N, 3, H, W) uint8, gray values 0..255.
            labels: (N, H, W) int64 trainIds, 255 = ignore (only attacks that need labels).
            returns: (N, 3, H, W) uint8, ||returned - images||_inf <= eps.
        """
        x, eps = prepare(model, images, eps)
        sign = -1.0 if self.targeted else 1.0  # targeted: descend the loss towards the target
        with eval_mode(model):
            target = self.initial_target(labels)
            adv = x.clone()
            for _ in range(self.n_iter(eps)):
                grad, used = input_gradient(model, adv, target)
                if not self.target_per_step:
                    target = used  # fixed from the first step on: the clean image's target
                # x_adv = x + r (eq. 5), then ||r||_inf <= eps (eq. 6) and [0, 255]
                adv = project(adv + sign * self.step * grad.sign(), x, eps)
        return to_uint8(adv, x, eps).to(images.device)
