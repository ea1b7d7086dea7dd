"""The coordinator's fast paths refuse exactly what the slow ones refused, and keep the bits.

- ``records_of`` reads the records Flower's ``array_records``/``metric_records``/
  ``config_records`` views hold, without building them.
- ``_train_metrics`` reads each metric once; the reference below is the two-pass code it
  replaced (``_train_facts`` then ``_train_metrics_problem``), kept as the oracle.
- ``ValidatedContent`` gives Flower's rule the same record views as a RecordDict, cheaply;
  ``of_delta`` builds it without Flower's per-item checks.
- Hostile array bytes (not npy, oversized, truncated, lying headers) still take ``np.load``
  and are refused as before.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian
from hypothesis import given
from hypothesis import strategies as st

from coordinator import validation
from coordinator.array_codec import DecodedArray
from coordinator.round_messages import delta_content, reply_metadata, work_done
from coordinator.validation import (
    FLOAT32_MAX,
    INT64_MAX,
    TrainReply,
    _float_value,
    _int_value,
    _num_examples,
    _partition,
    _train_metrics,
    check_train_reply,
    records_of,
)
from protos import contract
from protos.npy import npy_header
from protos.report_pb2 import OK, REJECTED
from tests.coordinator.messages import reply_metadata as unit_reply_metadata
from tests.coordinator.test_validation_properties import (
    PROPERTY_SETTINGS,
    TRAIN_KEYS,
    metric_record,
    metric_values,
)

SHAPES = {"w": (3, 2), "b": (2,)}
KINDS = {"array": ArrayRecord, "metric": MetricRecord, "config": ConfigRecord}


# -- records_of: the records Flower's views hold -----------------------------------------------
def _record(kind: str) -> ArrayRecord | MetricRecord | ConfigRecord:
    if kind == "array":
        return ArrayRecord({"w": Array(np.ones(2, np.float32))})
    if kind == "metric":
        return MetricRecord({"num-examples": 3})
    return ConfigRecord({"sha256": "x"})


@PROPERTY_SETTINGS
@given(items=st.lists(st.tuples(st.text(max_size=3), st.sampled_from(sorted(KINDS))), max_size=6))
def test_records_of_holds_what_flowers_views_hold_in_order(items):
    content = RecordDict({key: _record(kind) for key, kind in items})
    for view, kind in (
        (content.array_records, ArrayRecord),
        (content.metric_records, MetricRecord),
        (content.config_records, ConfigRecord),
    ):
        found = records_of(content, kind)
        assert [key for key, _ in found] == list(view.keys())
        assert all(record is view[key] for key, record in found)


# -- _train_metrics: one pass, the same facts and the same problem -----------------------------
def reference_train_facts(metrics: Mapping[str, Any]) -> dict[str, object]:
    """The facts as the two-pass code read them (bounds wide open for the values)."""
    num_examples, _ = _num_examples(metrics)
    partition_id, _ = _partition(metrics)
    fuel, fuel_problem = _int_value(
        metrics, contract.METRIC_FUEL_USED, low=0, high=INT64_MAX, required=False
    )
    loss, _ = _float_value(
        metrics, contract.METRIC_TRAIN_LOSS, low=-math.inf, high=math.inf, required=False
    )
    seconds, _ = _float_value(
        metrics, contract.METRIC_KERNEL_SECONDS, low=-math.inf, high=math.inf, required=False
    )
    return {
        "partition_id": partition_id,
        "num_examples": num_examples,
        "train_loss": loss,
        "kernel_seconds": 0.0
        if math.isnan(seconds) and contract.METRIC_KERNEL_SECONDS not in metrics
        else seconds,
        "fuel_used": 0 if fuel_problem or fuel is None else fuel,
    }


def reference_train_problem(metrics: Mapping[str, Any]) -> str:
    """The problem as the two-pass code found it (the first failing check, in this order)."""
    checks = (
        _num_examples(metrics)[1],
        _float_value(metrics, contract.METRIC_TRAIN_LOSS, low=0.0, high=FLOAT32_MAX, required=True)[
            1
        ],
        _float_value(
            metrics, contract.METRIC_KERNEL_SECONDS, low=0.0, high=FLOAT32_MAX, required=False
        )[1],
        _int_value(metrics, contract.METRIC_FUEL_USED, low=0, high=INT64_MAX, required=False)[1],
        _int_value(metrics, contract.METRIC_REPLY_BYTES, low=0, high=INT64_MAX, required=False)[1],
        _partition(metrics)[1],
    )
    return next((problem for problem in checks if problem), "")


def _same(first: object, second: object) -> bool:
    if isinstance(first, float) and isinstance(second, float) and math.isnan(first):
        return math.isnan(second)
    return type(first) is type(second) and first == second


@PROPERTY_SETTINGS
@given(values=st.dictionaries(st.sampled_from(TRAIN_KEYS), metric_values))
def test_one_pass_metrics_equal_the_two_pass_reference(values):
    # The reference reads the MetricRecord through Flower's accessors, as the old code did.
    record = metric_record(values)
    facts, problem = _train_metrics(dict(record.items()))
    expected = reference_train_facts(record)
    assert facts.keys() == expected.keys()
    assert all(_same(facts[key], expected[key]) for key in facts), (facts, expected)
    assert problem == reference_train_problem(record)


@PROPERTY_SETTINGS
@given(values=st.dictionaries(st.sampled_from(TRAIN_KEYS), metric_values))
def test_a_whole_train_reply_is_judged_on_the_one_pass_metrics(values):
    arrays = {name: np.full(shape, 0.1, np.float32) for name, shape in SHAPES.items()}
    record = ArrayRecord({name: Array(value) for name, value in arrays.items()})
    message = Message(
        content=RecordDict(
            {contract.RECORD_ARRAYS: record, contract.RECORD_METRICS: metric_record(values)}
        ),
        metadata=unit_reply_metadata(9),
    )
    result = check_train_reply(message, SHAPES, 5.0, server_round=1)
    problem = reference_train_problem(metric_record(values))
    assert (result.status, result.reason) == ((REJECTED, problem) if problem else (OK, ""))


# -- hostile array bytes take np.load and its checks, as before --------------------------------
def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _npy_version(values: np.ndarray, version: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, values, version=version, allow_pickle=False)
    return buffer.getvalue()


GOOD_W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
HOSTILE_BYTES = {
    "not npy": (b"definitely not an npy file", REJECTED, "cannot be read"),
    "empty": (b"", REJECTED, "cannot be read"),
    # np.load reads the array and ignores what follows it: a reply is exactly its arrays.
    "oversized (trailing bytes)": (_npy(GOOD_W) + b"\0" * 4096, REJECTED, "npy header describes"),
    "one trailing byte": (_npy(GOOD_W) + b"\0", REJECTED, "npy header describes"),
    "npy version 3.0": (_npy_version(GOOD_W, (3, 0)), REJECTED, "format version (3, 0)"),
    "npy version 2.0": (_npy_version(GOOD_W, (2, 0)), OK, ""),
    "truncated": (_npy(GOOD_W)[:-4], REJECTED, "cannot be read"),
    "header says (6,)": (_npy(GOOD_W.ravel()), REJECTED, "data decodes to float32(6,)"),
    "header says float64": (_npy(GOOD_W.astype(np.float64)), REJECTED, "data decodes to"),
    "big-endian float32": (_npy(GOOD_W.astype(">f4")), REJECTED, "data decodes to"),
    "a NaN": (
        _npy(np.where(GOOD_W > 0.3, np.nan, GOOD_W).astype(np.float32)),
        REJECTED,
        "non-finite",
    ),
    "an inf": (
        _npy(np.where(GOOD_W > 0.3, np.inf, GOOD_W).astype(np.float32)),
        REJECTED,
        "non-finite",
    ),
    "pickled object array": (
        npy_header((3, 2)).replace(b"<f4", b"|O ") + b"\x80\x05N." + b" " * 19,
        REJECTED,
        "cannot be read",
    ),
    # np.load reads a Fortran-ordered float32 array of the right shape: accepted, as before.
    "Fortran order": (_npy(np.asfortranarray(GOOD_W)), OK, ""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BYTES))
def test_hostile_array_bytes_are_judged_as_before(case):
    data, status, reason = HOSTILE_BYTES[case]
    arrays = ArrayRecord(
        {
            "w": Array(dtype="float32", shape=(3, 2), stype="numpy.ndarray", data=data),
            "b": Array(np.zeros(2, np.float32)),
        }
    )
    metrics = MetricRecord({contract.METRIC_NUM_EXAMPLES: 4, contract.METRIC_TRAIN_LOSS: 0.5})
    message = Message(
        content=RecordDict({contract.RECORD_ARRAYS: arrays, contract.RECORD_METRICS: metrics}),
        metadata=unit_reply_metadata(9),
    )
    result = check_train_reply(message, SHAPES, 5.0, server_round=1)
    assert result.status == status, result.reason
    assert reason in result.reason
    if status == OK:
        assert np.array_equal(result.delta["w"], GOOD_W)
        assert result.bytes_uploaded >= len(data)


def test_one_record_under_two_keys_is_two_records():
    arrays = ArrayRecord(
        {name: Array(np.zeros(shape, np.float32)) for name, shape in SHAPES.items()}
    )
    metrics = MetricRecord({contract.METRIC_NUM_EXAMPLES: 4, contract.METRIC_TRAIN_LOSS: 0.5})
    content = RecordDict({"a": arrays, "b": arrays, "m": metrics})
    message = Message(content=content, metadata=unit_reply_metadata(9))
    result = check_train_reply(message, SHAPES, 5.0, server_round=1)
    assert (result.status, result.reason) == (REJECTED, "expected exactly one ArrayRecord, given 2")


def test_a_kernel_sha256_outside_a_config_record_is_not_read():
    sha = "a" * 64
    content = RecordDict(
        {contract.RECORD_KERNEL: MetricRecord({"x": 1}), "config": ConfigRecord({"sha256": sha})}
    )
    message = Message(content=content, metadata=unit_reply_metadata(9))
    assert validation.reply_kernel_sha256(message) == ""
    content = RecordDict({contract.RECORD_KERNEL: ConfigRecord({contract.KERNEL_SHA256: sha})})
    assert validation.reply_kernel_sha256(Message(content, metadata=unit_reply_metadata(9))) == sha


# -- ValidatedContent: Flower's views, cheaply -------------------------------------------------
def _train_reply(node_id: int, scale: float, num_examples: int) -> TrainReply:
    rng = np.random.default_rng(node_id)
    delta = {
        name: (scale * rng.normal(size=shape)).astype(np.float32) for name, shape in SHAPES.items()
    }
    return TrainReply(node_id, OK, num_examples=num_examples, delta=delta)


def _public_content(reply: TrainReply) -> RecordDict:
    """The same content built through Flower's public, type-checking constructors."""
    assert reply.delta is not None
    return RecordDict(
        {
            contract.RECORD_ARRAYS: ArrayRecord(
                {name: Array(np.asarray(value)) for name, value in reply.delta.items()}
            ),
            contract.RECORD_METRICS: MetricRecord(
                {contract.METRIC_NUM_EXAMPLES: reply.num_examples}
            ),
        }
    )


