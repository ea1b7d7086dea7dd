"""coordinator/strategy.py: the delta adapter over Flower's strategies, without an engine.

Messages are built directly; a tiny grid lists node ids. Each Flower rule fed deltas is checked
against the same rule fed weights (robust rules) or the textbook update (server optimizers).
"""

import math

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.app.error import Error
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from coordinator import attribution
from coordinator.clock import DeviceProfile, DeviceSimulation
from coordinator.flower_strategies import StrategyParamsError, build_flower_strategy
from coordinator.sampling import sample_nodes
from coordinator.strategy import (
    DeltaStrategy,
    RoundFailedError,
    StrategyStateError,
)
from coordinator.validation import WeightPolicy
from protos.contract import ClientErrorCode
from protos.report_pb2 import FAILED, OK, REJECTED
from tests.coordinator.messages import reply_metadata

SHAPES = {"layer0.weight": (6, 4), "layer0.bias": (4,)}
NODES = [901, 17, 5003, 42, 77]


class ListGrid:
    """The part of a Grid the adapter uses to sample."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


def arrays_of(weights) -> ArrayRecord:
    return ArrayRecord(
        {name: Array(np.asarray(value, np.float32)) for name, value in weights.items()}
    )


def numpy_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def random_arrays(rng, scale=1.0):
    return {
        name: (scale * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in SHAPES.items()
    }


def reply(message: Message, delta, num_examples=10, partition_id=None, **metrics) -> Message:
    values = {
        "num-examples": num_examples,
        "train-loss": 0.5,
        "kernel-seconds": 0.02,
        "fuel-used": 0,
        "partition-id": NODES.index(message.metadata.dst_node_id)
        if partition_id is None
        else partition_id,
    }
    values.update(metrics)
    content = RecordDict({"arrays": arrays_of(delta), "metrics": MetricRecord(values)})
    return Message(content=content, reply_to=message)


def make(name, params=None, *, server_lr=1.0, max_delta_norm=1e6, fraction_train=1.0, seed=3):
    flower = build_flower_strategy(
        name,
        params or {},
        fraction_train=fraction_train,
        fraction_evaluate=1.0,
        server_lr=server_lr,
        proximal_mu=0.0,
        lr=0.1,
    )
    return DeltaStrategy(
        flower,
        seed=seed,
        server_lr=server_lr,
        max_delta_norm=max_delta_norm,
        fraction_train=fraction_train,
        fraction_evaluate=1.0,
        rule_name=name,
    )


def train_round(strategy, server_round, global_weights, deltas, num_examples=None, shuffle=None):
    """Configure a round on all NODES; node i replies with deltas[i]. Returns (weights, report)."""
    messages = list(
        strategy.configure_train(
            server_round, arrays_of(global_weights), ConfigRecord({"lr": 0.1}), ListGrid(NODES)
        )
    )
    by_node = {message.metadata.dst_node_id: message for message in messages}
    replies = [
        reply(by_node[node], deltas[i], num_examples[i] if num_examples else 10)
        for i, node in enumerate(NODES)
        if node in by_node
    ]
    if shuffle is not None:
        replies = [replies[i] for i in shuffle]
    new_arrays, _ = strategy.aggregate_train(server_round, replies)
    return numpy_of(new_arrays), strategy.round_report(server_round)


def sampled_round(strategy, global_weights):
    """Configure round 1 on NODES; return its train messages and a node it did not sample."""
    messages = list(
        strategy.configure_train(1, arrays_of(global_weights), ConfigRecord({}), ListGrid(NODES))
    )
    sampled = {m.metadata.dst_node_id for m in messages}
    return messages, next(node for node in NODES if node not in sampled)


def weights_replies(weights_list, num_examples, nodes=NODES):
    """Replies carrying full weights, to run a Flower rule the way Flower itself would."""
    replies = []
    for node, weights, count in zip(nodes, weights_list, num_examples, strict=True):
        metadata = reply_metadata(node, reply_to_message_id="")
        content = RecordDict(
            {"arrays": arrays_of(weights), "metrics": MetricRecord({"num-examples": count})}
        )
        replies.append(Message(content=content, metadata=metadata))
    return replies


# -- weighted means ---------------------------------------------------------------------------
def test_fedavg_step_is_global_plus_server_lr_times_weighted_delta():
    rng = np.random.default_rng(0)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    counts = [10, 20, 30, 40, 100]
    new_weights, report = train_round(
        make("fedavg", server_lr=0.5), 1, global_weights, deltas, counts
    )
    for name in SHAPES:
        expected = global_weights[name] + 0.5 * np.average(
            np.stack([d[name] for d in deltas]), axis=0, weights=counts
        )
        np.testing.assert_allclose(new_weights[name], expected, rtol=1e-6, atol=1e-6)
    assert report.clients_succeeded == 5 and report.clients_sampled == 5
    shares = {int(c.node_id): c.aggregation_weight for c in report.clients}
    assert shares[NODES[4]] == pytest.approx(100 / 200) and sum(shares.values()) == pytest.approx(
        1.0
    )
    assert all(c.selected and c.status == OK for c in report.clients)
    assert report.train_loss == pytest.approx(0.5)


def test_fedavg_over_deltas_equals_flower_fedavg_over_weights():
    rng = np.random.default_rng(1)
    global_weights = random_arrays(rng, 2.0)
    locals_ = [random_arrays(rng) for _ in NODES]
    deltas = [{n: local[n] - global_weights[n] for n in SHAPES} for local in locals_]
    counts = [3, 1, 4, 1, 5]
    via_deltas, _ = train_round(make("fedavg"), 1, global_weights, deltas, counts)
    flower_result, _ = FedAvg().aggregate_train(1, weights_replies(locals_, counts))
    for name, value in numpy_of(flower_result).items():
        np.testing.assert_allclose(via_deltas[name], value, atol=1e-6)


def test_reply_order_changes_no_bit_of_the_result():
    rng = np.random.default_rng(2)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.3) for _ in NODES]
    counts = [7, 11, 13, 17, 19]
    first, _ = train_round(make("fedavg"), 1, global_weights, deltas, counts)
    second, _ = train_round(
        make("fedavg"), 1, global_weights, deltas, counts, shuffle=[4, 2, 0, 3, 1]
    )
    for name in SHAPES:
        np.testing.assert_array_equal(first[name], second[name])


# -- server optimizers: the aggregated delta is the pseudo-gradient ---------------------------
def textbook_fedopt(kind, global_weights, rounds_of_deltas, counts, *, eta, beta_1, beta_2, tau):
    """Reddi et al. (2020), Algorithm 2, with Flower's FedAdam bias correction (round t+1)."""
    weights = {n: v.astype(np.float64) for n, v in global_weights.items()}
    m = {n: np.zeros(s) for n, s in SHAPES.items()}
    v = {n: np.zeros(s) for n, s in SHAPES.items()}
    for t, deltas in enumerate(rounds_of_deltas, start=1):
        for name in SHAPES:
            pseudo_gradient = np.average(
                np.stack([d[name] for d in deltas]), axis=0, weights=counts
            )
            m[name] = beta_1 * m[name] + (1 - beta_1) * pseudo_gradient
            squared = pseudo_gradient**2
            if kind == "fedadam":
                v[name] = beta_2 * v[name] + (1 - beta_2) * squared
                step = eta * math.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
            elif kind == "fedyogi":
                v[name] = v[name] - (1 - beta_2) * squared * np.sign(v[name] - squared)
                step = eta
            else:  # fedadagrad
                v[name] = v[name] + squared
                step = eta
            weights[name] = weights[name] + step * m[name] / (np.sqrt(v[name]) + tau)
    return weights


