"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

Python frees its large buffers (numpy arrays above a few hundred bytes) to glibc's malloc,
which keeps freed memory mapped when live blocks are interleaved with it: building the
central test set of 1000 synthetic devices (113 MB generated, 10 MB kept) left the
coordinator ~100 MB larger than what it holds, and a 1000-reply round leaves the same kind of
holes. ``malloc_trim(0)`` returns every free page it can; it costs about a millisecond per
hundred MB of heap. Hand-written because no library exposes it; elsewhere than glibc it is a
no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Return free heap pages to the system; False when the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
