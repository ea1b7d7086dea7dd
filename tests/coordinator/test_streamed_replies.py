"""Train replies validated as they arrive (``DeltaStrategy.receive_train_reply``).

The streamed path must give the round exactly what the batch path gives: the same replies
admitted or rejected, in the same order, with the same reasons, and the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.app.error import Error

from coordinator import strategy as strategy_module
from protos.contract import ClientErrorCode
from protos.report_pb2 import REJECTED
from tests.coordinator.test_strategy import (
    NODES,
    SHAPES,
    ListGrid,
    arrays_of,
    make,
    numpy_of,
    random_arrays,
    reply,
    task_identity,  # noqa: F401  # the autouse fixture instruction messages need
)


def hostile_round(strategy, seed=21):
    """Configure round 1 on 4 of NODES; return (global weights, replies) with hostile ones."""
    rng = np.random.default_rng(seed)
    global_weights = random_arrays(rng)
    messages = list(
        strategy.configure_train(1, arrays_of(global_weights), ConfigRecord({}), ListGrid(NODES))
    )
    assert len(messages) == 4
    sampled = {m.metadata.dst_node_id for m in messages}
    stranger = next(node for node in NODES if node not in sampled)
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


def test_aggregate_uses_the_validation_made_on_arrival(monkeypatch):
    strategy = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(strategy)
    for message in replies:
        strategy.receive_train_reply(1, message)
    checks = []
    real_check = strategy_module.check_train_reply

    def counting_check(message, *args, **kwargs):
        checks.append(message)
        return real_check(message, *args, **kwargs)

    monkeypatch.setattr(strategy_module, "check_train_reply", counting_check)
    strategy.aggregate_train(1, replies)
    assert checks == []  # every reply was validated on arrival


def test_a_reply_not_seen_on_arrival_is_validated_at_aggregation(monkeypatch):
    strategy = make("fedavg", max_delta_norm=5.0, fraction_train=0.8)
    _, replies = hostile_round(strategy)
    for message in replies[1:]:
        strategy.receive_train_reply(1, message)
    checks = []
    real_check = strategy_module.check_train_reply

    def counting_check(message, *args, **kwargs):
        checks.append(message)
        return real_check(message, *args, **kwargs)

    monkeypatch.setattr(strategy_module, "check_train_reply", counting_check)
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