@pytest.mark.parametrize(
    "kind, params, beta_1, beta_2",
    [
        ("fedadam", {"beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}, 0.9, 0.99),
        ("fedyogi", {"beta_1": 0.8, "beta_2": 0.95, "tau": 1e-2}, 0.8, 0.95),
        ("fedadagrad", {"tau": 1e-3}, 0.0, 0.0),
    ],
)
def test_fedopt_family_matches_the_textbook_over_three_rounds(kind, params, beta_1, beta_2):
    rng = np.random.default_rng(3)
    global_weights = random_arrays(rng)
    counts = [5, 10, 15, 20, 50]
    strategy = make(kind, params, server_lr=0.05)
    rounds = [[random_arrays(rng, 0.2) for _ in NODES] for _ in range(3)]
    weights = global_weights
    for server_round, deltas in enumerate(rounds, start=1):
        weights, report = train_round(strategy, server_round, weights, deltas, counts)
        strategy.forget_round(server_round)
    expected = textbook_fedopt(
        kind,
        global_weights,
        rounds,
        counts,
        eta=0.05,
        beta_1=beta_1,
        beta_2=beta_2,
        tau=params["tau"],
    )
    for name in SHAPES:
        np.testing.assert_allclose(weights[name], expected[name], rtol=1e-5, atol=1e-5)
    assert report.update_norm > 0


def test_fedavgm_momentum_matches_the_textbook():
    rng = np.random.default_rng(4)
    global_weights = random_arrays(rng)
    counts = [1, 2, 3, 4, 5]
    strategy = make("fedavgm", {"server_momentum": 0.9}, server_lr=0.7)
    weights = global_weights
    expected = {n: v.astype(np.float64) for n, v in global_weights.items()}
    velocity = {n: np.zeros(s) for n, s in SHAPES.items()}
    for server_round in range(1, 4):
        deltas = [random_arrays(rng, 0.2) for _ in NODES]
        weights, _ = train_round(strategy, server_round, weights, deltas, counts)
        for name in SHAPES:
            average = np.average(np.stack([d[name] for d in deltas]), axis=0, weights=counts)
            velocity[name] = 0.9 * velocity[name] + average  # Hsu et al. 2019
            expected[name] = expected[name] + 0.7 * velocity[name]
    for name in SHAPES:
        np.testing.assert_allclose(weights[name], expected[name], rtol=1e-5, atol=1e-5)


def test_fedavgm_without_momentum_is_fedavg_with_server_lr():
    rng = np.random.default_rng(5)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.2) for _ in NODES]
    with_m, _ = train_round(make("fedavgm", server_lr=0.3), 1, global_weights, deltas)
    plain, _ = train_round(make("fedavg", server_lr=0.3), 1, global_weights, deltas)
    for name in SHAPES:
        np.testing.assert_allclose(with_m[name], plain[name], rtol=1e-6, atol=1e-6)


