"""Giving freed heap back to the system (glibc malloc_trim), measured in a fresh process.

The measurement runs in its own interpreter: in pytest's long-lived process, free blocks left
by earlier tests absorb the test's allocations, so how much the heap can shrink depends on
which tests ran before (it did, in CI's full run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# What building a central test set does: big temporaries freed, small survivors between them,
# so the heap cannot shrink by itself.
_PROBE = """
import json
import numpy as np
from simulations.engine.memory import release_free_memory


def rss_mb():
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no Rss line")


release_free_memory()
kept, junk = [], []
for _ in range(2000):
    junk.append(np.ones(12_000))  # ~96 KB each, below mmap's threshold: on the heap
    kept.append(np.ones(64))
del junk
before = rss_mb()
released = release_free_memory()
after = rss_mb()
print(json.dumps({
    "released": released,
    "before": before,
    "after": after,
    "kept_sum": sum(float(array.sum()) for array in kept),
}))
"""


def test_freed_interleaved_buffers_are_returned_to_the_system():
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert figures["released"] is True  # glibc (this project's Linux)
    before, after = figures["before"], figures["after"]
    assert before - after > 100, f"RSS {before:.0f} MB -> {after:.0f} MB"
    assert figures["kept_sum"] == 64 * 2000  # survivors untouched
