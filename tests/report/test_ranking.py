"""The ranked leaderboard: the bootstrap against a plain-loop reference, ties, flags on the rows
(a flagged defense never above a trusted one), the clean cost, the headline, the Pareto front
and the labels of its plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.labels import NUM_CLASSES
from bench.metrics import bootstrap_miou, interval, resample_weights
from bench.report.plots import pareto_front
from bench.report.ranking import (
    control_findings,
    headline,
    ranked_leaderboard,
    ranking_sentence,
)
from bench.scoring import COUNT_COLUMNS
from bench.stages.results import worst_case_rows

NO_CHECKS = pd.DataFrame(columns=["check", "subject", "message"])


def _reference_interval(inter, union, seed, resamples, level=0.95):
    """The percentile interval of the bootstrap mIoU, image by image and class by class."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(inter), size=(resamples, len(inter)))
    values = []
    for draw in draws:
        pooled_i = [0.0] * len(inter[0])
        pooled_u = [0.0] * len(inter[0])
        for n in draw:
            for c in range(len(inter[0])):
                pooled_i[c] += inter[n][c]
                pooled_u[c] += union[n][c]
        ious = [i / u for i, u in zip(pooled_i, pooled_u) if u > 0]
        values.append(sum(ious) / len(ious))
    values.sort()

    def percentile(q):  # linear between the closest ranks, as numpy's default
        position = q * (len(values) - 1)
        below = int(position)
        above = min(below + 1, len(values) - 1)
        return values[below] + (values[above] - values[below]) * (position - below)

    tail = (1 - level) / 2
    return percentile(tail), percentile(1 - tail)


def test_the_bootstrap_interval_matches_a_plain_loop_reference():
    inter = [[5, 0, 2], [3, 1, 0], [0, 0, 4], [7, 2, 1], [1, 0, 0]]
    union = [[8, 0, 3], [4, 3, 0], [2, 1, 5], [9, 2, 2], [1, 2, 1]]
    weights = resample_weights(5, resamples=300, seed=7)
    assert weights.shape == (300, 5) and (weights.sum(1) == 5).all()
    samples = bootstrap_miou(np.array(inter, float), np.array(union, float), weights)
    low, high = interval(samples)
    ref_low, ref_high = _reference_interval(inter, union, seed=7, resamples=300)
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)
    assert low < high


def test_resamples_are_seeded():
    assert (resample_weights(9, 50, seed=3) == resample_weights(9, 50, seed=3)).all()
    assert not (resample_weights(9, 50, seed=3) == resample_weights(9, 50, seed=4)).all()


def _counts(rng, n_images: int, quality: float) -> np.ndarray:
    """Per image, counts of a prediction right on about ``quality`` of each class's pixels."""
    union = rng.integers(50, 100, size=(n_images, NUM_CLASSES))
    inter = np.floor(union * np.clip(quality + rng.normal(0, 0.1, union.shape), 0, 1))
    correct, valid = inter.sum(1, keepdims=True), union.sum(1, keepdims=True)
    return np.concatenate([inter, union, correct, valid], 1).astype(np.int64)


def _run(
    qualities: dict[str, tuple[float, float]],
    n_images: int = 30,
    seed: int = 0,
    white_box_eps: tuple[float, ...] = (4.0,),
):
    """Records and metrics of defenses whose clean and white-box (at ``white_box_eps``) quality
    are given, with transfer sets at eps 1 and 4 as good as clean."""
    rng = np.random.default_rng(seed)
    variants = [("clean", "clean", "clean", 0.0), ("transfer", "llcm", "T", 1.0)]
    variants += [("transfer", "llcm", "T", 4.0)]
    variants += [("white-box", "apgd", "T", eps) for eps in white_box_eps]
    records, metrics = [], []
    for defense, (clean, attacked) in qualities.items():
        for threat, attack, source, eps in variants:
            counts = _counts(rng, n_images, attacked if threat == "white-box" else clean)
            frame = pd.DataFrame(counts, columns=COUNT_COLUMNS)
            frame = frame.assign(
                defense=defense, subset="s", threat=threat, attack=attack, source=source, eps=eps
            )
            records.append(frame.assign(image=range(n_images)))
            pooled = counts.sum(0)
            iou = pooled[:NUM_CLASSES] / pooled[NUM_CLASSES : 2 * NUM_CLASSES]
            metrics.append(
                {
                    "defense": defense,
                    "subset": "s",
                    "threat": threat,
                    "attack": attack,
                    "source": source,
                    "eps": eps,
                    "miou": 100 * iou.mean(),
                    "q": np.nan,
                }
            )
    records = pd.concat(records, ignore_index=True)
    metrics = pd.concat([pd.DataFrame(metrics), worst_case_rows(records)], ignore_index=True)
    return metrics, records


