"""The findings of the report: named thresholds, ties and untrained runs are never "holds"."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.config import apply_overrides, load_config
from bench.metrics import TIE_POINTS
from bench.report.findings import UNTRAINED_MIOU, compare, findings
from bench.variants import variants


def _metrics(values: dict[str, float]) -> pd.DataFrame:
    """A metrics table where every defense scores ``values[defense]`` on every variant."""
    rows = []
    for subset in ("mini_val", "mini_test"):
        for v in variants((1.0, 10.0)):
            for defense, miou in values.items():
                rows.append(
                    {
                        "defense": defense,
                        "subset": subset,
                        "threat": v.threat,
                        "attack": v.attack,
                        "source": v.source,
                        "eps": v.eps,
                        "miou": miou,
                        "q": 100.0,
                    }
                )
    return pd.DataFrame(rows)


CONFIG = apply_overrides(load_config("smoke"), ["sweep.baseline=false"])
NO_DETECTIONS = pd.DataFrame(
    columns=["defense", "subset", "threat", "attack", "source", "eps", "d_ae"]
)


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        (50, 40, "holds"),
        (40, 50, "does not hold"),
        (50, 50 - TIE_POINTS, "tie"),
        (0.1, 0.1, "tie"),
        (float("nan"), 3, "not measured"),
    ],
)
def test_compare_never_says_holds_on_a_tie(a, b, verdict):
    assert compare(a, b).startswith(verdict)


def test_an_untrained_run_is_not_judged():
    lines = findings(
        CONFIG, _metrics({"T": 0.1, "S": 0.1, "A": 0.1, "TA-vote": 0.1}), NO_DETECTIONS
    )
    assert len(lines) == 1 and lines[0].startswith("Not judged")
    assert "holds" not in lines[0] and f"below {UNTRAINED_MIOU:g}%" in lines[0]


def test_a_tie_between_trained_networks_is_called_a_tie():
    lines = findings(
        CONFIG, _metrics({"T": 40.0, "S": 40.5, "A": 40.0, "TA-vote": 40.0}), NO_DETECTIONS
    )
    assert lines[0].startswith("T beats S on clean data: tie")
    assert all(": holds" not in line for line in lines[:1])


def test_a_clear_win_holds():
    lines = findings(
        CONFIG, _metrics({"T": 60.0, "S": 40.0, "A": 45.0, "TA-vote": 60.0}), NO_DETECTIONS
    )
    assert lines[0].startswith("T beats S on clean data: holds")
    assert any(
        line.startswith("A is more robust than S to S-AEs (eps 10): holds") for line in lines
    )
