"""What attacks optimise: per-pixel losses, and several networks attacked as one.

Per-pixel losses (SEA, Croce et al. 2024), each ``(logits (N, C, H, W), labels (N, H, W)) ->
(N, H, W)``, 0 on ignored pixels (255):

- ``ce``: cross-entropy to the label;
- ``masked-ce``: cross-entropy on the pixels the network still gets right (the mask is not
  differentiated), so the steps stop pushing pixels that are already wrong;
- ``js``: the Jensen-Shannon divergence between the softmax and the one-hot label (bounded by
  log 2, so no pixel dominates);
- ``balanced-masked-ce``: ``masked-ce`` weighted by 1 / N_y, the inverse pixel count of the
  label's class in the training split, so rare classes count as much as road.

``Ensemble`` lets every attack run on a multi-network objective: its forward returns one logits
tensor per member, the attack sums the members' losses towards one target, and ``decide`` turns
the members' label maps into the attacked defense's own output, on which an attack that keeps
a best iterate judges success.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data.labels import IGNORE_INDEX
from bench.data.tensors import class_map, least_likely_map
from bench.errors import AttackError

PixelLoss = Callable[[Tensor, Tensor], Tensor]
#: member label maps {role: (N, H, W)} -> a defense's labels (N, H, W)
Decide = Callable[[dict[str, Tensor]], Tensor]
#: the name of the one decision of a system that is not judged by several
SINGLE = ""


def _valid(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(mask of labelled pixels, labels with 255 replaced by 0 for indexing)."""
    valid = labels != IGNORE_INDEX
    return valid, labels.where(valid, torch.zeros_like(labels))


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")


def masked_ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    still_right = (class_map(logits.detach()) == labels).float()
    return still_right * ce_loss(logits, labels)


def js_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """JS(p || onehot(y)) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, summed over
    classes; with q one-hot: 1/2 [sum_{c != y} p_c log 2 + p_y log(2 p_y / (1 + p_y))
    + log(2 / (1 + p_y))]."""
    valid, y = _valid(labels)
    log_p = F.log_softmax(logits, 1)
    p = log_p.exp()
    p_y = p.gather(1, y[:, None])[:, 0]
    log_p_y = log_p.gather(1, y[:, None])[:, 0]
    log_m_y = torch.log((1 + p_y) / 2)
    others = (1 - p_y) * math.log(2)  # sum_{c != y} p_c log(p_c / (p_c / 2))
    kl_pm = others + p_y * (log_p_y - log_m_y)
    kl_qm = -log_m_y
    return valid.float() * (kl_pm + kl_qm) / 2


def balanced_masked_ce_loss(class_weights: Sequence[float]) -> PixelLoss:
    """``masked-ce`` weighted per pixel by its label's class weight (1 / N_y, see the module)."""
    weights = torch.tensor(list(class_weights), dtype=torch.float32)

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        _, y = _valid(labels)
        return weights.to(logits.device)[y] * masked_ce_loss(logits, labels)

    return loss


LOSSES = ("ce", "masked-ce", "js", "balanced-masked-ce")


def pixel_loss(name: str, class_weights: Sequence[float] | None = None) -> PixelLoss:
    """The per-pixel loss called ``name``; the error lists the valid names."""
    if name == "balanced-masked-ce":
        if class_weights is None:
            raise AttackError(
                "loss 'balanced-masked-ce' needs class_weights (1 / pixel count per class of the "
                "training split); bench run supplies them"
            )
        return balanced_masked_ce_loss(class_weights)
    losses = {"ce": ce_loss, "masked-ce": masked_ce_loss, "js": js_loss}
    if name not in losses:
        raise AttackError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return losses[name]


def class_weights(pixel_counts: Sequence[int]) -> list[float]:
    """1 / N_y per class, scaled to mean 1 over the classes seen (unseen classes: the largest
    weight, as if seen once)."""
    counts = torch.tensor(list(pixel_counts), dtype=torch.float64).clamp(min=1)
    weights = 1 / counts
    return (weights / weights[counts > 1].mean() if (counts > 1).any() else weights).tolist()


# --- several networks as one objective -------------------------------------------------------


