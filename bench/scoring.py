"""Runs networks and defenses over data variants and accumulates metrics and per-image records."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bench.data.labels import NUM_CLASSES
from bench.errors import BenchError, DefenseError
from bench.metrics import ConfusionMatrix, image_counts
from defenses.base import Defense, Prediction, Record, predict_labels

#: the per-image count columns of a record: intersections, unions, correct and valid pixels
COUNT_COLUMNS = (
    [f"i{c}" for c in range(NUM_CLASSES)]
    + [f"u{c}" for c in range(NUM_CLASSES)]
    + ["correct", "valid"]
)
#: the variant columns of a record (threat model, attack, source network or surface)
VARIANT_COLUMNS = ["threat", "attack", "source"]


def stacked_counts(records: pd.DataFrame) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-image counts of one defense's records on one subset and eps, stacked per data
    variant (in the records' order), images in the order of their index.

    Shapes:
        returns: inter, union (A, N, C) int64 per variant, image and class; correct (A, N)
        int64; valid (N,) int64 (the labelled pixels, the same on every variant).
    """
    by_variant = [g.sort_values("image") for _, g in records.groupby(VARIANT_COLUMNS, sort=False)]

    def stack(columns: list[str] | str) -> Tensor:
        return torch.tensor(np.stack([g[columns].to_numpy(np.int64) for g in by_variant]))

    return (
        stack(COUNT_COLUMNS[:NUM_CLASSES]),
        stack(COUNT_COLUMNS[NUM_CLASSES : 2 * NUM_CLASSES]),
        stack("correct"),
        torch.tensor(by_variant[0]["valid"].to_numpy(np.int64)),
    )


