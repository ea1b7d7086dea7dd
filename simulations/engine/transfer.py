"""Flower Messages across the process boundary as raw buffers, not pickled object trees.

An instruction's content (the global model and the train config) is the same for every
client of a round, so it crosses to each worker ONCE per round as one protobuf buffer
(Flower's own serde: ``recorddict_to_proto``); each job adds only its metadata (~100 bytes).
Replies come back in batches: one buffer holding many serialized ``Message`` protos, so a
1000-client round is a few dozen pipe writes rather than thousands of pickles.

Why protobuf rather than pickle or shared memory: Flower's serde already maps every record
type (arrays as their raw bytes, configs, metrics, errors) and is what a SuperLink uses on
the wire, so any ClientApp's reply crosses unchanged; a model of a few hundred KB copies in
microseconds, well below a job's kernel time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from flwr.app import Message, RecordDict
from flwr.app.message.message import make_message
from flwr.common.serde import (
    message_from_proto,
    message_to_proto,
    metadata_from_proto,
    metadata_to_proto,
    recorddict_from_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.message_pb2 import Metadata as ProtoMetadata
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

_COUNT = struct.Struct("<I")


class TransferError(ValueError):
    """A buffer that is not what the other side of the pipe wrote."""


def encode_content(content: RecordDict) -> bytes:
    """A message content as one protobuf buffer."""
    return recorddict_to_proto(content).SerializeToString()


def decode_content(buffer: bytes) -> RecordDict:
    """The content :func:`encode_content` wrote (a fresh RecordDict on every call)."""
    proto = ProtoRecordDict()
    proto.ParseFromString(buffer)
    return recorddict_from_proto(proto)


def encode_metadata(message: Message) -> bytes:
    """A message's metadata alone (the per-job part of an instruction)."""
    return metadata_to_proto(message.metadata).SerializeToString()


def instruction(metadata: bytes, content: RecordDict) -> Message:
    """The instruction Message a ClientApp receives: the job's metadata and its content."""
    proto = ProtoMetadata()
    proto.ParseFromString(metadata)
    return make_message(metadata=metadata_from_proto(proto), content=content)


def pack_replies(replies: Iterable[Message]) -> bytes:
    """Many reply Messages as one buffer: a count, the lengths, then the protos back to back."""
    blobs = [message_to_proto(reply).SerializeToString() for reply in replies]
    header = _COUNT.pack(len(blobs)) + struct.pack(f"<{len(blobs)}I", *map(len, blobs))
    return header + b"".join(blobs)


def unpack_replies(buffer: bytes | memoryview) -> list[Message]:
    """The Messages :func:`pack_replies` packed, in order."""
    view = memoryview(buffer)
    if len(view) < _COUNT.size:
        raise TransferError(f"reply batch of {len(view)} bytes: shorter than its header")
    (count,) = _COUNT.unpack_from(view, 0)
    offset = _COUNT.size + 4 * count
    if len(view) < offset:
        raise TransferError(f"reply batch of {len(view)} bytes cannot hold {count} lengths")
    lengths: Sequence[int] = struct.unpack_from(f"<{count}I", view, _COUNT.size)
    if offset + sum(lengths) != len(view):
        raise TransferError(
            f"reply batch: lengths add up to {offset + sum(lengths)} bytes, given {len(view)}"
        )
    replies = []
    for length in lengths:
        proto = ProtoMessage()
        proto.ParseFromString(view[offset : offset + length])
        replies.append(message_from_proto(proto))
        offset += length
    return replies
