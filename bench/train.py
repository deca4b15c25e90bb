"""Supervised pretraining of the static networks T and S (paper Fig. 2, training step 1).

Cross-entropy on the labelled split (ignore = 255), Adam, poly learning-rate decay
lr_t = lr_0 (1 - t / T)^power, random horizontal flips. Same seed + same device = same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from bench import dist
from bench.config import PretrainConfig
from bench.data.labels import IGNORE_INDEX
from bench.data.loader import training_loader


@dataclass(frozen=True)
class TrainStats:
    seconds: float
    iterations: int
    final_loss: float


def poly_lr(base_lr: float, step: int, total: int, power: float) -> float:
    """Poly decay: base_lr * (1 - step / total) ** power."""
    return base_lr * (1.0 - step / total) ** power


def random_hflip(
    images: Tensor, labels: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Flip each (image, label) pair left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images, labels = images.clone(), labels.clone()
    images[flip] = images[flip].flip(-1)
    labels[flip] = labels[flip].flip(-1)
    return images, labels


def data_parallel(model: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train it (gradients
    averaged over the ranks in every backward pass), else ``model`` itself."""
    if dist.size() == 1:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # static graph: the same parameters take part in every step (ERFNet's encoder-only
    # classifier never does, which a plain DDP would take for an error)
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)


def pretrain(
    model: nn.Module,
    dataset: Dataset,
    config: PretrainConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    desc: str = "pretrain",
) -> TrainStats:
    """Train ``model`` in place with cross-entropy on ``dataset`` of (image uint8, label int64).

    Launched by ``torchrun``, every rank trains the same model with DistributedDataParallel on
    its share of each global batch (``config.batch_size``), with SyncBatchNorm when
    ``config.sync_bn``; the weights end equal on every rank. The model is left in eval mode on
    ``device`` (unwrapped: its state_dict has no ``module.`` prefix).
    """
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    loader, start_epoch = training_loader(
        dataset, config.batch_size, seed=seed, workers=config.workers, key="pretrain.batch_size"
    )
    trained = data_parallel(model, device, sync_bn=config.sync_bn)
    flips = torch.Generator().manual_seed(seed + 1 + dist.rank())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    step, loss_value, start = 0, float("nan"), time.perf_counter()
    with tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        for epoch in range(config.epochs):
            start_epoch(epoch)
            for images, labels in loader:
                images, labels = random_hflip(images, labels, flips)
                for group in optimizer.param_groups:
                    group["lr"] = poly_lr(config.lr, step, total, config.poly_power)
                logits = trained(images.to(device).float())
                loss = F.cross_entropy(logits, labels.to(device), ignore_index=IGNORE_INDEX)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_value = loss.item()
                bar.set_postfix(loss=f"{loss_value:.3f}")
                bar.update()
    model.eval()
    return TrainStats(time.perf_counter() - start, step, loss_value)
