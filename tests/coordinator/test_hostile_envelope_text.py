"""Envelope text a rejection reason quotes: a lone surrogate there must not abort the run.

A reply's message type and round (``group_id``) are strings the reason quotes when they are
wrong ("a reply to round X, expected round 1"). A Message the local engine unpickles is not
type-checked by Flower's setters, so they can hold anything a ``str`` can. Before: a lone
surrogate there raised UnicodeEncodeError when the report's protobuf took the reason, out of
``aggregate_train``, and the whole run aborted. Now every reason that is not printable is
cleaned where validation returns it.
"""

from __future__ import annotations

import pytest

from coordinator.validation import MAX_REASON_CHARS
from protos.report_pb2 import REJECTED
from tests.coordinator.test_hostile_replies import HostileGrid, row, run


def raw_metadata(**fields):
    """Set metadata fields past Flower's setters, as an unpickled Message can hold them."""

    def hostile(message, reply):
        for key, value in fields.items():
            setattr(reply.metadata, f"_{key}", value)
        return [reply]

    return hostile


CASES = {
    "round with a lone surrogate": (
        {"group_id": "\ud800\x00\x1b[31m"},
        "a reply to round ???[31m, expected round 1",
    ),
    "message type with a lone surrogate": (
        {"message_type": "\udfff\x07"},
        "a ?? reply, expected a {on} reply",
    ),
    "a megabyte message type": ({"message_type": "\x00" * 10**6}, "expected a {on} reply"),
}


@pytest.mark.parametrize("on", ["train", "evaluate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_reply_is_rejected_with_a_printable_reason_and_the_run_goes_on(tmp_path, case, on):
    fields, reason = CASES[case]
    grid = HostileGrid(raw_metadata(**fields), on=on)
    result = row(run(tmp_path, grid), grid)  # run() asserts the run completed
    assert (result.status if on == "train" else result.eval_status) == REJECTED
    prefix = "evaluate: " if on == "evaluate" else ""
    assert result.reason.startswith(prefix)
    assert reason.format(on=on) in result.reason
    assert result.reason.isprintable() and len(result.reason) <= MAX_REASON_CHARS + 60
