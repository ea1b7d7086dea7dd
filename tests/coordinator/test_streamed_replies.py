"""Train replies validated as they arrive (``DeltaStrategy.receive_train_reply``).

The streamed path must give the round exactly what the batch path gives: the same replies
admitted or rejected, in the same order, with the same reasons, and the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from coordinator import rules
from coordinator import strategy as strategy_module
from coordinator.round_messages import delta_content
from coordinator.validation import TrainReply, WeightPolicy
from protos.contract import ClientErrorCode
from protos.report_pb2 import OK, REJECTED
from tests.coordinator.test_strategy import (
    NODES,
    SHAPES,
    ListGrid,
    arrays_of,
    make,
    numpy_of,
    random_arrays,
    reply,
    sampled_round,
)


def hostile_round(strategy, seed=21):
    """Configure round 1 on 4 of NODES; return (global weights, replies) with hostile ones."""
    rng = np.random.default_rng(seed)
    global_weights = random_arrays(rng)
    messages, stranger = sampled_round(strategy, global_weights)
    assert len(messages) == 4
    stray = Message(RecordDict(), dst_node_id=stranger, message_type=MessageType.TRAIN)
    nan_delta = random_arrays(rng, 0.1)
    nan_delta["layer0.bias"][2] = np.inf
    wrong_shape = {"layer0.weight": np.zeros((4, 6), np.float32), "layer0.bias": np.zeros(4)}
    late = reply(messages[2], random_arrays(rng, 0.1), 10)
    late.metadata.__dict__["_group_id"] = "7"  # claims another round
    replies = [
        reply(messages[3], nan_delta, 1000),
        reply(messages[0], random_arrays(rng, 0.1), 10, **{"steps-done": 3, "steps-planned": 4}),
        reply(stray, random_arrays(rng, 0.1), 10_000),
        reply(messages[0], random_arrays(rng, 0.1), 10),  # a duplicate: dropped
        reply(messages[1], wrong_shape, 10),
        reply(messages[1], random_arrays(rng, 100.0), 30),  # too large (and a duplicate)
        late,
        Message(Error(code=ClientErrorCode.DATA.value, reason="no data"), reply_to=messages[2]),
        reply(messages[2], random_arrays(rng, 0.1), 20, **{"steps-done": 2.5}),
    ]
    return global_weights, replies


def report_bytes(strategy):
    report = strategy.round_report(1)
    report.wall_seconds = 0.0  # the one figure that is the clock's
    return report.SerializeToString(deterministic=True)


@pytest.mark.parametrize("arrival", ["in order", "reversed", "some"])
def test_streamed_validation_gives_the_batch_paths_report_and_bits(arrival):
    batch = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(batch)
    batch_arrays, _ = batch.aggregate_train(1, replies)

    streamed = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(streamed)
    arriving = {"in order": replies, "reversed": replies[::-1], "some": replies[1::2]}[arrival]
    for message in arriving:
        streamed.receive_train_reply(1, message)
    streamed_arrays, _ = streamed.aggregate_train(1, replies)

    assert report_bytes(streamed) == report_bytes(batch)
    for name in SHAPES:
        assert numpy_of(streamed_arrays)[name].tobytes() == numpy_of(batch_arrays)[name].tobytes()
    report = streamed.round_report(1)
    # The hostile replies were turned away as the batch path turns them away: the inf delta,
    # the wrong shape, the other round's reply, the stray node; the error reply FAILED.
    assert (report.clients_succeeded, report.clients_rejected, report.clients_failed) == (1, 4, 0)
    assert [c.status for c in report.clients].count(REJECTED) == 4


def _count_checks(monkeypatch) -> list:
    """The messages aggregate_train validates itself (not on arrival), in order."""
    checks = []
    real_check = strategy_module.check_train_reply

    def counting_check(message, *args, **kwargs):
        checks.append(message)
        return real_check(message, *args, **kwargs)

    monkeypatch.setattr(strategy_module, "check_train_reply", counting_check)
    return checks


def test_aggregate_uses_the_validation_made_on_arrival(monkeypatch):
    strategy = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(strategy)
    for message in replies:
        strategy.receive_train_reply(1, message)
    checks = _count_checks(monkeypatch)
    strategy.aggregate_train(1, replies)
    assert checks == []  # every reply was validated on arrival


def test_a_reply_not_seen_on_arrival_is_validated_at_aggregation(monkeypatch):
    strategy = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(strategy)
    for message in replies[1:]:
        strategy.receive_train_reply(1, message)
    checks = _count_checks(monkeypatch)
    strategy.aggregate_train(1, replies)
    assert checks == [replies[0]]


def test_a_reply_whose_reading_raises_is_left_to_aggregation(monkeypatch):
    # Whatever goes wrong while a reply arrives stays out of the grid's receive loop; the
    # aggregation then meets the same error where it always did.
    strategy = make("fedavg", fraction_train=0.8)
    _, replies = hostile_round(strategy)

    def broken_work_done(message):
        raise RuntimeError("metrics unreadable")

    monkeypatch.setattr(strategy_module, "work_done", broken_work_done)
    for message in replies:
        strategy.receive_train_reply(1, message)  # does not raise
    with pytest.raises(RuntimeError, match="metrics unreadable"):
        strategy.aggregate_train(1, replies)


def test_replies_of_an_unconfigured_round_are_ignored_on_arrival():
    strategy = make("fedavg", fraction_train=0.8)
    _, replies = hostile_round(strategy)
    strategy.receive_train_reply(2, replies[0])  # round 2 was never configured
    with pytest.raises(strategy_module.StrategyStateError):
        strategy.aggregate_train(2, replies)


RULES = [
    ("fedavg", {}),
    ("fedadam", {"beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    ("fedmedian", {}),
    ("krum", {"num_malicious_nodes": 1}),
    ("bulyan", {"num_malicious_nodes": 0}),
]


def clipping_round(strategy, seed=5):
    """Round 1 on all NODES: a delta above the clip norm, an inflated claim, an inf delta."""
    rng = np.random.default_rng(seed)
    strategy.clip_delta_norm = 1.0
    strategy.weight_policy = WeightPolicy(max_examples_ratio=2.0)
    global_weights = random_arrays(rng)
    messages = list(
        strategy.configure_train(1, arrays_of(global_weights), ConfigRecord({}), ListGrid(NODES))
    )
    deltas = [random_arrays(rng, 0.05) for _ in messages]
    deltas[1] = random_arrays(rng, 30.0)  # clipped to norm 1
    deltas[3]["layer0.weight"][0, 0] = np.inf
    counts = [10, 20, 10, 10, 10**12]  # the last claim is clipped to 2x the median
    return [reply(m, d, c) for m, d, c in zip(messages, deltas, counts, strict=True)]


@pytest.mark.parametrize("name, params", RULES)
def test_streamed_contents_are_rebuilt_where_the_aggregation_clips(name, params):
    batch = make(name, params)
    batch_arrays, _ = batch.aggregate_train(1, clipping_round(batch))
    streamed = make(name, params)
    replies = clipping_round(streamed)
    for message in replies[::-1]:
        streamed.receive_train_reply(1, message)
    streamed_arrays, _ = streamed.aggregate_train(1, replies)
    assert report_bytes(streamed) == report_bytes(batch)
    for array_name in SHAPES:
        streamed_bytes = numpy_of(streamed_arrays)[array_name].tobytes()
        assert streamed_bytes == numpy_of(batch_arrays)[array_name].tobytes()
    report = streamed.round_report(1)
    assert report.clients_clipped == 1 and report.clients_weight_clipped == 1
    assert report.clients_rejected == 1


def test_a_content_built_on_arrival_is_used_only_for_its_own_delta_and_weight(monkeypatch):
    strategy = make("fedavg")
    replies = clipping_round(strategy)
    for message in replies:
        strategy.receive_train_reply(1, message)
    built = []
    monkeypatch.setattr(
        strategy_module, "delta_content", lambda reply: built.append(reply) or delta_content(reply)
    )
    strategy.aggregate_train(1, replies)
    # Rebuilt: the clipped delta (node 1) and the clipped weight (node 4), nothing else.
    clipped = sorted(replies[index].metadata.src_node_id for index in (1, 4))
    assert sorted(reply.node_id for reply in built) == clipped


def test_the_train_metrics_aggregation_is_skipped_only_where_it_returned_nothing():
    contents = [
        delta_content(TrainReply(node, OK, "", delta={"w": np.ones(3, np.float32)}, num_examples=n))
        for node, n in ((1, 3), (2, 2**62))
    ]
    # Flower's default on the adapter's contents: an empty record, whatever the weights.
    assert aggregate_metricrecords(contents, "num-examples") == MetricRecord()
    assert rules.no_train_metrics(contents, "num-examples") == MetricRecord()
    for name, params in RULES:
        strategy = make(name, params)
        assert strategy.flower_strategy.train_metrics_aggr_fn is rules.no_train_metrics, name
    own = make("fedavg").flower_strategy
    custom = lambda contents, key: MetricRecord({"x": 1.0})  # noqa: E731
    own.train_metrics_aggr_fn = custom
    rules.skip_train_metrics(own)
    assert own.train_metrics_aggr_fn is custom  # a caller's own aggregation is kept
