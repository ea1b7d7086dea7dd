"""coordinator/validation.py: every reply is checked before aggregation; bad ones get a reason."""

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

from coordinator.validation import check_evaluate_reply, check_train_reply, message_bytes
from protos import contract
from protos.contract import ClientErrorCode
from protos.report_pb2 import FAILED, OK, REJECTED
from tests.coordinator.messages import reply_metadata

SHAPES = {"layer0.weight": (4, 3), "layer0.bias": (3,)}
MAX_NORM = 10.0


def good_delta(scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        name: (scale * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in SHAPES.items()
    }


def good_metrics(**changes) -> dict:
    metrics = {
        contract.METRIC_NUM_EXAMPLES: 40,
        contract.METRIC_TRAIN_LOSS: 0.7,
        contract.METRIC_KERNEL_SECONDS: 0.01,
        contract.METRIC_FUEL_USED: 0,
        contract.METRIC_REPLY_BYTES: 60,
        contract.METRIC_PARTITION_ID: 3,
    }
    metrics.update(changes)
    return {key: value for key, value in metrics.items() if value is not None}


def train_reply(node_id=11, arrays=None, metrics=None, records=None) -> Message:
    if records is None:
        arrays = good_delta() if arrays is None else arrays
        metrics = good_metrics() if metrics is None else metrics
        records = {
            contract.RECORD_ARRAYS: ArrayRecord(
                {name: Array(value) for name, value in arrays.items()}
            ),
            contract.RECORD_METRICS: MetricRecord(metrics),
        }
    return Message(content=RecordDict(records), metadata=reply_metadata(node_id))


def check(message: Message):
    return check_train_reply(message, SHAPES, MAX_NORM)


def test_a_good_reply_is_ok_with_its_facts():
    delta = good_delta()
    result = check(train_reply(arrays=delta))
    assert result.status == OK and result.ok and result.reason == ""
    assert (result.node_id, result.partition_id, result.num_examples) == (11, 3, 40)
    assert result.train_loss == pytest.approx(0.7) and result.kernel_seconds == pytest.approx(0.01)
    flat = np.concatenate([v.ravel() for v in delta.values()]).astype(np.float64)
    assert result.delta_norm == pytest.approx(np.linalg.norm(flat))
    for name in SHAPES:
        np.testing.assert_array_equal(result.delta[name], delta[name])
    assert result.bytes_uploaded > sum(v.nbytes for v in delta.values())


def test_an_error_reply_is_failed_with_the_clients_reason():
    instruction = Message(content=RecordDict(), metadata=reply_metadata(0))
    instruction.metadata.dst_node_id = 22
    code = ClientErrorCode.KERNEL_MISMATCH.value
    reply = Message(Error(code=code, reason="kernel sha256 mismatch"), reply_to=instruction)
    result = check(reply)
    assert result.status == FAILED and result.node_id == 22
    assert str(code) in result.reason and "kernel sha256 mismatch" in result.reason
    assert result.delta is None


def bad_arrays(kind: str) -> dict:
    arrays = good_delta()
    if kind == "missing":
        del arrays["layer0.bias"]
    elif kind == "extra":
        arrays["layer9.weight"] = np.zeros((1,), np.float32)
    elif kind == "shape":
        arrays["layer0.bias"] = np.zeros((4,), np.float32)
    elif kind == "dtype":
        arrays["layer0.bias"] = np.zeros((3,), np.float64)
    elif kind == "nan":
        arrays["layer0.weight"][1, 2] = np.nan
    elif kind == "inf":
        arrays["layer0.bias"][0] = -np.inf
    elif kind == "norm":
        arrays = good_delta(scale=100.0)
    return arrays


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", "missing ['layer0.bias']"),
        ("extra", "unexpected ['layer9.weight']"),
        ("shape", "shape (4,), expected (3,)"),
        ("dtype", "dtype float64, expected float32"),
        ("nan", "non-finite values in the delta: {'layer0.weight': 1}"),
        ("inf", "non-finite values in the delta: {'layer0.bias': 1}"),
        ("norm", "exceeds max-delta-norm 10"),
    ],
)
def test_bad_arrays_are_rejected_with_a_reason(kind, expected):
    result = check(train_reply(arrays=bad_arrays(kind)))
    assert result.status == REJECTED and not result.ok
    assert expected in result.reason
    assert result.delta is None
    assert result.partition_id == 3  # the facts that could be read are kept


def test_non_finite_norms_are_kept_for_the_report():
    assert math.isnan(check(train_reply(arrays=bad_arrays("nan"))).delta_norm)
    assert check(train_reply(arrays=bad_arrays("inf"))).delta_norm == math.inf
    too_big = check(train_reply(arrays=bad_arrays("norm")))
    assert too_big.delta_norm > MAX_NORM and too_big.rejected_delta is not None