def test_validated_content_holds_what_flowers_constructors_build():
    reply = _train_reply(3, 0.5, 17)
    content, public = delta_content(reply), _public_content(reply)
    assert isinstance(content, RecordDict) and list(content.keys()) == list(public.keys())
    for key in public:
        assert type(content[key]) is type(public[key])
        assert list(content[key].keys()) == list(public[key].keys())
    for name, array in public[contract.RECORD_ARRAYS].items():
        decoded = content[contract.RECORD_ARRAYS][name]
        assert isinstance(decoded, DecodedArray)
        assert (decoded.dtype, decoded.shape, decoded.stype, decoded.data) == (
            array.dtype,
            array.shape,
            array.stype,
            array.data,
        )
        assert decoded.is_dirty
        assert np.array_equal(decoded.numpy(), array.numpy())
    assert dict(content[contract.RECORD_METRICS]) == dict(public[contract.RECORD_METRICS])


def test_validated_content_views_are_recorddicts_views():
    content = delta_content(_train_reply(3, 0.5, 17))
    content["config"] = ConfigRecord({"k": "v"})  # set later: RecordDict's own checks
    plain = RecordDict(dict(content.items()))
    for name in ("array_records", "metric_records", "config_records"):
        fast, slow = getattr(content, name), getattr(plain, name)
        assert type(fast) is type(slow)
        assert list(fast.items()) == list(slow.items())
        assert fast.allowed_type is slow.allowed_type and fast.recorddict is content
    # A view writes through, as Flower's does; a wrong type is still refused.
    view = content.metric_records
    view["extra"] = MetricRecord({"x": 1.0})
    assert isinstance(content["extra"], MetricRecord)
    del view["extra"]
    assert "extra" not in content
    with pytest.raises(TypeError):
        view["bad"] = ConfigRecord({"k": "v"})  # type: ignore[assignment]
    with pytest.raises(TypeError):
        content["bad"] = "not a record"  # type: ignore[assignment]


