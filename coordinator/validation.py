"""Checking each client reply before anything aggregates it.

A train reply is OK only when it answers this round's train message, carries exactly one
ArrayRecord whose arrays have the global model's names, shapes and dtype (float32), every value
finite, a delta whose L2 norm is within ``max-delta-norm``, and exactly one MetricRecord whose
metrics are plausible: ``num-examples`` an integer in [1, 2**63 - 1],
``train-loss`` present and in [0, FLOAT32_MAX] (cross-entropy), and where present
``kernel-seconds`` in [0, FLOAT32_MAX], ``fuel-used`` and ``reply-bytes`` integers in
[0, 2**63 - 1], ``partition-id`` an integer in [-1, 2**31 - 1]; other records and unknown
metric keys are ignored (their bytes are counted). An evaluate reply: exactly one MetricRecord,
``num-examples`` as above, ``eval-loss`` in [0, FLOAT32_MAX], ``eval-accuracy`` in [0, 1].
Anything else is REJECTED with a reason and never aggregated. An error reply (the client
could not train) is FAILED: counted, reported, not fatal.

Every number a reply contributes to the report is clamped into its proto field's range (a
rejected reply is recorded too), reasons are printable and truncated to ``MAX_REASON_CHARS``,
and no reply can make validation raise. :class:`WeightPolicy` bounds how much a
``num-examples`` claim may weigh; :func:`clip_delta` is the server-side norm clipping.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from protos import contract
from protos.contract import NO_PARTITION
from protos.npy import NpyVersionError, decode_float32, npy_shortfall, read_npy_header
from protos.report_pb2 import FAILED, OK, REJECTED, ClientStatus

from .aggregation import l2_norm

EXPECTED_DTYPE = "float32"
UNKNOWN_NODE = -1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# The largest loss or duration a reply may state: a float32 kernel computes no larger loss,
# and below it a weighted mean cannot overflow (FLOAT32_MAX * INT64_MAX is ~3e57). Above
# it, a single finite claim such as train-loss 1e308 made the round's mean inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A client's error reason is kept up to this many characters (the rest is counted, not stored).
MAX_REASON_CHARS = 500
MAX_SHOWN_CHARS = 80

# Exactly 64 lowercase hex digits (a character class range is ASCII code points only).
_SHA256_HEX = re.compile("[0-9a-f]{64}")
RecordT = TypeVar("RecordT", ArrayRecord, MetricRecord, ConfigRecord)


@dataclass(frozen=True)
class TrainReply:
    """What the coordinator learned from one train reply; ``delta`` is set only when OK."""

    node_id: int
    status: ClientStatus  # OK, FAILED or REJECTED
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
        """Return True when the reply passed validation."""
        return self.status == OK


@dataclass(frozen=True)
class EvaluateReply:
    """What the coordinator learned from one evaluate reply."""

    node_id: int
    status: ClientStatus
    reason: str = ""
    partition_id: int = NO_PARTITION
    num_examples: int = 0
    eval_loss: float = math.nan
    eval_accuracy: float = math.nan
    bytes_uploaded: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the reply passed validation."""
        return self.status == OK


def records_of(content: RecordDict, kind: type[RecordT]) -> list[tuple[str, RecordT]]:
    """Return ``content``'s records of type ``kind`` as (key, record) pairs, in its order.

    The records ``content.array_records`` (``metric_records``, ``config_records``) hold, read
    without building Flower's synced view: each of those properties copies the RecordDict
    through two type-checked ``__setitem__`` calls per record (~25 us a call), and a
    1000-reply round read them thousands of times.

    Raises
    ------
    TypeError
        A record of that type under a key that is not a string, as Flower's view raises.
    """
    found = [(key, record) for key, record in content.items() if isinstance(record, kind)]
    for key, _ in found:
        if not isinstance(key, str):
            # What building Flower's view raises for it (a RecordDict filled past its checks,
            # e.g. unpickled): such a reply is unreadable, as it was.
            raise TypeError(f"Expected `str`, but received `{type(key).__name__}` for the key.")
    return found


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
    *,
    server_round: int | None = None,
) -> TrainReply:
    """Validate one train reply against the global model's layout and the delta bound.

    Never raises: whatever a reply holds, the result is OK, FAILED or REJECTED with a reason,
    and every number in it fits the report's proto fields.

    Parameters
    ----------
    message : the reply from one node.
    expected_shapes : the global model's array names and shapes.
    max_delta_norm : the largest L2 norm a delta may have (inclusive).
    server_round : the round the reply must answer (its ``group_id``); None: not checked.

    Returns
    -------
    TrainReply
        OK with the delta, or FAILED/REJECTED with the reason.
    """
    try:
        return _printable(
            _check_train_reply(message, expected_shapes, max_delta_norm, server_round)
        )
    except Exception as error:  # a backstop: no reply may raise out of validation
        return TrainReply(
            _node_id(message),
            REJECTED,
            _clean(f"unreadable reply ({type(error).__name__}: {error})"),
        )


