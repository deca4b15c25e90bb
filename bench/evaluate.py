"""Runs networks (and, later, defenses) over data and accumulates metrics."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bench.metrics import ConfusionMatrix


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-pixel argmax of a network. images uint8 (N,3,H,W) -> labels int64 (N,H,W) on CPU."""
    device = next(model.parameters()).device
    return model(images.to(device).float()).argmax(1).cpu()


def clean_confusion(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, progress: bool = True
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` (eval mode) over a labelled dataset, one pass."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix()
    loader = DataLoader(dataset, batch_size=batch_size)
    for images, labels in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        cm.update(predict_labels(model, images), labels)
    model.train(was_training)
    return cm