@pytest.mark.parametrize("rule", [FedAvg, FedMedian])
def test_flowers_rule_gives_the_same_bits_on_validated_content(rule):
    replies = [_train_reply(node, 0.1 * node, 10 + node) for node in range(1, 8)]

    def aggregate(build):
        messages = [
            Message(content=build(reply), metadata=reply_metadata(reply.node_id, 1))
            for reply in replies
        ]
        arrays, _ = rule().aggregate_train(1, messages)
        return {name: array.numpy() for name, array in arrays.items()}

    fast, public = aggregate(delta_content), aggregate(_public_content)
    assert fast.keys() == public.keys()
    for name in fast:
        assert fast[name].tobytes() == public[name].tobytes()


def _old_hex_check(value: object) -> bool:
    # The character-by-character check the regex replaced.
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


@PROPERTY_SETTINGS
@given(
    value=st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF\n٣０g", min_size=62, max_size=66),
        st.sampled_from(["a" * 64, "a" * 64 + "\n", "٣" * 64, "０" * 64, "A" * 64, ""]),
    )
)
def test_the_kernel_sha256_pattern_accepts_what_the_old_check_accepted(value):
    message = Message(
        RecordDict({contract.RECORD_KERNEL: ConfigRecord({contract.KERNEL_SHA256: value})}),
        metadata=unit_reply_metadata(9),
    )
    expected = value if _old_hex_check(value) else ""
    assert validation.reply_kernel_sha256(message) == expected


