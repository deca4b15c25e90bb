"""The plot of robust mIoU against the attacks' iterations: drawn from the mark rows only."""

from __future__ import annotations

import pandas as pd

from bench.report.plots import plot_convergence
from bench.variants import MARK_NAMES, WORST_CASE, WORST_CASE_AT_MARK


def _rows(threat: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "defense": d,
                "subset": "mini_test",
                "threat": threat,
                "attack": mark,
                "source": f"apgd-ce {i}/4",
                "eps": eps,
                "miou": miou - i,
            }
            for d, miou in (("T", 10.0), ("jpeg", 20.0))
            for eps in (4.0, 10.0)
            for i, mark in enumerate(MARK_NAMES, 1)
        ]
    )


def test_drawn_from_mark_rows(tmp_path):
    assert plot_convergence(_rows(WORST_CASE_AT_MARK), "mini_test", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_drawn_without_marks(tmp_path):
    assert not plot_convergence(_rows(WORST_CASE), "mini_test", tmp_path / "c.png")
    assert not plot_convergence(_rows(WORST_CASE_AT_MARK), "mini_val", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
