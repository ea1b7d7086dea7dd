"""Property tests of coordinator/validation.py: whatever a reply holds, validation never raises,
what it accepts satisfies the reply contract, and what it records fits the report."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.app.error import Error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.strategy import _client_result
from coordinator.validation import (
    INT32_MAX,
    INT64_MAX,
    MAX_REASON_CHARS,
    WeightPolicy,
    check_evaluate_reply,
    check_train_reply,
)
from protos import contract
from protos.report_pb2 import FAILED, OK, REJECTED, ClientResult
from tests.coordinator.messages import reply_metadata

SHAPES = {"w": (3, 2), "b": (2,)}
MAX_NORM = 5.0
TRAIN_KEYS = ["num-examples", "train-loss", "kernel-seconds", "fuel-used", "reply-bytes",
              "partition-id", "other"]  # fmt: skip
EVALUATE_KEYS = ["num-examples", "eval-loss", "eval-accuracy", "partition-id", "other"]

# Everything a metric value could be, including what Flower's constructor would refuse.
huge_ints = st.integers(min_value=-(2**80), max_value=2**80)
edge_ints = st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63)])
floats = st.floats(allow_nan=True, allow_infinity=True)
metric_values = st.one_of(
    huge_ints,
    edge_ints,
    floats,
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(-5, 5), max_size=3),
    st.lists(st.floats(allow_nan=True), max_size=3),
)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def metric_record(values: dict) -> MetricRecord:
    record = MetricRecord()
    for key, value in values.items():
        record._data[key] = value  # past Flower's type checks: another engine might not check
    return record


def delta_arrays():
    finite = st.floats(-1.0, 1.0, width=32)
    return st.fixed_dictionaries(
        {name: hnp.arrays(np.float32, shape, elements=finite) for name, shape in SHAPES.items()}
    )


def hostile_arrays():
    dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8])
    shapes = st.sampled_from([(3, 2), (2,), (2, 3), (), (0,), (6,)])
    names = st.sampled_from(["w", "b", "x"])
    return st.dictionaries(
        names,
        dtypes.flatmap(lambda dtype: shapes.flatmap(lambda shape: hnp.arrays(dtype, shape))),
        max_size=3,
    )


def train_message(arrays: dict, metrics: dict) -> Message:
    record = ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})
    content = RecordDict(
        {contract.RECORD_ARRAYS: record, contract.RECORD_METRICS: metric_record(metrics)}
    )
    return Message(content=content, metadata=reply_metadata(9))


def assert_fits_the_report(result, bytes_downloaded: int = 100) -> None:
    row = ClientResult()
    row.CopyFrom(_client_result(result, bytes_downloaded))
    row.SerializeToString()
    assert len(result.reason) <= MAX_REASON_CHARS + 40
    assert result.reason.isprintable()


@PROPERTY_SETTINGS
@given(
    metrics=st.dictionaries(st.sampled_from(TRAIN_KEYS), metric_values),
    arrays=st.one_of(delta_arrays(), hostile_arrays()),
)
def test_train_validation_never_raises_and_accepts_only_the_contract(metrics, arrays):
    result = check_train_reply(train_message(arrays, metrics), SHAPES, MAX_NORM, server_round=1)
    assert result.status in (OK, REJECTED)
    assert_fits_the_report(result)
    if result.ok:
        assert result.delta is not None and result.reason == ""
        assert 1 <= result.num_examples <= INT64_MAX
        assert math.isfinite(result.train_loss) and result.train_loss >= 0
        assert -1 <= result.partition_id <= INT32_MAX
        assert 0 <= result.fuel_used <= INT64_MAX
        assert result.delta_norm <= MAX_NORM
        for name, shape in SHAPES.items():
            assert result.delta[name].dtype == np.float32 and result.delta[name].shape == shape
    else:
        assert result.delta is None and result.reason


@PROPERTY_SETTINGS
@given(metrics=st.dictionaries(st.sampled_from(EVALUATE_KEYS), metric_values))
def test_evaluate_validation_never_raises_and_accepts_only_the_contract(metrics):
    message = Message(
        content=RecordDict({contract.RECORD_METRICS: metric_record(metrics)}),
        metadata=reply_metadata(9, MessageType.EVALUATE),
    )
    result = check_evaluate_reply(message, server_round=1)
    assert result.status in (OK, REJECTED) and result.reason.isprintable()
    row = ClientResult(
        eval_loss=result.eval_loss,
        eval_accuracy=result.eval_accuracy,
        eval_num_examples=result.num_examples,
        partition_id=result.partition_id,
    )
    row.SerializeToString()
    if result.ok:
        assert 1 <= result.num_examples <= INT64_MAX
        assert math.isfinite(result.eval_loss) and result.eval_loss >= 0
        assert 0 <= result.eval_accuracy <= 1


@PROPERTY_SETTINGS
@given(code=huge_ints, reason=st.text(max_size=2000))
def test_error_replies_are_failed_with_a_bounded_printable_reason(code, reason):
    instruction = Message(content=RecordDict(), metadata=reply_metadata(0))
    instruction.metadata.dst_node_id = 5
    try:
        reply = Message(Error(code=code, reason=reason), reply_to=instruction)
    except (TypeError, ValueError):
        return  # Flower refuses to build it; nothing reaches the coordinator
    result = check_train_reply(reply, SHAPES, MAX_NORM)
    assert result.status == FAILED
    assert_fits_the_report(result)


@PROPERTY_SETTINGS
@given(
    claims=st.lists(st.integers(1, INT64_MAX), min_size=1, max_size=12),
    ratio=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
    bound=st.sampled_from([0, 1, 100, 10**9]),
)
def test_the_weight_policy_only_lowers_claims_and_bounds_them(claims, ratio, bound):
    bounded = WeightPolicy(max_num_examples=bound, max_examples_ratio=ratio).clip(claims)
    median = float(np.median(claims))
    for claim, (weight, note) in zip(claims, bounded, strict=True):
        assert 1 <= weight <= claim
        assert (weight != claim) == bool(note)
        if bound:
            assert weight <= bound
        if ratio:
            assert weight <= max(1, math.floor(ratio * median))
    # Client order changes nothing.
    assert sorted(bounded) == sorted(
        WeightPolicy(max_num_examples=bound, max_examples_ratio=ratio).clip(claims[::-1])
    )


def test_known_sizes_are_authoritative_and_exempt_from_the_ratio():
    policy = WeightPolicy(max_examples_ratio=2.0)
    claims = [10, 10, 10, 1000, 10**12]
    bounded = policy.clip(claims, expected=[10, 10, 10, 1000, 50])
    # 1000 is this partition's true size: skewed data is not clipped where the truth is known.
    assert [weight for weight, _ in bounded] == [10, 10, 10, 1000, 50]
    assert "the partition's size 50" in bounded[4][1]
    unknown = policy.clip(claims)
    assert [weight for weight, _ in unknown] == [10, 10, 10, 20, 20]
