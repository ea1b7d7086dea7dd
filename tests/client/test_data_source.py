"""client/data_source.py: the seam for where a client's data comes from, and the device's source.

Real files, the real kernel and real Flower Messages: the seam is tested by running the
ClientApp (``make_client_app``) on a source of our own.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from client import client_app
from client.data import DataFileError, LocalData, split_local
from client.data_source import device_data
from protos import contract
from protos.contract import ClientErrorCode, ClientJobError
from tests.client.test_client_app import _data_file, _error, _message


def _context(node_config, run_config) -> Context:
    return Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config
    )


def test_the_device_source_splits_its_file_by_the_run_configs_test_fraction(tmp_path):
    node = {"data-path": str(_data_file(tmp_path, num_samples=40))}
    job = {"seed": 3}
    assert device_data(node, {"test-fraction": 0.25}, job).num_train == 30
    assert device_data(node, {}, job).num_train == 32  # the default 0.2
    # the same split as the loader's own, from the job's seed
    loaded = np.load(node["data-path"])
    expected = split_local(loaded["x"], loaded["y"], 0.25, 3)
    got = device_data(node, {"test-fraction": 0.25}, job)
    np.testing.assert_array_equal(got.y_train, expected.y_train)
    np.testing.assert_array_equal(got.x_test, expected.x_test)


def test_the_device_source_names_what_is_missing_or_wrong(tmp_path):
    with pytest.raises(DataFileError, match="set the node config 'data-path'"):
        device_data({"partition-id": 0}, {"test-fraction": 0.2}, {"seed": 1})
    node = {"data-path": str(_data_file(tmp_path)), "max-data-mb": 0}
    with pytest.raises(ClientJobError) as raised:
        device_data(node, {}, {"seed": 1})
    assert raised.value.code is ClientErrorCode.BAD_CONFIG
    assert "'max-data-mb': expected a number > 0" in str(raised.value)


class RecordingSource:
    """A DataSource of our own: in-memory data, and the configs it was asked with."""

    def __init__(self, num_samples: int = 24) -> None:
        rng = np.random.default_rng(5)
        x = rng.normal(size=(num_samples, 3)).astype(np.float32)
        y = rng.integers(0, 3, num_samples).astype(np.int32)
        self.data = LocalData(x[:16], y[:16], x[16:], y[16:])
        self.calls: list[tuple[dict, dict, dict]] = []

    def __call__(self, node_config, run_config, job_config) -> LocalData:
        self.calls.append((dict(node_config), dict(run_config), dict(job_config)))
        return self.data


def test_a_client_app_trains_and_evaluates_on_the_data_its_source_gives():
    source = RecordingSource()
    app = client_app.make_client_app(source)
    node, run = {"partition-id": 4}, {"dataset": "mine", "test-fraction": 0.5}
    reply = app(_message("train"), _context(node, run))
    assert not reply.has_error(), reply.error
    metrics = reply.content[contract.RECORD_METRICS]
    assert set(metrics) == set(contract.TRAIN_METRICS)
    assert metrics[contract.METRIC_NUM_EXAMPLES] == 16
    assert metrics[contract.METRIC_PARTITION_ID] == 4
    assert set(reply.content) == {
        contract.RECORD_ARRAYS,
        contract.RECORD_METRICS,
        contract.RECORD_KERNEL,
    }
    reply = app(_message("evaluate"), _context(node, run))
    assert not reply.has_error(), reply.error
    assert set(reply.content[contract.RECORD_METRICS]) == set(contract.EVALUATE_METRICS)
    assert reply.content[contract.RECORD_METRICS][contract.METRIC_NUM_EXAMPLES] == 8
    (node_seen, run_seen, job_seen), _ = source.calls
    assert node_seen == node and run_seen == run
    assert job_seen[contract.CONFIG_SERVER_ROUND] == 1 and job_seen[contract.CONFIG_SEED] == 3


def test_the_source_s_data_is_checked_against_the_model():
    source = RecordingSource()
    app = client_app.make_client_app(source)
    code, reason = _error(app(_message("train", model="logreg:4-3"), _context({}, {})))
    assert code == ClientErrorCode.DATA and "expected 4 features" in reason
    source.data = LocalData(
        source.data.x_train, np.full(16, 7, np.int32), source.data.x_test, source.data.y_test
    )
    code, reason = _error(app(_message("train"), _context({}, {})))
    assert code == ClientErrorCode.DATA and "7" in reason


def test_a_source_error_becomes_an_error_reply_with_its_code():
    def broken(node_config, run_config, job_config):
        raise DataFileError("partition 3", "out of range")

    app = client_app.make_client_app(broken)
    code, reason = _error(app(_message("train"), _context({}, {})))
    assert code == ClientErrorCode.DATA and reason == "partition 3: out of range"
    assert type(code) is int  # a builtin on the wire


def test_the_device_app_never_reads_a_partition():
    # client/ knows no data set: a node with only a partition id has no data on a device.
    code, reason = _error(client_app.app(_message("train"), _context({"partition-id": 0}, {})))
    assert code == ClientErrorCode.DATA and "data-path" in reason
