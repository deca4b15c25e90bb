"""An example defense plug-in: a per-pixel majority vote of T, S and A.

Use it with ``bench run --defense my_defense:PixelVote`` (this folder on PYTHONPATH) or
``--defense examples/my_defense.py:PixelVote``. The contract: ``Class(networks, **options)``
and ``predict(images uint8 (N, 3, H, W)) -> Prediction(labels int64 (N, H, W), records)``.
``attack_surface()`` is optional: it tells the benchmark what a white-box attacker
differentiates through, so the defense is attacked as hard as its threat model allows.
"""

from __future__ import annotations

from torch import Tensor

from defenses import AttackSurface, Networks, Prediction, predict_labels, require_networks


class PixelVote:
    """Each pixel takes the class that at least two of T, S, A agree on; T's when all differ."""

    name = "pixel-vote"

    def __init__(self, networks: Networks) -> None:
        require_networks(networks, ("T", "S", "A"), self.name)
        self.networks = networks

    def vote(self, maps: dict[str, Tensor]) -> Tensor:
        """The decision on the three label maps (N, H, W)."""
        t, s, a = maps["T"], maps["S"], maps["A"]
        overruled = (s == a) & (s != t)  # both students outvote the teacher
        return t.where(~overruled, s)

    def predict(self, images: Tensor) -> Prediction:
        maps = {k: predict_labels(self.networks[k], images) for k in ("T", "S", "A")}
        labels = self.vote(maps)
        share = (labels != maps["T"]).flatten(1).float().mean(1)
        return Prediction(labels, [{"overruled": v} for v in share.tolist()])

    def attack_surface(self) -> AttackSurface:
        """White-box: all three networks, success judged on the vote's own output."""
        return AttackSurface("T+S+A:pixel-vote", dict(self.networks), decide=self.vote)
