"""Giving freed heap back to the system (glibc malloc_trim), measured on this process."""

from __future__ import annotations

import numpy as np

from simulations.engine.memory import release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no Rss line")


def test_freed_interleaved_buffers_are_returned_to_the_system():
    # What building a central test set does: big temporaries freed, small survivors between
    # them, so the heap cannot shrink by itself.
    release_free_memory()
    kept, junk = [], []
    for _ in range(2000):
        junk.append(np.ones(12_000))  # ~96 KB each, below mmap's threshold: on the heap
        kept.append(np.ones(64))
    del junk
    before = _rss_mb()
    assert release_free_memory() is True  # glibc (this project's Linux)
    after = _rss_mb()
    assert before - after > 100, f"RSS {before:.0f} MB -> {after:.0f} MB"
    assert sum(float(array.sum()) for array in kept) == 64 * 2000  # survivors untouched