def test_identical_defenses_tie_and_a_clearly_different_pair_does_not():
    metrics, records = _run({"T": (0.6, 0.3), "good": (0.6, 0.5)})
    twin_metrics = metrics[metrics["defense"] == "T"].assign(defense="twin")
    twin_records = records[records["defense"] == "T"].assign(defense="twin")
    metrics = pd.concat([metrics, twin_metrics], ignore_index=True)
    records = pd.concat([records, twin_records], ignore_index=True)
    ranking = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s")
    board = ranking.board
    assert list(board.index) == ["good", "T", "twin"]
    assert list(board["tie"]) == ["", "", "="] and list(board["rank"]) == ["1", "2", "2"]
    assert board.at["T", "robust mIoU lo"] < board.at["T", "robust mIoU"]
    assert board.at["T", "robust mIoU"] < board.at["T", "robust mIoU hi"]
    sentence = ranking_sentence(ranking, metrics, "s")
    assert "good " in sentence and " > T " in sentence and " = twin " in sentence


def test_a_flagged_defense_never_ranks_above_a_trusted_one():
    metrics, records = _run(
        {"T": (0.6, 0.3), "masked": (0.6, 0.55), "coin": (0.6, 0.5), "odd": (0.6, 0.45)}
    )
    checks = pd.DataFrame(
        [
            {"check": "gradient masking", "subject": "masked", "message": "m"},
            {"check": "randomness", "subject": "coin", "message": "r"},
            {"check": "a check added later", "subject": "odd", "message": "x"},
            {"check": "data", "subject": "/data/root", "message": "d"},
        ]
    )
    ranking = ranked_leaderboard(metrics, records, checks, subset="s")
    board = ranking.board
    assert list(board.index) == ["odd", "T", "masked", "coin"]
    assert list(board["rank"]) == ["1", "2", "apart", "apart"]
    assert list(board["flags"]) == ["a check added later", "", "masked", "random-no-EOT"]
    sentence = ranking_sentence(ranking, metrics, "s")
    apart = sentence.split("ranked apart", 1)[1]
    assert "masked" in apart and "stand-in" in apart and "without EOT" in apart
    assert "odd" not in apart


def test_a_worst_case_still_falling_ranks_after_the_converged_and_before_the_unsound():
    metrics, records = _run(
        {"T": (0.6, 0.3), "falling": (0.6, 0.55), "masked": (0.6, 0.5), "final": (0.6, 0.2)}
    )
    checks = pd.DataFrame(
        [
            {"check": "not converged", "subject": "falling", "message": "f"},
            {"check": "gradient masking", "subject": "masked", "message": "m"},
        ]
    )
    ranking = ranked_leaderboard(metrics, records, checks, subset="s")
    board = ranking.board
    assert list(board.index) == ["T", "final", "falling", "masked"]
    assert list(board["rank"]) == ["1", "2", "3", "apart"]
    sentence = ranking_sentence(ranking, metrics, "s")
    assert sentence.index("final") < sentence.index("still falling") < sentence.index("falling ")
    assert "falling" not in sentence.split("ranked apart", 1)[1]


def _marks(falls: dict[str, dict[float, float]]) -> pd.DataFrame:
    """Worst-case rows at the budget's marks: per defense and eps, how far it fell over the
    second half (from 10 + fell at 1/2 to 10 at 1/1)."""
    rows = []
    for defense, by_eps in falls.items():
        for eps, fell in by_eps.items():
            for mark, miou in (("1/4", 30.0), ("1/2", 10.0 + fell), ("1/1", 10.0)):
                rows.append(
                    {
                        "defense": defense,
                        "subset": "s",
                        "threat": "worst-case-at-mark",
                        "attack": mark,
                        "source": "apgd 5/10",
                        "eps": eps,
                        "miou": miou,
                    }
                )
    return pd.DataFrame(rows)


