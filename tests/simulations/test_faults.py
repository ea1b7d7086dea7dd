"""simulations/faults.py: seeded fault plans, the attacks, and the ClientApp wrapper."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from protos import contract
from simulations import faults
from simulations.faults import (
    ERROR_CRASH,
    ERROR_DROPOUT,
    LABEL_FLIP_KEY,
    FaultConfig,
    FaultConfigError,
    attack_delta,
    fault_labels,
    with_faults,
)
from simulations.federated_data import load_client_data
from simulations.scenario import Scenario, ScenarioError

NUM_PARTITIONS = 20
SEED = 42


# -- the plan ---------------------------------------------------------------------------------
def test_byzantine_clients_are_a_fixed_seeded_share():
    config = FaultConfig(byzantine=0.2)
    chosen = config.byzantine_partitions(SEED, NUM_PARTITIONS)
    assert len(chosen) == 4 and chosen <= set(range(NUM_PARTITIONS))
    assert chosen == config.byzantine_partitions(SEED, NUM_PARTITIONS)
    others = {config.byzantine_partitions(seed, NUM_PARTITIONS) for seed in range(10)}
    assert len(others) > 1
    assert FaultConfig().byzantine_partitions(SEED, NUM_PARTITIONS) == frozenset()


def test_round_faults_are_seeded_and_follow_their_rates():
    config = FaultConfig(dropout=0.3, crash=0.1, slow=0.1)
    draws = [
        config.round_fault(SEED, server_round, partition)
        for server_round in range(1, 101)
        for partition in range(NUM_PARTITIONS)
    ]
    assert draws == [
        config.round_fault(SEED, server_round, partition)
        for server_round in range(1, 101)
        for partition in range(NUM_PARTITIONS)
    ]
    share = {kind: draws.count(kind) / len(draws) for kind in ("dropout", "crash", "slow")}
    # 2000 draws: three standard deviations of a Bernoulli(0.3) share are ~0.031.
    assert share["dropout"] == pytest.approx(0.3, abs=0.035)
    assert share["crash"] == pytest.approx(0.1, abs=0.025)
    assert share["slow"] == pytest.approx(0.1, abs=0.025)
    assert config.round_fault(SEED, 0, 3) == ""  # round 0 (partition discovery) is never faulted


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"dropout": 1.5}, "faults-dropout"),
        ({"dropout": 0.6, "crash": 0.5}, "faults-dropout"),
        ({"byzantine": -0.1}, "faults-byzantine"),
        ({"attack": "teleport"}, "faults-attack"),
        ({"attack_scale": 0.0}, "faults-attack-scale"),
        ({"noise_std": float("nan")}, "faults-noise-std"),
        ({"slow_fuel": 0}, "faults-slow-fuel"),
    ],
)
def test_bad_fault_values_name_the_key(changes, key):
    with pytest.raises(FaultConfigError, match=key):
        FaultConfig(**changes)


def test_fault_keys_of_the_wrong_type_name_the_key():
    with pytest.raises(FaultConfigError, match="faults-slow-fuel: expected an int"):
        FaultConfig.from_mapping({"faults-slow-fuel": 1.5})
    with pytest.raises(FaultConfigError, match="faults-crash: expected a number"):
        FaultConfig.from_mapping({"faults-crash": "0.1"})


def test_a_scenario_faults_section_becomes_run_config_keys():
    raw = {
        "scenario": {"name": "x", "seed": 3},
        "data": {"dataset": "digits"},
        "model": {"kind": "logreg"},
    }
    assert not any(key.startswith("faults-") for key in Scenario.from_dict(raw).to_run_config())
    with_faults_section = raw | {"faults": {"crash": 0.25, "byzantine": 0.1, "attack": "nan"}}
    run_config = Scenario.from_dict(with_faults_section).to_run_config()
    assert FaultConfig.from_mapping(run_config) == FaultConfig(
        crash=0.25, byzantine=0.1, attack="nan"
    )
    with pytest.raises(ScenarioError, match=r"\[faults\] dropout: .*sum <= 1"):
        Scenario.from_dict(raw | {"faults": {"dropout": 0.7, "crash": 0.7}})
    with pytest.raises(ScenarioError, match=r"\[faults\] attack: expected one of signflip"):
        Scenario.from_dict(raw | {"faults": {"attack": "teleport"}})


def test_fault_labels_are_the_plan():
    run_config = {
        "seed": SEED,
        "num-partitions": NUM_PARTITIONS,
        "faults-crash": 0.5,
        "faults-byzantine": 0.2,
        "faults-attack": "scaling",
    }
    labels = fault_labels(run_config)
    config = FaultConfig.from_mapping(run_config)
    attackers = config.byzantine_partitions(SEED, NUM_PARTITIONS)
    for partition in range(NUM_PARTITIONS):
        fault, attack = labels(partition, 3)
        assert fault == config.round_fault(SEED, 3, partition)
        assert attack == ("scaling" if partition in attackers else "")
    assert labels(-1, 3) == ("", "")
    assert fault_labels({"seed": 1, "num-partitions": 3}) is None


# -- attacks ----------------------------------------------------------------------------------
DELTA = {"w": np.array([[1.0, -2.0], [0.5, 0.0]], np.float32), "b": np.array([3.0], np.float32)}
GLOBAL = {"w": np.ones((2, 2), np.float32), "b": np.zeros(1, np.float32)}


@pytest.mark.parametrize(
    "attack, expected",
    [
        ("signflip", {name: -3.0 * value for name, value in DELTA.items()}),
        ("scaling", {name: 3.0 * value for name, value in DELTA.items()}),
        ("labelflip", DELTA),
    ],
)
def test_deterministic_attacks(attack, expected):
    out = attack_delta(
        FaultConfig(attack=attack, attack_scale=3.0), DELTA, GLOBAL, np.random.default_rng(0)
    )
    for name in DELTA:
        np.testing.assert_array_equal(out[name], expected[name])
        assert out[name].dtype == np.float32


def test_noise_nan_and_replacement():
    def run(attack, seed=0):
        config = FaultConfig(attack=attack, attack_scale=50.0, noise_std=2.0)
        return attack_delta(config, DELTA, GLOBAL, np.random.default_rng(seed))

    noisy = run("noise")
    assert all(np.array_equal(noisy[n], run("noise")[n]) for n in DELTA)  # seeded
    assert not np.array_equal(noisy["w"], run("noise", seed=1)["w"])
    assert 0.3 < np.std(np.concatenate([(noisy[n] - DELTA[n]).ravel() for n in DELTA])) < 6
    assert all(np.isnan(value).all() for value in run("nan").values())
    replacement = run("replacement")
    norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in replacement.values()))
    honest = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in DELTA.values()))
    assert norm > 10 * honest


# -- the wrapper ------------------------------------------------------------------------------
class Recorder:
    """An inner ClientApp that replies with DELTA and records what it was given."""

    def __init__(self):
        self.app = ClientApp()
        self.seen: list[tuple[Message, Context]] = []
        self.app.train()(self.handle)
        self.app.evaluate()(self.handle)

    def handle(self, message: Message, context: Context) -> Message:
        self.seen.append((message, context))
        arrays = ArrayRecord({name: Array(value) for name, value in DELTA.items()})
        metrics = MetricRecord({contract.METRIC_NUM_EXAMPLES: 4, contract.METRIC_TRAIN_LOSS: 0.5})
        return Message(
            RecordDict({contract.RECORD_ARRAYS: arrays, contract.RECORD_METRICS: metrics}),
            reply_to=message,
        )


def instruction(partition_config: dict, server_round: int = 1, kind=MessageType.TRAIN):
    config = {"seed": SEED, "server-round": server_round}
    arrays = ArrayRecord({name: Array(value) for name, value in GLOBAL.items()})
    content = RecordDict(
        {
            contract.RECORD_ARRAYS: arrays,
            contract.RECORD_CONFIG: ConfigRecord(config | partition_config),
        }
    )
    return Message(content, dst_node_id=7, message_type=kind, group_id=str(server_round))


def context(partition: int) -> Context:
    # The run config carries the data keys (the coordinator does not forward them).
    return Context(
        1,
        7,
        {contract.METRIC_PARTITION_ID: partition, "num-partitions": NUM_PARTITIONS},
        RecordDict(),
        {"num-partitions": NUM_PARTITIONS},
    )


def first_partition(predicate) -> int:
    return next(p for p in range(NUM_PARTITIONS) if predicate(p))


def test_dropout_and_crash_are_error_replies_without_training():
    config = FaultConfig(dropout=0.3, crash=0.3)
    keys = {"faults-dropout": 0.3, "faults-crash": 0.3}
    for kind, code in (("dropout", ERROR_DROPOUT), ("crash", ERROR_CRASH)):
        partition = first_partition(lambda p, k=kind: config.round_fault(SEED, 1, p) == k)
        inner = Recorder()
        reply = with_faults(inner.app)(instruction(keys), context(partition))
        assert reply.has_error() and reply.error.code == code
        assert inner.seen == []


def test_a_slow_client_trains_with_the_small_fuel_budget():
    config = FaultConfig(slow=0.5, slow_fuel=123)
    partition = first_partition(lambda p: config.round_fault(SEED, 1, p) == "slow")
    inner = Recorder()
    with_faults(inner.app)(
        instruction({"faults-slow": 0.5, "faults-slow-fuel": 123}), context(partition)
    )
    assert inner.seen[0][1].node_config["fuel"] == 123


def test_attackers_attack_and_honest_clients_pass_through():
    keys = {"faults-byzantine": 0.2, "faults-attack": "signflip", "faults-attack-scale": 2.0}
    attackers = FaultConfig(byzantine=0.2).byzantine_partitions(SEED, NUM_PARTITIONS)
    for partition in (min(attackers), first_partition(lambda p: p not in attackers)):
        reply = with_faults(Recorder().app)(instruction(keys), context(partition))
        sign = -2.0 if partition in attackers else 1.0
        np.testing.assert_array_equal(
            reply.content[contract.RECORD_ARRAYS]["w"].numpy(), sign * DELTA["w"]
        )
        assert reply.content[contract.RECORD_METRICS][contract.METRIC_NUM_EXAMPLES] == 4


def test_label_flippers_get_the_flag_and_the_data_is_flipped():
    keys = {"faults-byzantine": 0.2, "faults-attack": "labelflip"}
    attacker = min(FaultConfig(byzantine=0.2).byzantine_partitions(SEED, NUM_PARTITIONS))
    inner = Recorder()
    with_faults(inner.app)(instruction(keys), context(attacker))
    # The flag goes where the data source reads the data keys: the inner app's run config.
    assert inner.seen[0][1].run_config[LABEL_FLIP_KEY] is True
    data_config = {
        "dataset": "digits",
        "partitioning": "iid",
        "num-partitions": 4,
        "seed": 1,
        "test-fraction": 0.2,
    }
    honest = load_client_data(data_config, 0)
    flipped = load_client_data(data_config | {LABEL_FLIP_KEY: True}, 0)
    np.testing.assert_array_equal(flipped.y_train, 9 - honest.y_train)
    np.testing.assert_array_equal(flipped.y_test, honest.y_test)  # evaluation stays honest


def test_evaluation_and_round_zero_are_never_faulted():
    keys = {"faults-crash": 1.0, "faults-byzantine": 1.0}
    for message in (
        instruction(keys, kind=MessageType.EVALUATE),
        instruction(keys, server_round=0),
    ):
        reply = with_faults(Recorder().app)(message, context(0))
        assert not reply.has_error()
        np.testing.assert_array_equal(
            reply.content[contract.RECORD_ARRAYS]["w"].numpy(), DELTA["w"]
        )


def test_the_module_level_app_wraps_the_sandflower_client_app():
    from simulations.client_app import app as sandflower_app

    assert isinstance(faults.app, ClientApp) and faults.app is faults.app
    assert faults.app is not sandflower_app
    # An engine's worker process finds it by reference, as Flower's loader does.
    from flwr.supercore.object_ref import load_app

    assert load_app("simulations.faults:app", error_type=ValueError) is faults.app


def test_validated_fault_configs_are_cached_by_value_and_type():
    # 1, 1.0 and True hash alike: a cached valid 1 must not let True or 1.0 through.
    assert FaultConfig.from_mapping({"faults-slow-fuel": 1}).slow_fuel == 1
    for refused in (True, 1.0):
        with pytest.raises(FaultConfigError, match="faults-slow-fuel: expected an integer"):
            FaultConfig.from_mapping({"faults-slow-fuel": refused})
    first = FaultConfig.from_mapping({"faults-crash": 0.25, "seed": 1})
    assert FaultConfig.from_mapping({"faults-crash": 0.25, "seed": 2}) is first
    assert FaultConfig.from_mapping({"faults-crash": 1}).crash == 1.0  # an int stands for a float
    with pytest.raises(FaultConfigError, match="faults-crash: expected a number"):
        FaultConfig.from_mapping({"faults-crash": [0.25]})  # unhashable: refused, not cached
