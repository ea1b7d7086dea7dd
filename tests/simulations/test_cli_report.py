"""simulations/cli_report.py: `sandflower report` re-renders one run or compares several."""

import typer
from typer.testing import CliRunner

from coordinator.reports.report_json import load_report, report_to_json
from coordinator.reports.writer import write_run
from simulations.cli_report import report
from tests.coordinator.report_factory import make_report

# The command on its own: simulations/cli.py registers the same function as `report`.
app = typer.Typer(pretty_exceptions_enable=False)
app.command()(report)
runner = CliRunner()


def test_one_run_rerenders_html_and_csvs_from_report_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(report_to_json(make_report()))
    result = runner.invoke(app, [str(run)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in run.iterdir()} == {
        "report.json",
        "rounds.csv",
        "clients.csv",
        "report.html",
    }
    assert len((run / "rounds.csv").read_text().splitlines()) == 1 + 3
    assert 'id="plot-accuracy"' in (run / "report.html").read_text()
    assert str(run / "report.html") in result.output


def test_one_run_accepts_the_report_file_and_an_out_folder(tmp_path):
    write_run(tmp_path / "run", make_report())
    result = runner.invoke(
        app, [str(tmp_path / "run" / "report.json"), "--out", str(tmp_path / "copy")]
    )
    assert result.exit_code == 0, result.output
    assert len(load_report(tmp_path / "copy").rounds) == 3
    assert (tmp_path / "copy" / "report.html").is_file()


def test_several_runs_write_a_comparison(tmp_path):
    write_run(tmp_path / "a", make_report(num_rounds=2))
    write_run(tmp_path / "b", make_report(num_rounds=4))
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--target-accuracy", "0.95"],
    )
    assert result.exit_code == 0, result.output
    page = (out / "compare.html").read_text()
    assert ">a</td>" in page and ">b</td>" in page
    assert "rounds to reach 0.95" in page


def test_several_runs_without_out_is_a_usage_error(tmp_path):
    write_run(tmp_path / "a", make_report(num_rounds=1))
    write_run(tmp_path / "b", make_report(num_rounds=1))
    result = runner.invoke(app, [str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "needs --out" in result.output
    assert not (tmp_path / "compare.html").exists()


def test_missing_report_json_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, [str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "no report.json in this run folder" in result.output
    assert str(tmp_path / "empty") in result.output
    assert "Traceback" not in result.output


def test_malformed_report_json_is_a_clear_error(tmp_path):
    write_run(tmp_path / "good", make_report(num_rounds=1))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text('{"scenario": "x", "rounds": [}')
    result = runner.invoke(
        app, [str(tmp_path / "good"), str(tmp_path / "bad"), "--out", str(tmp_path / "cmp")]
    )
    assert result.exit_code == 2
    output = result.output
    assert "not valid JSON" in output and str(tmp_path / "bad" / "report.json") in output
    assert "Traceback" not in result.output
    assert not (tmp_path / "cmp").exists()

    (tmp_path / "bad" / "report.json").write_text('{"scenario": "x", "seeds": 3}')
    result = runner.invoke(app, [str(tmp_path / "bad")])
    assert result.exit_code == 2
    assert "not a RunReport" in result.output and "seeds" in result.output


def test_an_unwritable_output_is_a_clear_error(tmp_path):
    write_run(tmp_path / "a", make_report(num_rounds=1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, [str(tmp_path / "a"), "--out", str(blocker / "sub")])
    assert result.exit_code == 1
    assert "cannot write the report" in result.output
    assert "Traceback" not in result.output


def test_runs_with_the_same_folder_name_are_labelled_by_path(tmp_path):
    write_run(tmp_path / "monday" / "run", make_report(num_rounds=1), render_html=False)
    write_run(tmp_path / "tuesday" / "run", make_report(num_rounds=1), render_html=False)
    result = runner.invoke(
        app,
        [
            str(tmp_path / "monday" / "run"),
            str(tmp_path / "tuesday" / "run"),
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert f">{tmp_path / 'monday' / 'run'}</td>" in page
    assert f">{tmp_path / 'tuesday' / 'run'}</td>" in page


def test_more_than_two_runs_are_compared_on_one_page(tmp_path):
    names = ["fedavg", "fedmedian", "krum", "bulyan"]
    for index, name in enumerate(names):
        write_run(tmp_path / name, make_report(num_rounds=2 + index))
    out = tmp_path / "cmp"
    result = runner.invoke(app, [str(tmp_path / name) for name in names] + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "comparison of 4 runs" in result.output
    page = (out / "compare.html").read_text()
    for name in names:
        assert f">{name}</td>" in page
