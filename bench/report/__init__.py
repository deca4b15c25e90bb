"""The report: the paper's tables, a leaderboard, findings, plots and ``report.md``."""

from bench.report.findings import findings
from bench.report.report import check_rows, write_report
from bench.report.tables import detection_table, leaderboard, metric_table, paper_numbers

__all__ = [
    "check_rows",
    "detection_table",
    "findings",
    "leaderboard",
    "metric_table",
    "paper_numbers",
    "write_report",
]
