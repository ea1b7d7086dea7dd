"""A ClientApp that lies in its reply's envelope cannot abort the round or speak for another node.

The workers run user code, so a reply's metadata is as hostile as its records: it is what the
pool routes the reply by and what the coordinator attributes it to (node -> partition, the
weight cap of a partition's size). Each case is one partition's lie; the round must finish
with every job answered, the liar's job failed or refused, the honest ones untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from simulations.engine import LocalGrid, WorkerPool, node_id_of

NUM_CLIENTS = 4
LIAR = 1

LIES = {
    # lie: what it does to the reply's metadata state
    "metadata is an int": lambda reply: reply.__dict__.__setitem__("_metadata", 7),
    "reply-to id is a list": lambda reply: reply.metadata.__dict__.__setitem__(
        "_reply_to_message_id", [reply.metadata.reply_to_message_id]
    ),
    "content is a dict": lambda reply: reply.__dict__.__setitem__("_content", {"x": 1}),
    "speaks as another node": lambda reply: reply.metadata.__dict__.__setitem__(
        "_src_node_id", node_id_of(LIAR + 1)
    ),
}
LIE: list[str] = []  # the lie of the current test (forked workers see it)


def _train(message: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.full(3, partition, np.float32))}),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    reply = Message(content, reply_to=message)
    if partition == LIAR and LIE:
        LIES[LIE[0]](reply)
    return reply


app = ClientApp()
app.train()(_train)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_reply_fails_or_is_refused_and_the_round_goes_on(lie):
    LIE[:] = [lie]
    try:
        with WorkerPool(2, app, {}, NUM_CLIENTS) as pool:
            grid = LocalGrid(pool, NUM_CLIENTS)
            messages = [
                Message(RecordDict(), node_id_of(partition), "train", group_id="1")
                for partition in range(NUM_CLIENTS)
            ]
            replies = list(grid.send_and_receive(messages, timeout=60))
    finally:
        LIE.clear()
    assert len(replies) == NUM_CLIENTS
    by_instruction = {m.metadata.message_id: m for m in messages}
    for reply in replies:
        instruction = by_instruction[reply.metadata.reply_to_message_id]
        partition = instruction.metadata.dst_node_id - node_id_of(0)
        # Whatever a reply says, it is attributed to the node its instruction went to.
        assert reply.metadata.src_node_id == instruction.metadata.dst_node_id, (lie, partition)
        if partition == LIAR:  # its own job fails, and says why
            assert reply.has_error(), lie
            assert any(
                why in reply.error.reason
                for why in ("not a Message Flower builds", "says it comes from node")
            ), (lie, reply.error.reason)
            continue
        # One reply that cannot cross fails its own job only, even on the liar's worker.
        assert not reply.has_error(), (lie, partition, reply.error.reason)
        values = reply.content.array_records["arrays"]["w"].numpy()
        assert values.tolist() == [partition] * 3
