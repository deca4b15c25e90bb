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
unlabelled split; the online vote (``defenses.vote.Vote(online=True)``) runs it on each incoming
evaluation batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from bench.config import FinetuneConfig
from bench.errors import BenchError
from bench.train import make_loader
from defenses.losses import ts_loss

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": partial(torch.optim.SGD, momentum=0.9),
}

# Settings a checkpoint name spells out only when they differ from the paper's defaults.
_NAME_EXTRAS = (("p", "p"), ("beta", "b"), ("gamma", "g"), ("batch_size", "bs"), ("lr", "lr"))


class FinetuneError(BenchError, ValueError):
    """The finetuning settings or inputs are invalid."""


def validate_finetune_config(config: FinetuneConfig) -> None:
    """Raise ``FinetuneError`` naming the first bad setting and its valid range."""
    if not config.layers:
        raise FinetuneError("finetune.layers is empty; name at least one IFM layer, e.g. down2")
    if not 0 <= config.alpha < 1:
        raise FinetuneError(
            f"finetune.alpha must lie in [0, 1), got {config.alpha}: with alpha = 1 there is no "
            "J_CE, and J_IFM' has a zero gradient at the start (A = S), so A would never move"
        )
    for name in ("p", "beta", "gamma", "lr"):
        if not getattr(config, name) > 0:
            raise FinetuneError(f"finetune.{name} must be > 0, got {getattr(config, name)}")
    if config.epochs < 0 or config.batch_size < 1 or config.workers < 0:
        raise FinetuneError(
            f"finetune needs epochs >= 0, batch_size >= 1 and workers >= 0, got {config.epochs}, "
            f"{config.batch_size} and {config.workers}"
        )
    if config.optimizer not in OPTIMIZERS:
        raise FinetuneError(
            f"unknown optimizer {config.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"
        )


def checkpoint_name(config: FinetuneConfig) -> str:
    """The name of A's checkpoint from its settings, e.g. ``A_down2_a0.6_e10``.

    Layers, alpha and epochs always appear; p, beta, gamma, batch size, lr and the optimiser only
    when they differ from the defaults (``A_all_a0.6_e10_b0.25_sgd``), so different settings never
    share a file.
    """
    default = FinetuneConfig()
    parts = ["A", "+".join(config.layers), f"a{config.alpha:g}", f"e{config.epochs}"]
    parts += [
        f"{tag}{getattr(config, field):g}"
        for field, tag in _NAME_EXTRAS
        if getattr(config, field) != getattr(default, field)
    ]
    if config.optimizer != default.optimizer:
        parts.append(config.optimizer)
    return "_".join(parts)


class AdaptiveTrainer:
    """Takes J_TS' steps (eq. 8) on A, with T and S frozen; used offline and online.

    Args:
        teacher, student: the static networks T and S; put in eval mode, never updated.
        adaptive: A, trained in place (an ERFNet-like network with ``forward_taps``).
        config: alpha, the IFM' layer set (tap or group names), p, beta, gamma, lr, optimiser.
        device: where all three networks run.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        adaptive: nn.Module,
        config: FinetuneConfig,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        validate_finetune_config(config)
        if not hasattr(student, "forward_taps") or not hasattr(adaptive, "forward_taps"):
            raise FinetuneError(
                f"{type(student).__name__} has no named feature taps; the students must be "
                "networks from bench.models (e.g. erfnet)"
            )
        try:
            self.layers = student.expand_taps(config.layers)
        except ValueError as err:
            raise FinetuneError(str(err)) from None
        self.config = config
        self.device = torch.device(device)
        self.teacher = teacher.to(self.device).eval()
        self.student = student.to(self.device).eval()
        self.adaptive = adaptive.to(self.device).eval()
        self.optimizer = OPTIMIZERS[config.optimizer](adaptive.parameters(), lr=config.lr)

    def step(self, images: Tensor) -> dict[str, float]:
        """One optimiser step of A on a batch of images (A stays in eval mode).

        Shapes:
            images: (N, 3, H, W) uint8 (or float) gray values 0..255.
            returns: {"loss", "ce", "ifm"} of this batch as floats.
        """
        x = images.to(self.device).float()
        with torch.no_grad():
            logits_t = self.teacher(x)
            _, feats_s = self.student.forward_taps(x, self.layers)
        self.adaptive.eval()  # frozen BatchNorm statistics, no dropout: see the module docstring
        logits_a, feats_a = self.adaptive.forward_taps(x, self.layers)
        cfg = self.config
        loss = ts_loss(
            logits_t, logits_a, feats_a, feats_s,
            alpha=cfg.alpha, p=cfg.p, beta=cfg.beta, gamma=cfg.gamma,
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

    Shapes:
        unlabeled items: image (3, H, W) uint8 gray values 0..255.
        returns: A, a new network of S's architecture, in eval mode on ``device``; with
        ``epochs = 0`` it equals S exactly.
    """
    validate_finetune_config(config)
    if getattr(unlabeled, "with_labels", False):
        raise FinetuneError(
            "finetuning A reads no labels; open the unlabelled split with with_labels=False"
        )
    adaptive = copy.deepcopy(student)
    trainer = AdaptiveTrainer(teacher, student, adaptive, config, device=device)
    loader = make_loader(unlabeled, config.batch_size, seed=seed, workers=config.workers)
    with tqdm(
        total=config.epochs * len(loader), desc="finetune A", unit="batch",
        disable=not progress, leave=False,
    ) as bar:
        for _ in range(config.epochs):
            for batch in loader:
                images = batch[0] if isinstance(batch, (list, tuple)) else batch
                losses = trainer.step(images)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                bar.update()
    return adaptive
