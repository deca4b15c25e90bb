"""The adaptive students of a run: the main A and the extra ones the ablation tables need."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from bench.config import FinetuneConfig, RunConfig
from bench.finetune import checkpoint_name


@dataclass(frozen=True)
class AdaptiveVariants:
    """The main A (``finetune`` of the config, reported as "A") and the sweep's extra ones."""

    main: FinetuneConfig
    extra: tuple[FinetuneConfig, ...]

    def config(self, layers: Sequence[str], alpha: float) -> FinetuneConfig:
        return dataclasses.replace(self.main, layers=tuple(layers), alpha=float(alpha))

    def name(self, layers: Sequence[str], alpha: float) -> str:
        """The defense row name of the A trained on ``layers`` with ``alpha``."""
        config = self.config(layers, alpha)
        return "A" if config == self.main else checkpoint_name(config)

    def all(self) -> list[tuple[str, FinetuneConfig]]:
        """(row name, settings) of every A to train, the main one first, no repeats."""
        named = [("A", self.main)] + [(checkpoint_name(c), c) for c in self.extra if c != self.main]
        return list(dict(named).items())


def adaptive_variants(config: RunConfig) -> AdaptiveVariants:
    base = AdaptiveVariants(config.finetune, ())
    extra = []
    if config.sweep.baseline:
        extra.append(base.config(["all"], config.finetune.alpha))
    extra += [base.config(s.split(","), config.finetune.alpha) for s in config.sweep.layer_sets]
    extra += [base.config([layer], a) for layer in config.sweep.alpha_layers for a in config.sweep.alphas]
    return AdaptiveVariants(config.finetune, tuple(extra))
