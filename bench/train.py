"""Supervised training on the labelled split: the pretraining of the static networks T and S
(paper Fig. 2, training step 1) and the adversarial training of AT (Madry et al. 2018).

Cross-entropy on the labelled split (ignore = 255), Adam, poly learning-rate decay
lr_t = lr_0 (1 - t / T)^power, random horizontal flips. Adversarial training feeds the same loop
PGD examples instead of (or beside) the clean images. Same seed + same device = same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from attacks.base import cross_entropy_sum, eval_mode, input_gradient, project
from bench import dist
from bench.config import AdversarialConfig, PretrainConfig
from bench.data.labels import IGNORE_INDEX
from bench.data.loader import training_loader

#: the loss of one batch: (network being trained, images float (N, 3, H, W) 0..255, labels
#: (N, H, W) int64 with 255 ignored) -> scalar
BatchLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]


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

    def clean_loss(trained: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(trained(images), labels, ignore_index=IGNORE_INDEX)

    return _train(
        model,
        dataset,
        config,
        clean_loss,
        device=device,
        seed=seed,
        progress=progress,
        desc=desc,
        sync_bn=config.sync_bn,
        key="pretrain.batch_size",
    )


def pgd_examples(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    step: float,
    generator: torch.Generator,
) -> Tensor:
    """Training examples of PGD (Madry et al. 2018): a uniform random start in the L_inf ball,
    then ``steps`` steps of ``step`` along the sign of the input gradient of the summed
    cross-entropy, each projected back into the ball and into 0..255. The network is attacked
    as deployed (eval mode, its modes restored after), as PIR-AT attacks it.

    Shapes:
        images: (N, 3, H, W) float gray values 0..255 on the model's device.
        labels: (N, H, W) int64 trainIds, 255 = ignore.
        returns: (N, 3, H, W) float gray values 0..255, detached, within ``eps`` of ``images``.
    """
    noise = torch.rand(images.shape, generator=generator).to(images)
    adv = torch.clamp(images + eps * (2 * noise - 1), 0, 255)
    with eval_mode(model):
        for _ in range(steps):
            grad, _ = input_gradient(model, adv, labels, loss=cross_entropy_sum)
            adv = project(adv + step * grad.sign(), images, eps)
    return adv.detach()


def adversarial_train(
    model: nn.Module,
    dataset: Dataset,
    config: AdversarialConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    desc: str = "adversarial training",
) -> TrainStats:
    """Train ``model`` in place on PGD examples of ``dataset`` (image uint8, label int64), from
    the weights it has (PIR-AT starts from the clean network).

    Each batch: the examples of ``pgd_examples`` (``config.steps`` steps of ``config.pgd_step``
    inside ``config.eps``) against the network as it is at that step, then one optimiser step
    on (1 - w) CE(f(x_adv), y) + w CE(f(x), y), w = ``config.clean_weight`` (one forward pass
    over both halves, so BatchNorm sees them together). Under ``torchrun`` as ``pretrain``:
    DistributedDataParallel, each rank attacking its own share of the batch. Cost per batch:
    ``steps`` forward + backward passes for the examples, one (or two halves') for the step.
    """
    # past every rank's flip generator (seed + 1 + rank): no two streams coincide
    noise = torch.Generator().manual_seed(seed + 1 + dist.size() + dist.rank())
    w = config.clean_weight

    def adversarial_loss(trained: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        if w == 1:
            return F.cross_entropy(trained(images), labels, ignore_index=IGNORE_INDEX)
        adv = pgd_examples(
            model,
            images,
            labels,
            eps=config.eps,
            steps=config.steps,
            step=config.pgd_step,
            generator=noise,
        )
        if w == 0:
            return F.cross_entropy(trained(adv), labels, ignore_index=IGNORE_INDEX)
        logits_adv, logits_clean = trained(torch.cat([adv, images])).chunk(2)
        return (1 - w) * F.cross_entropy(logits_adv, labels, ignore_index=IGNORE_INDEX) + (
            w * F.cross_entropy(logits_clean, labels, ignore_index=IGNORE_INDEX)
        )

    return _train(
        model,
        dataset,
        config,
        adversarial_loss,
        device=device,
        seed=seed,
        progress=progress,
        desc=desc,
        key="adversarial.batch_size",
    )


def _train(
    model: nn.Module,
    dataset: Dataset,
    config: PretrainConfig | AdversarialConfig,
    batch_loss: BatchLoss,
    *,
    device: str | torch.device,
    seed: int,
    progress: bool,
    desc: str,
    key: str,
    sync_bn: bool = False,
) -> TrainStats:
    """The supervised loop of ``pretrain`` and ``adversarial_train``: Adam with poly decay over
    ``config.epochs`` epochs of flipped batches, ``batch_loss`` per batch."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    loader, start_epoch = training_loader(
        dataset, config.batch_size, seed=seed, workers=config.workers, key=key
    )
    trained = data_parallel(model, device, sync_bn=sync_bn)
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
                loss = batch_loss(trained, images.to(device).float(), labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_value = loss.item()
                bar.set_postfix(loss=f"{loss_value:.3f}")
                bar.update()
    model.eval()
    return TrainStats(time.perf_counter() - start, step, loss_value)
