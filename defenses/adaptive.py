"""Finetuning of the adaptive student A (paper Fig. 2, test step 1; Sections 3.2 and 3.5).

A starts as an exact copy of the static student S. The static teacher T and S stay frozen (eval
mode, forward passes under ``torch.no_grad``, never handed to the optimiser). A learns from
images only, with J_TS' = (1 - alpha) J_CE(T, A) + alpha J_IFM'(A, S) (eq. 8); no label is ever
read. ``layers = ("all",)`` gives the baseline of [6] (eqs. 2 and 3).

BatchNorm and dropout: A trains in eval mode. Its BatchNorm running statistics stay frozen at
S's (their affine weights train, like every other parameter) and dropout is off. Reasons: (1) A's
forward pass then equals S's at every tap until the weights move, so J_IFM' measures only what
training changed: not the gap between batch and running statistics, and not dropout noise (ERFNet
drops out inside the blocks of ``rest``; with noise in A and none in S, J_IFM' could be lowered by
louder noise instead of different features); (2) in the online mode the batches are whatever
arrives (small, possibly adversarial): batch statistics would make one image's features depend on
the rest of its batch and let a perturbed batch shift A's normalisation without any gradient
step; (3) offline and online finetuning behave alike.

Because A starts equal to S, J_IFM' starts at its maximum 1 / beta^gamma with a zero gradient
(|.| has subgradient 0 at 0): J_CE makes the first move, so alpha must stay below 1.

``AdaptiveTrainer`` is one J_TS' step; ``finetune_adaptive`` runs it for epochs over the
unlabelled split (the networks stage); the online vote (``defenses.vote.Vote(online=True)``) runs
it on each incoming evaluation batch. Both import it from here, downwards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from bench import dist
from bench.config import FinetuneConfig, validate_finetune
from bench.data.loader import training_loader
from bench.errors import ConfigError
from bench.models.taps import hooked_forward, tap_paths, unwrapped
from bench.train import data_parallel
from defenses.losses import ts_loss

# One constructor per optimiser name the config accepts (``bench.config.OPTIMIZERS``).
OPTIMIZER_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": partial(torch.optim.SGD, momentum=0.9),
}


class AdaptiveTrainer:
    """Takes J_TS' steps (eq. 8) on A, with T and S frozen; used offline and online.

    Args:
        teacher, student: the static networks T and S; put in eval mode, never updated.
        adaptive: A, trained in place (a copy of S; its IFM' layers are named taps, or module
            paths of a user's own architecture).
        config: alpha, the IFM' layer set (tap or group names), p, beta, gamma, lr, optimiser.
        device: where all three networks run.
        parallel: A wrapped for training on several processes (``bench.train.data_parallel``:
            DistributedDataParallel, gradients averaged over the ranks), or None (one process).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        adaptive: nn.Module,
        config: FinetuneConfig,
        *,
        device: str | torch.device = "cpu",
        parallel: nn.Module | None = None,
    ) -> None:
        validate_finetune(config)
        self.paths = tap_paths(student, config.layers)
        self.config = config
        self.device = torch.device(device)
        self.teacher = teacher.to(self.device).eval()
        self.student = student.to(self.device).eval()
        self.adaptive = adaptive.to(self.device).eval()
        self.optimizer = OPTIMIZER_CLASSES[config.optimizer](adaptive.parameters(), lr=config.lr)
        # A's forward runs through its DDP wrapper (so backward averages the gradients); the
        # taps are the same modules, one "module." deeper
        self.trained = parallel if parallel is not None else self.adaptive
        prefix = "module." if parallel is not None else ""
        self.trained_paths = {tap: prefix + path for tap, path in self.paths.items()}

    def step(self, images: Tensor) -> dict[str, float]:
        """One optimiser step of A on a batch of images (A stays in eval mode).

        Shapes:
            images: (N, 3, H, W) uint8 (or float) gray values 0..255.
            returns: {"loss", "ce", "ifm"} of this batch as floats.
        """
        x = images.to(self.device).float()
        with torch.no_grad():
            # the networks themselves: the evaluation's wrappers may upsample their output
            logits_t = unwrapped(self.teacher)(x)
            _, feats_s = hooked_forward(self.student, x, self.paths)
        self.adaptive.eval()  # frozen BatchNorm statistics, no dropout: see the module docstring
        cfg = self.config
        with torch.enable_grad():  # the online vote also learns when called under no_grad
            logits_a, feats_a = hooked_forward(self.trained, x, self.trained_paths)
            loss = ts_loss(
                logits_t,
                logits_a,
                feats_a,
                feats_s,
                alpha=cfg.alpha,
                p=cfg.p,
                beta=cfg.beta,
                gamma=cfg.gamma,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.optimizer.step()
        return {"loss": loss.total.item(), "ce": loss.ce.item(), "ifm": loss.ifm.item()}


def finetune_adaptive(
    teacher: nn.Module,
    student: nn.Module,
    unlabeled: Dataset,
    config: FinetuneConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    distributed: bool = False,
) -> nn.Module:
    """Build A as a copy of S and finetune it with J_TS' (eq. 8) for ``config.epochs`` epochs.

    Args:
        teacher, student: the pretrained static networks T and S (left unchanged, eval mode).
        unlabeled: items are images or (image, anything) tuples; only the images are used. A
            ``CityscapesSegmentation`` must be opened with ``with_labels=False``.
        config: layers (tap names or the groups down, up, rest, all), alpha, p, beta, gamma,
            epochs, batch size, lr, optimiser, loader workers; the paper's defaults are the
            dataclass defaults.
        seed: fixes the batch order; same seed + same device = same A.
        distributed: True when every rank of a torchrun launch calls this for the same A: they
            train it together with DistributedDataParallel, each on its share of each global
            batch. False (the default) trains it in this process alone, on the whole batch,
            exactly as in a single process (other ranks may train other students meanwhile).

    Shapes:
        unlabeled items: image (3, H, W) uint8 gray values 0..255.
        returns: A, a new network of S's architecture, in eval mode on ``device``; with
        ``epochs = 0`` it equals S exactly.
    """
    validate_finetune(config)
    if getattr(unlabeled, "with_labels", False):
        raise ConfigError(
            "finetuning A reads no labels; open the unlabelled split with with_labels=False"
        )
    adaptive = copy.deepcopy(student).to(device)
    together = distributed and dist.size() > 1
    parallel = data_parallel(adaptive, torch.device(device)) if together else None
    trainer = AdaptiveTrainer(teacher, student, adaptive, config, device=device, parallel=parallel)
    loader, start_epoch = training_loader(
        unlabeled,
        config.batch_size,
        seed=seed,
        workers=config.workers,
        key="finetune.batch_size",
        distributed=together,
    )
    with tqdm(
        total=config.epochs * len(loader),
        desc="finetune A",
        unit="batch",
        disable=not progress,
        leave=False,
    ) as bar:
        for epoch in range(config.epochs):
            start_epoch(epoch)
            for batch in loader:
                images = batch[0] if isinstance(batch, (list, tuple)) else batch
                losses = trainer.step(images)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                bar.update()
    return adaptive
