"""The kernel a train reply names (ConfigRecord ``kernel``) reaches the report, checked."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from coordinator.validation import check_train_reply, reply_kernel_sha256
from protos import contract
from protos.report_pb2 import OK
from tests.coordinator.messages import reply_metadata

SHAPES = {"w": (2,)}
SHA = "0123456789abcdef" * 4


def _reply(kernel: ConfigRecord | None) -> Message:
    records = {
        contract.RECORD_ARRAYS: ArrayRecord({"w": Array(np.zeros(2, np.float32))}),
        contract.RECORD_METRICS: MetricRecord(
            {contract.METRIC_NUM_EXAMPLES: 3, contract.METRIC_TRAIN_LOSS: 0.5}
        ),
    }
    if kernel is not None:
        records["kernel"] = kernel
    return Message(content=RecordDict(records), metadata=reply_metadata(7))


def test_a_named_kernel_is_recorded_and_the_reply_stays_valid():
    reply = check_train_reply(_reply(ConfigRecord({"sha256": SHA})), SHAPES, 10.0)
    assert reply.status == OK and reply.kernel_sha256 == SHA


@pytest.mark.parametrize(
    "kernel",
    [
        None,
        ConfigRecord({}),
        ConfigRecord({"sha256": SHA.upper()}),
        ConfigRecord({"sha256": SHA[:-1]}),
        ConfigRecord({"sha256": SHA[:-1] + "<"}),
        ConfigRecord({"sha256": 5}),
        ConfigRecord({"sha256": "x" * 10_000}),
    ],
)
def test_anything_but_64_lowercase_hex_digits_is_recorded_as_unknown(kernel):
    assert reply_kernel_sha256(_reply(kernel)) == ""
    assert check_train_reply(_reply(kernel), SHAPES, 10.0).status == OK