# -- robust rules: translation equivariance ---------------------------------------------------
ROBUST = [
    ("fedmedian", {}, FedMedian, {}),
    ("fedtrimmedavg", {"beta": 0.2}, FedTrimmedAvg, {"beta": 0.2}),
    ("krum", {"num_malicious_nodes": 1}, Krum, {"num_malicious_nodes": 1}),
    (
        "multikrum",
        {"num_malicious_nodes": 1, "num_nodes_to_select": 3},
        MultiKrum,
        {"num_malicious_nodes": 1, "num_nodes_to_select": 3},
    ),
    ("bulyan", {"num_malicious_nodes": 0}, Bulyan, {"num_malicious_nodes": 0}),
]


@pytest.mark.parametrize("name, params, flower_class, flower_params", ROBUST)
def test_robust_rule_on_deltas_equals_rule_on_weights(name, params, flower_class, flower_params):
    rng = np.random.default_rng(6)
    global_weights = random_arrays(rng, 3.0)
    deltas = [random_arrays(rng, 0.5) for _ in NODES]
    deltas[2] = random_arrays(rng, 20.0)  # a clear outlier
    counts = [10, 20, 30, 40, 50]
    via_deltas, report = train_round(make(name, params), 1, global_weights, deltas, counts)
    locals_ = [{n: global_weights[n] + d[n] for n in SHAPES} for d in deltas]
    flower_result, _ = flower_class(**flower_params).aggregate_train(
        1, weights_replies(locals_, counts)
    )
    for array_name, value in numpy_of(flower_result).items():
        np.testing.assert_allclose(via_deltas[array_name], value, atol=2e-6)
    weights = [c.aggregation_weight for c in report.clients]
    assert sum(weights) == pytest.approx(1.0)
    outlier = next(c for c in report.clients if int(c.node_id) == NODES[2])
    if name == "bulyan":
        # With num_malicious_nodes=0 Bulyan keeps all n and averages all n per coordinate.
        assert weights == pytest.approx([0.2] * 5)
    else:
        assert outlier.aggregation_weight < 0.2  # the rule discounts the outlier
        assert outlier.cosine_to_update < max(c.cosine_to_update for c in report.clients)


