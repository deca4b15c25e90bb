"""The Defense protocol: a batch of images in, label maps and one record per image out.

Constructor contract (what the evaluation runner and ``build_defense`` rely on)::

    DefenseClass(networks, **options)

``networks`` maps "T", "S", "A" to the run's networks (those it has; "A" may be missing), and
"AT" to the adversarially trained network when a defense of the run reads it (``needs``), each
in eval mode on the run's device, taking float gray values (N, 3, H, W) in [0, 255] and returning
logits (N, 19, H, W). A defense must not modify them (copy a network it wants to train). Options
are keyword arguments. The instance has a ``name`` (a short string used as the row key of the
result tables) and a ``predict`` method.

``DefenseBase`` is an optional convenience: subclass it and write ``_predict``; its ``predict``
checks the images first.

Optionally, ``attack_surface()`` returns an ``AttackSurface``: what an attacker who knows the
defense (white-box) differentiates through. Without it a defense is attacked by transfer and
joint attacks only and is marked "not adaptively evaluated".
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, final, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from bench.data.labels import NUM_CLASSES
from bench.data.tensors import check_images as _check_images
from bench.data.tensors import class_map
from bench.devices import module_device
from bench.errors import DefenseError

Networks = Mapping[str, nn.Module]
# One record per image: str keys, values numbers / strings / bools / None (table-ready).
Record = dict[str, Any]


def _record_value(value: object) -> bool:
    """What a record may hold: a real number (Python's or NumPy's), a string, a bool, None."""
    return value is None or isinstance(value, (str, bool, np.bool_, numbers.Real))


def check_records(records: object, count: int) -> None:
    """Raise ``DefenseError`` unless ``records`` is a list of ``count`` dicts with str keys and
    table-ready values (``_record_value``): anything else would reach records.csv as its repr."""
    if not isinstance(records, (list, tuple)):
        raise DefenseError(
            f"a defense must return its records as a list of dicts, got a {type(records).__name__}"
        )
    if len(records) != count:
        raise DefenseError(
            f"a defense must return one record per image: {count} images, {len(records)} records"
        )
    for record in records:
        if not isinstance(record, Mapping):
            raise DefenseError(f"a defense's record must be a dict, got a {type(record).__name__}")
        for key, value in record.items():
            if not isinstance(key, str):
                raise DefenseError(f"a defense's record has the key {key!r}; keys must be str")
            if not _record_value(value):
                raise DefenseError(
                    f"a defense's record holds {key!r}: {type(value).__name__}; records hold "
                    "numbers, strings, bools or None (convert it, e.g. float(x) or str(x))"
                )


@dataclass(frozen=True)
class Prediction:
    """What a defense returns for a batch.

    Built-in records carry ``chosen`` (the network whose map was output); the votes add
    ``d_ae``, ``d_ta``, ``d_sa``, ``suspect`` ("T", "S" or None) and ``flagged``.

    Shapes:
        labels: (N, H, W) int64 trainIds 0..18 (never 255), on the CPU.
        records: a list of N dicts, one per image.
    """

    labels: Tensor
    records: list[Record]

    def __post_init__(self) -> None:
        if not isinstance(self.labels, Tensor):
            raise DefenseError(
                f"a defense must return labels as a torch.Tensor, got a {type(self.labels).__name__}"
            )
        if self.labels.ndim != 3 or self.labels.dtype != torch.int64:
            raise DefenseError(
                f"a defense must return labels int64 (N, H, W), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )
        check_records(self.records, self.labels.shape[0])
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= NUM_CLASSES):
            raise DefenseError(
                f"a defense must return trainIds 0..{NUM_CLASSES - 1}, got values "
                f"{int(self.labels.min())}..{int(self.labels.max())} (255 is for labels only)"
            )


@dataclass(frozen=True)
class AttackSurface:
    """What a white-box attacker of a defense differentiates through.

    Args:
        name: short and unique per kind of surface, e.g. ``T``, ``jpeg(T)``, ``T+S+A:TA-vote``;
            it names the AE sets built on the surface.
        networks: the networks the defense runs, by role ({"T": T} or {"T": T, "S": S, "A": A}).
        transform: what the defense does to the images before its networks, as a function of
            float pixels whose forward is exact and whose backward is differentiable (BPDA:
            e.g. ``bpda(preprocessor)``), or None.
        decide: how the defense turns its networks' label maps ({role: (N, H, W)}) into its
            output (N, H, W); attacks that keep a best iterate judge success on it. None: the
            single network's own map (or each network's, when there are several).
        random: the defense is randomised; attacks average gradients over samples (EOT).
        settings: whatever else changes the defense's output (thresholds, options), for keys.
        after_batch: for a defense that learns from what it sees (the online vote): called with
            each finished adversarial batch (uint8), in order, so the next batch is attacked
            against the defense as it then is.
    """

    name: str
    networks: Mapping[str, nn.Module]
    transform: Callable[[Tensor], Tensor] | None = None
    decide: Callable[[dict[str, Tensor]], Tensor] | None = None
    random: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    after_batch: Callable[[Tensor], None] | None = None


def attack_surface(defense: object) -> AttackSurface | None:
    """The defense's surface, or None when it exposes none (then it is not adaptively evaluated)."""
    method = getattr(defense, "attack_surface", None)
    if method is None:
        return None
    surface = method()
    if not isinstance(surface, AttackSurface):
        raise DefenseError(
            f"defense {getattr(defense, 'name', defense)!r}: attack_surface() returned a "
            f"{type(surface).__name__}; it must return defenses.AttackSurface"
        )
    return surface


@runtime_checkable
class Defense(Protocol):
    """A defense: ``predict(images uint8 (N, 3, H, W)) -> Prediction``."""

    name: str

    def predict(self, images: Tensor) -> Prediction: ...


class DefenseBase(ABC):
    """An optional base for a defense: ``predict`` checks the images, then calls ``_predict``.

    The built-ins use it; a plug-in may too, or just define ``name`` and ``predict`` itself (the
    ``Defense`` protocol is all the runner relies on).
    """

    name: str

    @final
    def predict(self, images: Tensor) -> Prediction:
        """Shapes: images (N, 3, H, W) uint8 -> labels (N, H, W) int64."""
        check_images(images)
        return self._predict(images)

    @abstractmethod
    def _predict(self, images: Tensor) -> Prediction:
        """The defense proper, on images known to be uint8 (N, 3, H, W)."""


def require_networks(networks: Networks, needed: tuple[str, ...], defense: str) -> None:
    """Raise ``DefenseError`` when ``networks`` lacks one of ``needed``."""
    missing = [n for n in needed if n not in networks]
    if missing:
        hint = next(
            (f" (train {n} first: bench train --net {n})" for n in ("A", "AT") if n in missing), ""
        )
        raise DefenseError(
            f"defense {defense!r} needs networks {', '.join(needed)} but got "
            f"{', '.join(networks) or 'none'}{hint}"
        )


def check_images(images: Tensor) -> None:
    """Raise ``DefenseError`` unless ``images`` is uint8 (N, 3, H, W)."""
    _check_images(images, "defenses", DefenseError)


@torch.no_grad()
def predict_labels(model: nn.Module, images: Tensor) -> Tensor:
    """g(y) of the paper: the per-pixel argmax of a network, on the CPU.

    Shapes:
        images: (N, 3, H, W) uint8 or float gray values 0..255.
        returns: (N, H, W) int64 trainIds.
    """
    return class_map(model(images.to(module_device(model)).float())).cpu()
