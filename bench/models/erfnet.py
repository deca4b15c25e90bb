"""ERFNet (Romera et al., IEEE T-ITS 2018), the efficient student of the paper.

Module names follow the official erfnet_pytorch code (``encoder.initial_block``,
``encoder.layers.N``, ``decoder.layers.N``, ``decoder.output_conv``) so that published ERFNet
state_dicts load (``bench.models.weights``: the official 20-class checkpoints lose their void
channel, DataParallel's ``module.`` prefix is dropped).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models.taps import TapMixin


class DownsamplerBlock(nn.Module):
    """3x3 stride-2 conv concatenated with 2x2 max pooling, then BN and ReLU (halves H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1d(nn.Module):
    """Residual block of two factorised (3x1, 1x3) convolution pairs, the second one dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(
            channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1)
        )
        self.conv1x3_2 = nn.Conv2d(
            channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation)
        )
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.bn2(self.conv1x3_2(out))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed conv, BN, ReLU (doubles H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        c1, c2, c3 = 16 * width // 4, 64 * width // 4, 128 * width // 4
        self.initial_block = DownsamplerBlock(3, c1)
        layers: list[nn.Module] = [DownsamplerBlock(c1, c2)]
        layers += [NonBottleneck1d(c2, 0.03, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(c2, c3))
        for _ in range(2):
            layers += [NonBottleneck1d(c3, 0.3, d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)
        # Unused in the full network; kept so that official checkpoints load strictly.
        self.output_conv = nn.Conv2d(c3, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return x


class Decoder(nn.Module):
    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        c1, c2, c3 = 16 * width // 4, 64 * width // 4, 128 * width // 4
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(c3, c2),
                NonBottleneck1d(c2, 0, 1),
                NonBottleneck1d(c2, 0, 1),
                UpsamplerBlock(c2, c1),
                NonBottleneck1d(c1, 0, 1),
                NonBottleneck1d(c1, 0, 1),
            ]
        )
        self.output_conv = nn.ConvTranspose2d(c1, num_classes, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


_REST = tuple(f"encoder.layers.{i}" for i in (1, 2, 3, 4, 5, *range(7, 15))) + tuple(
    f"decoder.layers.{i}" for i in (1, 2, 4, 5)
)


class ERFNet(TapMixin, nn.Module):
    """ERFNet for 19 Cityscapes classes (2.06 M parameters at ``width=4``, the real network).

    Takes float gray values in [0, 255] and divides by 255 inside (the official code feeds
    ``ToTensor`` images, so official weights expect [0, 1] without mean/std normalisation).

    Taps: down1..3 = the three downsampler blocks, up1..2 = the first two upsampler
    blocks, rest = every other block except the output layers (one tap per block, named by its
    module path). The last upsampling layer is the classifier and is never a tap.

    Shapes:
        x: (N, 3, H, W) float in [0, 255], H and W divisible by 8.
        returns: logits (N, num_classes, H, W).
    """

    TAPS: ClassVar[dict[str, str]] = {
        "down1": "encoder.initial_block",
        "down2": "encoder.layers.0",
        "down3": "encoder.layers.6",
        "up1": "decoder.layers.0",
        "up2": "decoder.layers.3",
        **{path: path for path in _REST},
    }
    SIZE_DIVISOR = 8
    TAP_GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "down": ("down1", "down2", "down3"),
        "up": ("up1", "up2"),
        "rest": _REST,
        "all": ("down1", "down2", "down3", "up1", "up2", *_REST),
    }

    def __init__(self, num_classes: int = 19, *, width: int = 4) -> None:
        super().__init__()
        if not (isinstance(width, int) and not isinstance(width, bool) and width >= 1):
            raise ValueError(
                f"ERFNet width must be an integer >= 1 (4 = the real network), got {width!r}"
            )
        self.encoder = Encoder(num_classes, width)
        self.decoder = Decoder(num_classes, width)

    def forward(self, x: Tensor) -> Tensor:
        self.check_size(tuple(x.shape[-2:]))
        return self.decoder(self.encoder(x / 255.0))
