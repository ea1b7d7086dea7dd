"""Messages across the process boundary: what goes in comes out, bit for bit."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from simulations.engine import transfer


def _content(rng) -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(
                {
                    "w": Array(rng.standard_normal((7, 3)).astype(np.float32)),
                    "b": Array(np.array(np.nan, np.float32)),  # 0-d, NaN kept
                }
            ),
            "config": ConfigRecord({"lr": 0.1, "model": "mlp:64-32-10", "blob": b"\x00\x01"}),
        }
    )


def test_content_round_trips_bit_for_bit_and_every_decode_is_a_fresh_object():
    content = _content(np.random.default_rng(0))
    buffer = transfer.encode_content(content)
    first, second = transfer.decode_content(buffer), transfer.decode_content(buffer)
    assert first is not second
    for name in ("w", "b"):
        original = content.array_records["arrays"][name].numpy()
        decoded = first.array_records["arrays"][name].numpy()
        assert decoded.dtype == original.dtype and decoded.shape == original.shape
        assert decoded.tobytes() == original.tobytes()
    assert dict(first.config_records["config"]) == dict(content.config_records["config"])


def test_an_instruction_keeps_its_metadata():
    message = Message(_content(np.random.default_rng(1)), 1000007, "train", group_id="3")
    message.metadata.__dict__["_message_id"] = "run-42"
    rebuilt = transfer.instruction(message.metadata, message.content)
    assert rebuilt.metadata.message_id == "run-42"
    assert rebuilt.metadata.dst_node_id == 1000007
    assert rebuilt.metadata.message_type == "train"
    assert rebuilt.metadata.group_id == "3"


def test_a_reply_batch_keeps_order_content_and_errors():
    rng = np.random.default_rng(2)
    instructions = []
    for index in range(3):
        message = Message(_content(rng), 1000000 + index, "train", group_id="1")
        message.metadata.__dict__["_message_id"] = f"m{index}"
        instructions.append(message)
    delta = rng.standard_normal(5).astype(np.float32)
    replies = [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(delta)}),
                    "metrics": MetricRecord({"num-examples": 4}),
                }
            ),
            reply_to=instructions[0],
        ),
        Message(Error(2, "it broke"), reply_to=instructions[1]),
        Message(RecordDict(), reply_to=instructions[2]),
    ]
    unpacked = transfer.unpack_replies(transfer.pack_replies(replies))
    assert [r.metadata.reply_to_message_id for r in unpacked] == ["m0", "m1", "m2"]
    assert [r.metadata.src_node_id for r in unpacked] == [1000000, 1000001, 1000002]
    got = unpacked[0].content.array_records["arrays"]["w"].numpy()
    assert got.tobytes() == delta.tobytes()
    assert unpacked[1].has_error() and unpacked[1].error.code == 2
    assert unpacked[1].error.reason == "it broke"
    assert transfer.unpack_replies(transfer.pack_replies([])) == []


@pytest.mark.parametrize("cut", [2, 9, -1])
def test_a_truncated_batch_is_a_typed_error(cut):
    message = Message(RecordDict(), 1000000, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = "m"
    buffer = transfer.pack_replies([Message(RecordDict(), reply_to=message)] * 2)
    with pytest.raises(transfer.TransferError, match="reply batch"):
        transfer.unpack_replies(buffer[:cut])


class Sneaky:
    """What a hostile ClientApp could try to smuggle into a reply."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_reply_can_hold_flower_records_only():
    message = Message(RecordDict(), 1000000, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = "m"
    reply = Message(RecordDict(), reply_to=message)
    reply.metadata.__dict__["_group_id"] = Sneaky()  # anything reachable from the reply
    with pytest.raises(transfer.TransferError, match="Flower records only, given posix.system"):
        transfer.unpack_replies(pickle.dumps([reply]))
    with pytest.raises(transfer.TransferError, match="expected a list of Messages"):
        transfer.unpack_replies(pickle.dumps([1, 2]))


def _global_then(module: str, name: str, tail: bytes) -> bytes:
    # Hand-written protocol 4: push module and name, STACK_GLOBAL, then ``tail``, STOP.
    def text(value: str) -> bytes:
        raw = value.encode()
        return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE

    return b"\x80\x04" + text(module) + text(name) + b"\x93" + tail + b"."


@pytest.mark.parametrize(
    "module, name, attacks",
    [
        ("flwr.app.message.array", "sys.exit", "a dotted name reaching a module Flower imports"),
        ("flwr.app.message.array", "np.save", "numpy's file writer through Flower's numpy"),
        ("flwr.app.message.arrayrecord", "json.loads", "json through a record module"),
        ("flwr.app.message.array", "sys", "a module object, not a class"),
        ("flwr.app.message.message", "TaskIdentity", "a class Flower imports from elsewhere"),
        ("flwr.app.message.array", "BytesIO", "a standard-library class Flower imports"),
        ("flwr.app.message.array", "np", "numpy itself"),
        ("builtins", "eval", "a builtin outside the container set"),
        ("copyreg", "__newobj__", "copyreg beyond _reconstructor"),
    ],
)
def test_a_reply_names_only_flower_record_classes(module, name, attacks):
    for tail in (b"", b")R"):  # named, and called with no arguments
        with pytest.raises(transfer.TransferError, match="Flower records only"):
            transfer.unpack_replies(_global_then(module, name, tail))


def test_the_classes_a_reply_is_made_of_still_load():
    # The same gate admits what a real reply holds (see the round trips above) by name too.
    for module, name in [
        ("flwr.app.message.message", "Message"),
        ("flwr.app.metadata", "Metadata"),
        ("flwr.app.message.recorddict", "RecordDict"),
        ("flwr.app.message.metricrecord", "MetricRecord"),
    ]:
        loaded = transfer._loads(_global_then(module, name, b""), "class")
        assert isinstance(loaded, type) and loaded.__name__ == name
