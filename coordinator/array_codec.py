"""Reading a reply's float32 arrays once: a strict fast path for numpy's own npy bytes.

A Flower ``Array`` carries its values as npy bytes, and ``Array.numpy()`` parses them with
``np.load`` (~0.1-0.2 ms per array, most of it parsing the text header). At 1000 clients the
coordinator decoded every delta twice per round: validation read it, then Flower's rule read
it again. This module makes both reads cheap without trusting the reply:

- :func:`decode_float32` accepts only bytes that begin with EXACTLY the header numpy writes for
  a C-ordered little-endian float32 array of the expected shape, followed by exactly that many
  values; it returns a read-only view of those values. Anything else returns None and the
  caller falls back to ``np.load`` (and its checks), so a hostile reply gets the same scrutiny.
  Why hand-written: numpy has no public "decode npy bytes with a known header" call, and
  ``np.lib.format.read_array`` parses the header text each time (the cost this avoids).
- :class:`DecodedArray` is a Flower ``Array`` that hands Flower's rule the already-validated
  values (a fresh copy per ``numpy()`` call) instead of parsing its bytes a second time.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence

import numpy as np
from flwr.app import Array
from flwr.common.constant import SType

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
    header = npy_header(shape)
    count = math.prod(shape)
    if len(data) != len(header) + FLOAT32_LE.itemsize * count or not data.startswith(header):
        return None
    # A view of the immutable bytes: read-only, no copy.
    return np.frombuffer(data, dtype=FLOAT32_LE, count=count, offset=len(header)).reshape(shape)


def encode_float32(values: np.ndarray) -> bytes:
    """Return the npy bytes ``np.save`` would write for a C-ordered float32 ``values``."""
    values = np.ascontiguousarray(values, dtype=FLOAT32_LE)
    return npy_header(tuple(values.shape)) + values.tobytes()


class DecodedArray(Array):
    """A Flower ``Array`` of float32 values that also keeps them decoded.

    ``numpy()`` returns a fresh, writable copy of the values (Flower's rules may modify what
    they are given) without parsing ``data``; ``data`` holds the same values as npy bytes,
    for whatever reads the bytes (sizes in Flower's logs, serialization).
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        super().__init__(
            dtype=str(values.dtype),
            shape=tuple(int(n) for n in values.shape),
            stype=SType.NUMPY,
            data=encode_float32(values),
        )
        values = values.copy()
        values.flags.writeable = False
        # Outside the dataclass fields, so Flower's dirty tracking and equality ignore it.
        self.__dict__["_decoded"] = values

    def numpy(self) -> np.ndarray:
        """Return a writable copy of the values (no npy parsing)."""
        decoded = self.__dict__.get("_decoded")
        if decoded is None:  # a field was reassigned: the bytes are the truth again
            return super().numpy()
        return np.array(decoded, copy=True)

    def __setattr__(self, name: str, value: object) -> None:
        """Set a field as Flower does; a changed field drops the decoded values."""
        self.__dict__.pop("_decoded", None)
        super().__setattr__(name, value)


__all__ = ["DecodedArray", "decode_float32", "encode_float32", "npy_header"]