def test_krum_records_which_client_was_selected():
    rng = np.random.default_rng(7)
    base = random_arrays(rng, 0.1)
    deltas = [{n: v + 0.01 * i for n, v in base.items()} for i in range(5)]
    deltas[4] = {n: v + 10.0 for n, v in base.items()}
    _, report = train_round(make("krum", {"num_malicious_nodes": 1}), 1, random_arrays(rng), deltas)
    selected = [c for c in report.clients if c.selected]
    assert len(selected) == 1 and selected[0].aggregation_weight == 1.0
    assert "Krum score rank 1 of 5" in selected[0].aggregation_note
    outlier = next(c for c in report.clients if int(c.node_id) == NODES[4])
    assert not outlier.selected and outlier.aggregation_weight == 0.0
    assert "not selected (Krum score rank 5 of 5)" in outlier.aggregation_note


def test_trimmed_mean_notes_what_was_trimmed():
    rng = np.random.default_rng(8)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    deltas[1] = {n: v + 5.0 for n, v in deltas[1].items()}  # always the highest value
    _, report = train_round(make("fedtrimmedavg", {"beta": 0.2}), 1, random_arrays(rng), deltas)
    high = next(c for c in report.clients if int(c.node_id) == NODES[1])
    assert high.aggregation_weight == 0.0
    assert "trimmed as low in 0.0% and as high in 100.0% of coordinates" in high.aggregation_note


def test_median_shares_sum_to_one_and_name_the_rule():
    rng = np.random.default_rng(9)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    _, report = train_round(make("fedmedian"), 1, random_arrays(rng), deltas)
    assert sum(c.aggregation_weight for c in report.clients) == pytest.approx(1.0)
    assert all(c.aggregation_note.startswith("median:") for c in report.clients)


def test_bulyan_with_too_few_replies_keeps_the_model_and_says_why():
    # One failed or rejected client below the rule's minimum must not end the run: the round
    # keeps the model (as Flower's Strategy.start does when a rule returns no aggregate).
    rng = np.random.default_rng(10)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    global_weights = random_arrays(rng)
    strategy = make("bulyan", {"num_malicious_nodes": 1})
    new_weights, report = train_round(strategy, 1, global_weights, deltas)
    assert len(NODES) < 7
    assert {name: v.tobytes() for name, v in new_weights.items()} == {
        name: v.tobytes() for name, v in global_weights.items()
    }
    assert report.update_norm == 0.0
    assert report.model_unchanged_reason == (
        f"Bulyan returned no aggregate for {len(NODES)} usable replies "
        "(Bulyan needs at least 4 * num_malicious_nodes + 3 = 7)"
    )
    assert report.clients_succeeded == len(NODES)
    assert all(
        c.aggregation_note == "not aggregated: the rule made no aggregate this round"
        for c in report.clients
    )
    # A round the rule aggregates says nothing.
    _, fedavg_report = train_round(make("fedavg"), 1, global_weights, deltas)
    assert fedavg_report.model_unchanged_reason == "" and fedavg_report.update_norm > 0


