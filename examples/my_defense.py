"""An example defense plug-in: a per-pixel majority vote of T, S and A.

Use it with ``bench run --defense my_defense:PixelVote`` (this folder on PYTHONPATH) or
``--defense examples/my_defense.py:PixelVote``. The contract: ``Class(networks, **options)``
and ``predict(images uint8 (N, 3, H, W)) -> Prediction(labels int64 (N, H, W), records)``.
"""

from __future__ import annotations

from torch import Tensor

from defenses import Networks, Prediction, predict_labels, require_networks


class PixelVote:
    """Each pixel takes the class that at least two of T, S, A agree on; T's when all differ."""

    name = "pixel-vote"

    def __init__(self, networks: Networks) -> None:
        require_networks(networks, ("T", "S", "A"), self.name)
        self.networks = networks

    def predict(self, images: Tensor) -> Prediction:
        t, s, a = (predict_labels(self.networks[k], images) for k in ("T", "S", "A"))
        overruled = (s == a) & (s != t)  # both students outvote the teacher
        labels = t.where(~overruled, s)
        records = [{"overruled": v} for v in overruled.flatten(1).float().mean(1).tolist()]
        return Prediction(labels, records)
