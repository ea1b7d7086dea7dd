"""The run folder's file writes, off the round's critical path: one thread, in order.

Replacing a file that exists (``os.replace`` over it, as every atomic rewrite does) makes ext4
(``auto_da_alloc``, the default) push the new file's data out before the rename completes:
measured 2-4 ms of wall time per file against 0.3 ms of CPU, so the report files and the
checkpoint cost a default-scenario round ~10-15 ms of waiting. The coordinator hands
:class:`BackgroundWrites` writes whose contents cannot change any more (a checkpoint's rendered
bytes; the report files' job renders them from a snapshot, ``reports.writer.write_run``),
and its single thread performs them in submission order: a checkpoint
submitted before a report still lands before it, and each file is still replaced atomically.
A process that dies loses only the writes still queued, so the folder shows an earlier round,
never a partial one. :meth:`BackgroundWrites.flush` waits for every write (the run's end, an
error, an interrupt) and raises the first write error.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# At most this many writes wait at once: a disk slower than the rounds slows the rounds
# instead of holding every round's rendered report in memory.
MAX_PENDING_WRITES = 16


class BackgroundWrites:
    """Run file writes on one background thread, in the order they were submitted."""

    def __init__(self, max_pending: int = MAX_PENDING_WRITES) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future] = collections.deque()
        self._max_pending = max_pending

    def submit(self, write: Callable[[], object]) -> Future:
        """Queue ``write``; raise the error of an earlier write that failed, if any.

        Returns the write's Future (to wait for it; its error is raised here later anyway).
        """
        self._collect(wait_for=len(self._pending) - self._max_pending + 1)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sandflower-writes")
        future = self._executor.submit(write)
        self._pending.append(future)
        return future

    def flush(self) -> None:
        """Wait for every queued write; raise the first error among them."""
        self._collect(wait_for=len(self._pending))

    def close(self) -> None:
        """Let the thread finish the queued writes, then stop it (errors: see :meth:`flush`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _collect(self, *, wait_for: int) -> None:
        # The oldest `wait_for` writes are waited for; finished ones are dropped. The first
        # error is raised once every write waited for has finished (later ones still run).
        error: BaseException | None = None
        for _ in range(max(0, wait_for)):
            failure = self._pending.popleft().exception()
            error = error or failure
        while self._pending and self._pending[0].done():
            failure = self._pending.popleft().exception()
            error = error or failure
        if error is not None:
            raise error


__all__ = ["MAX_PENDING_WRITES", "BackgroundWrites"]
