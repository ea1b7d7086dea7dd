"""What Flower's rule reads: a reply's validated delta, without decoding or copying it again.

At 1000 clients the coordinator decoded every delta twice per round: validation read it
(:func:`protos.npy.decode_float32`, a view of numpy's exact bytes), then Flower's rule read it
again with ``np.load``. :class:`DecodedArray` is a Flower ``Array`` that hands the rule the
validated values instead. :class:`ValidatedContent` is the RecordDict that carries them: Flower's
rule reads ``content.array_records`` and ``content.metric_records`` several times per reply,
and RecordDict rebuilds each such view on every read through two type-checked ``__setitem__``
calls per record (~25 us); this one fills the same view directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.message.recorddict import _SyncedDict  # Flower's view type (pinned flwr 1.42)
from flwr.app.message.typeddict import TypedDict
from flwr.common.constant import SType

from protos.npy import encode_float32

# The dataclass fields of Flower's Array: what the npy bytes and their description are.
ARRAY_FIELDS = frozenset({"dtype", "shape", "stype", "data"})

FLOAT32 = "float32"
RecordT = TypeVar("RecordT", ArrayRecord, MetricRecord, ConfigRecord)


class DecodedArray(Array):
    """A Flower ``Array`` of float32 values that also keeps them decoded.

    ``numpy()`` returns a fresh, writable copy of the values (Flower's rules may modify what
    they are given) without parsing ``data``; ``data`` holds the same values as npy bytes,
    for whatever reads the bytes (sizes in Flower's logs, serialization).
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        decoded = values.copy()
        decoded.flags.writeable = False
        # The state Flower's ``Array(dtype=, shape=, stype=, data=)`` leaves, set directly:
        # its constructor's argument dispatch and per-field dirty tracking cost ~20 us an
        # array (a fresh Array is dirty: no ``_is_dirty`` entry reads as dirty). ``_decoded``
        # sits outside the dataclass fields, so Flower's equality ignores it.
        self.__dict__.update(
            dtype=FLOAT32,  # str(values.dtype), which costs ~4 us
            shape=tuple(int(n) for n in values.shape),
            stype=SType.NUMPY,
            data=encode_float32(values),
            _is_dirty=True,
            _decoded=decoded,
        )

    def numpy(self) -> np.ndarray:
        """Return a writable copy of the values (no npy parsing)."""
        decoded = self.__dict__.get("_decoded")
        if decoded is None:  # a field was reassigned: the bytes are the truth again
            return super().numpy()
        return np.array(decoded, copy=True)

    def __setattr__(self, name: str, value: object) -> None:
        """Set a field as Flower does; a changed field drops the decoded values."""
        if name in ARRAY_FIELDS:  # not Flower's own bookkeeping (``is_dirty``)
            self.__dict__.pop("_decoded", None)
        super().__setattr__(name, value)


class ValidatedContent(RecordDict):
    """A RecordDict whose ``array_records``/``metric_records``/``config_records`` are cheap.

    Each property returns what RecordDict's returns: a fresh ``_SyncedDict`` of the records of
    that type, in order, whose later changes write through to this RecordDict. It is filled
    directly instead of through ``__setitem__``, which would type-check every record again and
    write each one back into this RecordDict (where it already is). Everything else is
    RecordDict's own (a record set later is type-checked as usual).
    """

    @classmethod
    def of_delta(
        cls, arrays_key: str, delta: Mapping[str, np.ndarray], metrics_key: str, metrics: dict
    ) -> ValidatedContent:
        """Return the content {arrays_key: the delta as DecodedArrays, metrics_key: metrics}.

        Built without Flower's per-item checks (~10 us an item, five items a reply): the
        names and metric keys are strings and the metrics ints or floats (asserted), the
        arrays are DecodedArrays, the records are Flower's own types.
        """
        assert all(type(name) is str for name in delta)
        assert all(
            type(key) is str and type(value) in (int, float) for key, value in metrics.items()
        )
        array_record = ArrayRecord()
        _items(array_record).update((name, DecodedArray(array)) for name, array in delta.items())
        metric_record = MetricRecord()
        _items(metric_record).update(metrics)
        content = cls()
        _items(content).update({arrays_key: array_record, metrics_key: metric_record})
        return content

    @property
    def array_records(self) -> _SyncedDict[ArrayRecord]:
        """Dictionary holding only ArrayRecord instances."""
        return self._view(ArrayRecord)

    @property
    def metric_records(self) -> _SyncedDict[MetricRecord]:
        """Dictionary holding only MetricRecord instances."""
        return self._view(MetricRecord)

    @property
    def config_records(self) -> _SyncedDict[ConfigRecord]:
        """Dictionary holding only ConfigRecord instances."""
        return self._view(ConfigRecord)

    def _view(self, kind: type[RecordT]) -> _SyncedDict[RecordT]:
        # RecordDict writes ``_SyncedDict[kind](...)``: the generic alias only adds
        # ``__orig_class__`` (~1 us) which nothing reads.
        view = _SyncedDict(self, kind)
        # Every record here passed RecordDict's checks when it was set (or of_delta's).
        _items(view).update(
            {key: record for key, record in self.items() if isinstance(record, kind)}
        )
        return view


def _items(typed: TypedDict) -> dict:
    """Return the plain dict a Flower TypedDict keeps its items in (``__dict__["_data"]``).

    Only for filling a fresh record with items already known to pass its checks: the checks
    in ``TypedDict.__setitem__`` build two ``typing.Callable`` aliases per call (~10 us).
    """
    return typed.__dict__["_data"]


__all__ = ["ARRAY_FIELDS", "DecodedArray", "ValidatedContent"]
