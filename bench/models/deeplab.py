"""DeepLabv3+ (Chen et al., ECCV 2018) on a ResNet backbone, the paper's "non-efficient" teacher.

Written in plain torch (no torchvision). Output stride 16: the last ResNet stage is dilated
instead of strided; ASPP on its output; the decoder fuses stride-4 features of the first stage.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models.taps import TapMixin

# ImageNet statistics in gray values, the usual input normalisation of ResNet backbones.
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            cin, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


_RESNETS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet-{18,34,50,101} trunk with output stride 16 (stage 4 dilated by 2)."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"unknown ResNet depth {depth}; choose from {sorted(_RESNETS)}")
        block, counts = _RESNETS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
        )
        cin = width
        stages = []
        for i, (count, stride, dilation) in enumerate(zip(counts, (1, 2, 2, 1), (1, 1, 1, 2))):
            planes = width * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(cin, planes, stride if j == 0 else 1, dilation))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.low_level_channels = width * block.expansion
        self.out_channels = cin

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (stride-4 features of stage 1, stride-16 features of stage 4)."""
        low = self.layer1(self.stem(x))
        return low, self.layer4(self.layer3(self.layer2(low)))


POOL_NORMS = ("none", "group", "batch")


def _pool_branch(cin: int, cout: int, norm: str) -> nn.Sequential:
    """ASPP's image-pooling branch. Its 1x1 map has one value per channel and image, so a
    BatchNorm there cannot train on batches of one image ("Expected more than 1 value per
    channel"): ``none`` (a biased conv, as several public implementations) or ``group`` train
    at any batch size; ``batch`` is the original DeepLabv3+ branch."""
    if norm == "batch":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, cout, 1))
    layers = [nn.Conv2d(cin, cout, 1, bias=norm == "none")]
    if norm == "group":  # at most 32 groups of at least 2 channels: more than one value each
        groups = next((g for g in range(min(32, cout // 2), 0, -1) if cout % g == 0), 1)
        layers.append(nn.GroupNorm(groups, cout))
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Sequential(*layers, nn.ReLU(inplace=True)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, and image pooling, fused by 1x1."""

    def __init__(
        self, cin: int, cout: int, rates: tuple[int, ...], pool_norm: str = "none"
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates]
        )
        self.image_pool = _pool_branch(cin, cout, pool_norm)
        self.project = _conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLabV3Plus(TapMixin, nn.Module):
    """DeepLabv3+ with a ResNet backbone (depth 18/34/50/101, width 64 = the standard nets).

    Takes float gray values in [0, 255] and normalises with ImageNet statistics inside.
    ``pool_norm``: the normalisation of ASPP's image-pooling branch (``none``, ``group`` or
    ``batch``; see ``_pool_branch``): ``none`` trains at batch size 1.

    Shapes:
        x: (N, 3, H, W) float in [0, 255], H and W divisible by 16.
        returns: logits (N, num_classes, H, W).
    """

    TAPS: ClassVar[dict[str, str]] = {"backbone": "backbone", "aspp": "aspp", "decoder": "decoder"}
    TAP_GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("backbone", "aspp", "decoder")}
    SIZE_DIVISOR = 16

    def __init__(
        self,
        num_classes: int = 19,
        *,
        depth: int = 50,
        width: int = 64,
        aspp_channels: int = 256,
        aspp_rates: tuple[int, ...] = (6, 12, 18),
        pool_norm: str = "none",
    ) -> None:
        super().__init__()
        for name, value in (("width", width), ("aspp_channels", aspp_channels)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        rates = tuple(aspp_rates)
        if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
            raise ValueError(f"aspp_rates must be integers >= 1, got {aspp_rates!r}")
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = ResNet(depth, width)
        if pool_norm not in POOL_NORMS:
            raise ValueError(f"pool_norm must be one of {', '.join(POOL_NORMS)}, got {pool_norm!r}")
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, tuple(aspp_rates), pool_norm)
        self.low_level = _conv_bn_relu(self.backbone.low_level_channels, 48, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + 48, aspp_channels, 3),
            _conv_bn_relu(aspp_channels, aspp_channels, 3),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        self.check_size(tuple(x.shape[-2:]))
        low, high = self.backbone((x - self.mean) / self.std)
        high = F.interpolate(
            self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        out = self.classifier(self.decoder(torch.cat([high, self.low_level(low)], 1)))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
