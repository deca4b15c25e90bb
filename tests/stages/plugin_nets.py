"""A user's own architectures, as a plug-in file names them (``plugin_nets.py:build``)."""

from __future__ import annotations

from torch import nn


class Tiny(nn.Module):
    """A small fully convolutional segmenter: gray values in, 19-class logits out."""

    def __init__(self, width: int = 8, classes: int = 19, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=stride, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        return self.head(self.body(x / 255))


def build(width: int = 8):
    return Tiny(width)


def build_ten_classes(width: int = 8):
    return Tiny(width, classes=10)


def build_half_size(width: int = 8):
    return Tiny(width, stride=2)
