"""Fake networks with fixed outputs, for the defense tests (imported by the test modules)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConstNet(nn.Module):
    """A 'network' whose argmax is a fixed label map (N, H, W), whatever the input."""

    def __init__(self, labels: Tensor) -> None:
        super().__init__()
        self.register_buffer("labels", labels)
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the defense a device to read

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(self.labels, 19).permute(0, 3, 1, 2).float()


def label_maps() -> dict[str, Tensor]:
    """Four 4x5 images (20 pixels). A is all class 0; T and S differ from A at k pixels:

    image 0 (T attacked): D(T,A) = 12/20, D(S,A) = 2/20  -> d_AE = 0.5
    image 1 (S attacked): D(T,A) = 1/20,  D(S,A) = 13/20 -> d_AE = -0.6
    image 2 (clean):      D(T,A) = 1/20,  D(S,A) = 1/20  -> d_AE = 0
    image 3 (borderline): D(T,A) = 4/20,  D(S,A) = 1/20  -> d_AE = 0.15
    """
    a = torch.zeros(4, 20, dtype=torch.int64)
    t, s = a.clone(), a.clone()
    for i, (k_t, k_s) in enumerate([(12, 2), (1, 13), (1, 1), (4, 1)]):
        t[i, :k_t] = 1  # T's changes at the front, S's at the back
        s[i, 20 - k_s :] = 2
    return {k: v.view(4, 4, 5) for k, v in (("T", t), ("S", s), ("A", a))}