# -- a record under a key that is not a string (a RecordDict filled past Flower's checks) ------
def _with_int_key(kind: str) -> RecordDict:
    arrays = ArrayRecord(
        {name: Array(np.zeros(shape, np.float32)) for name, shape in SHAPES.items()}
    )
    metrics = MetricRecord({contract.METRIC_NUM_EXAMPLES: 4, contract.METRIC_TRAIN_LOSS: 0.5})
    content = RecordDict({contract.RECORD_ARRAYS: arrays, contract.RECORD_METRICS: metrics})
    content._data[7] = _record(kind)  # as an unpickled reply can hold it
    return content


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_non_string_key_is_refused_as_flowers_view_refuses_it(kind):
    content = _with_int_key(kind)
    view = {"array": "array_records", "metric": "metric_records", "config": "config_records"}
    with pytest.raises(TypeError) as flower:
        getattr(content, view[kind])
    with pytest.raises(TypeError) as ours:
        records_of(content, KINDS[kind])
    assert str(ours.value) == str(flower.value)
    result = check_train_reply(
        Message(content=content, metadata=unit_reply_metadata(9)), SHAPES, 5.0, server_round=1
    )
    assert result.status == REJECTED
    assert result.reason == f"unreadable reply (TypeError: {flower.value})"
    # Reading the steps done never raises out of the round: the reply is rejected above.
    assert work_done(Message(content=content, metadata=unit_reply_metadata(9))) is None
