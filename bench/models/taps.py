"""Named feature taps: ask a network for ``down2`` without knowing its module paths."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from torch import Tensor, nn

from bench.errors import ModelError


class TapMixin:
    """Adds named feature taps and the input-size check to an ``nn.Module``.

    A subclass sets ``TAPS`` (tap name -> module path), ``TAP_GROUPS`` (group name -> tap names)
    and ``SIZE_DIVISOR`` (H and W must be multiples of it). Every tap's output is recorded by a
    forward hook during one ordinary forward pass, so the logits and the features come from the
    same computation graph.
    """

    TAPS: ClassVar[dict[str, str]] = {}
    TAP_GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {}
    SIZE_DIVISOR: ClassVar[int] = 1

    @classmethod
    def check_size(cls, size: tuple[int, int]) -> None:
        """Raise ``ModelError`` unless H and W are multiples of ``SIZE_DIVISOR``, proposing the
        nearest valid size."""
        k = cls.SIZE_DIVISOR
        if size[0] % k or size[1] % k:
            nearest = "x".join(str(max(k, round(v / k) * k)) for v in size)
            raise ModelError(
                f"{cls.__name__} needs H and W divisible by {k}, got {size[0]}x{size[1]}; "
                f"use e.g. {nearest}"
            )

    @classmethod
    def named_taps(cls) -> list[str]:
        """The taps with a name of their own (not the blocks named by their module path)."""
        return [t for t in cls.TAPS if "." not in t]

    @classmethod
    def tap_names(cls) -> tuple[str, ...]:
        """The named taps, then the group names, for help texts."""
        return (*cls.named_taps(), *cls.TAP_GROUPS)

    @classmethod
    def expand_taps(cls, names: Iterable[str]) -> list[str]:
        """Expand group names (``all``, ``down``, ...) into tap names, keeping order, no repeats.

        Raises ``ModelError`` naming the valid choices for an unknown name.
        """
        expanded: list[str] = []
        for name in names:
            if name in cls.TAP_GROUPS:
                members = cls.TAP_GROUPS[name]
            elif name in cls.TAPS:
                members = (name,)
            else:
                blocks = [t for t in cls.TAPS if "." in t]
                also = f" (or one block by its module path, e.g. {blocks[0]})" if blocks else ""
                raise ModelError(
                    f"unknown layer {name!r} for {cls.__name__}; choose from "
                    f"{', '.join(cls.named_taps())}, or the groups {', '.join(cls.TAP_GROUPS)}"
                    f"{also}"
                )
            expanded.extend(m for m in members if m not in expanded)
        return expanded

    def forward_taps(self, x: Tensor, names: Iterable[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass that also returns the named features.

        Shapes:
            x: (N, 3, H, W) float, gray values 0..255.
            returns: logits (N, C, H, W) and {tap name: (N, C_l, H_l, W_l)}; group names are
            expanded (``rest`` yields one entry per block, keyed by its tap name).
        """
        assert isinstance(self, nn.Module)
        wanted = self.expand_taps(names)
        return hooked_forward(self, x, {tap: self.TAPS[tap] for tap in wanted})


def hooked_forward(
    model: nn.Module, x: Tensor, paths: dict[str, str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """One ordinary forward pass that records the outputs of the modules at ``paths`` (of the
    network itself when ``model`` wraps one, see ``unwrapped``)."""
    model = unwrapped(model)
    modules = dict(model.named_modules())
    feats: dict[str, Tensor] = {}
    handles = []
    for tap, path in paths.items():

        def hook(_module: nn.Module, _inputs: tuple, output: Tensor, tap: str = tap) -> None:
            feats[tap] = output

        handles.append(modules[path].register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, {tap: feats[tap] for tap in paths}


def expand_taps(model: nn.Module, names: Iterable[str]) -> list[str]:
    """The feature taps ``names`` stand for in ``model``: its named taps and groups when it has
    them (``TapMixin``), else module paths of a user's own architecture (``encoder.block3``).

    Raises ``ModelError`` naming the valid choices for an unknown name.
    """
    if hasattr(model, "expand_taps"):
        return model.expand_taps(names)
    paths = [path for path, _ in model.named_modules() if path]
    unknown = [n for n in names if n not in paths]
    if unknown:
        raise ModelError(
            f"unknown layer {unknown[0]!r} for {type(model).__name__}; name modules of your "
            f"architecture by their path, e.g. {', '.join(paths[:4])}"
        )
    return list(dict.fromkeys(names))


def unwrapped(model: nn.Module) -> nn.Module:
    """The network a forwarding wrapper stands for (one that names it ``wrapped_network``, such
    as the evaluation's shared-forward memo), else ``model``: tap paths name its modules, and
    hooks must see a real forward pass, never a memo's cached one."""
    while (inner := getattr(model, "wrapped_network", None)) is not None:
        model = inner
    return model


def tap_paths(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """{tap name: module path} of the taps ``names`` stand for (see ``expand_taps``)."""
    model = unwrapped(model)
    taps = getattr(model, "TAPS", None)
    return {tap: taps[tap] if taps else tap for tap in expand_taps(model, names)}


def forward_taps(
    model: nn.Module, x: Tensor, names: Iterable[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """``model.forward_taps`` for any network (see ``expand_taps``)."""
    return hooked_forward(model, x, tap_paths(model, names))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
