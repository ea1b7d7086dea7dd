"""coordinator/reports/comparison_page.py: compare.html figures, curves and config differences."""

import pytest

from coordinator.reports.comparison_page import COMPARE_HTML, config_differences, render_comparison
from coordinator.reports.formatting import format_bytes, format_seconds
from coordinator.reports.queries import rounds_to_reach
from tests.coordinator.report_factory import make_report
from tests.coordinator.reports.pages import parse, table_rows


def test_rounds_to_reach():
    report = make_report(num_rounds=5)  # central accuracy 0.62, 0.85, 0.93, 0.95, 0.96
    assert rounds_to_reach(report, 0.9) == 3
    assert rounds_to_reach(report, 0.62) == 1
    assert rounds_to_reach(report, 0.97) is None


def test_comparison_page(tmp_path):
    short, long = make_report(num_rounds=2), make_report(num_rounds=5)
    path = render_comparison([("fedavg", short), ("fedprox", long)], tmp_path / "cmp", 0.9)
    assert path == tmp_path / "cmp" / COMPARE_HTML
    page = parse(path.read_text())
    assert set(page.plots()) == {"plot-compare-accuracy", "plot-compare-loss"}
    rows = [cells for cells in table_rows(path.read_text(), "compare-table")]
    assert [row[0] for row in rows] == ["fedavg", "fedprox"]
    assert rows[0][5] == "not reached" and rows[1][5] == "3"
    assert rows[0][4] == "0.8500" and rows[1][4] == "0.9600"
    assert rows[1][6] == format_bytes(long.total_bytes_uploaded + long.total_bytes_downloaded)
    assert rows[1][9] == format_seconds(sum(r.wall_seconds for r in long.rounds))


@pytest.mark.parametrize(
    ("reports", "target", "message"),
    [([], 0.9, "at least one"), ([("a", make_report())], 1.5, "target_accuracy")],
)
def test_comparison_refuses_bad_arguments(tmp_path, reports, target, message):
    with pytest.raises(ValueError, match=message):
        render_comparison(reports, tmp_path, target)


def test_comparison_lists_the_config_keys_that_differ(tmp_path):
    fedavg, fedprox = make_report(num_rounds=2), make_report(num_rounds=2)
    fedprox.config.update({"strategy": "fedprox", "proximal-mu": 0.1, "out-dir": "runs/b"})
    fedprox.config["training"]["lr"] = 0.1
    assert config_differences([("a", fedavg), ("b", fedprox)]) == {
        "proximal-mu": [None, 0.1],
        "strategy": ["fedavg", "fedprox"],
        "training.lr": [0.05, 0.1],
    }
    page = render_comparison([("a", fedavg), ("b", fedprox)], tmp_path).read_text()
    rows = table_rows(page, "config-differences")
    assert rows == [
        ["proximal-mu", "—", "0.1"],
        ["strategy", "fedavg", "fedprox"],
        ["training.lr", "0.05", "0.1"],
    ]
    same = render_comparison([("a", fedavg), ("b", fedavg)], tmp_path).read_text()
    assert "The runs share one run config." in same
