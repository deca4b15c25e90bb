"""Networks users bring: weights files (``state_dict``) loaded into an architecture, checked.

Real checkpoints need small key mappings, applied here once:

- ``module.`` prefixes (``DataParallel``) are dropped, and a checkpoint saved as
  ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped;
- a 20-class checkpoint (the official ERFNet's 19 classes + void) loses its void channel: a tensor
  that differs from the model's only by one more class in a dimension is cut to the model's;
- a torchvision-layout ResNet (``conv1``, ``bn1``, ``layerN.M.downsample``) seeds DeepLabv3+'s
  backbone (``stem.0``, ``stem.1``, ``layerN.M.shortcut``) before T's pretraining.

Files are read with ``torch.load(..., weights_only=True)``: a weights file never runs code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.devices import module_device
from bench.errors import ModelError


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (unwrapped from ``{"state_dict": ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no weights file {path}; give the path of a state_dict (.pt / .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot read weights {path} ({str(err).splitlines()[0]})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a state_dict (a mapping of names to tensors)")
    return dict(state)


def fit_classes(
    model: nn.Module, state: Mapping[str, Tensor], num_classes: int = 19
) -> dict[str, Tensor]:
    """``state`` with the void class cut from every tensor that has one class more than the
    model's in one dimension (20-class checkpoints of 19-class networks)."""
    expected = model.state_dict()
    fitted = {}
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and value.shape != target.shape and value.ndim == target.ndim:
            extra = [d for d in range(value.ndim) if value.shape[d] != target.shape[d]]
            if (
                len(extra) == 1
                and value.shape[extra[0]] == num_classes + 1 == target.shape[extra[0]] + 1
            ):
                value = value.narrow(extra[0], 0, num_classes)
        fitted[key] = value
    return fitted


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model`` exactly (``module.`` prefixes dropped, a void class cut);
    one line listing a few missing, unexpected or misshapen keys otherwise."""
    state = fit_classes(model, {k.removeprefix("module."): v for k, v in state.items()})
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        parts = [
            f"missing {_examples(missing)}" if missing else "",
            f"unexpected {_examples(unexpected)}" if unexpected else "",
            f"other shapes: {_examples(misshapen)}" if misshapen else "",
        ]
        raise ModelError(
            f"{source} does not fit {type(model).__name__}: "
            + "; ".join(p for p in parts if p)
            + " (is it the architecture and options the preset names?)"
        )
    model.load_state_dict(state)


def check_output(
    model: nn.Module, size: tuple[int, int], source: str, num_classes: int = 19
) -> None:
    """A network must map (1, 3, H, W) gray values to (1, 19, H, W) logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.full((1, 3, *size), 128.0, device=module_device(model)))
    except Exception as err:
        raise ModelError(f"{source} fails on a (1, 3, {size[0]}, {size[1]}) input: {err}") from err
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 4:
        raise ModelError(
            f"{source} must return logits (N, 19, H, W), returned {type(out).__name__}"
        )
    if out.shape[1] != num_classes:
        raise ModelError(
            f"{source} returns {out.shape[1]} classes; the benchmark scores the 19 Cityscapes "
            "trainId classes (drop the void class, map others to trainIds)"
        )
    if tuple(out.shape[-2:]) != tuple(size):
        raise ModelError(
            f"{source} returns logits of {out.shape[2]}x{out.shape[3]} for a {size[0]}x{size[1]} "
            "input; upsample them to the input size inside the network"
        )


_TORCHVISION = [
    (re.compile(r"^conv1\."), "stem.0."),
    (re.compile(r"^bn1\."), "stem.1."),
    (re.compile(r"\.downsample\."), ".shortcut."),
]


def seed_backbone(model: nn.Module, path: str | Path) -> int:
    """Load a torchvision-layout ResNet into ``model.backbone`` (its ``fc`` is dropped); the
    number of tensors loaded."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ModelError(
            f"{type(model).__name__} has no backbone to seed; use a DeepLabv3+ teacher"
        )
    state = {}
    for key, value in read_state_dict(path).items():
        if key.startswith("fc."):
            continue
        for pattern, replacement in _TORCHVISION:
            key = pattern.sub(replacement, key)
        state[key] = value
    load_weights(backbone, state, f"backbone {path}")
    return len(state)
