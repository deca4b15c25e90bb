"""A non-editable install carries everything a run needs: presets, reference checkpoints and
the paper's numbers (which the report puts beside ours)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REPORT_FROM_WHEEL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import pandas as pd
    import bench
    from bench.config import load_config, save_run_config
    from bench.report import write_report

    assert bench.__file__.startswith(sys.argv[1]), bench.__file__  # the installed copy
    run = Path(sys.argv[2])
    save_run_config(load_config("smoke"), run)
    keys = ["defense", "subset", "threat", "attack", "source", "eps"]
    rows = [dict(zip(keys, (d, "mini_val", "clean", "clean", "clean", 0.0)), miou=50.0, q=100.0)
            for d in ("T", "S")]
    rows += [dict(zip(keys, (d, "mini_val", "transfer", "llcm", "T", 1.0)), miou=40.0, q=80.0)
             for d in ("T", "S")]  # a table without AE numbers is omitted
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    pd.DataFrame(columns=keys).to_csv(run / "records.csv", index=False)
    write_report(run)
    table1 = pd.read_csv(run / "tables" / "table1.csv", header=[0, 1], index_col=0)
    print(table1.loc["T", ("clean", "paper")])
    """
)


def test_a_wheel_installs_and_reports_the_papers_numbers(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            tmp_path / "wheel",
            ROOT,
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "bench/report/paper/paper_tables.csv",
        "bench/presets/toy.toml",
        "bench/reference/toy/T.pt",
        "bench/reference/toy/S.json",
    ):
        assert shipped in names, shipped
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site, wheel],
        check=True,
        cwd=tmp_path,
    )
    (tmp_path / "run").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", REPORT_FROM_WHEEL, str(site), str(tmp_path / "run")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(75.43)
