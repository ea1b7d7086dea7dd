"""A deployment Grid on which a reply Flower cannot decode fails that client, not the run.

On a SuperLink, a device's reply travels as content-addressed objects that the SuperLink
checks only for their head (type, children, length); the ServerApp's ``HttpGrid`` inflates
the bodies in ``pull_messages``, one loop over every ready reply. A device that pushes a body
Flower cannot parse (a MetricRecord that is not protobuf, an Array whose chunks do not add
up) makes that loop raise: the replies pulled with it are lost (already confirmed to the
SuperLink) and the exception ends the ServerApp, which is a whole run aborted by one device.
Validation (:mod:`coordinator.validation`) never sees such a reply.

:class:`GuardedGrid` pulls each outstanding reply on its own, so a reply that cannot be
decoded is confined to its own message, and turns it into an error reply from the node its
instruction went to: counted as FAILED with the reason, like a client that crashed. The cost is
one pull request per outstanding reply per poll instead of one per poll; only deployment
grids are wrapped (:func:`guard_replies`), where devices are counted in hundreds, not the
local engine's thousands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.error import Error
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.constant import SYSTEM_MESSAGE_TYPE
from flwr.supercore.run import Run

# Flower's HttpGrid waits this long between two pulls of the replies still missing.
POLL_SECONDS = 3.0
# Flower's grids that inflate replies from a SuperLink's bytes (by name: importing them
# would load Flower's SuperLink client into every process that runs rounds).
BYTES_GRIDS = frozenset({"HttpGrid", "GrpcGrid"})
MAX_REASON_CHARS = 300


class GuardedGrid(Grid):
    """Wrap a Flower Grid so that a reply that cannot be pulled becomes an error reply.

    Parameters
    ----------
    inner : the Grid the ServerApp was given (a SuperLink's ``HttpGrid``).
    poll_seconds : the wait between two pulls in :meth:`send_and_receive`.
    """

    engine_name = "deployment"

    def __init__(self, inner: Grid, poll_seconds: float = POLL_SECONDS) -> None:
        self.inner = inner
        self.poll_seconds = poll_seconds
        # message id -> the instruction it answers (for an error reply in its name)
        self._instructions: dict[str, Message] = {}

    # -- delegated ---------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Set the run on the wrapped grid."""
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        """Return the wrapped grid's run."""
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message on the wrapped grid."""
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Return the wrapped grid's node ids."""
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages`` and remember which instruction each id belongs to."""
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        for message_id, message in zip(ids, messages, strict=False):
            if message_id:  # Flower gives "" (or None) for a message it could not push
                self._instructions[message_id] = message
        return ids

    # -- guarded -----------------------------------------------------------------------------
    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull the ready replies one at a time; one that raises becomes an error reply."""
        replies: list[Message] = []
        for message_id in message_ids:
            try:
                pulled = list(self.inner.pull_messages([message_id]))
            except Exception as error:  # whatever decoding a device's bytes raised
                pulled = [self._error_reply(message_id, error)]
            for reply in pulled:
                self._instructions.pop(reply.metadata.reply_to_message_id, None)
            replies += pulled
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and pull their replies until all came or ``timeout`` passed."""
        outstanding = {message_id for message_id in self.push_messages(messages) if message_id}
        deadline = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.monotonic() < deadline:
            pulled = list(self.pull_messages(sorted(outstanding)))
            replies += pulled
            outstanding -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not outstanding:
                break
            time.sleep(self.poll_seconds)
        for message_id in outstanding:  # never answered: nothing more to remember
            self._instructions.pop(message_id, None)
        return replies

    def _error_reply(self, message_id: str, error: Exception) -> Message:
        # Built as Flower's HttpGrid builds its own error reply for objects it cannot pull.
        instruction = self._instructions.pop(message_id, None)
        reason = f"the reply could not be decoded ({type(error).__name__}: {error})"
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + "..."
        known = instruction.metadata if instruction is not None else None
        metadata = Metadata(
            run_id=known.run_id if known is not None else 0,
            message_id="",
            src_node_id=known.dst_node_id if known is not None else 0,
            dst_node_id=known.src_node_id if known is not None else 0,
            reply_to_message_id=message_id,
            group_id=known.group_id if known is not None else "",
            ttl=0,
            message_type=known.message_type if known is not None else SYSTEM_MESSAGE_TYPE,
            created_at=time.time(),
        )
        return make_message(
            metadata=metadata, error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
        )


def guard_replies(grid: Grid) -> Grid:
    """Return ``grid`` wrapped in :class:`GuardedGrid` when its replies arrive as bytes.

    Other grids (the local engine's, Flower's simulation engine's InMemoryGrid, tests')
    hand over Message objects that nothing inflates, and are returned as they are.
    """
    if any(kind.__name__ in BYTES_GRIDS for kind in type(grid).__mro__):
        return GuardedGrid(grid)
    return grid


__all__ = ["BYTES_GRIDS", "POLL_SECONDS", "GuardedGrid", "guard_replies"]
