"""coordinator/config.py: the flat run config -> FederationConfig, with errors naming the key."""

import math
from pathlib import Path

import pytest

from coordinator.config import DATA_KEYS, FederationConfig, RunConfigError
from kernels.spec import ModelSpec
from protos import contract


def run_config(**changes):
    config = {
        "scenario": "digits-iid",
        "seed": 7,
        "num-rounds": 3,
        "fraction-train": 0.5,
        "fraction-evaluate": 1.0,
        "local-epochs": 2,
        "batch-size": 32,
        "lr": 0.05,
        "proximal-mu": 0.0,
        "strategy": "fedavg",
        "strategy-params": "{}",
        "server-lr": 1.0,
        "model": "mlp:64-32-10",
        "max-delta-norm": 100.0,
        "out-dir": "/tmp/run",
        "kernel-sha256": "",
        "dataset": "digits",
        "dataset-path": "",
        "synthetic-alpha": 0.5,
        "synthetic-beta": 0.5,
        "partitioning": "dirichlet",
        "dirichlet-alpha": 0.3,
        "shards-per-client": 2,
        "num-partitions": 10,
        "test-fraction": 0.2,
    }
    for key, value in changes.items():
        key = key.replace("_", "-")
        if value is DELETE:
            del config[key]
        else:
            config[key] = value
    return config


DELETE = object()


def test_a_full_run_config_parses():
    config = FederationConfig.from_run_config(run_config())
    assert config.scenario == "digits-iid" and config.seed == 7 and config.num_rounds == 3
    assert config.fraction_train == 0.5 and config.fraction_evaluate == 1.0
    assert config.model == ModelSpec.parse("mlp:64-32-10")
    assert config.out_dir == Path("/tmp/run")
    assert config.strategy_params == {}
    assert dict(config.data)["num-partitions"] == 10


def test_round_trip_through_to_run_config():
    original = run_config(strategy="FedTrimmedAvg", strategy_params='{"beta": 0.1}')
    config = FederationConfig.from_run_config(original)
    flat = config.to_run_config()
    assert flat["strategy"] == "fedtrimmedavg" and flat["strategy-params"] == '{"beta": 0.1}'
    assert FederationConfig.from_run_config(flat) == config


def test_defaults_fill_only_the_optional_keys():
    config = FederationConfig.from_run_config(
        run_config(
            strategy_params=DELETE, server_lr=DELETE, proximal_mu=DELETE, kernel_sha256=DELETE
        )
    )
    assert (config.strategy_params, config.server_lr, config.proximal_mu, config.kernel_sha256) == (
        {},
        1.0,
        0.0,
        "",
    )


@pytest.mark.parametrize(
    "key", ["scenario", "seed", "num-rounds", "lr", "model", "max-delta-norm", "out-dir"]
)
def test_a_missing_required_key_is_named(key):
    with pytest.raises(RunConfigError) as info:
        FederationConfig.from_run_config(run_config(**{key: DELETE}))
    assert info.value.key == key and key in str(info.value)


