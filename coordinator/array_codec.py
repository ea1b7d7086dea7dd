"""Flower's rule reads a reply's validated delta, not its npy bytes a second time.

At 1000 clients the coordinator decoded every delta twice per round: validation read it
(:func:`protos.npy.decode_float32`, a view of numpy's exact bytes), then Flower's rule read it
again with ``np.load``. :class:`DecodedArray` is a Flower ``Array`` that hands the rule the
validated values instead.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array
from flwr.common.constant import SType

from protos.npy import encode_float32


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


__all__ = ["DecodedArray"]
