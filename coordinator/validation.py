"""Checking each client reply before anything aggregates it.

A train reply is OK only when it carries exactly one ArrayRecord whose arrays have the global
model's names, shapes and dtype (float32), every value finite, a delta whose L2 norm is within
``max-delta-norm``, and a MetricRecord with ``num-examples`` > 0. Anything else is REJECTED
with a reason and never aggregated. An error reply (the client could not train) is FAILED:
counted, reported, not fatal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from protos.report_pb2 import FAILED, OK, REJECTED

from .aggregation import l2_norm

EXPECTED_DTYPE = "float32"
NO_PARTITION = -1


@dataclass(frozen=True)
class TrainReply:
    """What the coordinator learned from one train reply; ``delta`` is set only when OK."""

    node_id: int
    status: int  # report_pb2.ClientStatus: OK, FAILED or REJECTED
    reason: str = ""
    partition_id: int = NO_PARTITION
    num_examples: int = 0
    train_loss: float = math.nan
    kernel_seconds: float = 0.0
    fuel_used: int = 0
    bytes_uploaded: int = 0
    delta_norm: float = math.nan
    kernel_sha256: str = ""  # the kernel the client says it trained on ("" if it did not say)
    delta: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    # The delta of a rejected reply when it has the right layout (for cosine to the update).
    rejected_delta: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class EvaluateReply:
    """What the coordinator learned from one evaluate reply."""

    node_id: int
    status: int
    reason: str = ""
    partition_id: int = NO_PARTITION
    num_examples: int = 0
    eval_loss: float = math.nan
    eval_accuracy: float = math.nan
    bytes_uploaded: int = 0

    @property
    def ok(self) -> bool:
        return self.status == OK


def message_bytes(message: Message) -> int:
    """Bytes of a message's records as Flower counts them (``count_bytes``); 0 without content."""
    if not message.has_content():
        return 0
    return record_bytes(message.content)


def record_bytes(content: RecordDict) -> int:
    """Bytes of every record in ``content``, counted the way Flower's ``count_bytes`` does.

    A ConfigRecord is counted here: Flower 1.42's ConfigRecord.count_bytes raises ValueError
    on an empty string or an empty list (e.g. ``kernel-sha256 = ""``), which are valid values.
    """
    total = 0
    for record in content.values():
        if isinstance(record, ConfigRecord):
            total += sum(len(key) + _config_value_bytes(value) for key, value in record.items())
        else:
            total += record.count_bytes()
    return int(total)