def test_an_upper_bound_whose_final_eps_alone_beat_a_final_number_ranks_above_it():
    """White-box at eps 1 and 4. 'strong' converged at eps 1 and is still falling at eps 4: even
    at 0 there its mean (about 55 / 2) beats 'final' (about 20, converged at both): it ranks
    above it. 'weak' (about 35 / 2 at best) cannot be shown above 'final': it ranks after."""
    metrics, records = _run(
        {"strong": (0.6, 0.55), "weak": (0.6, 0.35), "final": (0.6, 0.2)},
        white_box_eps=(1.0, 4.0),
    )
    checks = pd.DataFrame(
        [{"check": "not converged", "subject": d, "message": "m"} for d in ("strong", "weak")]
    )
    falls = {"strong": {1.0: 0.0, 4.0: 5.0}, "weak": {1.0: 0.0, 4.0: 5.0}, "final": {4.0: 0.0}}
    ranking = ranked_leaderboard(metrics, records, checks, subset="s", marks=_marks(falls))
    board = ranking.board
    assert list(board.index) == ["strong", "final", "weak"]
    assert list(board["rank"]) == ["1", "2", "3"]
    floor = board["robust mIoU floor"]
    assert floor["strong"] == pytest.approx(board.at["strong", "robust mIoU eps=1"] / 2)
    assert floor["strong"] > board.at["final", "robust mIoU"] > floor["weak"]
    sentence = ranking_sentence(ranking, metrics, "s")
    assert sentence.index("strong") < sentence.index("final") < sentence.index("after those")
    assert "still falling; at least" in sentence.split("final", 1)[0]
    # without the marks nothing is known converged: every floor is 0, both rank after 'final'
    unknown = ranked_leaderboard(metrics, records, checks, subset="s").board
    assert list(unknown.index) == ["final", "strong", "weak"]


def test_a_fall_at_an_eps_out_of_the_headline_leaves_the_headline_final():
    """White-box at eps 4 only: the headline is eps 4. 'weak' is still falling at eps 1 (marks of
    an attack run there alone, out of the headline) and converged at eps 4: its headline is
    final and ranks by value above 'worse'; 'open', still falling at eps 4, ranks after both."""
    metrics, records = _run({"weak": (0.6, 0.4), "worse": (0.6, 0.2), "open": (0.6, 0.5)})
    checks = pd.DataFrame(
        [{"check": "not converged", "subject": d, "message": "m"} for d in ("weak", "open")]
    )
    falls = {"weak": {1.0: 5.0, 4.0: 0.0}, "worse": {4.0: 0.0}, "open": {4.0: 5.0}}
    board = ranked_leaderboard(metrics, records, checks, subset="s", marks=_marks(falls)).board
    assert list(board.index) == ["weak", "worse", "open"]
    assert list(board["tier"]) == [0, 0, 1]
    assert board.at["weak", "flags"] == "not converged"  # the check stays on its row


def test_upper_bounds_after_the_final_numbers_are_apart_only_where_a_floor_beats_a_bound():
    """No final number: 'strong' converged at eps 1 (floor about 55 / 2) beats the bound of
    'weak' (about 10); 'weak' and 'weaker', both still falling everywhere (floor 0), tie though
    their upper bounds are far apart."""
    metrics, records = _run(
        {"strong": (0.6, 0.55), "weak": (0.6, 0.1), "weaker": (0.6, 0.02)},
        white_box_eps=(1.0, 4.0),
    )
    checks = pd.DataFrame(
        [
            {"check": "not converged", "subject": d, "message": "m"}
            for d in ("strong", "weak", "weaker")
        ]
    )
    falls = {d: {1.0: 5.0, 4.0: 5.0} for d in ("weak", "weaker")}
    falls["strong"] = {1.0: 0.0, 4.0: 5.0}
    ranking = ranked_leaderboard(metrics, records, checks, subset="s", marks=_marks(falls))
    board = ranking.board
    assert list(board.index) == ["strong", "weak", "weaker"]
    assert board.at["weak", "robust mIoU"] > board.at["weaker", "robust mIoU"] + 5
    assert list(board["tie"]) == ["", "", "="]
    assert list(board["rank"]) == ["1", "2", "2"]
    falling = ranking_sentence(ranking, metrics, "s").split("after those: ")[1]
    assert falling.startswith("strong ") and " > weak " in falling and " = weaker " in falling


