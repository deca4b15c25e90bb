"""Extra attacks through the Adversarial Robustness Toolbox (ART) on the project's networks.

ART 1.20 has no segmentation estimator: its classifiers' label checks reject (N, H, W) label
maps. ``SegmentationEstimator`` is an ART estimator with loss gradients that is *not* a
classifier, so ART's attacks take their estimator-agnostic code path, where labels are passed
through untouched to ``loss_gradient``. Its loss gradient is ``attacks.base.input_gradient``, the
very function the native LLCM steps with, so ART's BIM reproduces LLCM bit for bit.

Each attack here is targeted at the least-likely map of the clean image (``target="least_likely"``)
or untargeted against the ground truth (``target="labels"``, pixels labelled 255 ignored).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.attack import EvasionAttack
from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, MomentumIterativeMethod
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_numpy import (
    ProjectedGradientDescentNumpy,
)
from art.config import ART_NUMPY_DTYPE
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from torch import Tensor, nn

from attacks.base import AttackBase, check_step, input_gradient, least_likely
from attacks.llcm import LLCM
from attacks.objectives import members_of
from bench.devices import module_device
from bench.errors import AttackError

TARGETS = ("least_likely", "labels")


class SegmentationEstimator(LossGradientsMixin, BaseEstimator):
    """An ART estimator for a per-pixel classifier (logits (N, C, H, W)); not an ART classifier.

    Inputs are float gray values in [0, 255] (``clip_values``); labels / targets are trainId
    maps. The network runs as it is (call it inside ``eval_mode``).

    Shapes:
        x: (N, 3, H, W) float gray values, numpy.
        y: (N, H, W) int trainIds, 255 = ignore, numpy.
    """

    def __init__(self, model: nn.Module, *, input_shape: tuple[int, int, int]) -> None:
        super().__init__(model=model, clip_values=(0.0, 255.0), preprocessing=None)
        self._input_shape = tuple(input_shape)
        self._device = module_device(model)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def _tensor(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self._device)

    def predict(self, x: np.ndarray, batch_size: int = 8, **kwargs: Any) -> np.ndarray:
        """Logits (N, C, H, W) as numpy (an ensemble's: its members' mean log-probabilities)."""
        with torch.no_grad():
            return np.concatenate(
                [
                    self._scores(self._tensor(x[i : i + batch_size])).cpu().numpy()
                    for i in range(0, len(x), batch_size)
                ]
            )

    def _scores(self, x: Tensor) -> Tensor:
        outputs = members_of(self._model(x))
        if len(outputs) == 1:
            return outputs[0]
        return torch.stack([F.log_softmax(out, 1) for out in outputs]).mean(0)

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Gradient of the summed per-pixel cross-entropy w.r.t. ``x`` (N, 3, H, W)."""
        target = torch.as_tensor(y, dtype=torch.int64, device=self._device)
        return input_gradient(self._model, self._tensor(x), target)[0].cpu().numpy()

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> None:
        raise NotImplementedError("SegmentationEstimator only attacks; train with bench train")


class _SegmentationPGD(ProjectedGradientDescentNumpy):
    """ART's numpy PGD, with its random start allowed for a segmentation estimator.

    ART draws the random start (uniform in the eps ball, then clipped) inside its step
    ``_compute``; only ``generate`` refuses it for estimators that are not classifiers, because
    it picks the best of several restarts by classification success. With one start there is
    nothing to pick, so this ``generate`` runs ART's own steps with the start on the first one.
    """

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if self.num_random_init == 0:
            return super().generate(x, y, **kwargs)
        adv = x.astype(ART_NUMPY_DTYPE)
        momentum = np.zeros(adv.shape)
        for i in range(self.max_iter):
            adv = self._compute(
                adv,
                x,
                y,
                None,
                self.eps,
                self.eps_step,
                True,
                i == 0,
                decay=self.decay,
                momentum=momentum,
            )
        return adv


class ARTAttack(AttackBase):
    """An ART evasion attack on uint8 images: ``BIM()(model, images, eps=10)``.

    Args:
        target: ``least_likely`` (targeted at the network's least-likely class per pixel on the
            clean image) or ``labels`` (untargeted, away from the ground truth; needs labels).

    Shapes:
        images: (N, 3, H, W) uint8, gray values 0..255.
        labels: (N, H, W) int64 trainIds, 255 = ignore (``target="labels"`` only).
        returns: (N, 3, H, W) uint8 with ||returned - images||_inf <= eps.
    """

    def __init__(self, *, target: str = "least_likely") -> None:
        if target not in TARGETS:
            raise AttackError(
                f"unknown target {target!r} for {self.name}; choose from {', '.join(TARGETS)}"
            )
        self.target = target

    @property
    def needs_labels(self) -> bool:
        return self.target == "labels"

    @abstractmethod
    def art_attack(
        self, estimator: SegmentationEstimator, eps: float, batch_size: int
    ) -> EvasionAttack:
        """The configured ART attack."""

    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Tensor:
        y = least_likely(model, x) if self.target == "least_likely" else labels
        estimator = SegmentationEstimator(model, input_shape=tuple(x.shape[1:]))
        # One ART batch = our batch, so ART sees exactly the batches the native attack sees.
        attack = self.art_attack(estimator, eps, batch_size=len(x))
        adv = attack.generate(x.cpu().numpy(), y=y.cpu().numpy())
        return torch.from_numpy(adv).to(x)


