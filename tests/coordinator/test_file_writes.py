"""coordinator/file_writes.py: the run folder's writes on one thread, in order, errors raised."""

from __future__ import annotations

import threading

import pytest

from coordinator.file_writes import BackgroundWrites


def test_writes_run_in_submission_order_off_the_calling_thread():
    done: list[tuple[int, str]] = []
    writes = BackgroundWrites()
    for index in range(50):
        writes.submit(lambda index=index: done.append((index, threading.current_thread().name)))
    writes.flush()
    assert [index for index, _ in done] == list(range(50))
    assert all(name != threading.current_thread().name for _, name in done)
    writes.close()


def test_a_failed_write_is_raised_by_flush_and_later_writes_still_run():
    done: list[str] = []
    writes = BackgroundWrites()
    writes.submit(lambda: done.append("checkpoint"))
    writes.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    writes.submit(lambda: done.append("report"))
    with pytest.raises(OSError, match="disk full"):
        writes.flush()
    assert done == ["checkpoint", "report"]
    writes.flush()  # raised once
    writes.close()


def test_a_failed_write_is_raised_by_the_next_submit_once_it_is_known():
    writes = BackgroundWrites()
    writes.submit(lambda: (_ for _ in ()).throw(OSError("read-only file system")))
    writes.close()  # the failed write has finished
    with pytest.raises(OSError, match="read-only"):
        writes.flush()


def test_at_most_max_pending_writes_wait():
    release = threading.Event()
    started: list[int] = []
    writes = BackgroundWrites(max_pending=2)

    def slow(index):
        started.append(index)
        release.wait(5)

    writes.submit(lambda: slow(0))
    writes.submit(lambda: slow(1))
    blocked = threading.Thread(target=lambda: writes.submit(lambda: slow(2)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # the third submit waits for the first write
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    writes.flush()
    assert started == [0, 1, 2]
    writes.close()
