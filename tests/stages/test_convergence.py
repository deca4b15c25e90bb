"""The worst case at the marks of the attacks' budgets, and the check that flags a worst case
still falling: by hand, and on the reference network with a budget cut to 2 iterations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from attacks import APGD
from attacks.objectives import Ensemble
from bench.data.labels import NUM_CLASSES
from bench.metrics import image_counts
from bench.report.tables import convergence_checks
from bench.stages.results import mark_worst_case_rows
from bench.variants import WORST_CASE_AT_MARK

ROW = {"defense": "D", "subset": "mini_test", "eps": 4.0}


def _records(threat: str, attack: str, source: str, counts: np.ndarray) -> pd.DataFrame:
    """Per-image records of one variant from (N, 2C + 2) counts (``image_counts``)."""
    columns = (
        [f"i{c}" for c in range(NUM_CLASSES)]
        + [f"u{c}" for c in range(NUM_CLASSES)]
        + ["correct", "valid"]
    )
    frame = pd.DataFrame(counts, columns=columns)
    return frame.assign(**ROW, threat=threat, attack=attack, source=source, image=range(len(frame)))


def _counts(inter: int, union: int, n: int = 2) -> np.ndarray:
    """n images with class 0 only: I and U of class 0."""
    counts = np.zeros((n, 2 * NUM_CLASSES + 2), dtype=np.int64)
    counts[:, 0], counts[:, NUM_CLASSES], counts[:, -1] = inter, union, union
    return counts


def _marks(inters: list[int], union: int, n: int = 2) -> np.ndarray:
    marks = np.zeros((n, len(inters), 2, NUM_CLASSES), dtype=np.int64)
    for m, inter in enumerate(inters):
        marks[:, m, 0, 0], marks[:, m, 1, 0] = inter, union
    return marks


@pytest.mark.parametrize(
    ("inters", "expected", "fires"),
    [([8, 4, 1], [50.0, 40.0, 10.0], True), ([8, 1, 1], [50.0, 10.0, 10.0], False)],
    ids=["still-falling", "converged"],
)
def test_worst_case_at_marks_by_hand(inters, expected, fires):
    # transfer set (no marks): I 5 / U 10 per image, mIoU 50 at every mark; the white-box set
    # at its marks: I 8, 4, 1 (or 8, 1, 1) of U 10, its last evaluated counts I 1 / U 10
    records = pd.concat(
        [
            _records("transfer", "llcm", "T", _counts(5, 10)),
            _records("white-box", "apgd-ce", "D", _counts(1, 10)),
        ],
        ignore_index=True,
    )
    marked = {("mini_test", "white-box", "apgd-ce", "D", 4.0): (_marks(inters, 10), (1, 2, 4))}
    rows = mark_worst_case_rows(records, marked)
    assert list(rows["threat"]) == [WORST_CASE_AT_MARK] * 3
    assert list(rows["attack"]) == ["1/4", "1/2", "1/1"]
    assert rows["miou"].tolist() == pytest.approx(expected)
    assert rows["source"].iloc[1] == "apgd-ce 2/4"
    findings = convergence_checks(rows)
    assert len(findings) == fires
    if fires:
        assert findings[0]["check"] == "not converged" and findings[0]["subject"] == "D"
        assert (
            "worst case fell by 30.00 points over the second half of the budget: an upper "
            in (findings[0]["message"])
        )


@pytest.mark.parametrize(
    ("marks", "fires"),
    [
        ((9.36, 9.26, 8.47), True),  # a plateau, then a fall: 0.79 after 0.10 (TAT-vote x 10)
        ((17.00, 16.01, 15.51), False),  # 0.50 after 0.99: slowing down (AT x 10)
        ((2.00, 1.60, 1.00), False),  # 0.60 after 0.40: slower per iteration (twice as many)
        ((1.41, 1.41, 1.00), False),  # 0.41, not slowing, but at most half a point
        ((5.00, 4.00, 2.90), True),  # more than 1 point, however it slowed
    ],
)
def test_a_fall_that_is_not_slowing_down_is_not_converged(marks, fires):
    from bench.report.tables import budget_fall

    rows = _mark_rows(marks)
    assert bool(budget_fall(rows)["converged"].iloc[0]) is not fires
    findings = convergence_checks(rows)
    assert len(findings) == fires
    if fires and marks[1] - marks[2] <= 1:
        assert "no slower than the 0.10 over the quarter before it" in findings[0]["message"]


def _mark_rows(marks, sources=("s", "s", "s")) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {**ROW, "threat": WORST_CASE_AT_MARK, "attack": name, "source": source, "miou": miou}
            for name, miou, source in zip(("1/4", "1/2", "1/1"), marks, sources)
            if not np.isnan(miou)
        ]
    )


def test_the_pace_is_counted_from_the_marks_iterations():
    """CosPGD x 10 marks at 3, 5 and 10 iterations: 0.65 over 5 iterations after 0.3 over 2 is
    slower per iteration (converged); over spans of 25 and 50 iterations it is not."""
    from bench.report.tables import budget_fall

    ten = ("cospgd 3/10", "cospgd 5/10", "cospgd 10/10")
    hundred = ("cospgd 25/100", "cospgd 50/100", "cospgd 100/100")
    marks = (2.0, 1.7, 1.05)
    assert budget_fall(_mark_rows(marks, ten))["converged"].iloc[0]
    assert not budget_fall(_mark_rows(marks, hundred))["converged"].iloc[0]
    # several attacks: the strictest spacing counts (red_eps: 70, 80, 100 -> 2)
    mixed = tuple(f"{a}, apgd-js-red {k}/100" for a, k in zip(ten, (70, 80, 100)))
    assert not budget_fall(_mark_rows(marks, mixed))["converged"].iloc[0]


def test_a_fall_without_the_quarter_mark_says_its_pace_is_unknown():
    (finding,) = convergence_checks(_mark_rows((np.nan, 1.7, 1.0)))
    assert "whether it was slowing down is unknown" in finding["message"]


def test_no_mark_rows_without_marked_sets():
    records = _records("transfer", "llcm", "T", _counts(5, 10))
    assert mark_worst_case_rows(records, {}).empty


def _fell_flagged(reference, n_iter: int, eps: float) -> bool:
    """APGD-CE on a surface of the reference S alone; its marks and final images as the
    evaluation would see them; whether the convergence check fires."""
    net, images, labels = reference[1], reference[2], reference[3]
    surface = Ensemble({"S": net}, decide=lambda maps: maps["S"])
    result = APGD(n_iter=n_iter).run(surface, images, eps=eps, labels=labels)
    with torch.no_grad():
        final = image_counts(net(result.images[""].float()).argmax(1), labels).numpy()
    records = _records("white-box", "apgd-ce", "S", final)
    key = ("mini_test", "white-box", "apgd-ce", "S", 4.0)
    rows = mark_worst_case_rows(records, {key: (result.marks[""].numpy(), result.mark_iterations)})
    return bool(convergence_checks(rows))


def test_flag_fires_on_a_budget_cut_to_2_iterations_and_not_on_a_converged_case(reference):
    assert _fell_flagged(reference, 2, 4.0)
    assert not _fell_flagged(reference, 20, 16.0)


def test_bfloat16_warns_only_where_the_cpu_lacks_it(tmp_path, monkeypatch):
    from bench.config import load_config
    from bench.devices import native_bfloat16
    from bench.stages.run import precision_warnings

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    cpu = torch.device("cpu")
    assert native_bfloat16(cpu, str(with_bf16)) is True
    assert native_bfloat16(cpu, str(without)) is False
    assert native_bfloat16(cpu, str(tmp_path / "absent")) is None
    assert native_bfloat16(torch.device("meta"), str(with_bf16)) is None

    full, toy = load_config("toy-full"), load_config("toy")
    tags = [s.tag for s in full.attack.suite if s.options.get("precision") == "bfloat16"]
    assert len(tags) == 5  # every attack of toy-full that sees the defense
    monkeypatch.setattr("bench.stages.run.native_bfloat16", lambda device: False)
    (warning,) = precision_warnings(full, cpu)
    assert "apgd-js-red" in warning and 'precision = "float32"' in warning
    assert precision_warnings(toy, cpu) == []  # toy computes in float32
    monkeypatch.setattr("bench.stages.run.native_bfloat16", lambda device: True)
    assert precision_warnings(full, cpu) == []
