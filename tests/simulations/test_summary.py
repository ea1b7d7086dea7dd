"""simulations/summary.py: the end-of-run table fits one screen and shows the finals."""

import io

from rich.console import Console

from simulations.summary import MAX_ROWS, print_summary, summary_table
from tests.coordinator.report_factory import make_report


def render(report, width: int = 140) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None)
    console.print(summary_table(report))
    return buffer.getvalue()


def test_short_run_has_one_row_per_round_and_the_finals():
    text = render(make_report(num_rounds=3))
    lines = text.splitlines()
    round_rows = [line for line in lines if line.startswith("│ ") and line[2:4].strip().isdigit()]
    assert [row.split("│")[1].strip() for row in round_rows] == ["1", "2", "3"]
    final = next(line for line in lines if "final" in line)
    assert "0.9300" in final and "0.9500" in final  # central and federated accuracy
    cells = [cell.strip() for cell in final.split("│")[1:-1]]
    assert cells[5:8] == ["9", "1", "2"]  # ok, failed, rejected over the run
    assert "digits-mlp-dirichlet" in text and "completed" in text


def test_long_run_fits_one_screen():
    report = make_report(num_rounds=200, num_clients=2)
    table = summary_table(report)
    assert table.row_count == MAX_ROWS
    text = render(report)
    assert "… 181 more" in text
    assert "│ 1 " in text and "│ 200 " in text  # first and last rounds shown
    assert len(text.splitlines()) < 40


def test_failed_run_shows_the_latest_measured_figures_and_the_error(tmp_path):
    report = make_report(num_rounds=3, status="failed")
    report.error = "RoundFailedError: no usable reply in round 3"
    buffer = io.StringIO()
    print_summary(report, Console(file=buffer, width=140, color_system=None), tmp_path)
    text = buffer.getvalue()
    latest = next(line for line in text.splitlines() if "latest" in line)
    assert "0.8500" in latest  # round 2's central accuracy: round 3 measured nothing
    assert "no usable reply in round 3" in text
    assert str(tmp_path / "report.html") in text