def test_the_norm_bound_is_inclusive():
    delta = good_delta()
    norm = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in delta.values()))
    assert check_train_reply(train_reply(arrays=delta), SHAPES, norm).ok
    assert not check_train_reply(train_reply(arrays=delta), SHAPES, norm * (1 - 1e-9)).ok


@pytest.mark.parametrize(
    "metrics, expected",
    [
        (good_metrics(**{contract.METRIC_NUM_EXAMPLES: None}), "lacks 'num-examples'"),
        (good_metrics(**{contract.METRIC_NUM_EXAMPLES: 0}), "must be > 0"),
        (good_metrics(**{contract.METRIC_NUM_EXAMPLES: -5}), "must be > 0"),
        (good_metrics(**{contract.METRIC_NUM_EXAMPLES: 2.5}), "must be an integer"),
        (good_metrics(**{contract.METRIC_TRAIN_LOSS: math.nan}), "'train-loss' is nan"),
    ],
)
def test_bad_metrics_are_rejected(metrics, expected):
    result = check(train_reply(metrics=metrics))
    assert result.status == REJECTED and expected in result.reason


def test_record_count_is_checked():
    delta = ArrayRecord({name: Array(value) for name, value in good_delta().items()})
    two_arrays = {
        contract.RECORD_ARRAYS: delta,
        "more": delta,
        contract.RECORD_METRICS: MetricRecord(good_metrics()),
    }
    assert "exactly one ArrayRecord, given 2" in check(train_reply(records=two_arrays)).reason
    no_arrays = {contract.RECORD_METRICS: MetricRecord(good_metrics())}
    assert "exactly one ArrayRecord, given 0" in check(train_reply(records=no_arrays)).reason
    no_metrics = {contract.RECORD_ARRAYS: delta}
    assert "exactly one MetricRecord, given 0" in check(train_reply(records=no_metrics)).reason
    with_config = {
        contract.RECORD_ARRAYS: delta,
        contract.RECORD_METRICS: MetricRecord(good_metrics()),
        "c": ConfigRecord({"a": 1}),
    }
    assert check(train_reply(records=with_config)).ok


def test_unreadable_array_bytes_are_rejected_not_raised():
    broken = Array(dtype="float32", shape=(3,), stype="numpy.ndarray", data=b"not an npy file")
    arrays = ArrayRecord(
        {"layer0.weight": Array(np.zeros((4, 3), np.float32)), "layer0.bias": broken}
    )
    result = check(
        train_reply(
            records={
                contract.RECORD_ARRAYS: arrays,
                contract.RECORD_METRICS: MetricRecord(good_metrics()),
            }
        )
    )
    assert (
        result.status == REJECTED
        and "layer0.bias" in result.reason
        and "cannot be read" in result.reason
    )


def test_data_that_contradicts_the_declared_shape_is_rejected():
    lying = Array(np.zeros((5,), np.float32))
    lying.shape = (3,)  # declared shape says 3, the bytes hold 5
    arrays = ArrayRecord(
        {"layer0.weight": Array(np.zeros((4, 3), np.float32)), "layer0.bias": lying}
    )
    result = check(
        train_reply(
            records={
                contract.RECORD_ARRAYS: arrays,
                contract.RECORD_METRICS: MetricRecord(good_metrics()),
            }
        )
    )
    assert result.status == REJECTED and "decodes to float32(5,)" in result.reason


def evaluate_reply(node_id=4, **metrics) -> Message:
    values = {
        contract.METRIC_NUM_EXAMPLES: 20,
        contract.METRIC_EVAL_LOSS: 0.5,
        contract.METRIC_EVAL_ACCURACY: 0.8,
        contract.METRIC_PARTITION_ID: 2,
    }
    values.update(metrics)
    values = {key: value for key, value in values.items() if value is not None}
    content = RecordDict({contract.RECORD_METRICS: MetricRecord(values)})
    return Message(content=content, metadata=reply_metadata(node_id, MessageType.EVALUATE))


def test_evaluate_replies():
    result = check_evaluate_reply(evaluate_reply())
    assert result.ok and (result.node_id, result.partition_id, result.num_examples) == (4, 2, 20)
    assert (result.eval_loss, result.eval_accuracy) == (0.5, 0.8)
    assert (
        "must be > 0"
        in check_evaluate_reply(evaluate_reply(**{contract.METRIC_NUM_EXAMPLES: 0})).reason
    )
    assert (
        "eval-loss is nan"
        in check_evaluate_reply(evaluate_reply(**{contract.METRIC_EVAL_LOSS: math.nan})).reason
    )
    assert (
        "not in [0, 1]"
        in check_evaluate_reply(evaluate_reply(**{contract.METRIC_EVAL_ACCURACY: 1.5})).reason
    )
    assert (
        "eval-loss is nan"
        in check_evaluate_reply(evaluate_reply(**{contract.METRIC_EVAL_LOSS: None})).reason
    )


def test_message_bytes_counts_every_record():
    message = train_reply()
    expected = sum(record.count_bytes() for record in message.content.values())
    assert message_bytes(message) == expected > 0
