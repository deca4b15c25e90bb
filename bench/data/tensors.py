"""The image convention every attack and defense checks at its boundary."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.errors import BenchError


def check_images(images: Tensor, who: str, error: type[BenchError]) -> None:
    """Raise ``error`` unless ``images`` is uint8 (N, 3, H, W), naming ``who`` refused them."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise error(
            f"{who} take images uint8 (N, 3, H, W), gray values 0..255; got {images.dtype} "
            f"{tuple(images.shape)}"
        )