ReplyT = TypeVar("ReplyT", TrainReply, EvaluateReply)


def _printable(reply: ReplyT) -> ReplyT:
    """Return ``reply`` with its reason made safe for the report where it quotes the reply.

    A reason may quote text of the reply's envelope (its message type, its round): a lone
    surrogate there (a Message unpickled by the local engine is not type-checked) raised
    UnicodeEncodeError when the report's protobuf took the reason, out of the round, and
    aborted the run. Every reason passes here; only one that is not printable is rewritten.
    """
    if reply.reason.isprintable():
        return reply
    return dataclasses.replace(reply, reason=_clean(reply.reason))


def _npy_length_problem(data: bytes) -> str:
    """Why ``data`` is not exactly one npy array ("" when it is).

    ``np.load`` reads an array and ignores whatever follows it, so a reply could carry
    unaccounted bytes behind a valid delta; numpy's own bytes (what ``np.save`` and Flower's
    ``Array`` write) end where the array does. Only called on bytes ``np.load`` accepted.
    """
    buffer = io.BytesIO(data)
    try:
        shape, _, dtype = read_npy_header(buffer)
    except NpyVersionError as error:
        return f"npy format version {error.version} (expected 1.0 or 2.0)"
    except ValueError as error:
        return f"cannot be read ({error})"
    expected = buffer.tell() + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        return f"{len(data)} bytes, but its npy header describes {expected}"
    return ""


def _check_train_reply(
    message: Message,
    expected_shapes: Mapping[str, tuple[int, ...]],
    max_delta_norm: float,
    server_round: int | None,
) -> TrainReply:
    node_id = _node_id(message)
    if message.has_error():
        return TrainReply(node_id, FAILED, _error_reason(message))
    if not message.has_content():
        return TrainReply(node_id, FAILED, "the reply has neither content nor an error")
    bytes_uploaded = _safe_message_bytes(message)
    problem = _envelope_problem(message, MessageType.TRAIN, server_round)
    metrics, metrics_problem = _single_metric_record(message)
    facts: dict[str, object] = {}
    if metrics is not None:
        facts, metrics_problem = _train_metrics(metrics)
    base: dict[str, Any] = {"node_id": node_id, "bytes_uploaded": bytes_uploaded, **facts}
    base["kernel_sha256"] = reply_kernel_sha256(message)
    if problem:
        return TrainReply(status=REJECTED, reason=problem, **base)

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


def check_evaluate_reply(message: Message, *, server_round: int | None = None) -> EvaluateReply:
    """Validate one evaluate reply; never raises (see :func:`check_train_reply`).

    ``num-examples`` > 0, loss finite and >= 0, accuracy in [0, 1], partition id in range.
    """
    try:
        return _printable(_check_evaluate_reply(message, server_round))
    except Exception as error:  # a backstop: no reply may raise out of validation
        return EvaluateReply(
            _node_id(message),
            REJECTED,
            _clean(f"unreadable reply ({type(error).__name__}: {error})"),
        )


