"""simulations/flower_app.py and the Flower App config in pyproject.toml."""

import tomllib
from pathlib import Path

from client.client_app import kernel_sha256
from coordinator.config import FederationConfig
from simulations.flower_app import resolve_run_config
from simulations.scenario import default_scenario_path, load_scenario

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _app_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_run_config_is_the_default_scenario():
    app_config = _app_config()
    scenario_config = load_scenario(default_scenario_path()).to_run_config()
    assert app_config.pop("kernel-sha256") == ""
    # A run-config-only key (coordinator/checkpoint.py): a scenario never resumes by itself.
    assert app_config.pop("resume-from") == ""
    assert app_config == scenario_config


def test_pyproject_run_config_parses_and_pins_the_bundled_kernel():
    resolved = resolve_run_config(_app_config())
    assert resolved["kernel-sha256"] == kernel_sha256()
    config = FederationConfig.from_run_config(resolved)
    assert config.kernel_sha256 == kernel_sha256()
    assert str(config.model) == "mlp:64-32-10"


def test_an_explicit_pin_is_kept():
    pinned = "ab" * 32
    assert resolve_run_config(_app_config() | {"kernel-sha256": pinned})["kernel-sha256"] == pinned