def test_the_clean_cost_against_t_is_shown_and_flagged_beyond_five_points():
    metrics, records = _run({"T": (0.6, 0.1), "cheap": (0.58, 0.1), "costly": (0.4, 0.4)})
    board = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s").board
    drop = board["clean drop vs T"]
    clean = board["clean"]
    assert drop["costly"] == pytest.approx(clean["costly"] - clean["T"])
    assert board.at["costly", "flags"] == f"clean {drop['costly']:+.0f}"
    assert drop["cheap"] > -5 and board.at["cheap", "flags"] == ""
    assert board.at["costly", "rank"] == "1"  # a cost, not an unsound evaluation


def test_without_per_image_counts_the_board_has_no_intervals_and_says_so():
    metrics, records = _run({"T": (0.6, 0.3), "good": (0.6, 0.5)})
    ranking = ranked_leaderboard(metrics, records.drop(columns=["i0"]), NO_CHECKS, subset="s")
    assert "robust mIoU lo" not in ranking.board.columns
    assert any(note.startswith("No intervals: records.csv holds no") for note in ranking.notes)
    assert list(ranking.board.index) == ["good", "T"]


def test_the_headline_names_the_threat_models_of_each_eps():
    metrics, _ = _run({"T": (0.6, 0.3)})
    line = headline(metrics, "s")
    assert "mean over eps 4 of the worst case" in line
    assert "eps 1: transfer only; eps 4: transfer + white-box" in line
    assert (
        "strongest threat model run here (white-box); eps 1 is on the board but not in it" in line
    )


def test_the_robust_mIoU_is_the_mean_over_the_eps_attacked_white_box():
    """At eps 1 only transfer sets ran: the worst case there is the clean mIoU. A defense that
    buys robustness with clean accuracy ranks first on the eps attacked white-box; a mean over
    eps 1 too would rank it last."""
    metrics, records = _run({"T": (0.6, 0.1), "robust": (0.3, 0.2)})
    ranking = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s")
    board = ranking.board
    assert list(board.index) == ["robust", "T"] and list(board["rank"]) == ["1", "2"]
    for defense in ("robust", "T"):
        assert board.at[defense, "robust mIoU"] == board.at[defense, "robust mIoU eps=4"]
        # the interval is the eps-4 one, and eps 1 stays in the table
        assert board.at[defense, "robust mIoU lo"] == board.at[defense, "robust mIoU eps=4 lo"]
        assert board.at[defense, "robust mIoU eps=1"] > board.at[defense, "robust mIoU eps=4"]
    old_mean = board[["robust mIoU eps=1", "robust mIoU eps=4"]].mean(axis=1)
    assert old_mean["T"] > old_mean["robust"]  # what the mean over every eps would have ranked
    assert "mean over eps 4, 95% intervals" in ranking_sentence(ranking, metrics, "s")


def test_the_mean_takes_the_eps_of_the_strongest_threat_model_run():
    """Joint attacks at eps 4 only, transfer at 1 and 4, no white-box: the mean is over eps 4."""
    metrics, records = _run({"T": (0.6, 0.3), "d": (0.6, 0.4)})
    joint_metrics = metrics["threat"] == "white-box"
    metrics.loc[joint_metrics, "threat"] = "joint"
    records.loc[records["threat"] == "white-box", "threat"] = "joint"
    board = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s").board
    assert (board["robust mIoU"] == board["robust mIoU eps=4"]).all()
    assert "mean over eps 4 of" in headline(metrics, "s") and "(joint)" in headline(metrics, "s")


def test_a_defense_without_a_worst_case_at_a_headline_eps_has_no_robust_mIoU():
    """A mean over fewer eps would not compare with the others': it is n/a, not a number."""
    metrics, records = _run({"T": (0.6, 0.3), "d": (0.6, 0.4)})
    gone = (metrics["defense"] == "d") & (metrics["eps"] == 4.0)
    metrics = metrics[~gone]
    records = records[~((records["defense"] == "d") & (records["eps"] == 4.0))]
    ranking = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s")
    assert np.isnan(ranking.board.at["d", "robust mIoU"])
    assert ranking.robust is not None and "d" not in ranking.robust
    assert list(ranking.board.index) == ["T", "d"]
    assert "d n/a" in ranking_sentence(ranking, metrics, "s")