def test_unknown_keys_are_an_error():
    with pytest.raises(RunConfigError, match="learning-rate") as info:
        FederationConfig.from_run_config(run_config() | {"learning-rate": 0.1})
    assert info.value.key == "learning-rate"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("seed", 1.5, "integer"),
        ("seed", -1, ">= 0"),
        ("seed", True, "integer"),
        ("num-rounds", 0, ">= 1"),
        ("local-epochs", "2", "integer"),
        ("batch-size", 0, ">= 1"),
        ("fraction-train", 0.0, "(0, 1]"),
        ("fraction-train", 1.5, "(0, 1]"),
        ("fraction-evaluate", -0.1, "[0, 1]"),
        ("lr", 0.0, "> 0"),
        ("lr", math.inf, "finite"),
        ("lr", "fast", "float"),  # wording of the one schema (issue 11)
        ("proximal-mu", -1.0, ">= 0"),
        ("server-lr", math.nan, "nan"),
        ("max-delta-norm", 0.0, "> 0"),
        ("model", "cnn:1-2", "model"),
        ("model", 5, "string"),
        ("strategy", "fedsgd", "one of"),
        ("strategy-params", "{beta: 1}", "JSON"),
        ("strategy-params", "[1]", "JSON object"),
        ("kernel-sha256", "abc", "64 hex"),
        ("out-dir", "  ", "non-empty"),
        ("dataset", ["a"], "string, number or boolean"),
        ("clip-delta-norm", 0.0, "> 0"),
        ("clip-delta-norm", math.nan, "nan"),
        ("max-num-examples", -1, ">= 0"),
        ("max-num-examples", 1.5, "integer"),
        ("max-examples-ratio", 0.5, ">= 1"),
        ("max-examples-ratio", math.inf, "finite"),
        ("faults-crash", [0.1], "string, number or boolean"),
        # Integers wider than what they end in (an int32 report field, an int32 kernel
        # argument, the int64 seed): refused here, not after the engine started.
        ("seed", 10**20, "<= 9223372036854775807"),
        ("num-rounds", 2**31, "<= 2147483647"),
        ("local-epochs", 10**20, "<= 2147483647"),
        ("batch-size", 2**31, "<= 2147483647"),
        ("max-num-examples", 2**63, "<= 9223372036854775807"),
        ("strategy-params", '{"min_train_nodes": 4294967296}', "2147483647"),
        # A model no wasm32 sandbox can hold (the coordinator allocated it at start-up).
        ("model", "mlp:64-1000000000-10", "parameters, at most 536870912"),
        ("model", "logreg:99999999999999999999-10", "parameters, at most"),
    ],
)
def test_bad_values_name_the_key_and_the_expectation(key, value, expected):
    with pytest.raises(RunConfigError) as info:
        FederationConfig.from_run_config(run_config(**{key: value}))
    assert info.value.key == key
    assert expected in str(info.value)


def test_integers_are_accepted_where_floats_are_expected():
    config = FederationConfig.from_run_config(run_config(lr=1, max_delta_norm=10, fraction_train=1))
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.fraction_train == 1.0


def test_an_infinite_delta_bound_is_allowed():
    config = FederationConfig.from_run_config(run_config(max_delta_norm=math.inf))
    assert config.max_delta_norm == math.inf


@pytest.mark.parametrize(
    "strategy, params",
    [
        ("fedtrimmedavg", '{"beta": 0.2}'),
        ("krum", '{"num_malicious_nodes": 1}'),
        ("multikrum", '{"num_malicious_nodes": 1, "num_nodes_to_select": 3}'),
        ("bulyan", '{"num_malicious_nodes": 0}'),
        ("fedadam", '{"beta_1": 0.8, "beta_2": 0.9, "tau": 0.01}'),
        ("fedavgm", '{"server_momentum": 0.9}'),
        ("fedavg", '{"min_available_nodes": 3}'),
    ],
)
def test_strategy_params_of_that_strategy_are_accepted(strategy, params):
    config = FederationConfig.from_run_config(run_config(strategy=strategy, strategy_params=params))
    assert config.strategy == strategy and config.strategy_params


@pytest.mark.parametrize(
    "strategy, params, expected",
    [
        ("fedavg", '{"beta": 0.2}', "fedavg has no parameter(s) ['beta']"),
        ("krum", '{"num_nodes_to_select": 2, "gamma": 1}', "['gamma', 'num_nodes_to_select']"),
        ("fedadam", '{"eta": 0.1}', "server-lr"),
        ("fedavgm", '{"server_learning_rate": 0.1}', "server-lr"),
        ("fedprox", '{"proximal_mu": 0.1}', "proximal-mu"),
        ("fedavg", '{"fraction_train": 0.1}', "fraction-train"),
        ("krum", '{"num_malicious_nodes": 1.5}', "integer"),
        ("fedtrimmedavg", '{"beta": "high"}', "float"),  # wording of the one schema
    ],
)
def test_bad_strategy_params_are_named(strategy, params, expected):
    with pytest.raises(RunConfigError) as info:
        FederationConfig.from_run_config(run_config(strategy=strategy, strategy_params=params))
    assert info.value.key == "strategy-params"
    assert expected in str(info.value)


