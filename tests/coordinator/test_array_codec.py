"""DecodedArray: Flower's rule reads the validated values, never the bytes a second time."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from coordinator.array_codec import DecodedArray


def test_decoded_array_is_a_flower_array_without_a_second_parse():
    values = np.random.default_rng(1).normal(size=(60, 10)).astype(np.float32)
    array = DecodedArray(values)
    assert array.data == Array(values).data  # the same npy bytes as Flower would hold
    assert (array.dtype, array.shape) == ("float32", (60, 10))
    values[0, 0] = 99.0  # the caller's array is copied, not shared
    first = array.numpy()
    assert first[0, 0] != 99.0
    first[0, 0] = -1.0  # each numpy() is a fresh writable copy: a rule may modify it
    assert array.numpy()[0, 0] != -1.0
    record = ArrayRecord()
    record["w"] = array  # as delta_content builds it: kept as it is
    assert record["w"] is array


def test_decoded_array_follows_a_reassigned_field():
    array = DecodedArray(np.zeros((2, 2), np.float32))
    array.data = Array(np.ones((2, 2), np.float32)).data
    assert np.array_equal(array.numpy(), np.ones((2, 2), np.float32))
