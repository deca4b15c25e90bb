"""Plots of a run (matplotlib, PNG): mIoU vs eps, robust mIoU vs the attacks' iterations, d_AE
histograms, a qualitative grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.text import Text

from bench.data.labels import colorize
from bench.files import atomic_write
from bench.variants import CLEAN, MARK_NAMES, TRANSFER, WORST_CASE, WORST_CASE_AT_MARK, Variant


def _save(fig: plt.Figure, path: Path) -> None:
    """The figure as a PNG at ``path``, written atomically (a full disk is one line naming it)."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def plot_miou_vs_eps(metrics: pd.DataFrame, subset: str, attack: str | None, path: Path) -> bool:
    """mIoU (%) over eps (0 = clean) for every defense: one panel per transfer source of the
    paper's attack, and the worst case over every attack and threat model beside them; False
    (and no file) when there is no attacked row to plot."""
    rows = metrics[metrics["subset"] == subset]
    transfer = rows[(rows["threat"] == TRANSFER) & (rows["attack"] == attack)]
    panels = [
        (f"{s}-AEs ({attack}, transfer)", transfer[transfer["source"] == s])
        for s in dict.fromkeys(transfer["source"])
    ]
    worst = rows[rows["threat"] == WORST_CASE]
    if len(worst):
        panels.append(("worst case over all attacks", worst))
    if not panels:
        return False
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4), sharey=True, squeeze=False
    )
    clean = rows[rows["threat"] == CLEAN].set_index("defense")["miou"]
    for ax, (title, panel) in zip(axes[0], panels):
        for defense, group in panel.groupby("defense", sort=False):
            group = group.sort_values("eps")
            eps = np.concatenate([[0.0], group["eps"].to_numpy()])
            miou = np.concatenate([[clean.get(defense, np.nan)], group["miou"].to_numpy()])
            ax.plot(eps, miou, marker="o", label=defense)
        ax.set_title(f"{title}, {subset}", fontsize=9)
        ax.set_xlabel("eps (gray values)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mIoU (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_convergence(metrics: pd.DataFrame, subset: str, path: Path) -> bool:
    """Robust mIoU (%, the worst case over every attack and threat model) at the marks of the
    attacks' budgets (1/4, 1/2, all of their iterations) for every defense: one panel per eps;
    a line still falling at the right has not converged. False (and no file) without marks."""
    rows = metrics[(metrics["subset"] == subset) & (metrics["threat"] == WORST_CASE_AT_MARK)]
    if rows.empty:
        return False
    eps_list = sorted(set(rows["eps"]))
    fig, axes = plt.subplots(
        1, len(eps_list), figsize=(5 * len(eps_list), 4), sharey=True, squeeze=False
    )
    shares = [float(Fraction(mark)) for mark in MARK_NAMES]
    for ax, eps in zip(axes[0], eps_list):
        panel = rows[rows["eps"] == eps]
        for defense, group in panel.groupby("defense", sort=False):
            miou = group.set_index("attack")["miou"].reindex(MARK_NAMES)
            ax.plot(shares, miou.to_numpy(), marker="o", label=defense)
        iterations = panel.drop_duplicates("attack").set_index("attack")["source"]
        ax.set_xticks(shares)
        ax.set_xticklabels([f"{m}\n{iterations.get(m, '')}" for m in MARK_NAMES], fontsize=7)
        ax.set_title(f"eps={eps:g}, {subset}", fontsize=9)
        ax.set_xlabel("share of each attack's iterations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust mIoU (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_d_ae_histograms(
    detections: pd.DataFrame, subset: str, deltas: Sequence[float], path: Path
) -> bool:
    """Histograms of d_AE (eq. 4) per data variant, with the detection threshold(s) as lines;
    False (and no file) when there is nothing to plot."""
    rows = detections[detections["subset"] == subset]
    labels = [Variant(r.source, r.eps, r.threat, r.attack).label for r in rows.itertuples()]
    groups = list(rows.assign(variant=labels).groupby("variant", sort=False))
    if not groups:
        return False
    fig, axes = plt.subplots(
        1, len(groups), figsize=(3.2 * len(groups), 3), sharey=True, squeeze=False
    )
    bins = np.linspace(-1, 1, 41)
    for ax, (label, group) in zip(axes[0], groups):
        ax.hist(group["d_ae"], bins=bins, color="tab:blue")
        for delta in deltas:
            ax.axvline(delta, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("d_AE")
    axes[0][0].set_ylabel("images")
    fig.suptitle(f"d_AE = D(T,A) - D(S,A) on {subset}; dashed: delta", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
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
    _save(fig, path)


def pareto_front(clean: np.ndarray, robust: np.ndarray) -> np.ndarray:
    """Which points no other point beats on both axes (at least as high on both, higher on one).

    Shapes: clean, robust (P,) mIoU; returns (P,) bool.
    """
    at_least = (clean[None, :] >= clean[:, None]) & (robust[None, :] >= robust[:, None])
    better = (clean[None, :] > clean[:, None]) | (robust[None, :] > robust[:, None])
    return ~(at_least & better).any(1)


def plot_clean_vs_robust(
    board: pd.DataFrame, subset: str, path: Path, eps: Sequence[float]
) -> bool:
    """Clean against robust mIoU (%, the mean over ``eps`` of the worst case), one labelled
    point per defense of a ranked leaderboard (``bench.report.ranking``), the Pareto front of
    the trusted ones drawn as a step line and the ones ranked apart hollow; False (and no file)
    when no defense has both numbers."""
    rows = board.dropna(subset=["clean", "robust mIoU"])
    if rows.empty:
        return False
    trusted = rows[rows["trusted"].astype(bool)]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for _, row in rows.iterrows():
        style = {"color": "tab:blue"} if row["trusted"] else {"facecolors": "none"}
        ax.scatter(row["clean"], row["robust mIoU"], edgecolors="tab:blue", **style)
    if len(trusted):
        front = trusted[
            pareto_front(trusted["clean"].to_numpy(), trusted["robust mIoU"].to_numpy())
        ]
        front = front.sort_values("clean")
        ax.step(front["clean"], front["robust mIoU"], where="pre", color="tab:red", linewidth=1)
    ax.set_xlabel("clean mIoU (%)")
    shown_eps = ", ".join(f"{e:g}" for e in eps)
    ax.set_ylabel(f"robust mIoU (%): worst case, mean over eps {shown_eps}")
    ax.set_title(
        f"clean vs robust, {subset}\nred: Pareto front of the trusted defenses; hollow: ranked "
        "apart",
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    labels = [f"{d}" + (f" ({row['flags']})" if row["flags"] else "") for d, row in rows.iterrows()]
    _label_points(ax, rows[["clean", "robust mIoU"]].to_numpy(float), labels)
    _save(fig, path)
    return True


def _label_points(ax: plt.Axes, points: np.ndarray, labels: Sequence[str]) -> None:
    """Label each point (data coordinates, (N, 2)) beside it, towards the middle of the axes; a
    label that would cover one already placed moves down a line, with a leader line back to its
    point, so a cluster of defenses stays readable. Call after the layout is set."""
    renderer = ax.figure.canvas.get_renderer()
    line = 8.0  # points: one line of the 7-point labels
    at = ax.transData.transform(points)
    middle = ax.transAxes.transform((0.5, 0.5))[0]
    placed: list = []  # the window extents of the labels placed so far
    for i in np.argsort(-at[:, 1], kind="stable"):
        side = 1 if at[i, 0] < middle else -1
        drop = 0.0
        for _ in range(len(labels) + 1):  # each placed label can push it down once at most
            label = ax.annotate(
                labels[i],
                tuple(points[i]),
                fontsize=7,
                xytext=((12 if drop else 3) * side, 3 - drop),
                textcoords="offset points",
                ha="left" if side > 0 else "right",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"} if drop else None,
            )
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text alone, not its leader
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
            drop += line
        placed.append(box)
