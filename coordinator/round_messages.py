"""The messages the delta adapter sends and reads: instructions, replies for Flower, metrics.

The record keys are those of the message contract: the global model travels as the ArrayRecord
``"arrays"``, the train or evaluate settings as the ConfigRecord ``"config"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.app.metadata import Metadata

from protos import contract

from .array_codec import ValidatedContent
from .validation import TrainReply, records_of

ARRAYS_KEY = contract.RECORD_ARRAYS
CONFIG_KEY = contract.RECORD_CONFIG


def message_record(arrays: ArrayRecord, config: ConfigRecord, server_round: int) -> RecordDict:
    """Build the content of one round's instructions.

    The model, and a copy of ``config`` that carries ``server-round``.
    """
    config_copy = ConfigRecord(dict(config))
    config_copy[contract.CONFIG_SERVER_ROUND] = int(server_round)
    return RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: config_copy})


def instructions(
    record: RecordDict, node_ids: Sequence[int], message_type: str, server_round: int
) -> list[Message]:
    """One message of ``message_type`` per node, all holding ``record``, grouped by round."""
    return [
        Message(
            content=record,
            dst_node_id=node_id,
            message_type=message_type,
            group_id=str(server_round),
        )
        for node_id in node_ids
    ]


def delta_content(reply: TrainReply) -> RecordDict:
    """Build a fresh reply content for Flower: the delta (copied) and num-examples only.

    Flower's consistency check then never trips over optional metrics, and its in-place pops
    touch copies.
    """
    assert reply.delta is not None
    # DecodedArray: Flower's rule reads the validated values, not the npy bytes a second time;
    # ValidatedContent: and it reads the content's record views cheaply.
    return ValidatedContent.of_delta(
        ARRAYS_KEY,
        reply.delta,
        contract.RECORD_METRICS,
        {contract.METRIC_NUM_EXAMPLES: int(reply.num_examples)},
    )


def reply_metadata(node_id: int, server_round: int) -> Metadata:
    """Metadata of a train reply from ``node_id`` in ``server_round``, for Flower's rule."""
    # Explicit metadata: building a reply with reply_to would need the instruction message,
    # and an instruction needs Flower's process-wide TaskIdentity.
    return Metadata(
        run_id=0,
        message_id="",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id=str(server_round),
        created_at=0.0,
        ttl=0.0,
        message_type=MessageType.TRAIN,
    )


def work_done(message: Message) -> tuple[int, int] | None:
    """Read (steps done, steps planned) from a train reply's metrics.

    None when absent or invalid (never trusted: both must be ints with 0 <= done <= planned).
    """
    if message.has_error() or not message.has_content():
        return None
    try:
        records = records_of(message.content, MetricRecord)
    except TypeError:  # a record under a non-string key: validation rejects the reply
        return None
    for _, record in records:
        done, planned = (
            record.get(contract.METRIC_STEPS_DONE),
            record.get(contract.METRIC_STEPS_PLANNED),
        )
        if (
            isinstance(done, int)
            and isinstance(planned, int)
            and not isinstance(done, bool)
            and not isinstance(planned, bool)
            and 0 <= done <= planned
        ):
            return int(done), int(planned)
    return None
