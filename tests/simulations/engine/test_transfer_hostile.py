"""Hostile reply batches from a worker (it runs user code): nothing in one may run or allocate.

Each case is a hand-written pickle a ClientApp could put on the pipe instead of
``pack_replies``'s; every one must be refused with :class:`transfer.TransferError` naming what
it tried to reach, and none may have had an effect by then.
"""

from __future__ import annotations

import os
import pickle
import tracemalloc

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from simulations.engine import transfer

MARKER = "SANDFLOWER_TRANSFER_PWNED"


def _text(value: str) -> bytes:
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _global(module: str, name: str) -> bytes:
    return _text(module) + _text(name) + b"\x93"  # STACK_GLOBAL


def _call(function: bytes, *args: bytes) -> bytes:
    assert len(args) == 1
    return function + args[0] + b"\x85R"  # TUPLE1, REDUCE


_SET_MARKER = f"__import__('os').environ.__setitem__('{MARKER}', '1') or []"
HOSTILE = {
    # A dotted name walks attributes from an allowed module to the builtins: eval.
    "dotted name to eval": (
        b"\x80\x04"
        + _call(
            _call(_global("flwr.app.message.array", "__builtins__.get"), _text("eval")),
            _text(_SET_MARKER),
        )
        + b".",
        "flwr.app.message.array.__builtins__.get",
    ),
    # The same walk to another module's attributes.
    "dotted name to sys.modules": (
        b"\x80\x04"
        + _call(_global("flwr.app.message.array", "sys.modules.get"), _text("os"))
        + b".",
        "sys.modules.get",
    ),
    # A 30-byte pickle that asks a builtin for 1 GiB of zeros.
    "builtin bytes(1 GiB)": (
        b"\x80\x04" + _global("builtins", "bytes") + b"J\x00\x00\x00\x40\x85R.",
        "builtins.bytes",
    ),
    "builtin bytearray(1 GiB)": (
        b"\x80\x04" + _global("builtins", "bytearray") + b"J\x00\x00\x00\x40\x85R.",
        "builtins.bytearray",
    ),
    "copyreg reconstructor": (
        b"\x80\x04" + _global("copyreg", "_reconstructor") + b".",
        "copyreg._reconstructor",
    ),
    "a Flower function that is no record": (
        b"\x80\x04" + _global("flwr.app.message.message", "make_message") + b".",
        "flwr.app.message.message.make_message",
    ),
    "os.system": (b"\x80\x04" + _global("os", "system") + b".", "os.system"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_batch_is_refused_before_it_runs_or_allocates(case, monkeypatch):
    buffer, named = HOSTILE[case]
    monkeypatch.delenv(MARKER, raising=False)
    tracemalloc.start()
    try:
        with pytest.raises(transfer.TransferError, match="Flower records only") as caught:
            transfer.unpack_replies(buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert named in str(caught.value)
    assert MARKER not in os.environ
    assert peak < 64 << 20, f"{case}: unpickling allocated {peak} bytes"


def test_every_class_a_real_batch_holds_is_still_admitted():
    # The allowlist is exact: a reply of every record type and an error reply round-trip.
    instruction = Message(RecordDict(), 1000000, "train", group_id="1")
    instruction.metadata.__dict__["_message_id"] = "m"
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.arange(3, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": 3, "losses": [0.5, 0.25]}),
            "config": ConfigRecord({"b": b"\x00", "s": "x", "flags": [True], "n": 1.5}),
        }
    )
    replies = [
        Message(content, reply_to=instruction),
        Message(Error(1, "no"), reply_to=instruction),
    ]
    packed = transfer.pack_replies([(instruction, reply) for reply in replies])
    assert pickle.loads(packed)[0] == transfer.WHOLE  # the gate admits it: one pickle
    unpacked = [reply for _, reply in transfer.unpack_replies(packed)]
    assert unpacked[0].content.array_records["arrays"]["w"].numpy().tolist() == [0.0, 1.0, 2.0]
    assert dict(unpacked[0].content.metric_records["metrics"]) == {
        "num-examples": 3,
        "losses": [0.5, 0.25],
    }
    assert unpacked[1].error.reason == "no"
    decoded = transfer.decode_content(transfer.encode_content(content))
    assert dict(decoded.config_records["config"]) == dict(content.config_records["config"])


def test_pickle_protocols_below_4_are_refused_the_same_way():
    # Protocols 0-3 name globals with GLOBAL (no dotted-name walk), which must not widen it.
    buffer = pickle.dumps(os.system, protocol=2)
    with pytest.raises(transfer.TransferError, match="Flower records only"):
        transfer.unpack_replies(buffer)


def _reply() -> Message:
    instruction = Message(RecordDict(), 1000000, "train", group_id="1")
    instruction.metadata.__dict__["_message_id"] = "m"
    return Message(RecordDict(), reply_to=instruction)


def _set(path: str, value):
    def lie(reply: Message) -> None:
        owner = reply.metadata.__dict__ if path.startswith("metadata.") else reply.__dict__
        owner["_" + path.removeprefix("metadata.")] = value

    return lie


ENVELOPE_LIES = {
    # lie: (what it does to a reply's state, what the refusal names)
    "metadata is an int": (_set("metadata", 7), "metadata is not a Metadata"),
    "reply-to id is a list": (
        _set("metadata.reply_to_message_id", ["m"]),
        "reply_to_message_id is a list",
    ),
    "src node id is a str": (_set("metadata.src_node_id", "1000000"), "src_node_id is a str"),
    "group id is None": (_set("metadata.group_id", None), "group_id is a NoneType"),
    "content is a dict": (_set("content", {"arrays": 1}), "content is a dict"),
    "content and an error": (_set("error", Error(1, "x")), "either content or an error"),
    "neither content nor error": (_set("content", None), "either content or an error"),
    "extra state": (lambda reply: reply.__dict__.__setitem__("_evil", 1), "not a Message's"),
    "metadata lacks a field": (
        lambda reply: reply.metadata.__dict__.pop("_message_type"),
        "metadata is not a Metadata",
    ),
}


@pytest.mark.parametrize("lie", sorted(ENVELOPE_LIES))
def test_a_reply_whose_envelope_lies_is_refused_before_the_pool_routes_it(lie):
    # The pool reads a reply's metadata (reply-to id, node) before any validation: a worker
    # that writes the pipe itself could send an int for metadata and raise out of the round.
    alter, refusal = ENVELOPE_LIES[lie]
    honest, liar = _reply(), _reply()
    alter(liar)
    # Packed whole (as pack_replies never would: it checks first), the batch is refused.
    buffer = pickle.dumps((transfer.WHOLE, [honest, liar]), protocol=transfer.PROTOCOL)
    with pytest.raises(transfer.TransferError, match="message 1: .*" + refusal):
        transfer.unpack_replies(buffer)
    whole = pickle.dumps((transfer.WHOLE, [honest]), protocol=transfer.PROTOCOL)
    assert len(transfer.unpack_replies(whole)) == 1
    # Packed reply by reply, the liar alone is refused and the honest reply crosses.
    frame = (transfer.EACH, [("m", pickle.dumps(honest)), ("m", pickle.dumps(liar))])
    [(_, crossed), (_, refused)] = transfer.unpack_replies(pickle.dumps(frame))
    assert isinstance(crossed, Message)
    assert isinstance(refused, transfer.TransferError) and refusal in str(refused)
