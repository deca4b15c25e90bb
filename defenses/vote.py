"""AE detection and correction by the adaptive student as a watchdog (paper Section 3.3, eq. 4).

g = per-pixel argmax, D = Hamming distance as the fraction of differing pixels, and

    d_AE = D(g(y_T), g(y_A)) - D(g(y_S), g(y_A))                                     (eq. 4)

A large positive d_AE means A agrees with S rather than T: T is suspected to be under attack.
With thresholds delta_T >= delta_S: d_AE > delta_T -> T suspected, d_AE < delta_S -> S suspected,
otherwise no attack. One threshold delta is delta_T = delta_S = delta, the paper's reading: every
image with d_AE != delta is then attributed to an attack on one of the two (a binary detector, as
in Tables 4 and 6); separate thresholds allow a "no attack" verdict in between.

Correction: output the non-suspected network with the better clean performance, i.e. T unless T
is suspected; then S (T/S vote) or A (T/A vote, A replaces S as the fallback).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from bench.config import FinetuneConfig
from bench.config.rules import check_tau, check_thresholds
from bench.devices import module_device
from bench.errors import DefenseError
from defenses.adaptive import AdaptiveTrainer
from defenses.base import (
    AttackSurface,
    DefenseBase,
    Networks,
    Prediction,
    predict_labels,
    require_networks,
)

FALLBACKS = ("S", "A")
#: the networks that can take A's place (watchdog and fallback): the paper's adaptive student, or
#: the adversarially trained AT (does redundancy add anything to a robust member?)
WATCHDOGS = ("A", "AT")


def hamming(labels_a: Tensor, labels_b: Tensor) -> Tensor:
    """D of eq. 4: the fraction of pixels at which two label maps differ, per image.

    Shapes:
        labels_a, labels_b: (N, H, W) integer label maps.
        returns: (N,) float32 in [0, 1].
    """
    if labels_a.shape != labels_b.shape or labels_a.ndim != 3:
        raise DefenseError(
            f"label maps must both be (N, H, W), got {tuple(labels_a.shape)} and "
            f"{tuple(labels_b.shape)}"
        )
    return (labels_a != labels_b).flatten(1).float().mean(1)


def distances(
    labels_t: Tensor, labels_s: Tensor, labels_a: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """D(T, A), D(S, A) and d_AE = D(T, A) - D(S, A) (eq. 4) per image.

    Shapes:
        labels_t, labels_s, labels_a: (N, H, W) integer label maps.
        returns: three (N,) float32 tensors; d_AE lies in [-1, 1] and is > 0 when A's map is
        closer to S's than to T's.
    """
    d_ta, d_sa = hamming(labels_t, labels_a), hamming(labels_s, labels_a)
    return d_ta, d_sa, d_ta - d_sa  # eq. 4


def d_ae(labels_t: Tensor, labels_s: Tensor, labels_a: Tensor) -> Tensor:
    """d_AE of eq. 4 per image, from the argmax label maps of T, S and A: (N,) in [-1, 1]."""
    return distances(labels_t, labels_s, labels_a)[2]


def thresholds(
    delta: float = 0.1, delta_t: float | None = None, delta_s: float | None = None
) -> tuple[float, float]:
    """(delta_T, delta_S) from one threshold or from both per-network thresholds."""
    check_thresholds(delta, delta_t, delta_s, "", DefenseError)
    if delta_t is None or delta_s is None:
        return delta, delta
    return delta_t, delta_s


def suspects(d: Tensor, delta_t: float, delta_s: float) -> list[str | None]:
    """The network suspected of being attacked per image: "T" (d > delta_T), "S" (d < delta_S)
    or None.

    Shapes:
        d: (N,) d_AE values.
    """
    return ["T" if v > delta_t else "S" if v < delta_s else None for v in d.tolist()]


class Vote(DefenseBase):
    """T/S vote (``fallback="S"``) or T/A vote (``fallback="A"``): needs networks T, S and A.

    Args:
        networks: "T", "S", "A" (see ``defenses.base``); none of them is modified.
        fallback: the network output when T is suspected: S, or A (the network in A's place).
        adaptive: the network in A's place, the watchdog of eq. 4: "A" (the paper's) or "AT"
            (the adversarially trained network: the T/AT vote ``TAT-vote``).
        delta, delta_t, delta_s: the thresholds of eq. 4 (see the module docstring).
        online: alternate the paper's test steps 1 and 2 (Fig. 2): after voting on a batch,
            a private copy of A takes ``online_steps`` J_TS' steps on that batch's images (never
            labels). Votes come before the update (prequential): no image is judged by an A that
            has trained on it. State carries over from batch to batch; a new instance starts from
            the run's A again.
        finetune: the J_TS' settings of the online steps (layers, alpha, p, beta, gamma, lr,
            optimiser; epochs and batch size are not used, each incoming batch is one step).
        online_steps: optimiser steps per incoming batch.

    Records per image: ``d_ae``, ``d_ta`` = D(T, A), ``d_sa`` = D(S, A), ``suspect`` ("T", "S",
    "T+S" or None), ``flagged`` (suspect is not None) and ``chosen`` (the network whose map was
    output).
    """

    def __init__(
        self,
        networks: Networks,
        *,
        fallback: str = "S",
        delta: float = 0.1,
        delta_t: float | None = None,
        delta_s: float | None = None,
        online: bool = False,
        finetune: FinetuneConfig | None = None,
        online_steps: int = 1,
        adaptive: str = "A",
    ) -> None:
        if fallback not in FALLBACKS:
            raise DefenseError(f"unknown vote fallback {fallback!r}; choose from S, A")
        if adaptive not in WATCHDOGS:
            raise DefenseError(f"unknown vote watchdog {adaptive!r}; choose from A, AT")
        if online and adaptive != "A":
            raise DefenseError("the online vote finetunes A with J_TS'; it takes adaptive='A'")
        self.adaptive = adaptive
        self.fallback = adaptive if fallback == "A" else fallback
        watchdog = "" if adaptive == "A" else f"-{adaptive}"
        self.name = f"T{self.fallback}-vote" + (watchdog if fallback == "S" else "")
        self.name += "-online" if online else ""
        require_networks(networks, ("T", "S", adaptive), self.name)
        self.delta_t, self.delta_s = thresholds(delta, delta_t, delta_s)
        self.tau: float | None = None  # see DisagreementVote
        self.nets = {k: networks[k] for k in ("T", "S", adaptive)}
        self._trainer = None
        if online:
            if online_steps < 1:
                raise DefenseError(f"online_steps must be >= 1, got {online_steps}")
            self.nets["A"] = copy.deepcopy(networks["A"])
            self._trainer = AdaptiveTrainer(
                self.nets["T"],
                self.nets["S"],
                self.nets["A"],
                finetune or FinetuneConfig(),
                device=module_device(networks["A"]),
            )
        self.online_steps = online_steps

    def vote(self, maps: dict[str, Tensor]) -> tuple[Tensor, list[dict]]:
        """The vote on the networks' label maps: (labels (N, H, W), one record per image)."""
        d_ta, d_sa, d = distances(maps["T"], maps["S"], maps[self.adaptive])
        suspect = suspects(d, self.delta_t, self.delta_s)
        if self.tau is not None:
            both = ((d_ta > self.tau) & (d_sa > self.tau)).tolist()
            suspect = ["T+S" if b else s for b, s in zip(both, suspect)]
        use_fallback = torch.tensor([s in ("T", "T+S") for s in suspect], dtype=torch.bool)
        labels = torch.where(
            use_fallback[:, None, None].to(maps["T"].device), maps[self.fallback], maps["T"]
        )
        records = [
            {
                "d_ae": d[i].item(),
                "d_ta": d_ta[i].item(),
                "d_sa": d_sa[i].item(),
                "suspect": suspect[i],
                "flagged": suspect[i] is not None,
                "chosen": self.fallback if use_fallback[i] else "T",
            }
            for i in range(len(labels))
        ]
        return labels, records

    def _predict(self, images: Tensor) -> Prediction:
        labels, records = self.vote(
            {k: predict_labels(net, images) for k, net in self.nets.items()}
        )
        self._learn(images)
        return Prediction(labels, records)

    def _learn(self, images: Tensor) -> None:
        """The online mode's test step 1 on a batch it has just voted on."""
        if self._trainer is not None:
            for _ in range(self.online_steps):
                self._trainer.step(images)

    def attack_surface(self) -> AttackSurface:
        """T, S and A (the online vote: A as it is at each batch; AT in A's place for the T/AT
        vote), judged on the vote's output."""
        return AttackSurface(
            f"T+S+{self.adaptive}:{self.name}",
            dict(self.nets),
            decide=lambda maps: self.vote(maps)[0],
            settings={
                "delta_t": self.delta_t,
                "delta_s": self.delta_s,
                "tau": self.tau,
                "fallback": self.fallback,
                "online_steps": self.online_steps,
            },
            after_batch=self._learn if self._trainer is not None else None,
        )


class DisagreementVote(Vote):
    """The T/A vote with an answer to a joint attack on T and S (not in the paper).

    A joint attack that fools T and S the same way leaves d_AE near 0, so eq. 4 keeps T. But
    then A, whose weights the attacker does not know, disagrees with *both*: when D(T, A) > tau
    and D(S, A) > tau, this vote suspects T and S together ("T+S") and outputs A; otherwise it
    is the T/A vote. ``tau``: ``bench run`` calibrates it on the validation subset's clean images
    (``detect.tau``), never on the test subset.
    """

    def __init__(
        self,
        networks: Networks,
        *,
        tau: float = 0.25,
        delta: float = 0.1,
        delta_t: float | None = None,
        delta_s: float | None = None,
    ) -> None:
        check_tau(tau, "tau", DefenseError)
        super().__init__(networks, fallback="A", delta=delta, delta_t=delta_t, delta_s=delta_s)
        self.name = "TA-vote-disagree"
        self.tau = tau