# -- validation inside the round ----------------------------------------------------------------
def test_rejected_and_failed_replies_are_never_aggregated():
    rng = np.random.default_rng(11)
    global_weights = random_arrays(rng)
    strategy = make("fedavg", max_delta_norm=5.0)
    messages = {
        m.metadata.dst_node_id: m
        for m in strategy.configure_train(
            1, arrays_of(global_weights), ConfigRecord({}), ListGrid(NODES)
        )
    }
    good = [random_arrays(rng, 0.1) for _ in range(2)]
    nan_delta = random_arrays(rng, 0.1)
    nan_delta["layer0.bias"][1] = np.nan
    huge = random_arrays(rng, 100.0)
    replies = [
        reply(messages[NODES[0]], good[0], 10),
        reply(messages[NODES[1]], good[1], 30),
        reply(messages[NODES[2]], nan_delta, 1000),
        reply(messages[NODES[3]], huge, 1000),
        Message(
            Error(code=ClientErrorCode.DATA.value, reason="data file missing"),
            reply_to=messages[NODES[4]],
        ),
    ]
    new_arrays, _ = strategy.aggregate_train(1, replies)
    new_weights = numpy_of(new_arrays)
    for name in SHAPES:
        expected = global_weights[name] + (10 * good[0][name] + 30 * good[1][name]) / 40
        np.testing.assert_allclose(new_weights[name], expected, rtol=1e-6, atol=1e-6)
    report = strategy.round_report(1)
    assert (report.clients_succeeded, report.clients_rejected, report.clients_failed) == (2, 2, 1)
    by_node = {int(c.node_id): c for c in report.clients}
    assert by_node[NODES[2]].status == REJECTED and "non-finite" in by_node[NODES[2]].reason
    assert math.isnan(by_node[NODES[2]].delta_norm)
    assert by_node[NODES[3]].status == REJECTED and "max-delta-norm" in by_node[NODES[3]].reason
    assert by_node[NODES[3]].delta_norm > 5.0 and math.isfinite(by_node[NODES[3]].cosine_to_update)
    assert by_node[NODES[4]].status == FAILED and "data file missing" in by_node[NODES[4]].reason
    assert all(by_node[n].aggregation_weight == 0 and not by_node[n].selected for n in NODES[2:])
    # Set only when measured: the failed node sent no figures, the rejected ones did.
    training = ("num_examples", "claimed_num_examples", "train_loss", "kernel_seconds")
    assert not any(by_node[NODES[4]].HasField(name) for name in training + ("delta_norm",))
    assert all(by_node[NODES[3]].HasField(name) for name in training + ("delta_norm",))
    assert not by_node[NODES[4]].HasField("cosine_to_update")
    assert not by_node[NODES[2]].HasField("cosine_to_update")  # no finite delta to compare
    assert not any(c.HasField("eval_loss") or c.HasField("sim_seconds") for c in report.clients)
    assert not report.HasField("clients_offline") and not report.HasField("stragglers")
    assert by_node[NODES[1]].aggregation_weight == pytest.approx(0.75)
    assert report.bytes_downloaded == 5 * by_node[NODES[0]].bytes_downloaded > 0
    assert report.bytes_uploaded == sum(c.bytes_uploaded for c in report.clients)


def test_a_round_without_a_usable_reply_raises_with_every_reason():
    rng = np.random.default_rng(12)
    strategy = make("fedavg")
    messages = list(
        strategy.configure_train(
            1, arrays_of(random_arrays(rng)), ConfigRecord({}), ListGrid(NODES[:2])
        )
    )
    replies = [
        Message(
            Error(code=ClientErrorCode.KERNEL_FAILED.value, reason="kernel trapped"),
            reply_to=messages[0],
        )
    ]
    with pytest.raises(RoundFailedError) as info:
        strategy.aggregate_train(1, replies)
    assert "kernel trapped" in str(info.value) and "no reply before the timeout" in str(info.value)
    report = info.value.round_report
    assert report.clients_failed == 2 and report.clients_succeeded == 0
    assert {c.status for c in report.clients} == {FAILED}


def test_aggregating_an_unconfigured_round_is_a_clear_error():
    with pytest.raises(StrategyStateError, match="round 4 was not configured"):
        make("fedavg").aggregate_train(4, [])


def test_train_messages_carry_the_global_model_and_the_round():
    rng = np.random.default_rng(13)
    global_weights = random_arrays(rng)
    config = ConfigRecord({"lr": 0.1, "seed": 3})
    messages = list(
        make("fedavg").configure_train(2, arrays_of(global_weights), config, ListGrid(NODES))
    )
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(NODES)
    for message in messages:
        assert message.metadata.message_type == MessageType.TRAIN
        assert (
            message.content["config"]["server-round"] == 2
            and message.content["config"]["lr"] == 0.1
        )
        for name, value in numpy_of(message.content["arrays"]).items():
            np.testing.assert_array_equal(value, global_weights[name])
    assert "server-round" not in config  # the caller's config is not modified