def _check_evaluate_reply(message: Message, server_round: int | None) -> EvaluateReply:
    node_id = _node_id(message)
    if message.has_error():
        return EvaluateReply(node_id, FAILED, _error_reason(message))
    if not message.has_content():
        return EvaluateReply(node_id, FAILED, "the reply has neither content nor an error")
    bytes_uploaded = _safe_message_bytes(message)
    metrics, problem = _single_metric_record(message)
    if metrics is None:
        return EvaluateReply(node_id, REJECTED, problem, bytes_uploaded=bytes_uploaded)
    partition_id, partition_problem = _partition(metrics)
    claimed, examples_problem = _num_examples(metrics)
    loss, loss_problem = _float_value(
        metrics, contract.METRIC_EVAL_LOSS, low=0.0, high=FLOAT32_MAX, required=True
    )
    if loss_problem and contract.METRIC_EVAL_LOSS not in metrics:
        loss_problem = "eval-loss is nan (the MetricRecord lacks 'eval-loss')"
    elif loss_problem and not math.isfinite(loss):
        loss_problem = f"eval-loss is {loss}"
    accuracy, accuracy_problem = _float_value(
        metrics, contract.METRIC_EVAL_ACCURACY, low=0.0, high=1.0, required=True
    )
    if accuracy_problem and isinstance(metrics.get(contract.METRIC_EVAL_ACCURACY), int | float):
        if not isinstance(metrics[contract.METRIC_EVAL_ACCURACY], bool):
            accuracy_problem = f"eval-accuracy {accuracy} is not in [0, 1]"
    base: dict[str, Any] = {
        "node_id": node_id,
        "bytes_uploaded": bytes_uploaded,
        "partition_id": partition_id,
        "num_examples": claimed,
        "eval_loss": loss,
        "eval_accuracy": accuracy,
    }
    problem = (
        _envelope_problem(message, MessageType.EVALUATE, server_round)
        or examples_problem
        or loss_problem
        or accuracy_problem
        or partition_problem
    )
    if problem:
        return EvaluateReply(status=REJECTED, reason=problem, **base)
    return EvaluateReply(status=OK, **base)


# -- weights: what a num-examples claim may count for -------------------------------------------
@dataclass(frozen=True)
class WeightPolicy:
    """How far a client's ``num-examples`` claim is trusted as its aggregation weight.

    ``max_num_examples`` (0: off) is an absolute bound; ``max_examples_ratio`` (0: off) bounds
    a claim by that many times the median claim of the round's OK replies (robust while fewer
    than half of them lie); ``expected`` gives, where the coordinator knows it (simulation: the
    partition's size), the count a client may claim at most, and such a claim is exempt from
    the ratio (it is checked against the truth).
    """

    max_num_examples: int = 0
    max_examples_ratio: float = 0.0

    def clip(
        self, claims: Sequence[int], expected: Sequence[int | None] | None = None
    ) -> list[tuple[int, str]]:
        """Return the weight each claim counts for, and a note where it was clipped (else "")."""
        expected = list(expected) if expected is not None else [None] * len(claims)
        bounded: list[tuple[int, str]] = []
        for claim, known in zip(claims, expected, strict=True):
            used, note = int(claim), ""
            if known is not None and 0 < known < used:
                used, note = int(known), f"the partition's size {known}"
            if self.max_num_examples and used > self.max_num_examples:
                used, note = self.max_num_examples, f"max-num-examples {self.max_num_examples}"
            bounded.append((used, note))
        if self.max_examples_ratio and bounded:
            # A claim checked against a known size needs no heuristic: the ratio bounds only
            # the claims nobody can check (data sets are often skewed far beyond 10x).
            median = float(np.median([used for used, _ in bounded]))
            cap = max(1, int(math.floor(self.max_examples_ratio * median)))
            bounded = [
                (cap, f"{self.max_examples_ratio:g} x the round's median claim {median:g}")
                if used > cap and known is None
                else (used, note)
                for (used, note), known in zip(bounded, expected, strict=True)
            ]
        return [
            (used, f"num-examples {claim} clipped to {used} ({note})" if used != claim else "")
            for claim, (used, note) in zip(claims, bounded, strict=True)
        ]