def _config_value_bytes(value: object) -> int:
    if isinstance(value, list):
        return sum(_config_value_bytes(item) for item in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8  # 64-bit on the wire
    if isinstance(value, str | bytes):
        return len(value)
    raise TypeError(f"not a ConfigRecord value: {value!r}")


def check_train_reply(
    message: Message,
    expected_shapes: Mapping[str, tuple[int, ...]],
    max_delta_norm: float,
) -> TrainReply:
    """Validate one train reply against the global model's layout and the delta bound.

    Parameters
    ----------
    message : the reply from one node.
    expected_shapes : the global model's array names and shapes.
    max_delta_norm : the largest L2 norm a delta may have (inclusive).

    Returns
    -------
    TrainReply
        OK with the delta, or FAILED/REJECTED with the reason.
    """
    node_id = int(message.metadata.src_node_id)
    if message.has_error():
        return TrainReply(
            node_id,
            FAILED,
            f"client error {message.error.code}: {message.error.reason}",
        )
    if not message.has_content():
        return TrainReply(node_id, FAILED, "the reply has neither content nor an error")
    bytes_uploaded = message_bytes(message)
    metrics, metrics_problem = _single_metric_record(message)
    facts = _train_facts(metrics) if metrics is not None else {}
    if metrics is not None:
        metrics_problem = _metrics_problem(metrics)
    base = {"node_id": node_id, "bytes_uploaded": bytes_uploaded, **facts}
    base["kernel_sha256"] = reply_kernel_sha256(message)

    deltas, layout_problem = _delta_arrays(message, expected_shapes)
    if layout_problem:
        return TrainReply(status=REJECTED, reason=layout_problem, **base)
    assert deltas is not None
    norm = l2_norm(deltas)
    base["delta_norm"] = norm
    bad = [name for name, array in deltas.items() if not np.all(np.isfinite(array))]
    if bad:
        counts = {name: int(np.count_nonzero(~np.isfinite(deltas[name]))) for name in bad}
        return TrainReply(
            status=REJECTED, reason=f"non-finite values in the delta: {counts}", **base
        )
    if metrics_problem:
        return TrainReply(status=REJECTED, reason=metrics_problem, rejected_delta=deltas, **base)
    if not norm <= max_delta_norm:
        return TrainReply(
            status=REJECTED,
            reason=f"delta L2 norm {norm:.6g} exceeds max-delta-norm {max_delta_norm:.6g}",
            rejected_delta=deltas,
            **base,
        )
    return TrainReply(status=OK, delta=deltas, **base)


def check_evaluate_reply(message: Message) -> EvaluateReply:
    """Validate one evaluate reply: ``num-examples`` > 0, finite loss and accuracy in [0, 1]."""
    node_id = int(message.metadata.src_node_id)
    if message.has_error():
        return EvaluateReply(
            node_id, FAILED, f"client error {message.error.code}: {message.error.reason}"
        )
    if not message.has_content():
        return EvaluateReply(node_id, FAILED, "the reply has neither content nor an error")
    bytes_uploaded = message_bytes(message)
    metrics, problem = _single_metric_record(message)
    if metrics is None:
        return EvaluateReply(node_id, REJECTED, problem, bytes_uploaded=bytes_uploaded)
    partition_id = _int_metric(metrics, "partition-id", NO_PARTITION)
    base = {"node_id": node_id, "bytes_uploaded": bytes_uploaded, "partition_id": partition_id}
    num_examples, problem = _num_examples(metrics)
    if problem:
        return EvaluateReply(status=REJECTED, reason=problem, **base)
    loss = _float_metric(metrics, "eval-loss")
    accuracy = _float_metric(metrics, "eval-accuracy")
    base |= {"num_examples": num_examples, "eval_loss": loss, "eval_accuracy": accuracy}
    if not math.isfinite(loss):
        return EvaluateReply(status=REJECTED, reason=f"eval-loss is {loss}", **base)
    if not 0.0 <= accuracy <= 1.0:
        return EvaluateReply(
            status=REJECTED, reason=f"eval-accuracy {accuracy} is not in [0, 1]", **base
        )
    return EvaluateReply(status=OK, **base)


# -- pieces -----------------------------------------------------------------------------------
def reply_kernel_sha256(message: Message) -> str:
    """The kernel sha256 a train reply names (ConfigRecord ``kernel``, key ``sha256``).

    Only 64 lowercase hex digits are taken; anything else is "" (a reply is never trusted to
    put arbitrary text into a report).
    """
    record = message.content.config_records.get("kernel")
    value = record.get("sha256") if record is not None else None
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    return ""


def _single_metric_record(message: Message) -> tuple[MetricRecord | None, str]:
    records = message.content.metric_records
    if len(records) != 1:
        return None, f"expected exactly one MetricRecord, given {len(records)}"
    return next(iter(records.values())), ""


def _num_examples(metrics: MetricRecord) -> tuple[int, str]:
    if "num-examples" not in metrics:
        return 0, "the MetricRecord lacks 'num-examples'"
    value = metrics["num-examples"]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return 0, f"'num-examples' must be an integer, given {value!r}"
    if value <= 0:
        return 0, f"'num-examples' must be > 0, given {value}"
    return value, ""


def _train_facts(metrics: MetricRecord) -> dict[str, object]:
    num_examples, _ = _num_examples(metrics)
    return {
        "partition_id": _int_metric(metrics, "partition-id", NO_PARTITION),
        "num_examples": num_examples,
        "train_loss": _float_metric(metrics, "train-loss"),
        "kernel_seconds": _float_metric(metrics, "kernel-seconds", 0.0),
        "fuel_used": _int_metric(metrics, "fuel-used", 0),
    }


def _metrics_problem(metrics: MetricRecord) -> str:
    _, problem = _num_examples(metrics)
    if problem:
        return problem
    if "train-loss" in metrics:
        loss = _float_metric(metrics, "train-loss")
        if not math.isfinite(loss):
            return f"'train-loss' is {loss}"
    return ""


def _int_metric(metrics: MetricRecord, key: str, default: int) -> int:
    value = metrics.get(key, default)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return default


def _float_metric(metrics: MetricRecord, key: str, default: float = math.nan) -> float:
    value = metrics.get(key, default)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _delta_arrays(
    message: Message, expected_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray] | None, str]:
    records = message.content.array_records
    if len(records) != 1:
        return None, f"expected exactly one ArrayRecord, given {len(records)}"
    record = next(iter(records.values()))
    if set(record) != set(expected_shapes):
        missing = sorted(set(expected_shapes) - set(record))
        extra = sorted(set(record) - set(expected_shapes))
        return (
            None,
            f"array names differ from the global model: missing {missing}, unexpected {extra}",
        )
    deltas: dict[str, np.ndarray] = {}
    for name, expected_shape in expected_shapes.items():
        array = record[name]
        if tuple(array.shape) != tuple(expected_shape):
            return (
                None,
                f"array {name!r}: shape {tuple(array.shape)}, expected {tuple(expected_shape)}",
            )
        if array.dtype != EXPECTED_DTYPE:
            return None, f"array {name!r}: dtype {array.dtype}, expected {EXPECTED_DTYPE}"
        try:
            values = array.numpy()
        except Exception as error:  # malformed bytes: whatever numpy raises, it is a rejection
            return None, f"array {name!r}: cannot be read ({type(error).__name__}: {error})"
        if values.shape != tuple(expected_shape) or values.dtype != np.float32:
            return None, (
                f"array {name!r}: data decodes to {values.dtype}{values.shape}, "
                f"expected float32{tuple(expected_shape)}"
            )
        deltas[name] = values
    return deltas, ""