class ForwardMemo(nn.Module):
    """Lets several defenses share one forward pass of a network on the same batch.

    In eval mode without gradients, a call with an input equal to the previous one, while the
    weights are unchanged (parameter version counters, which every in-place optimiser update
    bumps), returns the previous logits. Anything else (training, gradients, new input, updated
    weights) runs the network. Attributes such as ``forward_taps`` reach the wrapped network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._last: tuple[Tensor, tuple[int, ...], Tensor] | None = None
        #: when set, logits are upsampled (bilinear) to this (H, W) after the network: scoring
        #: at the labels' own resolution, as the official evaluation does
        self.output_size: tuple[int, int] | None = None

    @property
    def wrapped_network(self) -> nn.Module:
        """The network itself (``bench.models.taps.unwrapped``)."""
        return self.net

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)

    def forward(self, x: Tensor) -> Tensor:
        if self.training or torch.is_grad_enabled():
            return self._resized(self.net(x))
        versions = tuple(p._version for p in self.net.parameters())
        if self._last is not None:
            last_x, last_versions, last_out = self._last
            if last_versions == versions and last_x.shape == x.shape and torch.equal(last_x, x):
                return self._resized(last_out)
        out = self.net(x)
        self._last = (x, versions, out)
        return self._resized(out)

    def _resized(self, logits: Tensor) -> Tensor:
        if self.output_size is None or tuple(logits.shape[-2:]) == tuple(self.output_size):
            return logits
        return F.interpolate(logits, size=self.output_size, mode="bilinear", align_corners=False)


@contextlib.contextmanager
def scored_at(networks: Mapping[str, nn.Module], size: tuple[int, int] | None) -> Iterator[None]:
    """Within the block, the ``ForwardMemo`` networks return logits upsampled to ``size`` (None:
    as they are), so every defense built on them outputs labels at that resolution."""
    memos = [net for net in networks.values() if isinstance(net, ForwardMemo)]
    for memo in memos:
        memo.output_size = size
    try:
        yield
    finally:
        for memo in memos:
            memo.output_size = None


def clean_confusion(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, progress: bool = True
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` (eval mode) over a labelled dataset, one pass."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix()
    loader = DataLoader(dataset, batch_size=batch_size)
    for images, labels in tqdm(
        loader, desc="evaluate", unit="batch", disable=not progress, leave=False
    ):
        cm.update(predict_labels(model, images), labels)
    model.train(was_training)
    return cm


def defense_label(name: str, plugin: str = "") -> str:
    """How messages name a defense row: ``'pixel-vote' (my_defense:PixelVote)`` for a plug-in
    (its spec), ``'TA-vote'`` for a built-in."""
    return f"{name!r} ({plugin})" if plugin else repr(name)


def checked_predict(defense: Defense, images: Tensor, who: str, plugin: bool) -> Prediction:
    """``defense.predict(images)``; a ``BenchError`` it raises (a bad ``Prediction``) names the
    defense (``who``: ``defense_label``), and so does any exception of a plug-in's (the user's
    code: one line, the exception its cause). A built-in's other exceptions are bugs and keep
    their tracebacks."""
    try:
        prediction = defense.predict(images)
    except BenchError as err:
        raise DefenseError(f"defense {who}: {err}") from err
    except Exception as err:
        if not plugin:
            raise
        raise DefenseError(
            f"defense {who}: predict failed with {type(err).__name__}: {err}; fix the plug-in "
            "(BENCH_DEBUG=1 shows where)"
        ) from err
    if not isinstance(prediction, Prediction):
        raise DefenseError(
            f"defense {who}: predict returned a {type(prediction).__name__}; it must "
            "return defenses.Prediction(labels, records)"
        )
    return prediction


def evaluate_defenses(
    defenses: Mapping[str, Callable[[], Defense]],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    progress: bool = True,
    desc: str = "evaluate",
    upsample: bool = False,
    plugins: Mapping[str, str] | None = None,
) -> dict[str, tuple[ConfusionMatrix, list[Record]]]:
    """Run every defense on every batch of one data variant.

    ``defenses`` maps a row name to a factory: each variant gets fresh instances, so a stateful
    defense (the online vote) starts from the run's networks on every data variant. Each image's
    record gets its counts (``bench.metrics.image_counts``: ``i<c>``, ``u<c>``, ``correct``,
    ``valid``), from which the worst case over attacks is computed. With ``upsample``, label
    maps smaller than the labels (a plug-in scoring at the data size while the run scores at full
    resolution) are upsampled (nearest). ``plugins`` maps the rows of users' defenses to their
    specs: messages about a row name it (and its spec), and an exception of a plug-in's
    ``predict`` becomes a one-line ``DefenseError``.

    Shapes:
        batches: (images uint8 (N, 3, H, W), labels int64 (N, H, W) trainIds, 255 = ignore).
        returns: {row name: (confusion matrix over the variant, one record per image)}.
    """
    plugins = plugins or {}
    who = {n: defense_label(n, plugins.get(n, "")) for n in defenses}
    instances = {name: make() for name, make in defenses.items()}
    results = {name: (ConfusionMatrix(), []) for name in instances}
    for images, labels in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        for name, defense in instances.items():
            prediction = checked_predict(defense, images, who[name], name in plugins)
            if (
                prediction.labels.shape[0] == labels.shape[0]
                and upsample
                and (prediction.labels.shape[1:] != labels.shape[1:])
            ):  # a plug-in that does not use the run's networks: nearest, as a label map allows
                resized = F.interpolate(prediction.labels[:, None].float(), size=labels.shape[1:])
                prediction = Prediction(resized[:, 0].long(), prediction.records)
            if prediction.labels.shape != labels.shape:
                raise DefenseError(
                    f"defense {who[name]} returned labels {tuple(prediction.labels.shape)} for "
                    f"images {tuple(images.shape)}; expected {tuple(labels.shape)}"
                )
            confusion, records = results[name]
            confusion.update(prediction.labels, labels)
            counts = image_counts(prediction.labels, labels).tolist()
            records.extend(
                {**r, **dict(zip(COUNT_COLUMNS, c))} for r, c in zip(prediction.records, counts)
            )
    return results
