"""Flower Messages across the process boundary: one buffer per batch, never one per object.

An instruction's content (the global model and the train config) is the same for every
client of a round, so it is serialized ONCE per round and crosses to each worker once; each
job adds only its metadata. Replies come back in batches: one buffer holding many Messages,
so a 1000-client round is a few dozen pipe writes.

Why pickle (protocol 5) and not Flower's protobuf serde: measured on 1000 replies of the
logreg 60-10 model, ``message_from_proto`` took ~3 s and ``message_to_proto`` ~1 s (Flower's
``Array`` constructor and its per-attribute dirty tracking); packing and unpacking them with
pickle took ~0.15 s each (README, "Engines"). Pickle restores the objects' state without
running their constructors, which is also what Flower's Ray engine does between its
processes. The arrays' bytes travel inside the buffer as they are.

The workers run the user's ClientApp, so a reply is data from code we did not write: the
unpickler admits only Flower's record classes and plain builtins (:class:`_RecordUnpickler`),
so a reply cannot make the coordinator import or call anything else.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata

PROTOCOL = 5

# The exact globals a Message's state is made of: Flower's record classes and the key/value
# checkers their TypedDicts keep (checked against a real round trip in
# tests/simulations/engine/test_transfer_hostile.py). Exact (module, name) pairs, no prefix and
# no builtin: a module prefix admitted every attribute path below it (``name`` may be dotted
# from protocol 4 on, ``flwr.app.message.array`` + ``__builtins__.get`` is ``eval``), and a
# builtin such as ``bytes`` turns 30 bytes of pickle into a GiB of zeros.
_RECORD_CLASSES = (Message, Metadata, Error, RecordDict, ArrayRecord, MetricRecord, ConfigRecord)
_ALLOWED_GLOBALS = frozenset(
    {(kind.__module__, kind.__qualname__) for kind in (*_RECORD_CLASSES, Array)}
    | {
        (kind.__module__, checker)
        for kind in (RecordDict, ArrayRecord, MetricRecord, ConfigRecord)
        for checker in ("_check_key", "_check_value")
    }
)


class TransferError(ValueError):
    """A buffer that is not what the other side of the pipe wrote."""


class _RecordUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise TransferError(f"a reply may hold Flower records only, given {module}.{name}")


def _loads(buffer: bytes | memoryview, what: str) -> object:
    try:
        return _RecordUnpickler(io.BytesIO(buffer)).load()
    except TransferError:
        raise
    except Exception as error:  # a truncated or foreign buffer: any unpickling error
        raise TransferError(f"{what} of {len(buffer)} bytes: {error}") from error


def encode_content(content: RecordDict) -> bytes:
    """Return a message content as one buffer."""
    return pickle.dumps(content, protocol=PROTOCOL)


def decode_content(buffer: bytes) -> RecordDict:
    """Return the content :func:`encode_content` wrote (a fresh RecordDict on every call)."""
    content = _loads(buffer, "content")
    if not isinstance(content, RecordDict):
        raise TransferError(f"content: expected a RecordDict, given {type(content).__name__}")
    return content


def instruction(metadata: Metadata, content: RecordDict) -> Message:
    """Return the instruction Message a ClientApp receives: the job's metadata and its content."""
    return make_message(metadata=metadata, content=content)


def pack_replies(replies: Iterable[Message]) -> bytes:
    """Many reply Messages as one buffer."""
    return pickle.dumps(list(replies), protocol=PROTOCOL)


def unpack_replies(buffer: bytes | memoryview) -> list[Message]:
    """Return the Messages :func:`pack_replies` packed, in order.

    Raises
    ------
    TransferError
        Not a list of Messages, or a Message whose envelope is not one Flower builds (see
        :func:`_envelope_problem`).
    """
    replies = _loads(buffer, "reply batch")
    if not isinstance(replies, list) or not all(isinstance(r, Message) for r in replies):
        raise TransferError("reply batch: expected a list of Messages")
    for index, reply in enumerate(replies):
        problem = _envelope_problem(reply)
        if problem:
            raise TransferError(f"reply batch: message {index}: {problem}")
    return replies


_MESSAGE_FIELDS = frozenset({"_metadata", "_content", "_error"})
# A Metadata's state as Flower's constructor leaves it: attribute -> the types it may hold.
_METADATA_FIELDS: dict[str, tuple[type, ...]] = {
    "_run_id": (int,),
    "_message_id": (str,),
    "_src_node_id": (int,),
    "_dst_node_id": (int,),
    "_src_task_id": (int, type(None)),
    "_dst_task_id": (int, type(None)),
    "_reply_to_message_id": (str,),
    "_group_id": (str,),
    "_created_at": (float, int),
    "_ttl": (float, int),
    "_message_type": (str,),
    "_delivered_at": (str,),
}


def _envelope_problem(reply: Message) -> str:
    """Return what is wrong with a reply's envelope ("" if nothing); records are validation's.

    Unpickling restores state without running constructors, so a worker could send a Message
    whose metadata is an int or whose reply-to id is a list: the pool reads those before any
    validation (to route the reply), and such a reply raised out of the round. The records
    themselves are checked by coordinator.validation, whose backstop never raises.
    """
    state = reply.__dict__
    if type(reply) is not Message or state.keys() != _MESSAGE_FIELDS:
        return f"not a Message's state ({sorted(map(str, state))[:5]})"
    metadata = state["_metadata"]
    if type(metadata) is not Metadata or metadata.__dict__.keys() != _METADATA_FIELDS.keys():
        return f"metadata is not a Metadata (a {type(metadata).__name__})"
    for name, value in metadata.__dict__.items():
        if type(value) not in _METADATA_FIELDS[name]:
            return f"metadata {name.lstrip('_')} is a {type(value).__name__}"
    content, error = state["_content"], state["_error"]
    if (content is None) == (error is None):
        return "expected either content or an error"
    if content is not None and type(content) is not RecordDict:
        return f"content is a {type(content).__name__}, expected a RecordDict"
    if error is not None and (
        type(error) is not Error
        or type(error.__dict__.get("_code")) is not int
        or type(error.__dict__.get("_reason")) not in (str, type(None))
    ):
        return "error is not an Error(code: int, reason: str)"
    return ""