def test_intervals_and_control_lines_find_an_eps_that_is_not_a_round_number():
    """eps 800/255 shows as 3.13725 in its column's name: its intervals are still its own."""
    metrics, records = _run({"T": (0.6, 0.2), "AT": (0.4, 0.45)})
    eps = 800 / 255
    metrics.loc[metrics["eps"] == 4.0, "eps"] = eps
    records.loc[records["eps"] == 4.0, "eps"] = eps
    ranking = ranked_leaderboard(metrics, records, NO_CHECKS, subset="s")
    board, column = ranking.board, f"robust mIoU eps={eps:g}"
    assert board.at["AT", f"{column} lo"] < board.at["AT", column] < board.at["AT", f"{column} hi"]
    assert board.at["AT", "robust mIoU lo"] == board.at["AT", f"{column} lo"]
    (line,) = control_findings(ranking, {"AT": ""}, "s")
    assert f"eps {eps:g}: " in line and "higher, +" in line.split(f"eps {eps:g}: ")[1]
    assert "points [+" in line.split(f"eps {eps:g}: ")[1]  # the paired interval is there


def test_the_pareto_front_keeps_only_undominated_points():
    clean = np.array([40.0, 45.0, 44.0, 30.0, 45.0])
    robust = np.array([23.0, 19.0, 18.0, 20.0, 19.0])
    assert pareto_front(clean, robust).tolist() == [True, True, False, False, True]


def test_checks_of_another_subset_leave_the_row_alone():
    metrics, records = _run({"T": (0.6, 0.3), "d": (0.6, 0.4)})
    checks = pd.DataFrame(
        [
            {
                "check": "adaptive weaker than transfer",
                "subject": "d",
                "message": "",
                "subset": "x",
            },
            {"check": "gradient masking", "subject": "T", "message": "", "subset": ""},
        ]
    )
    board = ranked_leaderboard(metrics, records, checks, subset="s").board
    assert board.at["d", "flags"] == "" and board.at["T", "flags"] == "masked"


def _without_white_box(metrics, records, defenses):
    """The run with the white-box rows of ``defenses`` gone, the worst case recomputed."""
    gone = (records["threat"] == "white-box") & records["defense"].isin(defenses)
    records = records[~gone]
    kept = metrics[~metrics["threat"].isin(["worst-case", "white-box"])]
    white_box = metrics[(metrics["threat"] == "white-box") & ~metrics["defense"].isin(defenses)]
    return pd.concat([kept, white_box, worst_case_rows(records)], ignore_index=True), records


def test_no_surface_is_flagged_only_beside_defenses_that_met_white_box_attacks():
    metrics, records = _run({"T": (0.6, 0.3), "d": (0.6, 0.4), "e": (0.5, 0.4)})
    transfer = _without_white_box(metrics, records, ["T", "d", "e"])
    board = ranked_leaderboard(*transfer, NO_CHECKS, subset="s").board
    assert "apart" not in set(board["rank"]) and "no surface" not in "".join(board["flags"])
    assert "eps 1, 4: transfer only" in headline(transfer[0], "s")
    assert "mean over eps 1, 4 of" in headline(transfer[0], "s")  # no white-box eps: every eps
    assert "not in it" not in headline(transfer[0], "s")
    mixed = _without_white_box(metrics, records, ["T", "e"])
    board = ranked_leaderboard(*mixed, NO_CHECKS, subset="s").board
    assert list(board.index) == ["d", "T", "e"] and list(board["rank"]) == ["1", "apart", "apart"]
    assert list(board["flags"]) == ["", "no surface", "no surface, clean -10"]


