"""protos/npy.py: numpy's exact npy bytes decode as a view, anything else falls back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import Array

from protos.npy import (
    NPY_VERSIONS,
    NpyVersionError,
    decode_float32,
    encode_float32,
    read_npy_header,
)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(60, 10), (10,), (1,), (3, 4, 5), (0,)])
def test_decodes_numpy_bytes_bit_exactly(shape):
    values = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    decoded = decode_float32(Array(values).data, shape)
    assert decoded is not None
    assert decoded.dtype == np.float32 and decoded.shape == shape
    assert decoded.tobytes() == values.tobytes()
    assert not decoded.flags.writeable  # a view of the reply's immutable bytes


@pytest.mark.parametrize(
    "data, shape",
    [
        (_npy(np.zeros((10, 60), np.float32)), (60, 10)),  # another shape
        (_npy(np.zeros((60, 10), np.float64)), (60, 10)),  # another dtype
        (_npy(np.zeros((60, 10), ">f4")), (60, 10)),  # big-endian
        (_npy(np.asfortranarray(np.zeros((60, 10), np.float32))), (60, 10)),  # Fortran order
        (_npy(np.zeros((60, 10), np.float32))[:-1], (60, 10)),  # truncated
        (_npy(np.zeros((60, 10), np.float32)) + b"\0", (60, 10)),  # trailing byte
        (b"", (60, 10)),
        (bytearray(_npy(np.zeros((60, 10), np.float32))), (60, 10)),  # not bytes
    ],
)
def test_anything_but_the_exact_form_falls_back(data, shape):
    assert decode_float32(data, shape) is None


def test_encode_matches_np_save():
    values = np.arange(600, dtype=np.float32).reshape(60, 10)
    assert encode_float32(values) == _npy(values)


@pytest.mark.parametrize(
    "shape",
    [(10**12,), (10**6, 10**6), (2**62, 4), (3, -1), (True, 3), (2.0, 3)],
)
def test_a_claimed_shape_the_bytes_cannot_hold_is_refused_before_any_allocation(shape):
    # The shape comes from a message's metadata: building its header would np.save an array
    # of that shape (4 TB for the first), so it is refused on the byte count alone.
    data = _npy(np.zeros(6, np.float32))
    assert decode_float32(data, shape) is None


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_read_npy_header_reads_the_header_and_stops_where_the_data_begins(version):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, values, version=version, allow_pickle=False)
    data = buffer.getvalue()
    stream = io.BytesIO(data)
    if version not in NPY_VERSIONS:
        with pytest.raises(NpyVersionError) as refused:
            read_npy_header(stream)
        assert refused.value.version == version and "npy format version (3, 0)" in str(
            refused.value
        )
        stream = io.BytesIO(data)
    shape, fortran_order, dtype = read_npy_header(stream, (*NPY_VERSIONS, (3, 0)))
    assert (shape, fortran_order, dtype) == ((2, 3), False, np.dtype("<f4"))
    assert stream.read() == values.tobytes()


def test_read_npy_header_allocates_nothing_for_what_a_header_claims():
    import tracemalloc

    claim = io.BytesIO()  # 4 TiB of float32 claimed, no data behind it
    np.lib.format.write_array_header_1_0(
        claim, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    header = claim.getvalue()
    tracemalloc.start()
    try:
        shape, _, _ = read_npy_header(io.BytesIO(header))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shape == (2**40,) and peak < 1 << 20
