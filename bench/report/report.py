"""The report of a run: the paper's tables, a leaderboard, plots and ``report.md``.

``write_report(folder)`` reads only ``config.toml``, ``metrics.csv``, ``records.csv``,
``checks.csv`` and ``qualitative.npz`` in ``folder`` and the paper's numbers shipped with the
package; it never runs a network, so ``bench report`` regenerates everything in seconds. It
shows the rows of the config's subsets and attacks, whatever else the tables hold.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from bench.config import (
    ROBUST_NET,
    STATIC_NETS,
    AdaptiveStudents,
    RunConfig,
    adaptive_students,
    read_run_config,
)
from bench.errors import RunDirError, StoreError
from bench.files import atomic_write_text, write_error
from bench.report.findings import THRESHOLDS, adaptive_findings, findings
from bench.report.plots import (
    plot_clean_vs_robust,
    plot_convergence,
    plot_d_ae_histograms,
    plot_miou_vs_eps,
    plot_qualitative,
)
from bench.report.ranking import (
    Ranking,
    control_findings,
    ranked_leaderboard,
    ranking_sentence,
)
from bench.report.tables import (
    budget_fall,
    convergence_checks,
    detection_table,
    headline_eps,
    metric_table,
    paper_numbers,
    still_falling,
)
from bench.store.rundir import (
    CHECKS_FILE,
    METRICS_FILE,
    QUALITATIVE_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    read_arrays,
    read_table,
)
from bench.variants import (
    CLEAN,
    CONVERGED_POINTS,
    MARK_NAMES,
    WORST_CASE,
    WORST_CASE_AT_MARK,
    variants,
)
from defenses import BUILTIN_NEEDS, is_plugin

# The detection tables (4, 6) and histograms read the per-image records of the T/A vote.
DETECTION_DEFENSE = "TA-vote"
PAPER_EPS = (1.0, 10.0)


def _write_table(
    frame: pd.DataFrame, directory: Path, name: str, shown: pd.DataFrame | None = None
) -> str:
    """CSV, Markdown and LaTeX files of one table (Markdown and LaTeX of ``shown`` when given:
    the same table formatted for reading); returns the Markdown."""
    atomic_write_text(directory / f"{name}.csv", frame.to_csv())
    frame = frame if shown is None else shown
    flat = frame.reset_index() if isinstance(frame.index, pd.MultiIndex) else frame.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(c) for c in col if c) for col in flat.columns]
    markdown = flat.to_markdown(floatfmt=".2f", index=not isinstance(frame.index, pd.MultiIndex))
    atomic_write_text(directory / f"{name}.md", markdown + "\n")
    atomic_write_text(directory / f"{name}.tex", flat.to_latex(float_format="%.2f", na_rep="-"))
    return markdown


OMITTED = (
    "Omitted: this run has no rows for it (its defenses, attacks or eps are not in the config; "
    "the paper's column alone would be all the table showed)."
)


def has_data(frame: pd.DataFrame) -> bool:
    """Whether a paper table holds a number of this run (its "ours" columns, when it has the
    paper's beside them) on an AE set, not only NaN / <NA>: the paper's tables are about
    attacks, and clean numbers alone are the leaderboard's."""
    columns = frame.columns
    if isinstance(columns, pd.MultiIndex) and "ours" in columns.get_level_values(-1):
        frame = frame.xs("ours", axis=1, level=-1)
    attacked = frame.drop(columns=[CLEAN], errors="ignore")
    return bool((attacked if len(attacked.columns) else frame).notna().to_numpy().any())


def _paper_tables(
    config: RunConfig, metrics: pd.DataFrame, detections: pd.DataFrame
) -> dict[str, tuple[str, pd.DataFrame]]:
    """The paper's tables that this run's config covers: {file name: (title, table)}."""
    paper = paper_numbers()
    eps = [e for e in config.attack.eps if e in PAPER_EPS] or list(config.attack.eps)
    paper_attack = config.attack.paper_attack or ""
    common = {"columns": variants(eps, config.attack.sources, paper_attack), "paper": paper}
    val, test = config.data.val_subset, config.data.test_subset
    students = adaptive_students(config)
    alpha, main_layers = config.finetune.alpha, "+".join(config.finetune.layers)
    tables: dict[str, tuple[str, pd.DataFrame]] = {}
    tables["table1"] = (
        f"Table 1: mIoU (clean) and Q (AE sets) of T and S in %, {val}",
        metric_table(
            metrics,
            [("T", "T", {"model": "T"}), ("S", "S", {"model": "S"})],
            subset=val,
            table=1,
            quantity="q",
            clean_as_miou=True,
            **common,
        ),
    )
    tables.update(_sweep_tables(config, metrics, students, common))
    detection_title = (
        "AE detection by d_AE (eq. 4): images for which it picks T (d_AE <= delta) or S "
        "(d_AE > delta, T suspected: the T/A vote outputs A), by delta"
    )
    tables["table4"] = (
        f"Table 4: {detection_title}, {val}",
        detection_table(detections, subset=val, table=4, **common),
    )
    if config.sweep.baseline:
        baseline = students.row(["all"], alpha)
        tables["table5"] = (
            f"Table 5: mIoU of A (%), baseline of [6] (IFM on all layers) vs IFM' on "
            f"{main_layers}, {test}",
            metric_table(
                metrics,
                [
                    ("[6] (all layers)", baseline, {"model": "A_all"}),
                    ("ours", "A", {"model": "A_down2"}),
                ],
                subset=test,
                table=5,
                **common,
            ),
        )
    tables["table6"] = (
        f"Table 6: {detection_title}, {test}",
        detection_table(detections, subset=test, table=6, **common),
    )
    rows7 = [
        (n, n, {"model": p})
        for n, p in (
            ("T", "T"),
            ("S", "S"),
            ("A", "A_down2"),
            ("TS-vote", "TS_vote"),
            ("TA-vote", "TA_vote"),
        )
    ]
    tables["table7"] = (
        f"Table 7: majority vote, mIoU (%), delta {config.detect.delta:g}, {test}",
        metric_table(metrics, rows7, subset=test, table=7, **common),
    )
    return tables


def _sweep_tables(
    config: RunConfig, metrics: pd.DataFrame, students: AdaptiveStudents, common: dict
) -> dict[str, tuple[str, pd.DataFrame]]:
    """Tables 2 and 3, A's sweeps over IFM' layer sets and over alpha, where the config has them.

    ``common`` holds ``metric_table``'s columns and paper numbers."""
    val, alpha = config.data.val_subset, config.finetune.alpha
    tables: dict[str, tuple[str, pd.DataFrame]] = {}
    layer_rows = [
        (ls, students.row(ls.split(","), alpha), {"layers": ls, "alpha": 0.6})
        for ls in config.sweep.layer_sets
    ]
    if layer_rows:
        tables["table2"] = (
            f"Table 2: mIoU of A (%) by IFM' layer set, alpha {alpha:g}, {val}",
            metric_table(metrics, layer_rows, subset=val, table=2, **common),
        )
    alpha_rows = [
        (f"{layer} alpha={a:g}", students.row([layer], a), {"layers": layer, "alpha": a})
        for layer in config.sweep.alpha_layers
        for a in config.sweep.alphas
    ]
    if alpha_rows:
        table3 = metric_table(metrics, alpha_rows, subset=val, table=3, **common)
        for who in ("ours", "paper"):
            table3[("mean", who)] = table3.xs(who, axis=1, level=1).mean(axis=1)
        tables["table3"] = (f"Table 3: mIoU of A (%) by alpha, {val}", table3)
    return tables


ROW_COLUMNS = ["defense", "subset", "threat", "attack", "source", "eps"]


def _eps(config: RunConfig) -> set[float]:
    """Every eps the config's attacks run with."""
    return {float(e) for spec in config.attack.suite for e in config.attack.eps_of(spec)}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _control_intro(config: RunConfig) -> str:
    """What AT is in this run, and how the section's lines read."""
    settings = config.adversarial
    base = {"S": "the student S", "T": "the teacher T"}[settings.base]
    return (
        f"AT is {base} trained further on PGD examples ({_count(settings.steps, 'step')} "
        f"inside eps {settings.eps:g}, {_count(settings.epochs, 'epoch')}; Madry et al. 2018, "
        "as SEA's PIR-AT: from "
        "the clean network's weights). It shows what a defense that holds looks like here, and "
        "that the benchmark would notice one; each line gives its worst case with a 95% "
        "interval against the best other defense that is not ranked apart, and the paired "
        "difference (a tie when its interval holds 0)."
    )


def _controls(config: RunConfig) -> dict[str, str]:
    """The built-in rows that read AT -> the row they are also compared with (AT alone for the
    votes with AT in A's place; none for AT itself). Plug-ins are never imported here."""
    rows = {
        d.name or d.spec: d.spec
        for d in config.evaluate.defenses
        if not is_plugin(d.spec) and ROBUST_NET in BUILTIN_NEEDS[d.spec]
    }
    alone = next((row for row, spec in rows.items() if spec == ROBUST_NET), "")
    return {row: "" if spec == ROBUST_NET else alone for row, spec in rows.items()}


def _requested(config: RunConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of the config's subsets, attacks and eps (the evaluation stage publishes
    only the config's rows; this guards tables edited or copied by hand)."""
    attacks = {*config.attack.tags, "clean"}
    kept = frame["attack"].isin(attacks) | frame["threat"].isin([WORST_CASE])
    eps = frame["threat"].eq("clean") | frame["eps"].isin(_eps(config))
    return frame[frame["subset"].isin(config.attack.subsets) & kept & eps]


def _listed(values: set) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(values))


def check_rows(folder: str | Path) -> list[str]:
    """``config.toml`` and ``metrics.csv`` of a run describe the same run: every eps, subset and
    defense the config asks for has rows. Raises ``StoreError`` (one line naming what differs)
    when not; returns warnings for rows the config does not ask for (left out of the report,
    except a defense's: a plug-in's row name is known only to its code)."""
    folder = Path(folder)
    config = read_run_config(folder)
    metrics = read_table(folder / METRICS_FILE, [*ROW_COLUMNS, "miou", "q"])
    attacked = metrics[metrics["threat"] != "clean"]
    specs = config.evaluate.defenses
    # the sweeps' students are trained when a defense reads A: surely when a built-in does; a
    # plug-in's needs are known to its code only, so then their rows may or may not be there
    sweeps = {row for row, _ in adaptive_students(config).all()[1:]}
    reads_a = any("A" in BUILTIN_NEEDS.get(d.spec, ()) for d in specs)
    students = sweeps if reads_a else set()
    named = {d.name or d.spec for d in specs if d.name or not is_plugin(d.spec)} | students
    plugins = [d.spec for d in specs if is_plugin(d.spec) and not d.name]
    asked = {"eps": _eps(config), "subsets": set(config.attack.subsets), "defenses": named}
    held = {
        "eps": {float(e) for e in attacked["eps"]},
        "subsets": set(metrics["subset"]),
        "defenses": set(metrics["defense"]),
    }
    missing = [f"{k} {_listed(asked[k] - held[k])}" for k in asked if asked[k] - held[k]]
    others = held["defenses"] - named - sweeps
    if len(others) < len(plugins):
        missing.append(
            f"plug-in defenses {', '.join(plugins)} ({len(plugins)}, rows of {len(others)} other "
            "defenses held)"
        )
    if missing:
        raise StoreError(
            f"{folder / 'config.toml'} does not match {folder / METRICS_FILE}: the config asks for "
            f"{'; '.join(missing)}, which the metrics hold no rows of (they hold eps "
            f"{_listed(held['eps'])}; subsets {_listed(held['subsets'])}); restore config.toml or "
            "rerun bench run there"
        )
    warnings = [
        f"{METRICS_FILE} also holds rows of {k} {_listed(held[k] - asked[k])} that config.toml "
        "does not ask for; the report leaves them out"
        for k in ("eps", "subsets")
        if held[k] - asked[k]
    ]
    if len(others) > len(plugins):
        warnings.append(
            f"{METRICS_FILE} holds rows of {len(others)} defenses config.toml does not name "
            f"as built-ins ({_listed(others)}) for {len(plugins)} plug-ins; the report shows them"
        )
    return warnings


def describe_data(config: RunConfig, folder: Path) -> str:
    """The data as the report names it: never a machine path."""
    h, w = config.data.size
    if config.data.toycity:
        return f"toy city (seed {config.data.toycity_seed}) at {h}x{w}"
    relative = os.path.relpath(config.data.root, folder.resolve())
    return f"the Cityscapes-layout tree `{relative}` (relative to the run) at {h}x{w}"


def _grid(path: Path) -> dict[str, dict]:
    """The qualitative grid: {row: {column: array}}; one line naming the file when damaged."""
    grid: dict[str, dict] = {}
    for key, value in read_arrays(path).items():
        if "|" in key:
            variant, column = key.split("|", 1)
            grid.setdefault(variant, {})[column] = value
    shapes = [(v.get("image"), [a for c, a in v.items() if c != "image"]) for v in grid.values()]
    if not grid or any(
        image is None or image.ndim != 3 or any(m.ndim != 2 for m in maps) for image, maps in shapes
    ):
        raise RunDirError(f"{path} does not hold a qualitative grid; rerun bench run there")
    return grid


def shared_sets_note(config: RunConfig) -> str:
    """The report's line on AE sets two threat models share: a white-box attack on T (or S)
    alone is the transfer attack from it, so those rows read one set (built once; a plug-in
    whose surface is one run network alone shares too, as the attacks stage line counts)."""
    singles = [d.name or d.spec for d in config.evaluate.defenses if d.spec in STATIC_NETS]
    singles = [n for n in singles if n in config.attack.sources]
    tags = [s.tag for s in config.attack.suite if {"transfer", "white-box"} <= set(s.threat_models)]
    if not singles or not tags:
        return ""
    return (
        f"The white-box rows of {', '.join(singles)} under {', '.join(tags)} reuse their "
        "transfer sets: a white-box attack on one network alone is the transfer attack from "
        "it, so each set is built once and read by both rows."
    )


def _introduction(config: RunConfig, folder: Path) -> list[str]:
    """The report's title, what was run and scored how, and the findings' heading."""
    suite = "; ".join(
        f"{spec.tag} ({', '.join(spec.threat_models)}; eps "
        f"{', '.join(f'{e:g}' for e in config.attack.eps_of(spec))}; "
        f"{', '.join(config.attack.subsets_of(spec))})"
        for spec in config.attack.suite
    )
    scoring = (
        "at the labels' full resolution (logits upsampled bilinearly before the argmax, as the "
        "official evaluation)"
        if config.evaluate.full_resolution
        else f"at {config.data.size[0]}x{config.data.size[1]} (labels resized, nearest)"
    )
    note = shared_sets_note(config)
    return [
        f"# Benchmark report: {config.name}",
        "",
        f"Data: {describe_data(config, folder)}; teacher {config.teacher.arch} "
        f"{config.teacher.options}, student {config.student.arch} {config.student.options}. "
        f"Attacks: {suite}. Scored {scoring}. All numbers in %; the paper's "
        "(Cityscapes) beside ours where it has one." + (f" {note}" if note else ""),
        "",
        "## The paper's findings on this run",
        "",
        f"Thresholds: {THRESHOLDS}.",
        "",
    ]


def _shown(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the report shows it: each interval beside its mIoU as
    ``value [lo, hi]``, the ``trusted`` column left to the CSV (the rank says it)."""
    shown = board.drop(columns=["trusted", "tier"], errors="ignore")
    for column in [c for c in board.columns if f"{c} lo" in board.columns]:
        shown[column] = [
            f"{v:.2f}" + ("" if pd.isna(lo) else f" [{lo:.2f}, {hi:.2f}]")
            for v, lo, hi in zip(board[column], board[f"{column} lo"], board[f"{column} hi"])
        ]
        shown = shown.drop(columns=[f"{column} lo", f"{column} hi"])
    return shown


def _leaderboards(
    config: RunConfig,
    metrics: pd.DataFrame,
    detections: pd.DataFrame,
    rankings: dict[str, Ranking],
    tables_dir: Path,
    plots_dir: Path,
) -> list[str]:
    """Each subset's ranked leaderboard with its notes, its clean-vs-robust and mIoU-vs-eps
    plots and d_AE histograms (files written into ``tables_dir`` and ``plots_dir``); the
    report's lines for them."""
    attack = config.attack.paper_attack
    deltas = (
        [config.detect.delta_t, config.detect.delta_s]
        if config.detect.delta_t is not None
        else [config.detect.delta]
    )
    parts: list[str] = []
    for subset, ranking in rankings.items():
        board = ranking.board
        if board.empty:
            continue
        name = f"leaderboard_{subset}"
        eps = headline_eps(metrics, subset)
        parts += [
            "",
            f"## Leaderboard, {subset} (mIoU %, ranked by robust mIoU: the worst case over every "
            f"attack and threat model, mean over eps {', '.join(f'{e:g}' for e in eps)}; "
            "defenses whose evaluation is not sound ranked apart, after the others)",
            "",
            *[f"- {note}" for note in ranking.notes],
            "",
            _write_table(board, tables_dir, name, _shown(board)),
        ]
        if plot_clean_vs_robust(board, subset, plots_dir / f"clean_vs_robust_{subset}.png", eps):
            parts += ["", f"![clean vs robust mIoU, {subset}](plots/clean_vs_robust_{subset}.png)"]
        if plot_miou_vs_eps(metrics, subset, attack, plots_dir / f"miou_vs_eps_{subset}.png"):
            parts += ["", f"![mIoU vs eps, {subset}](plots/miou_vs_eps_{subset}.png)"]
        if plot_d_ae_histograms(detections, subset, deltas, plots_dir / f"d_ae_{subset}.png"):
            parts += ["", f"![d_AE histograms, {subset}](plots/d_ae_{subset}.png)"]
    return parts


def _marks(config: RunConfig, folder: Path) -> pd.DataFrame:
    """The worst case of every defense at the marks of the attacks' budgets (the metrics rows
    of threat ``WORST_CASE_AT_MARK``) at the config's subsets and eps."""
    raw = read_table(folder / METRICS_FILE, [*ROW_COLUMNS, "miou"])
    return raw[
        (raw["threat"] == WORST_CASE_AT_MARK)
        & raw["subset"].isin(config.attack.subsets)
        & raw["eps"].isin(_eps(config))
    ]


def _convergence(marks: pd.DataFrame, tables_dir: Path, plots_dir: Path) -> list[str]:
    """Per subset, the worst case of every defense at the marks of the attacks' budgets
    (``_marks``; a table and a plot), each marked converged or still falling; the report's lines
    for them."""
    parts: list[str] = []
    for subset in dict.fromkeys(marks["subset"]):
        rows = marks[marks["subset"] == subset]
        table = rows.pivot_table(
            index="defense", columns=["eps", "attack"], values="miou", sort=False
        )
        board = pd.DataFrame(index=pd.Index(list(dict.fromkeys(rows["defense"])), name="defense"))
        fall = budget_fall(rows)
        for eps in sorted(set(rows["eps"])):
            for mark in MARK_NAMES:
                board[f"eps={eps:g} at {mark}"] = table.get((eps, mark))
            at_eps = fall[fall["eps"] == eps].set_index("defense")
            board[f"eps={eps:g} converged"] = [
                "n/a"
                if d not in at_eps.index
                else "yes"
                if at_eps.at[d, "converged"]
                else "unknown: a mark is missing"
                if math.isnan(at_eps.at[d, "fell"])
                else "no: " + still_falling(at_eps.at[d, "fell"], at_eps.at[d, "before"])
                for d in board.index
            ]
        iterations = "; ".join(dict.fromkeys(rows["source"]))
        parts += [
            "",
            f"## Convergence of the attacks, {subset} (worst-case mIoU % at 1/4, 1/2 and all of "
            "the attacks' iterations)",
            "",
            f"Marks: {iterations} (white-box sets, judged on the defense's own output before the "
            "rounding to whole gray values; other sets count with their final numbers). A worst "
            f"case that fell by more than {CONVERGED_POINTS:g} point over the second half of the "
            f"budget, or by more than {CONVERGED_POINTS / 2:g} without slowing down (no less per "
            "iteration than over the quarter before it: at that pace twice the budget would lose "
            f"more than {CONVERGED_POINTS:g}), is an upper bound still falling, not a final "
            "number; a budget's marks can still miss a fall that has not begun.",
            "",
            _write_table(board, tables_dir, f"convergence_{subset}"),
        ]
        if plot_convergence(marks, subset, plots_dir / f"convergence_{subset}.png"):
            parts += ["", f"![robust mIoU vs iterations, {subset}](plots/convergence_{subset}.png)"]
    return parts


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``tables/``, ``plots/`` and ``report.md`` into ``out`` (default ``folder``) from
    the stored rows in ``folder``."""
    folder = Path(folder)
    target = Path(out) if out is not None else folder
    config = read_run_config(folder)  # names only: the report imports none of its code
    metrics = _requested(config, read_table(folder / METRICS_FILE, [*ROW_COLUMNS, "miou", "q"]))
    records = _requested(config, read_table(folder / RECORDS_FILE, ROW_COLUMNS))
    checks = (
        read_table(folder / CHECKS_FILE, ["check", "subject", "message"])
        if (folder / CHECKS_FILE).is_file()
        else pd.DataFrame(columns=["check", "subject", "message"])
    )
    # the convergence check is a function of the stored marks: recomputed by the current rule
    marks = _marks(config, folder)
    converging = pd.DataFrame(
        convergence_checks(marks), columns=["check", "subject", "message", "subset"]
    )
    checks = pd.concat([checks[checks["check"] != "not converged"], converging], ignore_index=True)
    detections = records[records["defense"] == DETECTION_DEFENSE]
    if "d_ae" not in detections.columns:
        detections = detections.assign(d_ae=pd.Series(dtype=float))
    tables_dir, plots_dir = target / "tables", target / "plots"
    for directory in (tables_dir, plots_dir):
        try:
            directory.mkdir(exist_ok=True)
        except OSError as err:
            raise write_error(directory, err) from err

    parts = _introduction(config, folder)
    parts += [f"- {line}" for line in findings(config, metrics, detections)]
    adaptive_subset = (
        config.data.test_subset
        if config.data.test_subset in config.attack.subsets
        else config.attack.subsets[-1]
    )
    rankings = {
        subset: ranked_leaderboard(
            metrics, records, checks, subset=subset, seed=config.seed, marks=marks
        )
        for subset in config.attack.subsets
    }
    adaptive = adaptive_findings(config, metrics, records, adaptive_subset)
    ranking = rankings[adaptive_subset]
    if adaptive and not ranking.board.empty and ranking.board["robust mIoU"].notna().any():
        adaptive.append(ranking_sentence(ranking, metrics, adaptive_subset))
    if adaptive:
        parts += ["", "## Attacks that see the defense", ""]
        parts += [f"- {line}" for line in adaptive]
    control = control_findings(ranking, _controls(config), adaptive_subset)
    if control:
        parts += ["", "## The positive control: adversarial training", ""]
        parts += [_control_intro(config), ""]
        parts += [f"- {line}" for line in control]
    parts += ["", "## Checks of the evaluation", ""]
    parts += [f"- {m}" for m in checks["message"]] or [
        "- None fired: no masked white-box gradient, no randomised defense without EOT, no "
        "defense that ignores its input, no white-box attack weaker than a transfer attack."
    ]
    for name, (title, frame) in _paper_tables(config, metrics, detections).items():
        if not has_data(frame):
            parts += ["", f"## {title}", "", OMITTED]
            continue
        parts += ["", f"## {title}", "", _write_table(frame, tables_dir, name)]
    parts += _leaderboards(config, metrics, detections, rankings, tables_dir, plots_dir)
    parts += _convergence(marks, tables_dir, plots_dir)
    if (folder / QUALITATIVE_FILE).is_file():
        plot_qualitative(_grid(folder / QUALITATIVE_FILE), plots_dir / "qualitative.png")
        parts += ["", "## Qualitative", "", "![qualitative grid](plots/qualitative.png)"]
    report = target / REPORT_FILE
    atomic_write_text(report, "\n".join(parts) + "\n")
    return report