def test_evaluation_is_recorded_per_client_and_averaged():
    rng = np.random.default_rng(14)
    strategy = make("fedavg")
    weights, _ = train_round(
        strategy, 1, random_arrays(rng), [random_arrays(rng, 0.1) for _ in NODES]
    )
    messages = list(
        strategy.configure_evaluate(1, arrays_of(weights), ConfigRecord({}), ListGrid(NODES))
    )
    assert all(m.metadata.message_type == MessageType.EVALUATE for m in messages)
    replies = []
    for index, message in enumerate(messages[:-1]):
        metrics = {
            "num-examples": 10 * (index + 1),
            "eval-loss": 1.0 + index,
            "eval-accuracy": 0.1 * index,
            "partition-id": index,
        }
        replies.append(Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message))
    aggregated = strategy.aggregate_evaluate(1, replies)
    counts = [10, 20, 30, 40]
    assert aggregated["eval-loss"] == pytest.approx(np.average([1, 2, 3, 4], weights=counts))
    report = strategy.round_report(1)
    assert report.federated_eval_accuracy == pytest.approx(
        np.average([0, 0.1, 0.2, 0.3], weights=counts)
    )
    statuses = sorted(c.eval_status for c in report.clients)
    assert statuses == sorted([OK] * 4 + [FAILED])


# -- sampling order (coordinator/sampling.py has the draw's own tests) -----------------------
def test_known_partitions_order_the_sample():
    strategy = make("fedavg", fraction_train=0.4)
    # Two runs with different random node ids but the same partitions sample the same partitions.
    picked_partitions = []
    for node_ids in ([9, 4, 7, 1, 3], [50, 10, 40, 30, 20]):
        strategy.node_partitions = {node: partition for partition, node in enumerate(node_ids)}
        sampled = sample_nodes(
            node_ids,
            fraction=0.4,
            min_nodes=1,
            seed=1,
            server_round=1,
            purpose=0,
            order_key=strategy.node_order_key,
        )
        picked_partitions.append([strategy.node_partitions[node] for node in sampled])
    assert picked_partitions[0] == picked_partitions[1] and len(picked_partitions[0]) == 2


def test_constructor_refusals_become_strategy_params_errors():
    with pytest.raises(StrategyParamsError, match="beta"):
        make("fedtrimmedavg", {"beta": 0.7})


def test_replies_from_unsampled_nodes_and_duplicates_are_not_aggregated():
    rng = np.random.default_rng(15)
    global_weights = random_arrays(rng)
    strategy = make("fedavg", fraction_train=0.4)
    messages, stranger = sampled_round(strategy, global_weights)
    assert len(messages) == 2
    stray_instruction = Message(RecordDict(), dst_node_id=stranger, message_type=MessageType.TRAIN)
    good = random_arrays(rng, 0.1)
    replies = [
        reply(messages[0], good, 10),
        reply(messages[0], random_arrays(rng, 0.1), 10),  # a second reply from the same node
        reply(messages[1], good, 10),
        reply(stray_instruction, random_arrays(rng, 0.1), 10_000),
    ]
    new_weights = numpy_of(strategy.aggregate_train(1, replies)[0])
    for name in SHAPES:
        np.testing.assert_allclose(
            new_weights[name], global_weights[name] + good[name], rtol=1e-6, atol=1e-6
        )
    report = strategy.round_report(1)
    assert report.clients_succeeded == 2 and report.clients_rejected == 1
    stray = next(c for c in report.clients if int(c.node_id) == stranger)
    assert stray.status == REJECTED and "not sampled this round" in stray.reason


