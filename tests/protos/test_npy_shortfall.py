"""npy bytes whose header claims far more than they hold: refused before anything allocates.

Before: a train reply's delta (coordinator) or a global model array (client) that was not
numpy's exact float32 form went to ``np.load``, which allocates the array its header claims
before reading: 16 bytes under a header of shape (2**28,) cost a 1 GiB allocation (and
(2**40,) a MemoryError) per array, per reply. Now ``protos.npy.npy_shortfall`` reads the
header alone and both sides refuse such bytes first, with "cannot be read" as before.
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from client.client_app import _read_array
from coordinator.validation import check_train_reply
from protos import contract
from protos.contract import ClientErrorCode, ClientJobError
from protos.npy import npy_shortfall
from protos.report_pb2 import OK, REJECTED
from tests.coordinator.messages import reply_metadata as unit_reply_metadata

SHAPES = {"w": (4,)}


def _npy(shape, descr="<f4", fortran=False, payload=b"\0" * 16, version=(1, 0)) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue() + payload


def _array(data: bytes) -> Array:
    return Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=data)


def _reply(data: bytes) -> Message:
    content = RecordDict(
        {
            contract.RECORD_ARRAYS: ArrayRecord({"w": _array(data)}),
            contract.RECORD_METRICS: MetricRecord(
                {contract.METRIC_NUM_EXAMPLES: 5, contract.METRIC_TRAIN_LOSS: 0.5}
            ),
        }
    )
    return Message(content=content, metadata=unit_reply_metadata(9))


CLAIMS = {
    "1 GiB header, 16 bytes": (2**28,),
    "4 TiB header, 16 bytes": (2**40,),
    "2-d 1 GiB header": (2**14, 2**14),
}


@pytest.mark.parametrize("case", sorted(CLAIMS))
def test_a_reply_whose_header_claims_more_is_rejected_without_allocating(case):
    data = _npy(CLAIMS[case])
    tracemalloc.start()
    try:
        result = check_train_reply(_reply(data), SHAPES, 10.0, server_round=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status == REJECTED
    described = len(data) - 16 + 4 * int(np.prod(CLAIMS[case]))
    assert result.reason == (
        f"array 'w': cannot be read (EOF: its npy header describes {described} bytes, "
        f"given {len(data)})"
    )
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("case", sorted(CLAIMS))
def test_a_global_model_whose_header_claims_more_fails_the_job_without_allocating(case):
    tracemalloc.start()
    try:
        with pytest.raises(ClientJobError, match="global model array: EOF: its npy header") as info:
            _read_array(_array(_npy(CLAIMS[case])))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == ClientErrorCode.BAD_CONFIG
    assert peak < 1 << 20, peak


# Bytes that are not numpy's exact form but hold what they claim still take np.load.
VALID_OTHER_FORMS = {
    "npy version 2.0": _npy((4,), payload=np.arange(4, dtype="<f4").tobytes(), version=(2, 0)),
    "fortran order 1-d": _npy((4,), fortran=True, payload=np.arange(4, dtype="<f4").tobytes()),
}


@pytest.mark.parametrize("case", sorted(VALID_OTHER_FORMS))
def test_bytes_that_hold_what_they_claim_are_read_as_before(case):
    data = VALID_OTHER_FORMS[case]
    assert npy_shortfall(data) == ""
    assert check_train_reply(_reply(data), SHAPES, 10.0, server_round=1).status == OK
    np.testing.assert_array_equal(_read_array(_array(data)), np.arange(4, dtype=np.float32))


@pytest.mark.parametrize(
    "data", [b"", b"not npy", b"\x93NUMPY\x09\x00", _npy((4,))[:-20]], ids=repr
)
def test_no_readable_header_is_left_to_np_load(data):
    assert npy_shortfall(data) == ""
    result = check_train_reply(_reply(data), SHAPES, 10.0, server_round=1)
    assert result.status == REJECTED and "cannot be read" in result.reason
