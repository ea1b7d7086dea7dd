"""protos/contract.py: the message contract both sides import.

The wire values are pinned here: a client and a coordinator of different versions must agree
on them, so changing one is a protocol change, not a refactoring.
"""

from __future__ import annotations

import pickle

import pytest

from coordinator.config import FederationConfig
from protos import contract
from protos.contract import ClientErrorCode, ClientJobError
from tests.coordinator.test_config import run_config


def test_the_error_codes_keep_their_wire_values():
    assert {code.name: code.value for code in ClientErrorCode} == {
        "BAD_CONFIG": 1001,
        "DATA": 1002,
        "KERNEL_MISMATCH": 1003,
        "KERNEL_FAILED": 1004,
        "NOTHING_TO_EVALUATE": 1005,
        "KERNEL_UNSUPPORTED": 1006,
    }
    # Flower's own codes are 0..8; simulated faults use 1900..1999.
    assert all(1000 < code < 1900 for code in ClientErrorCode)


def test_the_keys_keep_their_wire_values():
    assert (
        contract.RECORD_ARRAYS,
        contract.RECORD_CONFIG,
        contract.RECORD_METRICS,
        contract.RECORD_KERNEL,
        contract.KERNEL_SHA256,
    ) == ("arrays", "config", "metrics", "kernel", "sha256")
    assert contract.REQUIRED_CONFIG == (
        "server-round",
        "lr",
        "local-epochs",
        "batch-size",
        "proximal-mu",
        "seed",
        "model",
    )
    assert contract.TRAIN_METRICS == (
        "num-examples",
        "train-loss",
        "kernel-seconds",
        "fuel-used",
        "reply-bytes",
        "partition-id",
        "steps-done",
        "steps-planned",
        "fuel-planning",
    )
    assert contract.EVALUATE_METRICS == (
        "num-examples",
        "eval-loss",
        "eval-accuracy",
        "partition-id",
    )
    # Flower's strategies weight by, and read the records of, the same keys (their defaults).
    from flwr.serverapp.strategy import FedAvg

    flower = FedAvg()
    assert flower.weighted_by_key == contract.METRIC_NUM_EXAMPLES
    assert (flower.arrayrecord_key, flower.configrecord_key) == (
        contract.RECORD_ARRAYS,
        contract.RECORD_CONFIG,
    )


def test_a_client_job_error_carries_its_code_as_the_enum():
    error = ClientJobError(1002, "data.npz: no such file")
    assert error.code is ClientErrorCode.DATA and str(error) == "data.npz: no such file"
    assert isinstance(error, Exception)
    with pytest.raises(ValueError, match="1999"):
        ClientJobError(1999, "a code outside the contract")


def test_the_keys_are_plain_strings_that_pickle_as_builtins():
    # The local engine's reply unpickler admits builtins and Flower's record classes only.
    keys = [value for name, value in vars(contract).items() if name.isupper()]
    strings = [key for key in keys if isinstance(key, str)]
    assert strings and all(type(key) is str for key in strings)
    assert b"protos" not in pickle.dumps(strings)
    assert contract.NO_PARTITION == -1


def test_the_metric_and_record_keys_are_distinct():
    for group in (contract.TRAIN_METRICS, contract.EVALUATE_METRICS, contract.REQUIRED_CONFIG):
        assert len(set(group)) == len(group)
    records = (
        contract.RECORD_ARRAYS,
        contract.RECORD_CONFIG,
        contract.RECORD_METRICS,
        contract.RECORD_KERNEL,
    )
    assert len(set(records)) == len(records)


def test_the_coordinator_sends_every_config_key_a_client_requires():
    sent = FederationConfig.from_run_config(run_config()).client_config(3)
    assert set(contract.REQUIRED_CONFIG) <= set(sent)
    assert contract.CONFIG_KERNEL_SHA256 in sent and sent[contract.CONFIG_SERVER_ROUND] == 3