def test_the_positive_control_is_compared_with_the_best_other_defense_at_each_eps():
    """AT clearly above the best other sound defense, the vote with AT tied with AT alone, and
    a defense ranked apart never taken as 'the best other'."""
    metrics, records = _run(
        {
            "T": (0.6, 0.2),
            "jpeg": (0.6, 0.3),
            "masked": (0.6, 0.7),
            "AT": (0.4, 0.45),
        }
    )
    vote_metrics = metrics[metrics["defense"] == "AT"].assign(defense="TAT-vote")
    vote_records = records[records["defense"] == "AT"].assign(defense="TAT-vote")
    metrics = pd.concat([metrics, vote_metrics], ignore_index=True)
    records = pd.concat([records, vote_records], ignore_index=True)
    checks = pd.DataFrame([{"check": "gradient masking", "subject": "masked", "message": "m"}])
    ranking = ranked_leaderboard(metrics, records, checks, subset="s")
    lines = control_findings(ranking, {"AT": "", "TAT-vote": "AT"}, "s")
    at, vote = lines
    assert at.startswith("AT (s; rank 1 of 5, flags: clean -20;")  # first at eps 4
    assert "eps 4: " in at and "against the best other defense, jpeg " in at
    assert "higher, +" in at.split("eps 4: ")[1]
    assert "masked" not in at  # ranked apart: its number is not evidence
    assert "against AT alone: a tie, +0.0 points [+0.0, +0.0]" in vote
    assert control_findings(ranking, {"absent": ""}, "s") == []


