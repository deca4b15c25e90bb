"""``bench run`` end to end on the smoke preset: every stage, caching, report, plug-ins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_defense.py"


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("smoke")
    run_dir = base / "run"
    output = _run(
        "run", "--preset", "smoke", "--run", str(run_dir), "--set", f"data.root={base / 'data'}",
        "--device", "cpu", "--quiet", "--defense", f"{EXAMPLE}:PixelVote",
    )
    return run_dir, output


def test_every_stage_reports_one_line(smoke_run):
    _, output = smoke_run
    for stage in ("data", "networks", "attacks", "evaluate", "report"):
        assert f"[{stage}]" in output


def test_metrics_cover_every_defense_and_variant(smoke_run):
    run_dir, _ = smoke_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    defenses = {"T", "S", "A", "TS-vote", "TA-vote", "jpeg", "spatial-smoothing",
                "feature-squeezing", "pixel-vote", "A_all_a0.6_e1_bs4"}
    assert set(metrics["defense"]) == defenses
    # clean + {T, S} x {1, 10} on mini_val and mini_test, one row each
    assert len(metrics) == len(defenses) * 5 * 2
    assert metrics[["defense", "subset", "source", "eps"]].duplicated().sum() == 0
    clean = metrics[metrics.source == "clean"]
    assert (clean["q"][clean["miou"] > 0] == 100).all()  # Q is NaN when clean mIoU is 0
    t_adv = metrics[(metrics.defense == "T") & (metrics.source == "T") & (metrics.subset == "mini_val")]
    t_clean = clean[(clean.defense == "T") & (clean.subset == "mini_val")]["miou"].iloc[0]
    assert t_adv["q"].tolist() == pytest.approx((100 * t_adv["miou"] / t_clean).tolist())
    records = pd.read_csv(run_dir / "records.csv")
    votes = records[records.defense == "TA-vote"]
    assert len(votes) == 5 * (2 + 4) and votes["d_ae"].between(-1, 1).all()


def test_report_tables_and_plots(smoke_run):
    run_dir, _ = smoke_run
    report = (run_dir / "report.md").read_text()
    for table in ("Table 1", "Table 4", "Table 5", "Table 6", "Table 7", "Leaderboard"):
        assert table in report
    assert "Table 2" not in report  # no layer sweep in the smoke preset
    for name in ("table1", "table7", "leaderboard_mini_test"):
        for ext in ("csv", "md", "tex"):
            assert (run_dir / "tables" / f"{name}.{ext}").stat().st_size > 0
    for plot in ("miou_vs_eps_mini_test.png", "d_ae_mini_test.png", "qualitative.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    table1 = pd.read_csv(run_dir / "tables" / "table1.csv", header=[0, 1], index_col=0)
    assert table1.loc["T", ("clean", "paper")] == pytest.approx(75.43)


def test_rerun_reuses_everything_and_report_needs_only_metrics(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    output = _run(
        "run", "--preset", "smoke", "--run", str(run_dir), "--set",
        f"data.root={run_dir.parent / 'data'}", "--device", "cpu", "--quiet",
        "--defense", f"{EXAMPLE}:PixelVote",
    )
    assert output.count("(cached)") == 4  # T, S, A, A_all
    assert "trained" not in output
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("models", "aes.h5", "tables", "plots", "report.md"))
    _run("report", "--run", str(copy))
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text()


def test_shipped_reference_checkpoints_are_used_when_the_recipe_matches(smoke_run, tmp_path, monkeypatch):
    import bench.stages

    run_dir, _ = smoke_run
    reference = tmp_path / "reference" / "smoke"
    reference.mkdir(parents=True)
    for name in ("T.pt", "T.json", "S.pt", "S.json"):
        shutil.copy(run_dir / "models" / name, reference / name)
    monkeypatch.setattr(bench.stages, "REFERENCE_DIR", tmp_path / "reference")
    data = f"data.root={run_dir.parent / 'data'}"
    output = _run("train", "--preset", "smoke", "--run", str(tmp_path / "new"), "--set", data, "--quiet")
    assert output.count("shipped reference checkpoint") == 2
    assert (tmp_path / "new/models/T.pt").read_bytes() == (run_dir / "models/T.pt").read_bytes()
    # another recipe: the reference does not apply, S is trained
    output = _run("train", "--preset", "smoke", "--run", str(tmp_path / "other"), "--set", data,
                  "--set", "pretrain.lr=0.001", "--net", "S", "--quiet")
    assert "trained in" in output
