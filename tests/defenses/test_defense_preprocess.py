"""ART input transformations in front of T, checked on a network whose argmax is the gray value."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from defenses import DefenseError, InputTransform, SingleNetwork


class GrayNet(nn.Module):
    """Class k = the nearest of 19 gray levels k * 255 / 18 of channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("levels", torch.linspace(0, 255, 19).view(1, 19, 1, 1))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return -(x[:, :1] - self.levels).abs()


def _image(value: int) -> Tensor:
    return torch.full((1, 3, 8, 8), value, dtype=torch.uint8)


def test_feature_squeezing_one_bit():
    nets = {"T": GrayNet()}
    images = torch.cat([_image(100), _image(200)])
    # undefended: 100 -> level 7, 200 -> level 14; squeezed to 1 bit: 0 -> 0, 255 -> 18
    assert SingleNetwork(nets).predict(images).labels[:, 0, 0].tolist() == [7, 14]
    squeezed = InputTransform(nets, method="feature-squeezing", bit_depth=1).predict(images)
    assert squeezed.labels[:, 0, 0].tolist() == [0, 18]
    assert squeezed.records == [{"chosen": "T"}, {"chosen": "T"}]


def test_spatial_smoothing_removes_a_salt_pixel():
    images = _image(0)
    images[0, :, 4, 4] = 255
    nets = {"T": GrayNet()}
    assert SingleNetwork(nets).predict(images).labels[0, 4, 4] == 18
    smoothed = InputTransform(nets, method="spatial-smoothing", window_size=3).predict(images)
    assert smoothed.labels.eq(0).all()


def test_jpeg_keeps_a_flat_image():
    nets = {"T": GrayNet()}
    images = _image(128)
    jpeg = InputTransform(nets, method="jpeg", quality=75).predict(images)
    assert torch.equal(jpeg.labels, SingleNetwork(nets).predict(images).labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "blur"}, "unknown input transformation 'blur'; choose from jpeg"),
        ({"method": "jpeg", "quality": 0}, "bad option for jpeg"),
        ({"method": "jpeg", "bits": 3}, "bad option for jpeg"),
    ],
    ids=["method", "range", "keyword"],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(DefenseError, match=message):
        InputTransform({"T": GrayNet()}, **kwargs)