def test_client_config_carries_the_message_contract_keys_and_no_data_keys():
    config = FederationConfig.from_run_config(run_config(kernel_sha256="A" * 64))
    client = config.client_config(4)
    for key in (
        "server-round",
        "lr",
        "local-epochs",
        "batch-size",
        "proximal-mu",
        "seed",
        "model",
        "kernel-sha256",
    ):
        assert key in client
    # Every key the client requires (protos/contract.py, client/client_app.py checks it).
    assert set(contract.REQUIRED_CONFIG) <= set(client)
    # Clients read the data keys from their run config (issue 11): none is forwarded.
    assert not set(DATA_KEYS) & set(client)
    assert client["server-round"] == 4 and client["model"] == "mlp:64-32-10"
    assert client["kernel-sha256"] == "a" * 64  # normalised to lower case


def test_data_keys_are_optional_and_recorded_only_when_given():
    config = FederationConfig.from_run_config(
        run_config(dataset_path=DELETE, synthetic_alpha=DELETE)
    )
    recorded = config.to_run_config()
    assert "dataset-path" not in recorded and "synthetic-alpha" not in recorded
    assert recorded["dataset"] == "digits"
    assert "dataset" not in config.client_config(1)


def test_the_config_is_frozen():
    config = FederationConfig.from_run_config(run_config())
    with pytest.raises(AttributeError):
        config.seed = 8  # type: ignore[misc]


def test_every_strategy_builds_with_the_run_config_settings():
    from flwr.serverapp.strategy import FedAdam, FedAvgM, FedProx

    from coordinator.flower_strategies import STRATEGY_NAMES, build_flower_strategy
    from coordinator.rules import applies_server_lr_itself

    settings = dict(
        fraction_train=0.5, fraction_evaluate=0.25, server_lr=0.3, proximal_mu=0.01, lr=0.05
    )
    for name in STRATEGY_NAMES:
        strategy = build_flower_strategy(name, {}, **settings)
        assert (strategy.fraction_train, strategy.fraction_evaluate) == (0.5, 0.25)
        assert strategy.min_available_nodes == 1  # Flower's default 2 would hang a 1-node run
        assert applies_server_lr_itself(strategy) == (
            name in ("fedavgm", "fedadam", "fedyogi", "fedadagrad")
        )
    adam = build_flower_strategy("fedadam", {"tau": 0.1}, **settings)
    assert isinstance(adam, FedAdam) and (adam.eta, adam.eta_l, adam.tau) == (0.3, 0.05, 0.1)
    momentum = build_flower_strategy("fedavgm", {"server_momentum": 0.9}, **settings)
    assert isinstance(momentum, FedAvgM) and momentum.server_learning_rate == 0.3
    prox = build_flower_strategy("fedprox", {"min_available_nodes": 4}, **settings)
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.01 and prox.min_available_nodes == 4


def test_defence_keys_default_to_safe_values_and_are_recorded():
    config = FederationConfig.from_run_config(run_config())
    assert config.clip_delta_norm == math.inf  # off
    assert config.max_num_examples == 0  # off
    assert config.max_examples_ratio == 10.0  # on: a safety default, not an off switch
    recorded = config.to_run_config()
    assert (recorded["clip-delta-norm"], recorded["max-examples-ratio"]) == (math.inf, 10.0)
    changed = FederationConfig.from_run_config(
        run_config(clip_delta_norm=2, max_num_examples=500, max_examples_ratio=0)
    )
    assert (changed.clip_delta_norm, changed.max_num_examples) == (2.0, 500)
    assert changed.max_examples_ratio == 0.0


def test_fault_keys_are_forwarded_to_clients_uninterpreted():
    config = FederationConfig.from_run_config(
        run_config(faults_crash=0.1, faults_attack="signflip")
    )
    client = config.client_config(3)
    assert (client["faults-crash"], client["faults-attack"]) == (0.1, "signflip")
    assert config.to_run_config()["faults-crash"] == 0.1
    assert "faults-dropout" not in client
    assert not any(
        key.startswith("faults-")
        for key in FederationConfig.from_run_config(run_config()).client_config(1)
    )
