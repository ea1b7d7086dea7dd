"""simulations/client_app.py: the simulation's ClientApp reads its partition from the run config.

Real data (scikit-learn's digits), the real kernel and real Flower Messages; no data key is in
the message (the coordinator does not forward them, tests/coordinator/test_config.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp

from client import client_app as device_client_app
from protos import contract
from protos.contract import ClientErrorCode
from simulations import client_app
from simulations.federated_data import DataConfigError, load_client_data
from tests.client.test_client_app import _data_file, _error, _message

RUN_CONFIG = {
    "dataset": "digits",
    "partitioning": "iid",
    "num-partitions": 4,
    "seed": 3,
    "test-fraction": 0.2,
}


def _context(node_config, run_config=RUN_CONFIG) -> Context:
    return Context(
        run_id=1,
        node_id=11,
        node_config=node_config,
        state=RecordDict(),
        run_config=dict(run_config),
    )


def test_a_simulated_node_gets_its_partition_from_the_run_config():
    data = client_app.scenario_data({"partition-id": 2}, RUN_CONFIG, {"seed": 3})
    expected = load_client_data(RUN_CONFIG, 2)
    np.testing.assert_array_equal(data.x_train, expected.x_train)
    np.testing.assert_array_equal(data.y_test, expected.y_test)
    with pytest.raises(DataConfigError, match="num-partitions"):
        client_app.scenario_data({"partition-id": 9}, RUN_CONFIG, {"seed": 3})


def test_a_node_with_its_own_file_reads_it_as_a_device_does(tmp_path):
    node = {"data-path": str(_data_file(tmp_path)), "partition-id": 1}
    data = client_app.scenario_data(node, {"test-fraction": 0.25}, {"seed": 3})
    assert data.num_train == 30  # the file's 40 samples, not partition 1 of anything


def test_the_simulation_app_trains_a_partition_from_a_message_without_data_keys():
    message = _message("train", model="mlp:64-8-10")
    assert not set(message.content[contract.RECORD_CONFIG]) & set(RUN_CONFIG) - {"seed"}
    reply = client_app.app(message, _context({"partition-id": 1, "num-partitions": 4}))
    assert not reply.has_error(), reply.error
    metrics = reply.content[contract.RECORD_METRICS]
    assert metrics[contract.METRIC_PARTITION_ID] == 1
    assert metrics[contract.METRIC_NUM_EXAMPLES] == load_client_data(RUN_CONFIG, 1).num_train
    # The device's app, given the same node, has no data set to read: the seam decides.
    code, _ = _error(device_client_app.app(message, _context({"partition-id": 1})))
    assert code == ClientErrorCode.DATA


def test_a_bad_data_key_is_a_data_error_reply_naming_the_key():
    reply = client_app.app(
        _message("train", model="mlp:64-8-10"),
        _context({"partition-id": 0}, RUN_CONFIG | {"partitioning": "zigzag"}),
    )
    code, reason = _error(reply)
    assert code == ClientErrorCode.DATA and "partitioning" in reason


class _Recorder:
    def __init__(self) -> None:
        self.run_configs: list[dict] = []
        self.app = ClientApp()
        self.app.train()(self._handle)
        self.app.evaluate()(self._handle)

    def _handle(self, message, context):
        self.run_configs.append(dict(context.run_config))
        return message.create_reply(RecordDict())


def test_with_run_config_fills_an_engines_empty_run_config_only():
    inner = _Recorder()
    wrapped = client_app.with_run_config(inner.app, RUN_CONFIG)
    wrapped(_message("train"), _context({"partition-id": 0}, {}))
    wrapped(_message("evaluate"), _context({"partition-id": 0}, {}))
    wrapped(_message("train"), _context({"partition-id": 0}, {"dataset": "synthetic"}))
    assert inner.run_configs == [RUN_CONFIG, RUN_CONFIG, {"dataset": "synthetic"}]
