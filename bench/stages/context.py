"""The run context: what a run's stages share, built once by the composition root
(``bench.stages.run``) and handed to every stage.

A stage reads its own section of ``config`` and takes its datasets, networks and defenses from
the context instead of rebuilding them, so no two stages can disagree about what the run holds.
The root fills ``networks`` after the networks stage and ``defenses`` after it built them; the
shapes of both are defined here, the stages that build them fill them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.config import DataConfig, RunConfig
from bench.data.cityscapes import CityscapesSegmentation
from bench.data.labels import IGNORE_INDEX, NUM_CLASSES
from bench.store.rundir import RunDir
from defenses import AttackSurface, Defense


class Datasets:
    """The run's splits and subsets at the run's image size, each indexed once, on first use
    (after the data stage has made the tree).

    ``split(name)`` yields images and labels at ``data.size``; ``scoring(name)`` is a subset as
    the evaluation scores it (labels at their own resolution with ``full_resolution``).
    """

    def __init__(self, data: DataConfig, *, full_resolution: bool = False) -> None:
        self.settings = data
        self.full_resolution = full_resolution
        self._built: dict[tuple[str, str], CityscapesSegmentation] = {}
        self._class_pixels: list[int] | None = None

    def _get(self, kind: str, name: str, **options: bool) -> CityscapesSegmentation:
        if (kind, name) not in self._built:
            self._built[kind, name] = CityscapesSegmentation(
                self.settings.root, name, size=tuple(self.settings.size), **options
            )
        return self._built[kind, name]

    def split(self, name: str) -> CityscapesSegmentation:
        """A labelled split or subset."""
        return self._get("labelled", name)

    def unlabeled(self) -> CityscapesSegmentation:
        """The unlabelled finetuning split (no label is read)."""
        return self._get("unlabeled", self.settings.unlabeled_split, with_labels=False)

    def scoring(self, name: str) -> CityscapesSegmentation:
        """A subset as the evaluation scores it: images at the run's size, labels at their own
        resolution when ``evaluate.full_resolution`` (else at the run's size too)."""
        if not self.full_resolution:
            return self.split(name)
        return self._get("scoring", name, full_labels=True)

    def class_pixel_counts(self) -> list[int]:
        """Pixels per class (trainIds 0..18) in the labelled training split at the run's size:
        N_y of the balanced loss."""
        if self._class_pixels is None:
            counts = torch.zeros(NUM_CLASSES, dtype=torch.int64)
            for _, labels in DataLoader(self.split(self.settings.train_split), batch_size=32):
                valid = labels[labels != IGNORE_INDEX]
                counts += torch.bincount(valid, minlength=NUM_CLASSES)
            self._class_pixels = counts.tolist()
        return self._class_pixels


@dataclass(frozen=True)
class RunNetworks:
    """The run's T, S and main A by role, their checkpoints' names and sha256.

    ``memos`` wrap each network in ``bench.scoring.ForwardMemo`` so defenses share forward
    passes; ``plain`` are the same modules unwrapped (what attacks differentiate through).
    """

    memos: dict[str, nn.Module]
    sha256: dict[str, str]
    checkpoints: dict[str, str]

    @property
    def plain(self) -> dict[str, nn.Module]:
        return {role: memo.wrapped_network for role, memo in self.memos.items()}


@dataclass(frozen=True)
class DefenseEntry:
    """A row of the run's results: how to build a fresh instance of its defense, what its
    results depend on, and (when it exposes one) its attack surface and that surface's key."""

    make: Callable[[], Defense]
    fingerprint: str
    surface: AttackSurface | None
    surface_key: str
    #: one of the sweeps' extra adaptive students (evaluated on the transfer sets only)
    sweep: bool = False
    #: the spec of a user's defense (its errors name it), "" for the built-ins and the sweeps
    plugin: str = ""

    @property
    def learns(self) -> bool:
        """The defense learns from what it sees (the online vote): one ordered stream only."""
        return self.surface is not None and self.surface.after_batch is not None


@dataclass(frozen=True)
class RunDefenses:
    """Every defense row of the run (``bench.stages.defense_rows`` builds them), the calibrated
    tau of the disagreement vote, and the sweeps' extra students by row name (ForwardMemo)."""

    entries: dict[str, DefenseEntry]
    tau: float
    students: dict[str, nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What the stages of one command share (see the module's docstring).

    ``progress``: this process shows progress bars (rank 0 of a torchrun launch only).
    """

    config: RunConfig
    run: RunDir
    device: torch.device
    data: Datasets
    progress: bool = True
    networks: RunNetworks | None = None
    defenses: RunDefenses | None = None

    @classmethod
    def open(
        cls, config: RunConfig, run: RunDir, device: torch.device, *, progress: bool = True
    ) -> RunContext:
        data = Datasets(config.data, full_resolution=config.evaluate.full_resolution)
        return cls(config, run, device, data, progress)

    def with_networks(self, networks: RunNetworks) -> RunContext:
        return dataclasses.replace(self, networks=networks)

    def with_defenses(self, defenses: RunDefenses) -> RunContext:
        return dataclasses.replace(self, defenses=defenses)

    def require_networks(self) -> RunNetworks:
        """The networks the root loaded after the networks stage (a stage that needs them runs
        after it: a missing value is a bug of the composition, not the user's)."""
        if self.networks is None:
            raise RuntimeError("the run context has no networks yet: run the networks stage first")
        return self.networks

    def require_defenses(self) -> RunDefenses:
        """The defense rows the root built after the networks (see ``require_networks``)."""
        if self.defenses is None:
            raise RuntimeError("the run context has no defenses yet: build the defense rows first")
        return self.defenses