def test_labels_of_a_cluster_of_defenses_do_not_cover_each_other():
    """Six defenses within 1.5 points of each other (the votes and T of the default run): each
    label is placed where no other label's text is."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from bench.report.plots import _label_points

    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = np.array(
        [[44.8, 4.7], [44.8, 4.3], [44.8, 4.2], [44.8, 3.9], [44.6, 3.8], [44.8, 3.5]]
    )
    points = np.concatenate([points, [[19.6, 12.1], [30.0, 3.2], [28.0, 2.4]]])
    ax.scatter(points[:, 0], points[:, 1])
    fig.tight_layout()
    labels = [f"defense {i} (not converged)" for i in range(len(points))]
    _label_points(ax, points, labels)
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text() in labels]
    assert sorted(t.get_text() for t in texts) == sorted(labels)  # one label each, none left over
    boxes = []
    for text in texts:
        text.update_positions(renderer)
        boxes.append(Text.get_window_extent(text, renderer))
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])
    plt.close(fig)


def _synthetic(
    worst: dict[str, tuple[float, float]],
    falling: tuple[str, ...],
    falls: dict[str, dict[float, float]] | None = None,
):
    """Metrics with the given worst case at eps 1 and 4 (both attacked white-box; NaN: no row),
    no per-image counts (ties by the 1-point rule), ``falling`` flagged and, unless ``falls``
    gives the marks, still falling at eps 4 and converged at eps 1 by their marks, every other
    defense converged at both."""
    rows = []
    for defense, by_eps in worst.items():
        rows.append((defense, "clean", "clean", "clean", 0.0, 60.0))
        for eps, miou in zip((1.0, 4.0), by_eps):
            rows.append((defense, "white-box", "apgd", "T", eps, miou))
            if not np.isnan(miou):
                rows.append((defense, "worst-case", "worst-case", "worst-case", eps, miou))
    metrics = pd.DataFrame(rows, columns=["defense", "threat", "attack", "source", "eps", "miou"])
    metrics = metrics.assign(subset="s", q=np.nan)
    checks = pd.DataFrame(
        [{"check": "not converged", "subject": d, "message": "m"} for d in falling]
    )
    if falls is None:
        falls = {d: {1.0: 0.0, 4.0: 5.0 if d in falling else 0.0} for d in worst}
    records = pd.DataFrame(columns=["subset"])
    return ranked_leaderboard(metrics, records, checks, subset="s", marks=_marks(falls)), metrics


def test_a_final_number_above_a_placed_upper_bound_ties_with_it_unless_known_higher():
    """'up' (55 where converged, so at least 27.5) beats 'low' (10) but not 'high' (30); above
    it, 'high' is not known higher than an upper bound of 55: a tie, rank shared."""
    ranking, metrics = _synthetic(
        {"high": (30, 30), "up": (55, 55), "low": (10, 10)}, falling=("up",)
    )
    board = ranking.board
    assert list(board.index) == ["high", "up", "low"]
    assert list(board["tie"]) == ["", "=", ""] and list(board["rank"]) == ["1", "1", "3"]
    assert "high 30.0 = up 55.0 (still falling; at least 27.5) > low 10.0" in ranking_sentence(
        ranking, metrics, "s"
    )
    # an upper bound below 'high' by more than the noise is known lower: '>'
    ranking, _ = _synthetic({"high": (30, 30), "up": (28, 24), "low": (10, 10)}, falling=("up",))
    assert list(ranking.board["tie"]) == ["", "", ""]
    assert list(ranking.board.index) == ["high", "up", "low"]


def test_an_upper_bound_never_splits_tied_final_numbers():
    """'a' and 'b' tie (0.7 apart); 'up' (at least 30.9) beats 'b' but not 'a': it goes after
    both, not between them."""
    ranking, _ = _synthetic(
        {"a": (30.5, 30.5), "b": (29.8, 29.8), "up": (61.8, 61.8)}, falling=("up",)
    )
    board = ranking.board
    assert list(board.index) == ["a", "b", "up"]
    assert list(board["rank"]) == ["1", "1", "3"]


def test_two_upper_bounds_placed_above_one_final_number_tie_unless_known():
    """'u1' (at least 29.5) is not known above 'u2' (up to 49): a tie; both beat 'final'."""
    ranking, _ = _synthetic(
        {"u1": (59, 59), "u2": (49, 49), "final": (10, 10)}, falling=("u1", "u2")
    )
    board = ranking.board
    assert list(board.index) == ["u1", "u2", "final"]
    assert list(board["tie"]) == ["", "=", ""] and list(board["rank"]) == ["1", "1", "3"]


def test_a_defense_without_a_headline_is_never_placed_above_a_final_number():
    """'gone' has no worst case at eps 4 (n/a): no floor, though eps 1 alone would give 27.5."""
    ranking, metrics = _synthetic({"gone": (55, np.nan), "final": (10, 10)}, falling=("gone",))
    board = ranking.board
    assert np.isnan(board.at["gone", "robust mIoU floor"])
    assert list(board.index) == ["final", "gone"]
    assert "gone n/a" in ranking_sentence(ranking, metrics, "s")
    # after another upper bound (at least 2, bound 6) it is not tied: n/a ties with nothing
    ranking, _ = _synthetic(
        {"gone": (55, np.nan), "final": (10, 10), "up": (4, 8)}, falling=("gone", "up")
    )
    assert list(ranking.board.index) == ["final", "up", "gone"]
    assert list(ranking.board["tie"]) == ["", "", ""]
    assert list(ranking.board["rank"]) == ["1", "2", "3"]


def test_a_flagged_defense_without_marks_at_a_headline_eps_is_an_upper_bound():
    """'d' is flagged, converged at eps 1 and has no marks at eps 4 (both in the headline):
    nothing shows eps 4 converged, so its robust mIoU is an upper bound, eps 4 counted as 0 in
    its floor."""
    falls = {"d": {1.0: 0.0}, "final": {1.0: 0.0, 4.0: 0.0}}
    ranking, _ = _synthetic({"d": (40, 40), "final": (45, 45)}, falling=("d",), falls=falls)
    board = ranking.board
    assert list(board.index) == ["final", "d"]
    assert list(board["tier"]) == [0, 1]
    assert board.at["d", "robust mIoU floor"] == pytest.approx(20.0)


def test_a_fall_with_a_missing_mark_is_not_converged_and_fires_no_check():
    """Without the mark at half the budget the fall is unknown: not converged (the floor counts
    that eps as 0), and the check, which needs a fall it can measure, stays quiet."""
    from bench.report.tables import budget_fall, convergence_checks

    marks = _marks({"d": {4.0: 0.0, 10.0: 3.0}})
    marks = marks[~((marks["eps"] == 4.0) & (marks["attack"] == "1/2"))]
    fall = budget_fall(marks).set_index("eps")
    assert np.isnan(fall.at[4.0, "fell"]) and not fall.at[4.0, "converged"]
    assert fall.at[10.0, "fell"] == 3.0 and not fall.at[10.0, "converged"]
    assert [c["message"] for c in convergence_checks(marks)] == [
        "d on s at eps 10: worst case fell by 3.00 points over the second half of the budget: an "
        "upper bound still falling"
    ]