def test_bulyan_records_the_multikrum_pick_and_the_closest_share():
    rng = np.random.default_rng(16)
    nodes = list(range(1, 8))
    strategy = make("bulyan", {"num_malicious_nodes": 1})
    global_weights = random_arrays(rng)
    messages = list(
        strategy.configure_train(1, arrays_of(global_weights), ConfigRecord({}), ListGrid(nodes))
    )
    deltas = {m.metadata.dst_node_id: random_arrays(rng, 0.1) for m in messages}
    deltas[7] = random_arrays(rng, 50.0)  # far from everyone: MultiKrum drops it
    replies = [
        reply(m, deltas[m.metadata.dst_node_id], 10, partition_id=m.metadata.dst_node_id)
        for m in messages
    ]
    new_weights = numpy_of(strategy.aggregate_train(1, replies)[0])
    report = strategy.round_report(1)
    selected = [c for c in report.clients if c.selected]
    assert len(selected) == 5  # theta = n - 2f
    outlier = next(c for c in report.clients if int(c.node_id) == 7)
    assert (
        not outlier.selected
        and outlier.aggregation_weight == 0.0
        and "not among the 5" in outlier.aggregation_note
    )
    assert sum(c.aggregation_weight for c in report.clients) == pytest.approx(1.0)
    assert all(
        "among the 3 closest to the median" in c.aggregation_note for c in selected
    )  # beta = theta - 2f
    locals_ = [{n: global_weights[n] + deltas[node][n] for n in SHAPES} for node in nodes]
    flower_result, _ = Bulyan(num_malicious_nodes=1).aggregate_train(
        1, weights_replies(locals_, [10] * 7, nodes)
    )
    for name, value in numpy_of(flower_result).items():
        np.testing.assert_allclose(new_weights[name], value, atol=2e-6)
        # every coordinate of the step averages values of picked deltas only
        picked = np.stack([deltas[int(c.node_id)][name] for c in selected])
        step = new_weights[name] - global_weights[name]
        assert np.all(step <= picked.max(axis=0) + 1e-6) and np.all(
            step >= picked.min(axis=0) - 1e-6
        )


# -- attribution on hand-sized examples ---------------------------------------------------------
def one_array(*values_per_client):
    return [{"w": np.asarray(values, np.float32)} for values in values_per_client]


def test_median_attribution_by_hand():
    notes = attribution.median(
        one_array([1, 5], [2, 4], [3, 6])
    )  # medians: 2 (client 1), 5 (client 0)
    assert [n.weight for n in notes] == pytest.approx([0.5, 0.5, 0.0])
    even = attribution.median(one_array([1], [2], [3], [4]))  # median = (2 + 3) / 2
    assert [n.weight for n in even] == pytest.approx([0.0, 0.5, 0.5, 0.0])


def test_trimmed_mean_attribution_by_hand():
    notes = attribution.trimmed_mean(one_array([5], [1], [3], [2], [4]), beta=0.2)
    assert [n.weight for n in notes] == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3])
    assert "as high in 100.0%" in notes[0].note and "as low in 100.0%" in notes[1].note
    untouched = attribution.trimmed_mean(one_array([5], [1], [3]), beta=0.2)  # int(0.6) = 0 cut
    assert [n.weight for n in untouched] == pytest.approx([1 / 3] * 3)


def test_krum_and_weighted_mean_attribution_by_hand():
    krum = attribution.krum_selection([2, 0, 1], 2, [10, 30, 10], "multikrum")
    assert [n.weight for n in krum] == pytest.approx([0.0, 0.75, 0.25])
    assert [n.selected for n in krum] == [False, True, True]
    mean = attribution.num_examples_shares([1, 3], "fedavg")
    assert [n.weight for n in mean] == pytest.approx([0.25, 0.75]) and all(n.selected for n in mean)


def test_attribution_is_skipped_not_guessed_for_huge_models(monkeypatch):
    monkeypatch.setattr(attribution, "MAX_STACKED_VALUES", 5)
    notes = attribution.median(one_array([1, 2], [3, 4], [5, 6]))
    assert all(math.isnan(n.weight) and "not computed" in n.note for n in notes)


class PartitionAwareGrid(ListGrid):
    """A grid that knows its nodes' partitions (as the local engine's does)."""

    def __init__(self, partitions):
        super().__init__(partitions)
        self.partitions = dict(partitions)

    def node_partitions(self):
        return dict(self.partitions)

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("a grid that knows the partitions must not be messaged for them")


