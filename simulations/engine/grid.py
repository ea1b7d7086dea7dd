"""``LocalGrid``: the Flower Grid of the local engine, over a :class:`.pool.WorkerPool`.

The ServerApp logic (``coordinator.server_app.run_rounds_on_grid``) drives it exactly as it
drives Flower's InMemoryGrid or a SuperLink's grid: ``get_node_ids`` then
``send_and_receive``. Node ids are deterministic (``NODE_ID_OFFSET + partition id``), every
node's Context carries ``partition-id`` and ``num-partitions`` as Flower's engine sets them,
and :meth:`LocalGrid.node_partitions` tells a strategy the node -> partition map up front, so
that a 100,000-client run needs no round of messages to every node to learn it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from .memory import release_free_memory
from .pool import OnReply, WorkerPool

# Flower reserves small node ids (the SuperLink is node 1); these are plainly not random.
NODE_ID_OFFSET = 1_000_000

OnProgress = Callable[[int, int], None]  # (replies received, messages sent) in this call
# From this many messages a call starts by giving the previous round's freed heap back to the
# system (~100 MB at 1000 replies; a trim costs ~6 ms, too much for a 10-client round).
TRIM_MIN_MESSAGES = 200


def node_id_of(partition_id: int) -> int:
    """Return the node id of client ``partition_id`` in the local engine."""
    return NODE_ID_OFFSET + int(partition_id)


class LocalGrid(Grid):
    """A Grid whose nodes are the clients of a :class:`.pool.WorkerPool`.

    Parameters
    ----------
    pool : the started worker pool.
    num_partitions : the number of clients (nodes).
    on_progress : called as replies arrive with ``(received, sent)`` of the current
        ``send_and_receive`` (a progress bar within the round).
    """

    engine_name = "local"
    # send_and_receive takes ``on_reply``: the round loop validates train replies as they come.
    streams_replies = True

    def __init__(
        self, pool: WorkerPool, num_partitions: int, *, on_progress: OnProgress | None = None
    ) -> None:
        self.pool = pool
        self.num_partitions = int(num_partitions)
        self.on_progress = on_progress
        self._run = Run.create_empty(pool.run_id)
        self._message_counter = itertools.count(1)
        self._pushed: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        # What Flower's run_serverapp does before a ServerApp starts: instruction Messages
        # read the process-wide task identity (run id, and the SuperLink as their sender).
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = pool.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    # -- the Grid interface ------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Use ``run``'s id for the messages from now on (the local engine has one run)."""
        self._run = run

    @property
    def run(self) -> Run:
        """Return the run the messages belong to."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Return a new Message to ``dst_node_id`` in this run."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Return the node ids, one per partition."""
        return range(NODE_ID_OFFSET, NODE_ID_OFFSET + self.num_partitions)

    def node_partitions(self) -> dict[int, int]:
        """Every node's partition id (the seam ``DeltaStrategy.learn_partitions`` uses)."""
        return {node_id_of(partition): partition for partition in range(self.num_partitions)}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue ``messages`` for the workers; return their message ids."""
        ids = []
        for message in messages:
            self._stamp(message)
            self._pushed[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the queued messages among ``message_ids`` and return the replies that are ready."""
        wanted = set(message_ids)
        to_run = [self._pushed.pop(i) for i in list(self._pushed) if i in wanted]
        if to_run:
            for reply in self._run_messages(to_run, timeout=None):
                self._replies[reply.metadata.reply_to_message_id] = reply
        return [self._replies.pop(i) for i in wanted if i in self._replies]

    def send_and_receive(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | None = None,
        on_reply: OnReply | None = None,
    ) -> Iterable[Message]:
        """Run every message on its node's worker; return the replies (one per message).

        ``on_reply`` (this grid's addition to Flower's signature, see ``streams_replies``) is
        called with each reply as it arrives, in arrival order, before the call returns them
        all in instruction order.
        """
        messages = list(messages)
        for message in messages:
            self._stamp(message)
        if len(messages) >= TRIM_MIN_MESSAGES:
            release_free_memory()
        return self._run_messages(messages, timeout=timeout, on_reply=on_reply)

    # -- internals ---------------------------------------------------------------------------
    def _stamp(self, message: Message) -> None:
        partition = message.metadata.dst_node_id - NODE_ID_OFFSET
        if not 0 <= partition < self.num_partitions:
            raise ValueError(
                f"message to node {message.metadata.dst_node_id}: expected a node id in "
                f"{NODE_ID_OFFSET}..{NODE_ID_OFFSET + self.num_partitions - 1}"
            )
        # What a SuperLink sets on a message it accepts: an id, the run, the sender.
        metadata = message.metadata.__dict__
        metadata["_message_id"] = f"{self._run.run_id}-{next(self._message_counter)}"
        metadata["_run_id"] = self._run.run_id
        metadata["_src_node_id"] = SUPERLINK_NODE_ID
        metadata["_created_at"] = time.time()

    def _run_messages(
        self, messages: list[Message], *, timeout: float | None, on_reply: OnReply | None = None
    ) -> list[Message]:
        sent = len(messages)
        received = 0
        progress = self.on_progress
        caller = on_reply

        def count_reply(reply: Message) -> None:
            nonlocal received
            received += 1
            if caller is not None:
                caller(reply)
            if progress is not None:
                progress(received, sent)

        if progress is not None:
            progress(0, sent)
        jobs = [(m, m.metadata.dst_node_id - NODE_ID_OFFSET) for m in messages]
        return self.pool.run(jobs, timeout=timeout, on_reply=count_reply)
