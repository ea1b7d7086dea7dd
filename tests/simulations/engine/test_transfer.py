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


def test_content_copies_are_fresh_objects_with_the_same_bits():
    content = _content(np.random.default_rng(0))
    buffer = transfer.encode_content(content)
    copy = transfer.content_copies(buffer)
    first, second = copy(), copy()
    assert first is not second
    assert first["arrays"] is not second["arrays"]
    assert first["arrays"]["w"] is not second["arrays"]["w"]
    for name in ("w", "b"):
        original = content.array_records["arrays"][name].numpy()
        decoded = second.array_records["arrays"][name].numpy()
        assert decoded.dtype == original.dtype and decoded.shape == original.shape
        assert decoded.tobytes() == original.tobytes()
    # A job that changes its content changes nobody else's.
    first["config"]["lr"] = 99.0
    assert copy()["config"]["lr"] == 0.1
    assert dict(second.config_records["config"]) == dict(content.config_records["config"])


def test_content_copies_refuse_what_decode_content_refuses():
    with pytest.raises(transfer.TransferError, match="Flower records only"):
        transfer.content_copies(pickle.dumps(os.system, protocol=5))
    with pytest.raises(transfer.TransferError, match="expected a RecordDict"):
        transfer.content_copies(pickle.dumps(ConfigRecord({"a": 1}), protocol=5))
    with pytest.raises(transfer.TransferError, match="content of 3 bytes"):
        transfer.content_copies(b"\x80\x05K")


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
    pairs = transfer.unpack_replies(transfer.pack_replies(zip(instructions, replies, strict=True)))
    assert [message_id for message_id, _ in pairs] == ["m0", "m1", "m2"]
    unpacked = [reply for _, reply in pairs]
    assert all(isinstance(reply, Message) for reply in unpacked)
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
    buffer = transfer.pack_replies([(message, Message(RecordDict(), reply_to=message))] * 2)
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
    frame = (transfer.EACH, [("m", pickle.dumps(reply))])
    [(message_id, refused)] = transfer.unpack_replies(pickle.dumps(frame))
    assert message_id == "m" and isinstance(refused, transfer.TransferError)
    assert "Flower records only, given posix.system" in str(refused)
    # The batch's own frame admits builtins and Flower records only, in one of two shapes.
    for kind in (transfer.WHOLE, transfer.EACH):
        with pytest.raises(transfer.TransferError, match="Flower records only, given posix"):
            transfer.unpack_replies(pickle.dumps((kind, [("m", Sneaky())])))
    for frame in (
        [1, 2],
        ("other", []),
        (transfer.WHOLE, [1]),
        (transfer.EACH, [("m", b"x", 3)]),
        (transfer.EACH, [(1, b"x")]),
        (transfer.EACH, {"m": b"x"}),
    ):
        with pytest.raises(transfer.TransferError, match="reply batch: expected"):
            transfer.unpack_replies(pickle.dumps(frame))


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
            transfer.load_records(_global_then(module, name, tail), "hostile")


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


def _instruction(message_id: str) -> Message:
    message = Message(RecordDict(), 1000000, "train", group_id="1")
    message.metadata.__dict__["_message_id"] = message_id
    return message


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _reply_holding(instruction: Message, value: object) -> Message:
    # A sound envelope whose content holds ``value`` where Flower keeps an Array's dtype.
    record = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    record["w"].__dict__["dtype"] = value
    return Message(RecordDict({"arrays": record}), reply_to=instruction)


def test_a_reply_that_cannot_cross_fails_its_own_job_only():
    good, bad_value, bad_pickle, wrong_id, lying, not_message = (
        _instruction(f"m{i}") for i in range(6)
    )
    lie = Message(RecordDict(), reply_to=lying)
    lie.metadata.__dict__["_group_id"] = 7  # an envelope Flower never builds
    batch = transfer.pack_replies(
        [
            (good, Message(RecordDict({"m": MetricRecord({"x": 1.0})}), reply_to=good)),
            (bad_value, _reply_holding(bad_value, Sneaky())),  # refused by the gate
            (bad_pickle, _reply_holding(bad_pickle, _Unpicklable())),  # refused by pickle
            (wrong_id, Message(RecordDict(), reply_to=good)),  # says it answers m0
            (lying, lie),
            (not_message, 42),
        ]
    )
    results = dict(transfer.unpack_replies(batch))
    assert isinstance(results["m0"], Message) and results["m0"].content["m"]["x"] == 1.0
    assert isinstance(results["m1"], transfer.TransferError)
    assert "Flower records only, given posix.system" in str(results["m1"])
    # Refused in the worker: an error reply that says why, for that job alone.
    for message_id, why in (
        ("m2", "cannot be sent: TypeError: cannot pickle this"),
        ("m3", "does not answer the message it was given"),
        ("m4", "not a Message Flower builds: metadata group_id is a int"),
        ("m5", "the ClientApp returned int, expected a Message"),
    ):
        assert isinstance(results[message_id], Message) and results[message_id].has_error()
        assert results[message_id].error.code == transfer.REPLY_UNREADABLE
        assert why in results[message_id].error.reason


def test_a_batch_the_gate_admits_crosses_as_one_pickle_and_only_then():
    instructions = [_instruction(f"m{i}") for i in range(3)]
    replies = [Message(RecordDict(), reply_to=instruction) for instruction in instructions]
    whole = pickle.loads(transfer.pack_replies(zip(instructions, replies, strict=True)))
    assert whole[0] == transfer.WHOLE and len(whole[1]) == 3
    replies[1] = _reply_holding(instructions[1], Sneaky())  # picklable, refused by the gate
    each = pickle.loads(transfer.pack_replies(zip(instructions, replies, strict=True)))
    assert each[0] == transfer.EACH and [item[0] for item in each[1]] == ["m0", "m1", "m2"]


def test_a_reply_packed_on_its_own_must_answer_its_job():
    reply = Message(RecordDict(), reply_to=_instruction("m0"))
    frame = (transfer.EACH, [("m1", pickle.dumps(reply))])
    [(message_id, refused)] = transfer.unpack_replies(pickle.dumps(frame))
    assert message_id == "m1" and isinstance(refused, transfer.TransferError)
    assert "says it answers message 'm0'" in str(refused)
    frame = (transfer.EACH, [("m1", pickle.dumps([1]))])
    [(_, refused)] = transfer.unpack_replies(pickle.dumps(frame))
    assert "expected a Message, given list" in str(refused)


@pytest.mark.parametrize(
    "value, plain",
    [
        (np.float64(1.5), 1.5),
        ([np.float64(0.25), np.float64(2.0)], [0.25, 2.0]),
        (np.str_("text"), "text"),
        (np.bytes_(b"raw"), b"raw"),
    ],
)
def test_subclass_values_flower_admits_cross_as_plain_values(value, plain):
    # numpy's float64 is a float (str_ a str): Flower's records admit them, its wire format
    # sends plain values, and so does the local engine's (the gate would refuse numpy's).
    from flwr.app import ConfigRecord

    instruction = _instruction("m")
    record = (
        MetricRecord({"v": value})
        if isinstance(plain, float | list)
        else ConfigRecord({"v": value})
    )
    reply = Message(RecordDict({"r": record}), reply_to=instruction)
    [(_, crossed)] = transfer.unpack_replies(transfer.pack_replies([(instruction, reply)]))
    assert isinstance(crossed, Message)
    got = crossed.content["r"]["v"]
    assert got == plain and type(got) is type(plain)
    if isinstance(got, list):
        assert all(type(item) is float for item in got)