def test_learn_partitions_asks_a_grid_that_knows_them_instead_of_messaging_every_node():
    partitions = {node: index for index, node in enumerate(reversed(NODES))}
    strategy = make("fedavg", fraction_train=0.4)
    found = strategy.learn_partitions(
        PartitionAwareGrid(partitions),
        arrays_of(random_arrays(np.random.default_rng(0))),
        ConfigRecord({}),
        timeout=1.0,
    )
    assert found == len(NODES)
    assert strategy.node_partitions == partitions
    # The canonical order is now partition order, as after a round-0 evaluation.
    assert sorted(NODES, key=strategy.node_order_key) == list(reversed(NODES))


# -- server-side defences ---------------------------------------------------------------------
def test_clip_delta_norm_scales_large_deltas_before_the_mean():
    rng = np.random.default_rng(4)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    deltas[2] = random_arrays(rng, 30.0)  # far above the clip norm
    clip = 1.0
    strategy = make("fedavg")
    strategy.clip_delta_norm = clip
    new_weights, report = train_round(strategy, 1, global_weights, deltas)

    def norm(delta):
        return math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in delta.values()))

    clipped = [{n: v * min(1.0, clip / norm(d)) for n, v in d.items()} for d in deltas]
    for name in SHAPES:
        expected = global_weights[name] + np.mean(np.stack([d[name] for d in clipped]), axis=0)
        np.testing.assert_allclose(new_weights[name], expected, rtol=1e-5, atol=1e-6)
    factors = {int(c.node_id): c.clip_factor for c in report.clients}
    assert factors[NODES[2]] == pytest.approx(clip / norm(deltas[2]))
    assert all(
        factors[node] == 1.0
        for node in NODES
        if node != NODES[2] and norm(deltas[NODES.index(node)]) <= clip
    )
    assert report.clients_clipped == sum(norm(d) > clip for d in deltas)
    by_node = {int(c.node_id): c for c in report.clients}
    assert by_node[NODES[2]].delta_norm == pytest.approx(norm(deltas[2]))  # what was sent


def test_the_weight_policy_clips_claims_before_the_mean():
    rng = np.random.default_rng(6)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    strategy = make("fedavg")
    strategy.weight_policy = WeightPolicy(max_examples_ratio=2.0)
    counts = [10, 10, 10, 10, 10**15]
    new_weights, report = train_round(strategy, 1, global_weights, deltas, counts)
    used = [10, 10, 10, 10, 20]
    for name in SHAPES:
        expected = global_weights[name] + np.average(
            np.stack([d[name] for d in deltas]), axis=0, weights=used
        )
        np.testing.assert_allclose(new_weights[name], expected, rtol=1e-6, atol=1e-6)
    liar = next(c for c in report.clients if int(c.node_id) == NODES[4])
    assert (liar.claimed_num_examples, liar.num_examples) == (10**15, 20)
    assert liar.aggregation_weight == pytest.approx(20 / 60)
    assert report.clients_weight_clipped == 1


def test_a_device_round_with_every_device_offline_keeps_the_model_and_says_so():
    rng = np.random.default_rng(12)
    global_weights = random_arrays(rng)
    deltas = [random_arrays(rng, 0.1) for _ in NODES]
    strategy = make("fedavg")
    never_online = DeviceProfile(
        speed=1e6, memory_mb=64, uplink=1e3, downlink=1e3, availability=0.0
    )
    strategy.devices = DeviceSimulation(
        profiles=(never_online,) * len(NODES),
        deadline_seconds=10.0,
        policy="drop",
        speed_jitter=0.0,
    )
    strategy.node_partitions.update({node: index for index, node in enumerate(NODES)})
    new_weights, report = train_round(strategy, 1, global_weights, deltas)
    assert report.clients_sampled == 0 and report.clients_offline == len(NODES)
    assert report.model_unchanged_reason == "every device was offline"
    assert report.update_norm == 0.0
    assert {name: v.tobytes() for name, v in new_weights.items()} == {
        name: v.tobytes() for name, v in global_weights.items()
    }
