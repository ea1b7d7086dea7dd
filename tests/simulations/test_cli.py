"""simulations/cli.py and the small CLI helpers: --version, the bench's speed wording, errors
on stderr with their brackets intact, the positional arguments' help."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli import app
from simulations.cli_kernels import _speed

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sandflower {version('sandflower')}"


def test_speed_says_slower_for_a_ratio_below_one():
    assert _speed(2.0) == "2.00x faster"
    assert _speed(1.0) == "1.00x faster"
    assert _speed(0.5) == "2.00x slower"
    assert _speed(0.69) == "1.45x slower"


def _bad_scenario(tmp_path: Path) -> Path:
    """The bundled iid scenario with `rounds` misspelt in its [federation] table."""
    text = (SCENARIOS / "digits-mlp-iid.toml").read_text()
    assert "\nrounds = " in text  # the misspelling below must hit a real key
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("\nrounds = ", "\nrouns = "))
    return path


def test_a_scenario_error_keeps_its_brackets_and_goes_to_stderr(tmp_path):
    # The real command in its own process: rich's markup used to eat "[federation]".
    result = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "simulate", str(_bad_scenario(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "rouns" in result.stderr
    assert "[federation]" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_errors_keep_bracketed_paths_and_go_to_stderr(tmp_path):
    missing = tmp_path / "[seed 1]" / "run"
    result = CliRunner().invoke(app, ["report", str(missing)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert str(missing) in result.stderr


def test_a_bad_option_value_is_an_error_on_stderr():
    result = CliRunner().invoke(app, ["bench", "stragglers", "--engine", "[gpu]"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--engine: expected local, ray or inprocess, given '[gpu]'" in result.stderr


@pytest.mark.parametrize(
    ("command", "argument", "help_words"),
    [
        (["simulate"], "SCENARIO", "sandflower scenario list"),
        (["deploy", "local"], "SCENARIO", "sandflower scenario list"),
        (["deploy", "init"], "DIRECTORY", "deployment folder"),
        (["report"], "RUN_DIRS", "re-render its report.html"),
    ],
)
def test_help_shows_the_positional_arguments_help(command, argument, help_words):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    arguments_panel = result.stdout.split("Arguments")[1].split("Options")[0]
    assert argument.lower() in arguments_panel.lower()
    assert help_words in " ".join(arguments_panel.split())
