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
    assert app_config.pop("kernel-flavour") == "relaxed"
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


def test_the_kernel_flavour_picks_the_pinned_build_from_the_shipped_kernels():
    from kernels import build

    simd128 = build.sha256_file(build.WASM_DIR / "sandflower-simd128.wasm")
    resolved = resolve_run_config(_app_config() | {"kernel-flavour": "simd128"})
    assert resolved["kernel-sha256"] == simd128
    assert "kernel-flavour" not in resolved  # resolved into the pin
    assert FederationConfig.from_run_config(resolved).client_config(1)["kernel-sha256"] == simd128
    relaxed = resolve_run_config(_app_config() | {"kernel-flavour": "relaxed"})
    assert relaxed["kernel-sha256"] == build.sha256_file(build.WASM_DIR / "sandflower-relaxed.wasm")


def test_an_unknown_kernel_flavour_is_a_run_config_error():
    import pytest

    from coordinator.config import RunConfigError

    with pytest.raises(RunConfigError, match=r"'kernel-flavour'.*expected one of \['relaxed'"):
        resolve_run_config(_app_config() | {"kernel-flavour": "avx512"})


def test_central_evaluation_runs_the_pinned_build():
    from kernels import build
    from simulations.flower_app import pinned_runner

    simd128 = build.sha256_file(build.WASM_DIR / "sandflower-simd128.wasm")
    assert pinned_runner(simd128).module.sha256 == simd128
    # a pin no shipped build has (the operator's own kernel): the bundled kernel evaluates
    assert pinned_runner("ab" * 32).module.sha256 == kernel_sha256()