class FGSM(ARTAttack):
    """ART's fast gradient sign method: one step of size eps."""

    name = "fgsm"

    def art_attack(
        self, estimator: SegmentationEstimator, eps: float, batch_size: int
    ) -> EvasionAttack:
        return FastGradientMethod(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=eps,
            targeted=self.target == "least_likely",
            batch_size=batch_size,
        )


class _ARTIterative(ARTAttack):
    """Shared options of ART's iterative attacks.

    Args:
        step: eps_step in gray values per iteration.
        iterations: a number, or ``"llcm"`` for LLCM's ceil(min(eps + 4, 1.25 eps)).
    """

    def __init__(
        self, *, target: str = "least_likely", step: float = 1.0, iterations: int | str = "llcm"
    ) -> None:
        super().__init__(target=target)
        if iterations != "llcm" and not (isinstance(iterations, int) and iterations >= 0):
            raise AttackError(f"iterations must be an integer >= 0 or 'llcm', got {iterations!r}")
        self.step = check_step(step)
        self.iterations = iterations

    def n_iter(self, eps: float) -> int:
        return LLCM().n_iter(eps) if self.iterations == "llcm" else int(self.iterations)

    def _common(self, eps: float, batch_size: int) -> dict[str, Any]:
        return {
            "eps": eps,
            "eps_step": self.step,
            "max_iter": self.n_iter(eps),
            "targeted": self.target == "least_likely",
            "batch_size": batch_size,
            "verbose": False,
        }


class BIM(_ARTIterative):
    """ART's basic iterative method; with the defaults it is LLCM computed by ART."""

    name = "bim"

    def art_attack(
        self, estimator: SegmentationEstimator, eps: float, batch_size: int
    ) -> EvasionAttack:
        return BasicIterativeMethod(estimator, **self._common(eps, batch_size))


class PGD(_ARTIterative):
    """ART's projected gradient descent (Madry et al.) with one random start in the eps ball.

    Args:
        random_init: start from a uniform random point of the eps ball (ART's draw).
        seed: seeds ART's draw (numpy's global generator, restored afterwards).
    """

    name = "pgd"

    def __init__(
        self,
        *,
        target: str = "least_likely",
        step: float = 1.0,
        iterations: int | str = "llcm",
        random_init: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(target=target, step=step, iterations=iterations)
        self.random_init = bool(random_init)
        self.seed = int(seed)

    def art_attack(
        self, estimator: SegmentationEstimator, eps: float, batch_size: int
    ) -> EvasionAttack:
        return _SegmentationPGD(
            estimator,
            norm=np.inf,
            num_random_init=int(self.random_init),
            **self._common(eps, batch_size),
        )

    def _run(
        self, model: nn.Module, x: Tensor, eps: float, labels: Tensor | None, index: Tensor
    ) -> Tensor:
        # ART draws from numpy's global generator: seed it for reproducible AE sets, then restore.
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            return super()._run(model, x, eps, labels, index)
        finally:
            np.random.set_state(state)


class MIFGSM(_ARTIterative):
    """ART's momentum iterative method (Dong et al. 2018, MI-FGSM).

    Args:
        decay: momentum decay factor mu.
    """

    name = "mifgsm"

    def __init__(
        self,
        *,
        target: str = "least_likely",
        step: float = 1.0,
        iterations: int | str = "llcm",
        decay: float = 1.0,
    ) -> None:
        super().__init__(target=target, step=step, iterations=iterations)
        if not decay >= 0:
            raise AttackError(f"decay must be >= 0, got {decay!r}")
        self.decay = float(decay)

    def art_attack(
        self, estimator: SegmentationEstimator, eps: float, batch_size: int
    ) -> EvasionAttack:
        return MomentumIterativeMethod(estimator, decay=self.decay, **self._common(eps, batch_size))


ART_ATTACKS: dict[str, type[ARTAttack]] = {cls.name: cls for cls in (FGSM, BIM, PGD, MIFGSM)}