def clip_delta(
    delta: Mapping[str, np.ndarray], norm: float, clip_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Scale ``delta`` down to L2 norm ``clip_norm`` when its ``norm`` is larger.

    Returns the delta (the same arrays when not clipped) and the factor applied (1.0: none).
    """
    if not norm > clip_norm:
        return dict(delta), 1.0
    factor = clip_norm / norm
    scaled = {
        name: (np.asarray(array, np.float64) * factor).astype(np.float32)
        for name, array in delta.items()
    }
    return scaled, factor


# -- pieces -----------------------------------------------------------------------------------
def _node_id(message: Message) -> int:
    try:
        return int(message.metadata.src_node_id)
    except Exception:  # a reply without readable metadata names no node
        return UNKNOWN_NODE


def _error_reason(message: Message) -> str:
    error = message.error
    return _clean(f"client error {_show(error.code)}: {_show_text(error.reason)}")


def _safe_message_bytes(message: Message) -> int:
    try:
        return min(message_bytes(message), INT64_MAX)
    except Exception:  # a record Flower cannot count is still a reply; its size is unknown
        return 0


def _envelope_problem(message: Message, message_type: str, server_round: int | None) -> str:
    """Return what is wrong with the reply outside its metrics and arrays ('' when nothing)."""
    metadata = message.metadata
    kind = str(metadata.message_type).split(".", 1)[0]
    if kind != message_type:
        return f"a {_show_text(kind, MAX_SHOWN_CHARS)} reply, expected a {message_type} reply"
    if server_round is not None and str(metadata.group_id) != str(server_round):
        shown = _show_text(metadata.group_id, MAX_SHOWN_CHARS)
        return f"a reply to round {shown}, expected round {server_round}"
    # Records the contract has no place for (a ConfigRecord; arrays in an evaluate reply) are
    # ignored: nothing reads them, and their bytes are counted in bytes_uploaded.
    return ""


def reply_kernel_sha256(message: Message) -> str:
    """Return the kernel sha256 a train reply names (ConfigRecord ``kernel``, key ``sha256``).

    Only 64 lowercase hex digits are taken; anything else is "" (a reply is never trusted to
    put arbitrary text into a report).
    """
    record = dict(records_of(message.content, ConfigRecord)).get(contract.RECORD_KERNEL)
    value = record.get(contract.KERNEL_SHA256) if record is not None else None
    if isinstance(value, str) and _SHA256_HEX.fullmatch(value):
        return value
    return ""


def _single_metric_record(message: Message) -> tuple[dict[str, Any] | None, str]:
    """Return the only MetricRecord's items as a plain dict (read many times), or the problem."""
    records = records_of(message.content, MetricRecord)
    if len(records) != 1:
        return None, f"expected exactly one MetricRecord, given {len(records)}"
    return dict(records[0][1].items()), ""


def _num_examples(metrics: Mapping[str, Any]) -> tuple[int, str]:
    """Return the claim (clamped to [0, INT64_MAX] for the report) and the problem with it."""
    value, problem = _int_value(
        metrics, contract.METRIC_NUM_EXAMPLES, low=1, high=INT64_MAX, required=True
    )
    claim = metrics.get(contract.METRIC_NUM_EXAMPLES)
    if problem and isinstance(claim, int) and not isinstance(claim, bool) and claim <= 0:
        problem = f"'num-examples' must be > 0, given {claim}"
    return (
        # No problem: value is the (required) claim, so it is not None.
        value
        if value is not None and not problem
        else _clamp_claim(metrics.get(contract.METRIC_NUM_EXAMPLES))
    ), problem


def _partition(metrics: Mapping[str, Any]) -> tuple[int, str]:
    value, problem = _int_value(
        metrics, contract.METRIC_PARTITION_ID, low=NO_PARTITION, high=INT32_MAX, required=False
    )
    return (NO_PARTITION if problem or value is None else value), problem


def _train_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, object], str]:
    """Return the facts a train reply's metrics tell (for the report) and their problem ('').

    The facts are read even from implausible metrics (a rejected reply is reported too); the
    problem is the first of: num-examples, train-loss, kernel-seconds, fuel-used, reply-bytes,
    partition-id. Each metric is read once: a value does not depend on the bounds it is
    checked against, only the problem does.
    """
    num_examples, examples_problem = _num_examples(metrics)
    partition_id, partition_problem = _partition(metrics)
    fuel, fuel_problem = _int_value(
        metrics, contract.METRIC_FUEL_USED, low=0, high=INT64_MAX, required=False
    )
    loss, loss_problem = _float_value(
        metrics, contract.METRIC_TRAIN_LOSS, low=0.0, high=FLOAT32_MAX, required=True
    )
    seconds, seconds_problem = _float_value(
        metrics, contract.METRIC_KERNEL_SECONDS, low=0.0, high=FLOAT32_MAX, required=False
    )
    facts: dict[str, object] = {
        "partition_id": partition_id,
        "num_examples": num_examples,
        "train_loss": loss,
        "kernel_seconds": 0.0
        if math.isnan(seconds) and contract.METRIC_KERNEL_SECONDS not in metrics
        else seconds,
        "fuel_used": 0 if fuel_problem or fuel is None else fuel,
    }
    _, reply_bytes_problem = _int_value(
        metrics, contract.METRIC_REPLY_BYTES, low=0, high=INT64_MAX, required=False
    )
    checks = (
        examples_problem,
        loss_problem,
        seconds_problem,
        fuel_problem,
        reply_bytes_problem,
        partition_problem,
    )
    return facts, next((problem for problem in checks if problem), "")


