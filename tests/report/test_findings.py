"""The findings of the report: named thresholds, ties and untrained runs are never "holds"."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.config import apply_overrides, load_config
from bench.metrics import TIE_POINTS
from bench.report.findings import UNTRAINED_MIOU, adaptive_findings, compare, findings
from bench.report.report import _paper_tables, has_data
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


APGD_ONLY = apply_overrides(
    load_config("smoke"),
    [
        "attack.suite=[{name='apgd', options={loss='ce', n_iter=3}, "
        "threat_models=['transfer', 'white-box']}]"
    ],
)


def _apgd_only_metrics() -> pd.DataFrame:
    """T and S (no A, no vote) on clean images and on APGD's transfer and white-box sets."""
    rows = []
    for subset in ("mini_val", "mini_test"):
        for net, miou in (("T", 60.0), ("S", 40.0)):
            rows.append(("clean", "clean", "clean", 0.0, net, subset, miou))
            for eps in (1.0, 10.0):
                rows.append(("transfer", "apgd-ce", net, eps, net, subset, 10.0))
                rows.append(("white-box", "apgd-ce", net, eps, net, subset, 5.0))
    columns = ["threat", "attack", "source", "eps", "defense", "subset", "miou"]
    return pd.DataFrame(rows, columns=columns).assign(q=50.0)


def test_findings_need_their_inputs_in_the_run():
    assert APGD_ONLY.attack.paper_attack is None
    metrics = _apgd_only_metrics()
    lines = findings(APGD_ONLY, metrics, NO_DETECTIONS)
    lines += adaptive_findings(APGD_ONLY, metrics, metrics.iloc[:0], "mini_test")
    assert lines[0].startswith("T beats S on clean data: holds")
    text = " ".join(lines)
    assert "LLCM" not in text and "nan" not in text and "not measured" not in text
    assert "A is more robust" not in text and "T/A vote" not in text  # neither A nor a vote ran


def test_a_paper_table_without_numbers_of_the_run_is_omitted():
    config = apply_overrides(load_config("smoke"), ["sweep.baseline=false"])
    tables = _paper_tables(config, _apgd_only_metrics(), NO_DETECTIONS)
    assert not has_data(tables["table1"][1])  # no LLCM transfer rows, clean only in the paper's
    assert not has_data(tables["table4"][1]) and not has_data(tables["table6"][1])
    metrics = _metrics({"T": 60.0, "S": 40.0})
    assert has_data(_paper_tables(config, metrics, NO_DETECTIONS)["table1"][1])
