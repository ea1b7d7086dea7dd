"""Flower Messages across the process boundary: one buffer per batch, never one per object.

An instruction's content (the global model and the train config) is the same for every
client of a round, so it is serialized ONCE per round and crosses to each worker once; each
job adds only its metadata. Replies come back in batches: one buffer holding many Messages,
so a 1000-client round is a few dozen pipe writes; a batch that would not pass the
coordinator's gate (below) goes reply by reply, so that one bad reply fails its own job only.

Why pickle (protocol 5) and not Flower's protobuf serde: measured on 1000 replies of the
logreg 60-10 model, ``message_from_proto`` took ~3 s and ``message_to_proto`` ~1 s (Flower's
``Array`` constructor and its per-attribute dirty tracking); packing and unpacking them with
pickle took ~0.15 s each (README, "Engines"). Pickle restores the objects' state without
running their constructors, which is also what Flower's Ray engine does between its
processes. The arrays' bytes travel inside the buffer as they are.

The workers run the user's ClientApp, so a reply is data from code we did not write: the
unpickler admits only the exact (module, name) pairs of Flower's record classes and their
key/value checkers (:class:`_RecordUnpickler`), so a reply cannot make the coordinator import
or call anything else.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Callable, Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode

PROTOCOL = 5
# The error code of a reply that could not cross the process boundary (Flower's: the
# ClientApp's own failure).
REPLY_UNREADABLE = ErrorCode.CLIENT_APP_RAISED_EXCEPTION

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


def load_records(buffer: bytes | memoryview, what: str) -> object:
    """Return what a buffer of Flower records and builtins holds, through the same gate.

    For any pickle of records from elsewhere (e.g. a recorded run's replies); ``what`` names
    the buffer in the error.

    Raises
    ------
    TransferError
        The buffer names anything else, or is not a whole pickle.
    """
    return _loads(buffer, what)


def encode_content(content: RecordDict) -> bytes:
    """Return a message content as one buffer."""
    return pickle.dumps(content, protocol=PROTOCOL)


def decode_content(buffer: bytes) -> RecordDict:
    """Return the content :func:`encode_content` wrote (a fresh RecordDict on every call)."""
    content = _loads(buffer, "content")
    if not isinstance(content, RecordDict):
        raise TransferError(f"content: expected a RecordDict, given {type(content).__name__}")
    return content


def content_copies(buffer: bytes) -> Callable[[], RecordDict]:
    """Return a function that gives a fresh RecordDict of ``buffer`` on every call.

    ``buffer`` goes through :func:`decode_content` (the gate and the type check) once, here;
    the copies are then plain unpickles of those same immutable bytes, which name the same
    classes and build the same objects (the gate's find_class hook, ~10 us a job, has already
    admitted each of them). Each job still gets its own objects, so a ClientApp that changes
    its message cannot change another client's.

    Raises
    ------
    TransferError
        As :func:`decode_content`.
    """
    data = bytes(buffer)  # immutable: the bytes copied are the bytes checked (no copy of bytes)
    decode_content(data)
    return functools.partial(pickle.loads, data)


def instruction(metadata: Metadata, content: RecordDict) -> Message:
    """Return the instruction Message a ClientApp receives: the job's metadata and its content."""
    return make_message(metadata=metadata, content=content)


# A reply batch is ``(WHOLE, [Message, ...])``: one pickle, the fast path; or, when that
# pickle would not pass the coordinator's gate, ``(EACH, [(instruction id, bytes), ...])``:
# every reply pickled on its own, so that the one that cannot cross fails its own job only.
WHOLE, EACH = "whole", "each"


def pack_replies(answered: Iterable[tuple[Message, object]]) -> bytes:
    """``(instruction, reply)`` pairs as one buffer; one reply that cannot cross fails alone.

    A reply that is not a Message Flower builds (:func:`envelope_problem`) or that answers
    another instruction becomes an error reply that says so. The batch is pickled whole and
    read back through the coordinator's own gate here in the worker (~20 us a reply): the
    coordinator then never refuses a batch that this function wrote. When pickling or the gate
    refuses it, each reply is packed on its own with the id of the instruction it answers
    (:func:`unpack_replies` then fails that reply's job alone), and a reply that pickle refuses
    becomes an error reply that says why.
    """
    checked = [(instruction, _answering(instruction, reply)) for instruction, reply in answered]
    try:
        buffer = pickle.dumps((WHOLE, [reply for _, reply in checked]), protocol=PROTOCOL)
        unpack_replies(buffer)  # exactly the coordinator's checks
        return buffer
    except Exception:  # whatever the ClientApps put in their replies: reply by reply below
        pass
    items = []
    for instruction, reply in checked:
        try:
            data = pickle.dumps(reply, protocol=PROTOCOL)
        except Exception as error:  # whatever the ClientApp put in its reply
            reason = f"the ClientApp's reply cannot be sent: {type(error).__name__}: {error}"
            data = pickle.dumps(Message(Error(REPLY_UNREADABLE, reason), reply_to=instruction))
        items.append((instruction.metadata.message_id, data))
    return pickle.dumps((EACH, items), protocol=PROTOCOL)


def _answering(instruction: Message, reply: object) -> Message:
    """Return ``reply`` with plain record values, or an error reply that says what is wrong."""
    if not isinstance(reply, Message):
        reason = f"the ClientApp returned {type(reply).__name__}, expected a Message"
        return Message(Error(REPLY_UNREADABLE, reason), reply_to=instruction)
    problem = envelope_problem(reply)  # what the checks below read must be sound
    if problem:
        reason = f"the ClientApp's reply is not a Message Flower builds: {problem}"
        return Message(Error(REPLY_UNREADABLE, reason), reply_to=instruction)
    if reply.metadata.reply_to_message_id != instruction.metadata.message_id:
        reason = "the ClientApp's reply does not answer the message it was given"
        return Message(Error(REPLY_UNREADABLE, reason), reply_to=instruction)
    if reply.has_content():
        _plain_values(reply.content)
    return reply


def unpack_replies(buffer: bytes | memoryview) -> list[tuple[str, Message | TransferError]]:
    """Return what :func:`pack_replies` packed: ``(instruction id, reply or why not)``, in order.

    In a batch packed reply by reply, a reply that is not a Message of Flower records, or that
    says it answers another instruction, comes back as the TransferError that says so, for its
    job alone.

    Raises
    ------
    TransferError
        The batch itself is neither form (a broken or foreign buffer), or a whole batch holds
        anything but Flower records (its worker wrote what it did not check).
    """
    frame = _loads(buffer, "reply batch")
    if not isinstance(frame, tuple) or len(frame) != 2 or frame[0] not in (WHOLE, EACH):
        raise TransferError(f"reply batch: expected ({WHOLE!r} | {EACH!r}, replies)")
    kind, items = frame
    if kind == WHOLE:
        if not isinstance(items, list) or not all(isinstance(r, Message) for r in items):
            raise TransferError("reply batch: expected a list of Messages")
        for index, reply in enumerate(items):
            # A worker checks a whole batch before sending it (pack_replies): one that fails
            # here was not written by pack_replies, and its routing ids cannot be trusted.
            problem = envelope_problem(reply)
            if problem:
                raise TransferError(f"reply batch: message {index}: {problem}")
        return [(reply.metadata.reply_to_message_id, reply) for reply in items]
    if not isinstance(items, list) or not all(
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], bytes)
        for item in items
    ):
        raise TransferError("reply batch: expected a list of (message id, bytes) pairs")
    unpacked: list[tuple[str, Message | TransferError]] = []
    for message_id, data in items:
        try:
            reply = _loads(data, f"the reply to message {message_id}")
            if not isinstance(reply, Message):
                raise TransferError(
                    f"the reply to message {message_id}: expected a Message, given "
                    f"{type(reply).__name__}"
                )
            problem = envelope_problem(reply)
            if problem:
                raise TransferError(f"the reply to message {message_id}: {problem}")
            if reply.metadata.reply_to_message_id != message_id:
                raise TransferError(
                    f"the reply to message {message_id} says it answers message "
                    f"{reply.metadata.reply_to_message_id!r}"
                )
        except TransferError as error:
            unpacked.append((message_id, error))
        else:
            unpacked.append((message_id, reply))
    return unpacked


# A Flower record admits subclasses of its value types (numpy's float64 is a float, str_ a
# str); Flower's own wire format turns them into plain values, and so does this one (they
# would not pass the reply gate otherwise, and the other engines accept them).
_PLAIN_TYPES = (bool, int, float, str, bytes)


def _plain(value: object) -> object:
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, list):
        plain = [_plain(item) for item in value]
        changed = any(a is not b for a, b in zip(plain, value, strict=True))
        return plain if changed or type(value) is not list else value
    for kind in _PLAIN_TYPES:
        if isinstance(value, kind):
            return kind(value)  # type: ignore[arg-type]  # value is an instance of kind
    return value  # not a record value: the gate refuses it for this reply alone


def _plain_values(content: RecordDict) -> None:
    """Replace subclass values in ``content``'s metric and config records by plain ones."""
    for record in content.values():
        if isinstance(record, MetricRecord | ConfigRecord):
            for key, value in list(record.items()):
                plain = _plain(value)
                if plain is not value:
                    record[key] = plain  # type: ignore[assignment]  # a plain value of its type


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


def envelope_problem(reply: Message) -> str:
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