def _int_value(
    metrics: Mapping[str, Any], key: str, *, low: int, high: int, required: bool
) -> tuple[int | None, str]:
    """Return an integer metric in [low, high] (an integral float is accepted), or the problem."""
    if key not in metrics:
        return None, (f"the MetricRecord lacks {key!r}" if required else "")
    value = metrics[key]
    if isinstance(value, bool):
        return None, _int_expected(key, low, high, value)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return None, _int_expected(key, low, high, value)
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        return None, _int_expected(key, low, high, metrics[key])
    return int(value), ""


def _int_expected(key: str, low: int, high: int, value: object) -> str:
    # Built only for a value that fails (repr of whatever a client sent is not free).
    return f"{key!r} must be an integer in [{low}, {high}], given {_show(value)}"


def _float_value(
    metrics: Mapping[str, Any], key: str, *, low: float, high: float, required: bool
) -> tuple[float, str]:
    """Return a finite number in [low, high], or NaN and the problem ('' if optional)."""
    if key not in metrics:
        return math.nan, (f"the MetricRecord lacks {key!r}" if required else "")
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan, f"{key!r} must be a number, given {_show(value)}"
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        return math.nan, f"{key!r} must be a finite number, given {_show(value)}"
    if not math.isfinite(number):
        return number, f"{key!r} is {number}"
    if not low <= number <= high:
        return number, f"{key!r} must be in [{low:g}, {high:g}], given {number:.6g}"
    return number, ""


def _clamp_claim(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0 if math.isnan(value) or value < 0 else INT64_MAX
    return int(min(max(int(value), 0), INT64_MAX))


def _show(value: object) -> str:
    """Return a short, printable repr of anything a client sent."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return _truncate(text, MAX_SHOWN_CHARS)


def _show_text(value: object, limit: int = MAX_REASON_CHARS) -> str:
    return _truncate(value if isinstance(value, str) else _show(value), limit)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _clean(text: str) -> str:
    """Printable, valid UTF-8, at most MAX_REASON_CHARS (+ a note): safe for the report."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(char if char.isprintable() else "?" for char in text)
    return _truncate(text, MAX_REASON_CHARS)


def _delta_arrays(
    message: Message, expected_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray] | None, str]:
    records = records_of(message.content, ArrayRecord)
    if len(records) != 1:
        return None, f"expected exactly one ArrayRecord, given {len(records)}"
    record = records[0][1]
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
        # numpy's exact bytes for this layout decode as a view; anything else takes np.load.
        values = decode_float32(array.data, expected_shape)
        if values is None:
            # Bytes that hold less than their header claims are refused before np.load, which
            # allocates what the header claims before it reads: 16 bytes under a header of
            # shape (2**28,) cost a 1 GiB allocation each.
            short = npy_shortfall(array.data)
            if short:
                return None, f"array {name!r}: cannot be read ({short})"
            try:
                values = array.numpy()
            except Exception as error:  # malformed bytes: whatever numpy raises, rejects it
                return None, f"array {name!r}: cannot be read ({type(error).__name__}: {error})"
            problem = _npy_length_problem(array.data)
            if problem:
                return None, f"array {name!r}: {problem}"
        if values.shape != tuple(expected_shape) or values.dtype != np.float32:
            return None, (
                f"array {name!r}: data decodes to {values.dtype}{values.shape}, "
                f"expected float32{tuple(expected_shape)}"
            )
        deltas[name] = values
    return deltas, ""
