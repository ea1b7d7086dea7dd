"""simulations/cli.py and the small CLI helpers: --version, the bench's speed wording."""

from importlib.metadata import version

from typer.testing import CliRunner

from simulations.cli import app
from simulations.cli_kernels import _speed


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sandflower {version('sandflower')}"


def test_speed_says_slower_for_a_ratio_below_one():
    assert _speed(2.0) == "2.00x faster"
    assert _speed(1.0) == "1.00x faster"
    assert _speed(0.5) == "2.00x slower"
    assert _speed(0.69) == "1.45x slower"
