"""Stopping a simulation on Ctrl-C or SIGTERM: the first signal stops it cleanly, a second at once.

The first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread (where the local
engine's ServerApp logic runs), so the coordinator records the run as "interrupted" with its
finished rounds and the pool stops every worker by pid. A second signal kills the workers
still registered and exits with 130 immediately, without unwinding.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .pool import WorkerPool

EXIT_INTERRUPTED = 130

_active_pools: set[WorkerPool] = set()


def register(pool: WorkerPool) -> None:
    """Let a second signal kill ``pool``'s workers."""
    _active_pools.add(pool)


def unregister(pool: WorkerPool) -> None:
    """Forget ``pool``: its workers are stopped."""
    _active_pools.discard(pool)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block, SIGINT/SIGTERM stop the run as the module docstring says.

    Only the main thread can install handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals_seen = 0

    def handle(signum: int, frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")
        for pool in list(_active_pools):
            pool.kill_now()
        os._exit(EXIT_INTERRUPTED)

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
