"""Float32 arrays as npy bytes, the way Flower's ``Array`` carries them: a strict fast path.

``Array.numpy()`` parses npy bytes with ``np.load`` (~0.1 ms per array, most of it reading the
text header) and ``Array(ndarray)`` writes them with ``np.save``. Every simulated job decodes
the global model and encodes its delta, and the coordinator decodes every reply, so both sides
use this module (numpy only: client/ and coordinator/ may both import protos/).

:func:`decode_float32` accepts only bytes that begin with EXACTLY the header numpy writes for a
C-ordered little-endian float32 array of the expected shape, followed by exactly that many
values, and returns a read-only view of them. Anything else returns None and the caller falls
back to ``np.load`` (and its checks), so a hostile message gets the same scrutiny. Why
hand-written: numpy has no public "decode npy bytes of a known layout" call, and
``np.lib.format.read_array`` parses the header text every time (the cost this avoids).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import IO

import numpy as np

FLOAT32_LE = np.dtype("<f4")


@functools.lru_cache(maxsize=256)
def npy_header(shape: tuple[int, ...]) -> bytes:
    """Return the npy header ``np.save`` writes for a C-ordered float32 array of ``shape``."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=FLOAT32_LE), allow_pickle=False)
    written = buffer.getvalue()
    return written[: len(written) - FLOAT32_LE.itemsize * math.prod(shape)]


def decode_float32(data: object, shape: Sequence[int]) -> np.ndarray | None:
    """Return npy ``data``'s values as a read-only float32 view, or None if not the exact form.

    The exact form: numpy's own header for float32 ``shape`` (C order, little-endian), then
    exactly ``prod(shape)`` values. None means "read it the general way" (``np.load``).
    """
    if type(data) is not bytes:
        return None
    shape = tuple(shape)
    count = math.prod(shape)
    # The shape is a claim (a message's metadata); building its header allocates the array
    # (np.save of zeros), so a claimed (10**10,) must not get that far: data that cannot hold
    # the values is not the exact form, whatever the header.
    if any(type(n) is not int or n < 0 for n in shape) or FLOAT32_LE.itemsize * count > len(data):
        return None
    header = npy_header(shape)
    if len(data) != len(header) + FLOAT32_LE.itemsize * count or not data.startswith(header):
        return None
    # A view of the immutable bytes: read-only, no copy.
    return np.frombuffer(data, dtype=FLOAT32_LE, count=count, offset=len(header)).reshape(shape)


class NpyVersionError(ValueError):
    """npy bytes of a format version the reader does not accept."""

    def __init__(self, version: tuple[int, int]) -> None:
        super().__init__(f"npy format version {version}")
        self.version = version


NPY_VERSIONS = ((1, 0), (2, 0))


def read_npy_header(
    stream: IO[bytes],
    versions: Sequence[tuple[int, int]] = NPY_VERSIONS,
    max_header_size: int = 10_000,
) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the magic and header of the npy array at ``stream``'s position.

    Returns ``(shape, fortran_order, dtype)`` and leaves ``stream`` where the data begins;
    nothing of the data is read or allocated (``np.lib.format.read_array`` allocates what
    the header claims first). Raises :class:`NpyVersionError` for a version outside
    ``versions``, and ``ValueError`` as numpy does for a header it cannot read.
    """
    version = np.lib.format.read_magic(stream)
    if version not in versions:
        raise NpyVersionError(version)
    # Version 2.0's header reader reads 3.0 too (its header is utf-8 rather than latin-1).
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    return read(stream, max_header_size=max_header_size)


def npy_shortfall(data: object) -> str:
    """Why npy ``data`` holds fewer bytes than its header describes ("" otherwise).

    ``np.load`` (``Array.numpy()``) allocates the array its header claims before reading
    the data: 16 bytes under a header of shape (2**28,) float32 cost a 1 GiB allocation.
    Call this first on bytes from elsewhere; it reads the header only. "" as well when
    there is no header to read (``np.load`` then refuses the bytes with its own reason).
    """
    if not isinstance(data, bytes):
        return ""
    buffer = io.BytesIO(data)
    try:
        shape, _, dtype = read_npy_header(buffer)
        described = buffer.tell() + math.prod(shape) * dtype.itemsize
    except Exception:  # no readable header: np.load says why
        return ""
    if len(data) >= described:
        return ""
    return f"EOF: its npy header describes {described} bytes, given {len(data)}"


def encode_float32(values: np.ndarray) -> bytes:
    """Return the npy bytes ``np.save`` would write for a C-ordered float32 ``values``."""
    values = np.ascontiguousarray(values, dtype=FLOAT32_LE)
    return npy_header(tuple(values.shape)) + values.tobytes()


__all__ = [
    "FLOAT32_LE",
    "NPY_VERSIONS",
    "NpyVersionError",
    "decode_float32",
    "encode_float32",
    "npy_header",
    "npy_shortfall",
    "read_npy_header",
]
