"""simulations/stragglers.py: the grid's outputs (table, CSV, plot) and the CLI's arguments."""

import math

from typer.testing import CliRunner

from simulations import stragglers
from simulations.cli import app
from simulations.scenario import bundled_scenarios


def result(dataset: str, share: int, algorithm: str, accuracy: float) -> stragglers.GridResult:
    return stragglers.GridResult(
        dataset=dataset, share=share, algorithm=algorithm, rounds=3, final_accuracy=accuracy,
        best_accuracy=accuracy, mean_stragglers=share / 10, dropped=1, partial=2,
        sim_seconds=4.5, accuracy_by_round=(0.1, 0.5, accuracy),
    )  # fmt: skip


def test_every_grid_scenario_is_bundled():
    names = {
        stragglers.scenario_name(dataset, share, algorithm)
        for dataset in stragglers.DATASETS
        for share in stragglers.STRAGGLER_SHARES
        for algorithm in stragglers.ALGORITHMS
    }
    assert len(names) == 18 and names <= set(bundled_scenarios())


def test_outputs_table_csv_and_a_reproducible_plot(tmp_path):
    results = [
        result("1-1", 90, "fedavg", 0.25),
        result("1-1", 90, "fedprox", 0.9),
        result("0-0", 0, "fedavg", 0.8),
    ]
    stragglers.write_outputs(tmp_path, results)
    table = (tmp_path / "stragglers.md").read_text()
    assert "| Synthetic(1,1) | 90% | 0.250 | 0.900 | +0.650 |" in table
    assert "| Synthetic(0,0) | 0% | 0.800 | not run |  |" in table
    rows = (tmp_path / "stragglers.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].startswith("1-1,90,fedavg,3,0.2500")
    svg = (tmp_path / "stragglers.svg").read_bytes()
    assert svg.startswith(b"<?xml") and svg == stragglers.comparison_svg(results).encode()
    assert math.isclose(results[0].sim_seconds, 4.5)


def test_the_command_refuses_unknown_cells():
    runner = CliRunner()
    for arguments in (["--dataset", "2-2"], ["--stragglers", "30"], ["--engine", "spark"]):
        outcome = runner.invoke(app, ["bench", "stragglers", *arguments])
        assert outcome.exit_code == 2, arguments
