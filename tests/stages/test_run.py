"""``bench run`` end to end on the smoke preset: every stage, caching, report, plug-ins."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from bench.config import read_run_config

from smokerun import EXAMPLE, invoke, published, run_args


def test_every_stage_reports_one_line(smoke_run):
    _, output = smoke_run
    for stage in ("data", "networks", "attacks", "evaluate", "report"):
        assert f"[{stage}]" in output


def test_metrics_cover_every_defense_variant_and_threat_model(smoke_run):
    run_dir, _ = smoke_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    surfaces = {
        "T",
        "S",
        "A",
        "TS-vote",
        "TA-vote",
        "TA-vote-disagree",
        "AT",
        "TAT-vote",
        "jpeg",
        "spatial-smoothing",
        "feature-squeezing",
        "pixel-vote",
    }
    defenses = surfaces | {"A_all_a0.6_e1_bs4"}
    assert set(metrics["defense"]) == defenses
    keys = ["defense", "subset", "threat", "attack", "source", "eps"]
    assert metrics[keys].duplicated().sum() == 0
    # clean + LLCM transfer from T and S at eps 1 and 10, on both subsets: every defense
    paper = metrics[metrics.threat.isin(["clean", "transfer"])]
    assert len(paper) == len(defenses) * 5 * 2
    # APGD at eps 10 on mini_test: joint for all but the sweep's student, white-box for the
    # defenses with an attack surface (the example plug-in exposes one)
    joint = metrics[metrics.threat == "joint"]
    assert set(joint["defense"]) == defenses - {"A_all_a0.6_e1_bs4"}
    assert set(joint["source"]) == {"T+S"} and set(joint["eps"]) == {10.0}
    white = metrics[metrics.threat == "white-box"]
    assert set(white["defense"]) == surfaces
    assert white.set_index("defense").loc["jpeg", "source"] == "jpeg(T)"
    # the worst case per defense, subset and eps is never above any attack's mIoU
    worst = metrics[metrics.threat == "worst-case"]
    assert len(worst) == len(defenses) * 4
    attacked = metrics[~metrics.threat.isin(["clean", "worst-case", "worst-case-at-mark"])]
    lowest = attacked.groupby(["defense", "subset", "eps"])["miou"].min()
    worst_miou = worst.set_index(["defense", "subset", "eps"])["miou"]
    assert (worst_miou <= lowest.reindex(worst_miou.index) + 1e-9).all()
    clean = metrics[metrics.threat == "clean"]
    assert (clean["q"][clean["miou"] > 0] == 100).all()  # Q is NaN when clean mIoU is 0
    records = pd.read_csv(run_dir / "records.csv")
    votes = records[(records.defense == "TA-vote") & records.threat.isin(["clean", "transfer"])]
    assert len(votes) == 5 * (2 + 4) and votes["d_ae"].between(-1, 1).all()
    assert (records["correct"] <= records["valid"]).all()


def test_config_records_what_ran_without_machine_paths(smoke_run):
    run_dir, _ = smoke_run
    text = (run_dir / "config.toml").read_text()
    assert 'root = "../data"' in text and str(run_dir.parent) not in text
    config = read_run_config(run_dir)
    assert config.evaluate.defenses[-1].spec.endswith(
        "my_defense.py:PixelVote"
    )  # --defense recorded
    report = (run_dir / "report.md").read_text()
    assert "toy city (seed 0) at 32x64" in report and str(run_dir.parent) not in report


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
    assert not list(run_dir.parent.glob(".*staging*"))  # the staging folder is gone


def test_rerun_reuses_everything_and_report_needs_only_published_rows(
    smoke_run, smoke_copy, tmp_path
):
    assert ": toy city generated and checked" in smoke_run[1]  # the first run made the toy city
    output = invoke(*run_args(smoke_copy)).output
    assert "toy city generated" not in output and ": checked (" in output
    assert output.count("(cached)") == 5  # T, S, A, A_all, AT
    assert "trained" not in output and "0 AE sets" not in output
    copy = tmp_path / "copy"
    shutil.copytree(
        smoke_copy,
        copy,
        ignore=shutil.ignore_patterns("models", "aes", "cache", "tables", "plots", "report.md"),
    )
    invoke("report", "--out", copy)
    assert (copy / "report.md").read_text() == (smoke_copy / "report.md").read_text()


def test_results_the_config_no_longer_asks_for_never_reach_the_tables(smoke_copy):
    invoke(*run_args(smoke_copy, "--set", "attack.eps=[1]", "--set", "detect.delta=0.2"))
    metrics = pd.read_csv(smoke_copy / "metrics.csv")
    transfer = metrics[metrics.threat == "transfer"]
    assert set(transfer["eps"]) == {1.0}  # LLCM at eps 10 dropped; APGD keeps its own eps 10
    report = (smoke_copy / "report.md").read_text()
    assert "eps=10 T-AE" not in report and "delta 0.2" in report
    board = pd.read_csv(smoke_copy / "tables" / "leaderboard_mini_test.csv", index_col=0)
    assert not [c for c in board.columns if "eps=10 T-AE" in c]
    cached = pd.read_csv(smoke_copy / "cache" / "metrics.csv")
    assert 10.0 in set(cached[cached.threat == "transfer"]["eps"])  # kept for when it is back
    output = invoke(*run_args(smoke_copy)).output  # eps 10 back: nothing is recomputed
    assert "(cached)" in output
    metrics = pd.read_csv(smoke_copy / "metrics.csv")
    assert set(metrics[metrics.threat == "transfer"]["eps"]) == {1.0, 10.0}


def test_changed_data_is_noticed(smoke_copy):
    data = smoke_copy.parent / "data-edited"
    shutil.copytree(smoke_copy.parent / "data", data)
    args = run_args(smoke_copy)
    args[args.index(f"data.root={smoke_copy.parent / 'data'}")] = f"data.root={data}"
    invoke(*args)  # another copy of the same toy city: the same data, nothing recomputed
    before = pd.read_csv(smoke_copy / "metrics.csv").set_index(
        ["defense", "subset", "source", "eps"]
    )
    image = next((data / "leftImg8bit" / "val" / "lindau").glob("*.png"))
    from PIL import Image

    pixels = np.asarray(Image.open(image)).copy()
    pixels[:, : pixels.shape[1] // 2] = 255 - pixels[:, : pixels.shape[1] // 2]
    Image.fromarray(pixels).save(image)
    output = invoke(*args).output
    assert "(cached)" in output  # T and S learn from train: unchanged
    after = pd.read_csv(smoke_copy / "metrics.csv").set_index(
        ["defense", "subset", "source", "eps"]
    )
    assert (
        before.loc[("T", "mini_test", "clean", 0.0), "key"]
        == after.loc[("T", "mini_test", "clean", 0.0), "key"]
    )
    assert (
        before.loc[("T", "mini_val", "clean", 0.0), "key"]
        != after.loc[("T", "mini_val", "clean", 0.0), "key"]
    )  # mini_val re-evaluated
    assert (
        before.loc[("T", "mini_val", "S", 10.0), "key"]
        != after.loc[("T", "mini_val", "S", 10.0), "key"]
    )  # its AE sets rebuilt


def test_shipped_reference_checkpoints_are_used_when_the_recipe_matches(
    smoke_run, tmp_path, monkeypatch
):
    import bench.stages.networks

    run_dir, _ = smoke_run
    reference = tmp_path / "reference" / "smoke"
    reference.mkdir(parents=True)
    student = "A_down2_a0.6_e1_bs4"  # the smoke preset's adaptive student
    for name in ("T", "S", student):
        for suffix in (".pt", ".json"):
            shutil.copy(run_dir / "models" / f"{name}{suffix}", reference / f"{name}{suffix}")
    monkeypatch.setattr(bench.stages.networks, "REFERENCE_DIR", tmp_path / "reference")
    data = f"data.root={run_dir.parent / 'data'}"
    output = invoke(
        "train",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "new",
        "--set",
        data,
        "--net",
        "T,S,A",
        "--quiet",
    ).output
    assert output.count("shipped reference checkpoint") == 3
    for name in ("T", "S", student):
        shipped = (run_dir / "models" / f"{name}.pt").read_bytes()
        assert (tmp_path / "new/models" / f"{name}.pt").read_bytes() == shipped
    # a student of other settings is finetuned, not taken from the reference
    output = invoke(
        "train",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "new",
        "--set",
        data,
        "--set",
        "finetune.alpha=0.5",
        "--net",
        "A",
        "--quiet",
    ).output
    assert "shipped reference checkpoint" not in output and "trained in" in output
    assert (tmp_path / "new/config.toml").is_file()  # a new run directory gets train's config
    # another recipe: the reference does not apply, S is trained
    output = invoke(
        "train",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "other",
        "--set",
        data,
        "--set",
        "pretrain.lr=0.001",
        "--net",
        "S",
        "--quiet",
    ).output
    assert "trained in" in output


def test_train_keeps_a_finished_runs_config(smoke_copy):
    before = published(smoke_copy)
    data = f"data.root={smoke_copy.parent / 'data'}"
    invoke(
        "train",
        "--preset",
        "smoke",
        "--out",
        smoke_copy,
        "--set",
        data,
        "--net",
        "A",
        "--alpha",
        "0.5",
        "--quiet",
    )
    assert (smoke_copy / "models" / "A_down2_a0.5_e1_bs4.pt").is_file()
    assert published(smoke_copy) == before


QUANTIZE = str(EXAMPLE.parent / "noisy_quantize.py") + ":NoisyQuantize"


def _quantize(step: int) -> str:
    return f'{{spec = "{QUANTIZE}", options = {{step = {step}}}, name = "quantize-{step}"}}'


def test_a_run_does_only_the_work_its_defenses_need_and_ranks_two_settings_side_by_side(
    tmp_path,
):
    run_dir = tmp_path / "run"
    suite = (
        "attack.suite=[{name='apgd', options={loss='ce', n_iter=2}, "
        "threat_models=['transfer', 'white-box'], eps=[10], subsets=['mini_test']}]"
    )
    result = invoke(
        "run", "--preset", "smoke", "--out", run_dir, "--device", "cpu", "--quiet",
        "--set", f"data.root={tmp_path / 'data'}", "--set", "evaluate.defenses=['T', 'S']",
        "--set", suite, "--set", "attack.eot_samples=1",
        "--defense", _quantize(8), "--defense", _quantize(16),
    )  # fmt: skip
    # no defense reads A: neither A nor the sweep's baseline student is finetuned
    assert "no adaptive student (no evaluated defense reads A)" in result.output
    assert sorted(p.name for p in (run_dir / "models").glob("*.pt")) == ["S.pt", "T.pt"]
    # white-box on T (or S) alone is APGD on T: the transfer set, built once, read by both rows
    assert "6 AE sets (transfer, white-box, 2 of them another threat model's set)" in result.output
    white_box = run_dir / "aes" / "mini_test" / "apgd-ce" / "white-box"
    assert sorted(p.name for p in white_box.iterdir()) == [
        "quantize(T)@quantize-16",
        "quantize(T)@quantize-8",
    ]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    attacked = metrics[metrics.threat.isin(["transfer", "white-box"])].set_index(
        ["defense", "threat", "source"]
    )
    for net in ("T", "S"):
        assert attacked.loc[(net, "white-box", net), "miou"] == pytest.approx(
            attacked.loc[(net, "transfer", net), "miou"]
        )
    # two settings of one class: two rows, two keys (the options are in them)
    rows = metrics[metrics.defense.str.startswith("quantize-")]
    assert set(rows.defense) == {"quantize-8", "quantize-16"}
    keyed = rows[rows.threat.isin(["clean", "transfer"])]
    assert keyed.groupby(["threat", "subset", "source", "eps"])["key"].nunique().eq(2).all()
    config = read_run_config(run_dir)
    assert config.evaluate.defenses[-1].options == {"step": 16}
    report = (run_dir / "report.md").read_text()
    assert "LLCM" not in report and "<NA>" not in report
    assert "Omitted: this run has no rows for it" in report
    assert "reuse their transfer sets" in report
