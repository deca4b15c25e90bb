"""Plots of a run (matplotlib, PNG): mIoU vs eps, d_AE histograms, a qualitative grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.data.labels import colorize


def plot_miou_vs_eps(metrics: pd.DataFrame, subset: str, attack: str, path: Path) -> bool:
    """One panel per AE source: mIoU (%) over eps (0 = clean) for every defense; False (and no
    file) when there is no AE set to plot."""
    rows = metrics[metrics["subset"] == subset]
    sources = [s for s in ("T", "S") if s in set(rows["source"])]
    if not sources:
        return False
    fig, axes = plt.subplots(
        1, len(sources), figsize=(5.5 * len(sources), 4), sharey=True, squeeze=False
    )
    for ax, source in zip(axes[0], sources):
        for defense, group in rows.groupby("defense", sort=False):
            clean = group[group["source"] == "clean"]
            adv = group[group["source"] == source].sort_values("eps")
            eps = np.concatenate([[0.0], adv["eps"].to_numpy()])
            miou = np.concatenate([clean["miou"].to_numpy()[:1], adv["miou"].to_numpy()])
            if len(miou) == len(eps):
                ax.plot(eps, miou, marker="o", label=defense)
        ax.set_title(f"{source}-AEs ({attack}), {subset}")
        ax.set_xlabel("eps (gray values)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mIoU (%)")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_d_ae_histograms(
    detections: pd.DataFrame, subset: str, deltas: Sequence[float], path: Path
) -> bool:
    """Histograms of d_AE (eq. 4) per data variant, with the detection threshold(s) as lines;
    False (and no file) when there is nothing to plot."""
    rows = detections[detections["subset"] == subset]
    groups = list(rows.groupby(["source", "eps"], sort=False))
    if not groups:
        return False
    fig, axes = plt.subplots(
        1, len(groups), figsize=(3.2 * len(groups), 3), sharey=True, squeeze=False
    )
    bins = np.linspace(-1, 1, 41)
    for ax, ((source, eps), group) in zip(axes[0], groups):
        ax.hist(group["d_ae"], bins=bins, color="tab:blue")
        for delta in deltas:
            ax.axvline(delta, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title("clean" if source == "clean" else f"{source}-AE, eps={eps:g}", fontsize=9)
        ax.set_xlabel("d_AE")
    axes[0][0].set_ylabel("images")
    fig.suptitle(f"d_AE = D(T,A) - D(S,A) on {subset}; dashed: delta", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_qualitative(grid: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> None:
    """Rows = data variants; columns = image, ground truth, then each network's / vote's map.

    ``grid[variant]`` holds ``image`` (3, H, W) uint8 and label maps (H, W) under any names.
    """
    variants = list(grid)
    columns = list(grid[variants[0]])
    fig, axes = plt.subplots(
        len(variants),
        len(columns),
        figsize=(2.2 * len(columns), 1.3 * len(variants)),
        squeeze=False,
    )
    for r, variant in enumerate(variants):
        for c, column in enumerate(columns):
            value = grid[variant][column]
            ax = axes[r][c]
            ax.imshow(value.transpose(1, 2, 0) if value.ndim == 3 else colorize(value))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=9)
            if c == 0:
                ax.set_ylabel(variant, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
