"""The leaderboard's ranking: flags on the rows, the clean cost, bootstrap intervals and ties.

A defense's row carries a short flag for every check in ``checks.csv`` whose subject is that row,
for a missing attack surface and for a clean mIoU more than ``CLEAN_COST_POINTS`` below T's.
``CHECK_FLAGS`` is the one table of check kind -> flag -> whether the robust mIoU still counts; a
kind it does not list (a check added later) shows as its own name and counts as a note. A
defense with a flag that does not count is ranked apart, after every trusted one, with the
reason: a flagged defense never ranks above a trusted one. A provisional flag ("not converged":
an upper bound still falling, at an eps of the headline) ranks a defense after every trusted one
without it, among its kind, so a number still falling never stands above a final one, unless
what is final of it already beats that one: its floor, the robust mIoU with every eps still
falling counted as 0 (no mIoU is lower), above the final number by more than the noise.

Intervals come from a paired bootstrap over images (``bench.metrics.resample_weights``): each
resample pools the per-image intersections and unions of ``records.csv``; for the worst case the
attack chosen per image is fixed from the full set (SEA's greedy assignment). Two neighbours
whose paired difference of robust mIoU has an interval holding 0 are a tie; beside an upper
bound still falling, two neighbours tie unless what is final of the one above beats the other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from bench.config import THREAT_MODELS
from bench.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    TIE_POINTS,
    bootstrap_miou,
    interval,
    resample_weights,
    worst_case_miou,
)
from bench.report.tables import budget_fall, headline_eps, leaderboard, robust_column
from bench.scoring import COUNT_COLUMNS, stacked_counts
from bench.variants import CLEAN, TRANSFER, WORST_CASE

#: a clean mIoU more than this many points below T's is flagged (the cost of the defense)
CLEAN_COST_POINTS = 5.0
#: the kinds of flag the report derives itself (not from checks.csv)
NO_SURFACE, CLEAN_COST = "no attack surface", "clean cost"


@dataclass(frozen=True)
class Flag:
    """A short mark on a leaderboard row, what it means (for an untrusted one: why its robust
    mIoU does not count) and whether the robust mIoU still counts."""

    text: str
    trusted: bool
    meaning: str
    #: the robust mIoU counts, but as an upper bound still falling (when it fell at an eps of
    #: the headline): ranked after every defense without such a flag, among its kind (a number
    #: never shown as if final), unless its floor beats that defense (``_Order``)
    provisional: bool = False


#: check kind (``checks.csv``'s ``check``) -> its flag
CHECK_FLAGS: dict[str, Flag] = {
    "gradient masking": Flag(
        "masked", False, "its white-box gradient is masked and has no differentiable stand-in"
    ),
    "randomness": Flag("random-no-EOT", False, "randomised, attacked without EOT"),
    "input independence": Flag(
        "ignores input", False, "its output ignores its input: its robust mIoU is meaningless"
    ),
    NO_SURFACE: Flag("no surface", False, "not adaptively evaluated: no attack surface"),
    "not converged": Flag(
        "not converged", True, "its worst case was still falling at the end of the budget", True
    ),
    "adaptive weaker than transfer": Flag(
        "white-box weaker", True, "a white-box attack left more than a transfer one"
    ),
    # what the probes before the attacks gave a defense (bench.stages.ae_sets.attack_findings)
    "eot": Flag("EOT", True, "attacked with EOT (averaged over random draws)"),
    "bpda": Flag("BPDA", True, "attacked through its differentiable stand-in transform"),
    "gradient-free": Flag("square", True, "also attacked by the gradient-free random search"),
    "gradient-free skipped": Flag(
        "no square", True, "a zero gradient from an output that ignores its input: no square"
    ),
    CLEAN_COST: Flag(  # the text gets the drop against T
        "clean -N", True, f"clean mIoU N points below T's (more than {CLEAN_COST_POINTS:g})"
    ),
}


def flag_of(kind: str) -> Flag:
    """The flag of a check kind; an unknown kind shows as itself and counts as a note."""
    return CHECK_FLAGS.get(kind, Flag(kind, True, "a check the ranking does not know (a note)"))


def row_flags(board: pd.DataFrame, checks: pd.DataFrame, subset: str) -> dict[str, list[Flag]]:
    """Each leaderboard row's flags: the checks of ``subset`` (or of every subset: no or an
    empty ``subset`` column) in their order, one per kind; then a missing surface, where others
    on the board met white-box attacks (a subset attacked by transfer alone says so in its
    headline); then the clean cost (``board`` needs ``threat models`` and ``clean drop vs
    T``)."""
    if "subset" in checks.columns:
        checks = checks[checks["subset"].isna() | checks["subset"].isin(["", subset])]
    unevaluated = board["threat models"].str.contains("not adaptively evaluated", regex=False)
    flags: dict[str, list[Flag]] = {}
    for defense in board.index:
        kinds = list(dict.fromkeys(checks.loc[checks["subject"] == defense, "check"]))
        mine = [flag_of(str(kind)) for kind in kinds]
        if unevaluated[defense] and not unevaluated.all():
            mine.append(flag_of(NO_SURFACE))
        drop = board.at[defense, "clean drop vs T"]
        if drop < -CLEAN_COST_POINTS:
            mine.append(dataclasses.replace(flag_of(CLEAN_COST), text=f"clean {drop:+.0f}"))
        flags[defense] = mine
    return flags


Samples = dict[str, dict[object, np.ndarray]]


def bootstrap_samples(
    records: pd.DataFrame, subset: str, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[Samples | None, str]:
    """Per defense of ``subset``, the bootstrap mIoU (%) of every resample: ``"clean"`` and the
    worst case at each eps (floats), each (resamples,), one weight matrix for all (paired).
    (None, why) when the records cannot give them (an older run without per-image counts)."""
    rows = records[records["subset"] == subset]
    lacking = [c for c in [*COUNT_COLUMNS, "image"] if c not in rows.columns]
    if rows.empty or lacking or rows[[*COUNT_COLUMNS, "image"]].isna().any().any():
        return None, f"records.csv holds no per-image counts for {subset}"
    n_images = rows["image"].nunique()
    weights = resample_weights(n_images, resamples, seed)
    samples: Samples = {}
    attacked = rows.assign(attacked=rows["threat"] != CLEAN)
    for (defense, eps, is_attacked), group in attacked.groupby(
        ["defense", "eps", "attacked"], sort=False
    ):
        inter, union, _, _ = stacked_counts(group)
        if inter.shape[1] != n_images:
            return None, f"records.csv holds {inter.shape[1]} of {n_images} images for {defense}"
        images = torch.arange(n_images)
        choice = worst_case_miou(inter, union)[1] if is_attacked else torch.zeros_like(images)
        per_image = inter[choice, images].double().numpy(), union[choice, images].double().numpy()
        key = float(eps) if is_attacked else "clean"
        samples.setdefault(defense, {})[key] = 100 * bootstrap_miou(*per_image, weights)
    return samples, ""


def _robust_samples(samples: Samples, defense: str, eps: list[float]) -> np.ndarray | None:
    """The robust mIoU (mean over the headline eps) of every resample, or None when the
    defense lacks one of them."""
    mine = [samples.get(defense, {}).get(e) for e in eps]
    return np.mean(mine, axis=0) if mine and all(s is not None for s in mine) else None


def _by_column(mine: Mapping[object, np.ndarray]) -> dict[str, np.ndarray]:
    """A defense's resamples of the worst case keyed by its leaderboard column (the samples
    are keyed by the exact eps, a column name by its short form)."""
    return {robust_column(eps): values for eps, values in mine.items() if eps != "clean"}


@dataclass(frozen=True)
class Ranking:
    """A subset's leaderboard in ranked order (flags, intervals, ties) and the lines that say
    how to read it."""

    board: pd.DataFrame
    notes: list[str]
    #: the robust mIoU of every resample per defense (None without per-image counts)
    robust: Mapping[str, np.ndarray] | None
    #: every resample per defense of its clean mIoU and its worst case at each eps
    samples: Samples | None = None


def _tied(a: np.ndarray | None, b: np.ndarray | None, value_a: float, value_b: float) -> bool:
    """Neighbours tie when the interval of their paired difference holds 0 (without resamples:
    when they are at most ``TIE_POINTS`` apart)."""
    if a is None or b is None:
        return abs(value_a - value_b) <= TIE_POINTS
    low, high = interval(a - b)
    return low <= 0 <= high


def ranked_leaderboard(
    metrics: pd.DataFrame,
    records: pd.DataFrame,
    checks: pd.DataFrame,
    *,
    subset: str,
    seed: int = 0,
    marks: pd.DataFrame | None = None,
) -> Ranking:
    """The leaderboard of ``subset`` (``bench.report.tables.leaderboard``) ranked: trusted
    defenses by robust mIoU, then the ones ranked apart; an upper bound still falling after the
    final numbers unless what is final of it beats them (``_order``; ``marks``: the rows of the
    worst case at the budget's marks, which say per eps what converged; none: nothing did).
    Columns added: ``rank`` (ties share it; ``apart`` for the untrusted), ``tie`` ("=" when tied
    with the row above), ``flags``, ``trusted``, ``clean drop vs T``, ``robust mIoU floor`` (of
    the upper bounds still falling, when there are some) and a 95% interval (``<column> lo`` /
    ``hi``) for every robust mIoU and the clean mIoU when the records hold per-image counts."""
    board = leaderboard(metrics, subset=subset)
    if board.empty:
        return Ranking(board, [], None)
    board["clean drop vs T"] = board["clean"] - board["clean"].get("T", math.nan)
    flags = row_flags(board, checks, subset)
    board["flags"] = [", ".join(f.text for f in flags[d]) for d in board.index]
    board["trusted"] = [all(f.trusted for f in flags[d]) for d in board.index]
    counted = headline_eps(metrics, subset)
    converged = None if marks is None else _converged_eps(marks, subset)
    # 0: sound and converged; 1: sound, an upper bound still falling; 2: ranked apart
    tier = pd.Series(
        [
            2
            if not board.at[d, "trusted"]
            else int(
                any(f.provisional for f in flags[d])
                # a fall only at an eps out of the headline leaves the headline final
                and (converged is None or not set(counted) <= converged.get(d, set()))
            )
            for d in board.index
        ],
        index=board.index,
    )
    robust_columns = [c for c in board.columns if c.startswith("robust mIoU eps=")]
    samples, why = bootstrap_samples(records, subset, seed)
    robust: dict[str, np.ndarray] | None = None
    if samples is not None:
        robust = {}
        bounds: dict[str, list[tuple[float, float]]] = {}
        for defense in board.index:
            mine = samples.get(defense, {})
            overall = _robust_samples(samples, defense, counted)
            if overall is not None:
                robust[defense] = overall
            per_column = {"robust mIoU": overall, "clean": mine.get("clean")}
            by_column = _by_column(mine)
            per_column.update({c: by_column.get(c) for c in robust_columns})
            for column, values in per_column.items():
                bounds.setdefault(column, []).append(
                    interval(values) if values is not None else (math.nan, math.nan)
                )
        for column, pairs in bounds.items():
            board[f"{column} lo"] = [low for low, _ in pairs]
            board[f"{column} hi"] = [high for _, high in pairs]
    floor = _floors(board, tier, converged or {}, counted, samples)
    if floor:
        board["robust mIoU floor"] = pd.Series({d: value for d, (value, _) in floor.items()})
    board = board.assign(tier=tier)
    order = _Order(board, floor, robust)
    board = board.loc[order.rows()]
    finals = [i for i, d in enumerate(board.index) if board.at[d, "tier"] == 0]
    last_final = finals[-1] if finals else -1
    ranks, ties = [], []
    for position, defense in enumerate(board.index):
        previous = board.index[position - 1] if position else None
        tie = previous is not None and order.tied(previous, defense, position <= last_final)
        ties.append("=" if tie else "")
        if not board.at[defense, "trusted"]:
            ranks.append("apart")
        else:
            ranks.append(ranks[-1] if tie else str(position + 1))
    board.insert(0, "rank", ranks)
    board.insert(1, "tie", ties)
    leading = ["rank", "tie", "flags", "robust mIoU", "robust mIoU lo", "robust mIoU hi"]
    leading += ["robust mIoU floor"]
    for column in robust_columns:
        leading += [column, f"{column} lo", f"{column} hi"]
    leading += ["clean", "clean lo", "clean hi", "clean drop vs T", "threat models", "trusted"]
    leading += ["tier"]
    leading = [c for c in leading if c in board.columns]
    board = board[leading + [c for c in board.columns if c not in leading]]
    notes = [headline(metrics, subset), _legend(flags)]
    notes.append(
        f"Intervals: {100 * BOOTSTRAP_LEVEL:g}% paired bootstrap over images "
        f"({BOOTSTRAP_RESAMPLES} resamples, seed {seed}); '=' in the tie column: the paired "
        "difference of robust mIoU with the row above has an interval holding 0"
        if robust is not None
        else f"No intervals: {why} (a run of an older version); ties are neighbours at most "
        f"{TIE_POINTS:g} point apart"
    )
    if (board["tier"] == 1).any():
        notes[-1] += (
            "; beside an upper bound still falling, unless what is final of the row above (its "
            "robust mIoU, or its floor if it is still falling) beats the row's robust mIoU"
        )
    notes[-1] += "; tied rows share a rank along a chain of '='."
    return Ranking(board, notes, robust, samples)


def _converged_eps(marks: pd.DataFrame, subset: str) -> dict[str, set[float]]:
    """Per defense of ``subset``, the eps at which its marks show its worst case converged."""
    fall = budget_fall(marks)
    fall = fall[(fall["subset"] == subset) & fall["converged"]]
    return {d: set(group["eps"]) for d, group in fall.groupby("defense")}


def _floors(
    board: pd.DataFrame,
    tier: pd.Series,
    converged: Mapping[str, set[float]],
    counted: list[float],
    samples: Samples | None,
) -> dict[str, tuple[float, np.ndarray | None]]:
    """What the run already shows final of each upper bound still falling (tier 1): its robust
    mIoU with every eps its marks do not show converged counted as 0, no mIoU being lower (and
    its resamples, None without). Its converged eps count as final by the same rule as a
    converged defense's. NaN for a defense without a robust mIoU (n/a)."""
    floors: dict[str, tuple[float, np.ndarray | None]] = {}
    for defense in tier[tier == 1].index:
        if math.isnan(board.at[defense, "robust mIoU"]):
            floors[defense] = (math.nan, None)
            continue
        falling = set(counted) - converged.get(defense, set())
        values = [0.0 if e in falling else board.at[defense, robust_column(e)] for e in counted]
        mine = (samples or {}).get(defense, {})
        resampled = [np.zeros(1) if e in falling else mine.get(e) for e in counted]
        together = (
            np.mean(np.broadcast_arrays(*resampled), axis=0)
            if samples is not None and all(r is not None for r in resampled) and resampled
            else None
        )
        floors[defense] = (float(np.mean(values)) if values else math.nan, together)
    return floors


class _Order:
    """The ranked order of a board's rows (``tier`` 0: final numbers, 1: upper bounds still
    falling, 2: ranked apart) and which neighbours tie.

    The final numbers rank by robust mIoU. An upper bound still falling goes right above the
    first group of tied final numbers that its floor (``_floors``) beats, every member of it
    (the interval of the paired difference above 0; without resamples by more than
    ``TIE_POINTS``); the others go after every final number, by robust mIoU, as before; the
    defenses ranked apart last. Among the final numbers, a row ties with the one above it unless
    the one above is known to be higher: for a final number its robust mIoU, for an upper bound
    its floor, must beat the row's robust mIoU. After the last final number the upper bounds go
    by robust mIoU, each tied with the one above it unless that one's floor beats its upper
    bound: two numbers still falling say nothing of the order of what they will reach."""

    def __init__(
        self,
        board: pd.DataFrame,
        floor: Mapping[str, tuple[float, np.ndarray | None]],
        robust: Mapping[str, np.ndarray] | None,
    ) -> None:
        self.board, self.floor, self.robust = board, floor, robust or {}

    def _value(self, defense: str) -> tuple[float, np.ndarray | None]:
        return self.board.at[defense, "robust mIoU"], self.robust.get(defense)

    def above(self, upper: str, lower: str) -> bool:
        """``upper`` is known to rank above ``lower``: what is final of it beats ``lower``'s
        robust mIoU (an upper bound of it, if ``lower`` is still falling)."""
        mine = self.floor[upper] if self.board.at[upper, "tier"] == 1 else self._value(upper)
        (value, values), (theirs, their_values) = mine, self._value(lower)
        if values is not None and their_values is not None:
            return interval(values - their_values)[0] > 0
        return value - theirs > TIE_POINTS

    def tied(self, previous: str, defense: str, among_finals: bool) -> bool:
        """Whether ``defense`` ties with the row above it (the '=' of the board)."""
        if self.board.loc[[previous, defense], "robust mIoU"].isna().any():
            return False  # n/a ties with nothing
        tiers = {self.board.at[previous, "tier"], self.board.at[defense, "tier"]}
        if len(tiers) > 1 and (not among_finals or 2 in tiers):
            return False
        if 1 in tiers:  # an upper bound: apart only where what is final of one beats the other
            return not self.above(previous, defense)
        (value, values), (theirs, their_values) = self._value(previous), self._value(defense)
        return _tied(values, their_values, value, theirs)

    def _by_value(self, level: int) -> list[str]:
        rows = self.board[self.board["tier"] == level]
        return list(rows.sort_values("robust mIoU", ascending=False, na_position="last").index)

    def rows(self) -> list[str]:
        finals, uppers = self._by_value(0), self._by_value(1)
        groups: list[list[str]] = []
        for position, final in enumerate(finals):
            if position and self.tied(finals[position - 1], final, True):
                groups[-1].append(final)
            else:
                groups.append([final])
        slot = {
            u: next((g[0] for g in groups if all(self.above(u, f) for f in g)), None)
            for u in uppers
        }
        order = []
        for final in finals:
            order += [u for u in uppers if slot[u] == final] + [final]
        return order + [u for u in uppers if slot[u] is None] + self._by_value(2)


def _with_interval(value: float, values: np.ndarray | None) -> str:
    if values is None:
        return f"{value:.1f}%"
    low, high = interval(values)
    return f"{value:.1f}% [{low:.1f}, {high:.1f}]"


def _difference(a: float, b: float, a_values: np.ndarray | None, b_values: np.ndarray | None):
    """'higher: +N points [lo, hi]', 'lower: ...' or 'a tie: ...': the paired difference a - b
    and its interval (without resamples: a tie within ``TIE_POINTS``)."""
    diff = a - b
    if a_values is None or b_values is None:
        tie, shown = abs(diff) <= TIE_POINTS, f"{diff:+.1f} points"
    else:
        low, high = interval(a_values - b_values)
        tie, shown = low <= 0 <= high, f"{diff:+.1f} points [{low:+.1f}, {high:+.1f}]"
    verdict = "a tie" if tie else "higher" if diff > 0 else "lower"
    return f"{verdict}, {shown}"


def control_findings(ranking: Ranking, controls: Mapping[str, str], subset: str) -> list[str]:
    """Where the adversarially trained rows land (the positive control), stated plainly.

    ``controls``: row -> the row it is compared with besides the best other defense ("" for
    none), e.g. {"AT": "", "TAT-vote": "AT"} (what the vote adds to its robust member). At each
    eps of the board: the control's worst case with its interval against the best defense that
    is neither a control nor ranked apart (with its flags: "not converged" says that number is
    an upper bound still falling), and the paired difference with its interval.
    """
    board, samples = ranking.board, ranking.samples or {}
    present = [row for row in controls if row in board.index]
    if not present:
        return []
    columns = [
        c
        for c in board.columns
        if c.startswith("robust mIoU eps=") and c[-3:] not in (" lo", " hi")
    ]
    others = board[~board.index.isin(list(controls)) & (board["tier"] < 2)]
    lines = []
    for row in present:
        position = (
            f"rank {board.at[row, 'rank']}" if board.at[row, "rank"] != "apart" else "ranked apart"
        )
        flags = str(board.at[row, "flags"] or "")
        parts = []
        for column in columns:
            mine = board.at[row, column]
            if math.isnan(mine):
                continue
            mine_values = _by_column(samples.get(row, {})).get(column)
            text = f"{column.removeprefix('robust mIoU ').replace('=', ' ')}: "
            text += _with_interval(mine, mine_values)
            candidates = others[column].dropna()
            if len(candidates):
                best = str(candidates.idxmax())
                best_values = _by_column(samples.get(best, {})).get(column)
                best_flags = str(board.at[best, "flags"] or "")
                text += (
                    f" against the best other defense, {best} "
                    f"{_with_interval(candidates[best], best_values)}"
                    + (f" ({best_flags})" if best_flags else "")
                    + ": "
                    f"{_difference(mine, candidates[best], mine_values, best_values)}"
                )
            partner = controls[row]
            if partner and partner in board.index and not math.isnan(board.at[partner, column]):
                partner_values = _by_column(samples.get(partner, {})).get(column)
                text += (
                    f"; against {partner} alone: "
                    f"{_difference(mine, board.at[partner, column], mine_values, partner_values)}"
                )
            parts.append(text)
        clean = board.at[row, "clean"]
        lines.append(
            f"{row} ({subset}; {position} of {len(board)}"
            + (f", flags: {flags}" if flags else "")
            + f"; clean {_with_interval(clean, samples.get(row, {}).get('clean'))}, "
            f"{board.at[row, 'clean drop vs T']:+.1f} vs T): "
            + ("; ".join(parts) or "no robust number")
            + "."
        )
    return lines


def _legend(flags: Mapping[str, list[Flag]]) -> str:
    """What the flags on the board mean, and which of them rank a defense apart."""
    seen = {f.meaning: f for mine in flags.values() for f in mine}
    if not seen:
        return "Flags: none; every defense's evaluation passed the checks."
    parts = [
        f"{CHECK_FLAGS[CLEAN_COST].text if f.text.startswith('clean ') else f.text}: {meaning}"
        + ("" if f.trusted else " (ranked apart)")
        + (
            " (where it fell at an eps of the headline: ranked after the defenses without it, "
            "unless its floor, the robust mIoU with its eps still falling counted as 0, beats "
            "some: then right above the first group of tied ones it beats, tied with the row "
            "above unless that is known higher; after them, tied with the row above unless that "
            "one's floor beats its bound)"
            if f.provisional
            else ""
        )
        for meaning, f in seen.items()
    ]
    return "Flags: " + "; ".join(parts) + "."


def headline(metrics: pd.DataFrame, subset: str) -> str:
    """Which eps enter the robust mIoU and by which threat models each eps was attacked."""
    rows = metrics[(metrics["subset"] == subset) & ~metrics["threat"].isin([CLEAN, WORST_CASE])]
    by_threats: dict[tuple[str, ...], list[float]] = {}
    for eps, group in rows.groupby("eps"):
        threats = tuple(t for t in THREAT_MODELS if t in set(group["threat"]))
        by_threats.setdefault(threats, []).append(float(eps))
    every = sorted(e for eps in by_threats.values() for e in eps)
    counted = headline_eps(metrics, subset)
    left_out = [e for e in every if e not in counted]
    strongest = next((t for t in reversed(THREAT_MODELS) if t in set(rows["threat"])), "")
    parts = [
        f"eps {', '.join(f'{e:g}' for e in eps)}: {' + '.join(threats)}"
        + (" only" if len(threats) == 1 else "")
        for threats, eps in sorted(by_threats.items(), key=lambda item: min(item[1]))
    ]
    return (
        f"Robust mIoU: the mean over eps {', '.join(f'{e:g}' for e in counted)} of the worst "
        f"case over every attack a defense met; {'; '.join(parts)} (a defense without an "
        "attack surface met no white-box attack)"
        + (
            f". The mean takes the eps of the strongest threat model run here ({strongest}); "
            f"eps {', '.join(f'{e:g}' for e in left_out)} "
            f"{'is' if len(left_out) == 1 else 'are'} on the board but not in it: without "
            "that threat model a worst case is nearer the clean mIoU, and a mean over it would "
            "rank clean accuracy. A defense without a worst case at every eps of the mean has "
            "no robust mIoU (n/a)."
            if left_out
            else "."
        )
    )


def ranking_sentence(ranking: Ranking, metrics: pd.DataFrame, subset: str) -> str:
    """The ranking in one sentence: '=' between tied neighbours (``_Order.tied``), '>' only
    where the one above is known higher; the defenses ranked apart after it, with reasons."""
    board = ranking.board
    apart = board[board["tier"] == 2]

    def shown(defense: str) -> str:
        if math.isnan(board.at[defense, "robust mIoU"]):
            return f"{defense} n/a"
        value = f"{defense} {board.at[defense, 'robust mIoU']:.1f}"
        if "robust mIoU lo" in board.columns and not math.isnan(
            board.at[defense, "robust mIoU lo"]
        ):
            value += f" [{board.at[defense, 'robust mIoU lo']:.1f}, "
            value += f"{board.at[defense, 'robust mIoU hi']:.1f}]"
        return value

    def ordered(rows: pd.DataFrame, among_finals: bool) -> str:
        order = ""
        for position, defense in enumerate(rows.index):
            if position:
                order += " = " if rows.at[defense, "tie"] == "=" else " > "
            order += shown(defense)
            if among_finals and rows.at[defense, "tier"] == 1:  # its floor beat the next final
                order += f" (still falling; at least {rows.at[defense, 'robust mIoU floor']:.1f})"
        return order

    sound = board[board["tier"] < 2]
    finals = [position for position, d in enumerate(sound.index) if sound.at[d, "tier"] == 0]
    last_final = finals[-1] + 1 if finals else 0
    order = ordered(sound.iloc[:last_final], among_finals=True)
    falling = ordered(sound.iloc[last_final:], among_finals=False)
    reasons = []
    for defense in apart.index:
        why = [
            f.meaning
            for f in CHECK_FLAGS.values()
            if not f.trusted and f.text in str(apart.at[defense, "flags"]).split(", ")
        ]
        reasons.append(f"{shown(defense)} ({'; '.join(why) or 'flagged'})")
    rows = metrics[metrics["subset"] == subset]
    counted = headline_eps(metrics, subset)
    transfer = rows[(rows["threat"] == TRANSFER) & rows["eps"].isin(counted)]
    transfer_only = transfer.groupby("defense")["miou"].mean()
    return (
        f"Robust ranking ({subset}; worst case over every attack and threat model, mean over "
        f"eps {', '.join(f'{e:g}' for e in counted)}, 95% intervals; '=' a tie): "
        + (order or "no defense passed every check with a converged attack")
        + (
            "; upper bounds still falling (their attacks had not converged; '>' only where "
            f"the floor of one beats the bound of the next), after those: "
            f"{falling}"
            if falling
            else ""
        )
        + (f"; ranked apart (evaluation not sound): {', '.join(reasons)}" if reasons else "")
        + (
            f". Ranked by the transfer attacks alone, {transfer_only.idxmax()} came first."
            if len(transfer_only)
            else "."
        )
    )