class Ensemble(nn.Module):
    """Networks attacked at once: ``forward`` returns a tuple of logits, one per member.

    Args:
        members: role -> network (e.g. {"T": T, "S": S}); each takes float gray values.
        transform: applied to the images before every member: a defense's input transformation
            with its gradient stand-in (BPDA), or None.
        decide: member label maps {role: (N, H, W)} -> the defense's labels (N, H, W); None
            means every member counts for itself (success = the mean of their accuracies).
        samples: forward passes per call for a random transform (EOT: the losses of all samples
            are summed, so the gradient is their expectation up to a factor).
        decisions: name -> decide, several defenses' decisions on the same members (the votes on
            T, S and A): an attack that keeps a best iterate keeps one per decision on one
            trajectory (``AttackBase.run``); instead of ``decide``.
    """

    def __init__(
        self,
        members: Mapping[str, nn.Module],
        *,
        transform: Callable[[Tensor], Tensor] | None = None,
        decide: Callable[[dict[str, Tensor]], Tensor] | None = None,
        samples: int = 1,
        decisions: Mapping[str, Decide] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise AttackError("an ensemble needs at least one network")
        if decide is not None and decisions:
            raise AttackError("an ensemble takes decide or decisions, not both")
        self.roles = list(members)
        self.members = nn.ModuleList(members.values())
        self.transform = transform
        self._decide = decide
        self.samples = samples
        self.decisions: dict[str, Decide] = dict(decisions or {})
        self.training = False  # its members keep their own modes

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outputs = []
        for _ in range(self.samples):
            seen = self.transform(x) if self.transform is not None else x
            outputs += [member(seen) for member in self.members]
        return tuple(outputs)

    def decide(self, outputs: Sequence[Tensor]) -> Tensor | None:
        """The defense's labels (N, H, W) from one sample's member logits, or None."""
        if self._decide is None:
            return None
        maps = {role: class_map(out) for role, out in zip(self.roles, outputs)}
        return self._decide(maps)


def shared_decisions(ensembles: Mapping[str, nn.Module]) -> Ensemble | None:
    """One ensemble that judges the decision of each of ``ensembles`` (name -> ensemble) on one
    trajectory (``decisions``), when they differ in their decision only: the same member
    networks (the very modules) in the same roles, no transform, one sample, a decision each;
    else None."""
    models = list(ensembles.values())
    first = models[0] if models else None
    if not isinstance(first, Ensemble):
        return None
    for model in models:
        same = (
            isinstance(model, Ensemble)
            and model.roles == first.roles
            and all(a is b for a, b in zip(model.members, first.members))
        )
        if not same or model.transform is not None or model.samples != 1 or model._decide is None:
            return None
    members = dict(zip(first.roles, first.members))
    return Ensemble(members, decisions={name: m._decide for name, m in ensembles.items()})


def without_decisions(model: nn.Module) -> nn.Module:
    """``model`` judged by its members alone: an ``Ensemble``'s networks, transform and samples
    without its decision(s) (success is then the mean of the members' accuracies); any other
    model as it is. The same modules, not copies."""
    if not (isinstance(model, Ensemble) and (model.decisions or model._decide is not None)):
        return model
    members = dict(zip(model.roles, model.members))
    return Ensemble(members, transform=model.transform, samples=model.samples)


def members_of(outputs: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """A network's logits, or an ensemble's, as a tuple of (N, C, H, W) tensors."""
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def summed_loss(loss: PixelLoss, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
    """Per image, the members' losses averaged over the labelled pixels and summed over the
    members: (N,)."""
    valid = (target != IGNORE_INDEX).flatten(1).sum(1).clamp(min=1)
    return sum(loss(out, target).flatten(1).sum(1) / valid for out in members_of(outputs))


def pixel_accuracy(model: nn.Module, outputs: Tensor | Sequence[Tensor], labels: Tensor) -> Tensor:
    """Per image, the share of labelled pixels the attacked system still gets right: the
    defense's output when the model can decide, else the mean over its members. (N,) in [0, 1].
    """
    valid, y = _valid(labels)
    count = valid.flatten(1).sum(1).clamp(min=1)
    members = members_of(outputs)
    decided = model.decide(members) if isinstance(model, Ensemble) else None
    if decided is not None:
        rights = [(decided == labels) & valid]
    else:  # a pixel is right when its label's score is the highest: no argmax needed
        rights = [(out.gather(1, y[:, None])[:, 0] >= out.amax(1)) & valid for out in members]
    return sum(r.flatten(1).sum(1).float() for r in rights) / (len(rights) * count)


def judged_output(model: nn.Module) -> bool:
    """Whether the attacked system has one output of its own to judge: a network, or an
    ensemble with a decision (or one member and no EOT samples)."""
    if not isinstance(model, Ensemble):
        return True
    single = len(model.roles) == 1 and model.samples == 1
    return bool(model.decisions) or model._decide is not None or single


def judge_outputs(
    model: nn.Module, outputs: Tensor | Sequence[Tensor], labels: Tensor
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Per decision of the model (``SINGLE`` unless it has ``decisions``): the pixel accuracy
    (as ``pixel_accuracy``, (N,) in [0, 1]) and the attacked system's own label map (N, H, W),
    None where there is no single output (several members, or EOT samples, without a decision).
    """
    members = members_of(outputs)
    if not (isinstance(model, Ensemble) and (model.decisions or model._decide is not None)):
        decided = class_map(members[0]) if len(members) == 1 else None
        return {SINGLE: (pixel_accuracy(model, members, labels), decided)}
    valid = labels != IGNORE_INDEX
    count = valid.flatten(1).sum(1).clamp(min=1)
    maps = {role: class_map(out) for role, out in zip(model.roles, members)}
    decisions = model.decisions or {SINGLE: model._decide}
    judged = {}
    for name, decide in decisions.items():
        decided = decide(maps)
        judged[name] = (((decided == labels) & valid).flatten(1).sum(1).float() / count, decided)
    return judged


def least_likely_target(outputs: Tensor | Sequence[Tensor]) -> Tensor:
    """The least-likely class per pixel: of the network, or of the members' summed
    log-probabilities (one target for all). (N, H, W)."""
    members = members_of(outputs)
    if len(members) == 1:
        return least_likely_map(members[0].detach())
    return least_likely_map(sum(F.log_softmax(out.detach(), 1) for out in members))
