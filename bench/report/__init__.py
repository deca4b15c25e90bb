"""The report of a run: paper tables, leaderboard, plots and ``report.md``, from stored records.

``write_report(run_dir)`` reads only the run directory (``config.toml``, ``metrics.csv``,
``detections.csv``, ``qualitative.npz``) and the paper's numbers; it never runs a network, so
``bench report`` regenerates everything in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import RunConfig, load_config
from bench.errors import BenchError
from bench.report import plots
from bench.report.tables import PAPER_DELTAS, detection_table, leaderboard, metric_table, variants
from bench.variants import adaptive_variants

PAPER_TABLES = Path(__file__).resolve().parents[2] / "results" / "paper" / "paper_tables.csv"
METRICS_FILE, RECORDS_FILE, QUALITATIVE_FILE = "metrics.csv", "records.csv", "qualitative.npz"
# The detection tables (4, 6) and histograms read the per-image records of the T/A vote.
DETECTION_DEFENSE = "TA-vote"
PAPER_EPS = (1.0, 10.0)


def _paper() -> pd.DataFrame | None:
    return pd.read_csv(PAPER_TABLES) if PAPER_TABLES.is_file() else None


def _write_table(frame: pd.DataFrame, directory: Path, name: str) -> str:
    """CSV, Markdown and LaTeX files of one table; returns the Markdown."""
    frame.to_csv(directory / f"{name}.csv")
    flat = frame.reset_index() if isinstance(frame.index, pd.MultiIndex) else frame.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(c) for c in col if c) for col in flat.columns]
    markdown = flat.to_markdown(floatfmt=".2f", index=not isinstance(frame.index, pd.MultiIndex))
    (directory / f"{name}.md").write_text(markdown + "\n")
    (directory / f"{name}.tex").write_text(flat.to_latex(float_format="%.2f", na_rep="-"))
    return markdown


def _paper_tables(config: RunConfig, metrics: pd.DataFrame, detections: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """The paper's tables that this run's config covers: {file name: (title, table)}."""
    paper = _paper()
    eps = [e for e in config.attack.eps if e in PAPER_EPS] or list(config.attack.eps)
    val, test = config.data.val_subset, config.data.test_subset
    a_names = adaptive_variants(config)
    tables: dict[str, tuple[str, pd.DataFrame]] = {}
    common = dict(eps_list=eps, paper=paper)
    tables["table1"] = (
        f"Table 1: mIoU (clean) and Q (AE sets) of T and S in %, {val}",
        metric_table(metrics, [("T", "T", {"model": "T"}), ("S", "S", {"model": "S"})],
                     subset=val, table=1, quantity="q", clean_as_miou=True, **common),
    )
    layer_rows = [(ls, a_names.name(ls.split(","), config.finetune.alpha), {"layers": ls, "alpha": 0.6})
                  for ls in config.sweep.layer_sets]
    if layer_rows:
        tables["table2"] = (
            f"Table 2: mIoU of A (%) by IFM' layer set, alpha {config.finetune.alpha:g}, {val}",
            metric_table(metrics, layer_rows, subset=val, table=2, **common),
        )
    alpha_rows = [(f"{layer} alpha={alpha:g}", a_names.name([layer], alpha), {"layers": layer, "alpha": alpha})
                  for layer in config.sweep.alpha_layers for alpha in config.sweep.alphas]
    if alpha_rows:
        table3 = metric_table(metrics, alpha_rows, subset=val, table=3, **common)
        for who in ("ours", "paper"):
            table3[("mean", who)] = table3.xs(who, axis=1, level=1).mean(axis=1)
        tables["table3"] = (f"Table 3: mIoU of A (%) by alpha, {val}", table3)
    tables["table4"] = (
        f"Table 4: images the T/A vote hands to T or S, by delta, {val}",
        detection_table(detections, subset=val, table=4, **common),
    )
    if config.sweep.baseline:
        tables["table5"] = (
            f"Table 5: mIoU of A (%), baseline of [6] (IFM on all layers) vs IFM' on "
            f"{'+'.join(config.finetune.layers)}, {test}",
            metric_table(metrics, [("[6] (all layers)", a_names.name(["all"], config.finetune.alpha), {"model": "A_all"}),
                                   ("ours", "A", {"model": "A_down2"})], subset=test, table=5, **common),
        )
    tables["table6"] = (
        f"Table 6: images the T/A vote hands to T or S, by delta, {test}",
        detection_table(detections, subset=test, table=6, **common),
    )
    rows7 = [(n, n, {"model": p}) for n, p in
             (("T", "T"), ("S", "S"), ("A", "A_down2"), ("TS-vote", "TS_vote"), ("TA-vote", "TA_vote"))]
    tables["table7"] = (
        f"Table 7: majority vote, mIoU (%), delta {config.detect.delta:g}, {test}",
        metric_table(metrics, rows7, subset=test, table=7, **common),
    )
    return tables


def findings(config: RunConfig, metrics: pd.DataFrame, detections: pd.DataFrame) -> list[str]:
    """The paper's qualitative findings, each checked on this run's numbers."""
    val, test = config.data.val_subset, config.data.test_subset
    top = max(config.attack.eps)

    def m(defense: str, source: str = "clean", eps: float = 0.0, subset: str = val, col: str = "miou") -> float:
        rows = metrics[(metrics.defense == defense) & (metrics.subset == subset)
                       & (metrics.source == source) & (metrics.eps == eps)]
        return float(rows[col].iloc[0]) if len(rows) else math.nan

    def verdict(ok: bool) -> str:
        return "holds" if ok else "does not hold"

    lines = []
    t, s = m("T"), m("S")
    lines.append(f"T beats S on clean data: {verdict(t > s)} (mIoU T {t:.1f}%, S {s:.1f}%, {val}).")
    for net, other in (("T", "S"), ("S", "T")):
        own, cross = m(net, net, top, col="q"), m(net, other, top, col="q")
        lines.append(
            f"{net} collapses on its own AEs and keeps most of its mIoU on {other}'s (eps {top:g}): "
            f"{verdict(own < 50 and cross > 50 and own < cross)} (Q own {own:.1f}%, Q cross {cross:.1f}%)."
        )
    a_s, s_s = m("A", "S", top), m("S", "S", top)
    lines.append(f"A is more robust than S to S-AEs (eps {top:g}): {verdict(a_s > s_s)} "
                 f"(mIoU A {a_s:.1f}%, S {s_s:.1f}%).")
    if config.sweep.baseline:
        base = adaptive_variants(config).name(["all"], config.finetune.alpha)
        ours = [m("A", v.source, v.eps, test) for v in variants(config.attack.eps)]
        theirs = [m(base, v.source, v.eps, test) for v in variants(config.attack.eps)]
        lines.append(f"A with IFM' on {'+'.join(config.finetune.layers)} beats the all-layer baseline "
                     f"of [6] (mean over clean and AE sets, {test}): {verdict(np.nanmean(ours) > np.nanmean(theirs))} "
                     f"({np.nanmean(ours):.1f}% vs {np.nanmean(theirs):.1f}%).")
    det = detections[detections.subset == test]
    if len(det):
        right = {"clean": "T", "T": "S", "S": "T"}
        correct = det.apply(lambda r: ("S" if r.d_ae > config.detect.delta else "T") == right[r.source], axis=1)
        lines.append(f"Detection at delta {config.detect.delta:g} picks the non-attacked network: "
                     f"{verdict(correct.mean() > 0.9)} ({100 * correct.mean():.1f}% of {len(det)} "
                     f"image-variants correct, {test}).")
    worst = min((m("TA-vote", v.source, v.eps, test) - max(m("T", v.source, v.eps, test), m("S", v.source, v.eps, test)))
                for v in variants(config.attack.eps)[1:])
    q_min = min(m("TA-vote", v.source, v.eps, test, col="q") for v in variants(config.attack.eps)[1:])
    lines.append(f"The T/A vote keeps mIoU under every attack (at least the better static network on "
                 f"each AE set): {verdict(worst >= -1.0)} (worst margin {worst:+.1f} points, lowest Q "
                 f"{q_min:.1f}%, {test}).")
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Regenerate ``tables/``, ``plots/`` and ``report.md`` of a finished (or partial) run."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise BenchError(f"no {METRICS_FILE} in {run_dir}; run the benchmark first (bench run)")
    config = load_config(run_dir / "config.toml")
    metrics = pd.read_csv(run_dir / METRICS_FILE)
    records_path = run_dir / RECORDS_FILE
    records = pd.read_csv(records_path) if records_path.is_file() else pd.DataFrame(
        columns=["defense", "subset", "source", "eps", "d_ae"])
    detections = records[records["defense"] == DETECTION_DEFENSE]
    tables_dir, plots_dir = run_dir / "tables", run_dir / "plots"
    tables_dir.mkdir(exist_ok=True)
    plots_dir.mkdir(exist_ok=True)

    parts = [f"# Benchmark report: {config.name}", "",
             f"Data: `{config.data.root}` at {config.data.size[0]}x{config.data.size[1]}; "
             f"teacher {config.teacher.arch} {config.teacher.options}, student {config.student.arch} "
             f"{config.student.options}; attack {config.attack.name}, eps {', '.join(f'{e:g}' for e in config.attack.eps)}. "
             "All numbers in %; the paper's (Cityscapes, 1024x2048) beside ours where it has one.", "",
             "## The paper's findings on this run", ""]
    parts += [f"- {line}" for line in findings(config, metrics, detections)]
    for name, (title, frame) in _paper_tables(config, metrics, detections).items():
        parts += ["", f"## {title}", "", _write_table(frame, tables_dir, name)]
    for subset in (config.data.val_subset, config.data.test_subset):
        board = leaderboard(metrics, subset=subset)
        if not board.empty:
            parts += ["", f"## Leaderboard, {subset} (mIoU %)", "", _write_table(board, tables_dir, f"leaderboard_{subset}")]
            plots.plot_miou_vs_eps(metrics, subset, plots_dir / f"miou_vs_eps_{subset}.png")
            parts += ["", f"![mIoU vs eps, {subset}](plots/miou_vs_eps_{subset}.png)"]
            deltas = [config.detect.delta_t, config.detect.delta_s] if config.detect.delta_t is not None else [config.detect.delta]
            plots.plot_d_ae_histograms(detections, subset, deltas, plots_dir / f"d_ae_{subset}.png")
            parts += ["", f"![d_AE histograms, {subset}](plots/d_ae_{subset}.png)"]
    qualitative = run_dir / QUALITATIVE_FILE
    if qualitative.is_file():
        with np.load(qualitative) as data:
            grid: dict[str, dict[str, np.ndarray]] = {}
            for key in data.files:
                variant, column = key.split("|")
                grid.setdefault(variant, {})[column] = data[key]
        plots.plot_qualitative(grid, plots_dir / "qualitative.png")
        parts += ["", "## Qualitative", "", "![qualitative grid](plots/qualitative.png)"]
    report = run_dir / "report.md"
    report.write_text("\n".join(parts) + "\n")
    return report


__all__ = ["PAPER_DELTAS", "write_report", "findings"]
