"""One network's per-pixel argmax: the undefended baselines (rows T, S, A of paper Table 7) and
the adversarially trained AT (the positive control)."""

from __future__ import annotations

from torch import Tensor

from defenses.base import (
    AttackSurface,
    DefenseBase,
    Networks,
    Prediction,
    predict_labels,
    require_networks,
)


class SingleNetwork(DefenseBase):
    """Outputs the label map of one network: ``net`` is "T", "S", "A" or "AT".

    Records: ``{"chosen": net}`` for every image.
    """

    def __init__(self, networks: Networks, *, net: str = "T") -> None:
        require_networks(networks, (net,), net)
        self.name = net
        self.model = networks[net]

    def _predict(self, images: Tensor) -> Prediction:
        labels = predict_labels(self.model, images)
        return Prediction(labels, [{"chosen": self.name} for _ in range(len(labels))])

    def attack_surface(self) -> AttackSurface:
        """The network itself: a white-box attack on it is the attack on its own output."""
        return AttackSurface(self.name, {self.name: self.model})
