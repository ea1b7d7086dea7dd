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


# -- `flwr run . --run-config "scenario='NAME'"` selects the bundled scenario ---
def test_the_default_run_config_is_left_as_it_is():
    from simulations.flower_app import select_scenario

    assert select_scenario(_app_config()) == _app_config()


def test_the_scenario_key_selects_a_bundled_scenario_and_keeps_the_users_overrides():
    from simulations.flower_app import select_scenario
    from simulations.scenario import find_scenario

    iid = load_scenario(find_scenario("digits-mlp-iid")).to_run_config()
    selected = select_scenario(_app_config() | {"scenario": "digits-mlp-iid"})
    run_only = {"kernel-sha256": "", "resume-from": "", "kernel-flavour": "relaxed"}
    assert selected == iid | run_only
    assert selected["partitioning"] == "iid" and selected["out-dir"] == "runs/digits-mlp-iid"
    # A key the user changed from pyproject's value wins over the selected scenario's.
    changed = select_scenario(_app_config() | {"scenario": "digits-mlp-iid", "num-rounds": 2})
    assert changed == iid | run_only | {"num-rounds": 2}


def test_an_unknown_scenario_name_is_refused_unless_the_run_config_is_its_own():
    import pytest

    from coordinator.config import RunConfigError
    from simulations.flower_app import select_scenario

    with pytest.raises(RunConfigError, match=r"'scenario'.*expected a bundled scenario") as info:
        select_scenario(_app_config() | {"scenario": "my-own"})
    assert info.value.key == "scenario" and "digits-mlp-iid" in str(info.value)
    own = _app_config() | {"scenario": "my-own", "num-partitions": 4, "lr": 0.05}
    assert select_scenario(own) == own  # a whole run config of the user's scenario file


def test_the_partition_check_refuses_fewer_supernodes_than_partitions():
    import pytest

    from coordinator.config import RunConfigError
    from simulations.flower_app import partition_check

    check = partition_check(_app_config())  # num-partitions = 20
    check({node: node - 100 for node in range(100, 120)})  # 20 nodes, partitions 0..19
    check({})  # devices with their own data report no partition: nothing to check
    with pytest.raises(RunConfigError) as info:
        check({7: 0, 9: 1})  # Flower's default local federation: 2 SuperNodes
    message = str(info.value)
    assert info.value.key == "num-partitions"
    assert "num-partitions = 20" in message and "started 2 SuperNodes" in message
    assert "options.num-supernodes = 20" in message


def test_partition_sizes_of_a_lazy_population_build_no_client(monkeypatch):
    # The coordinator clips num-examples claims to these sizes; for synthetic devices they
    # come from each device's seed: building a 100,000-device population would need ~11 GB.
    from simulations import datasets, federated_data
    from simulations.flower_app import partition_sizes

    config = federated_data.DataConfig(
        dataset="synthetic", partitioning="natural", num_partitions=100_000, seed=4
    )
    data = federated_data.load_client_data(config.to_mapping(), 54_321)
    federated_data.clear_caches()
    monkeypatch.setattr(datasets, "synthetic_device", None)  # must not be reached
    monkeypatch.setattr(datasets, "generate_synthetic", None)
    expected = partition_sizes(config)
    assert expected(54_321, "train") == data.num_train
    assert expected(54_321, "evaluate") == data.num_test
    assert expected(100_000, "train") is None
    federated_data.clear_caches()
