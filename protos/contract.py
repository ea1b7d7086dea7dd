"""The message contract between the coordinator and its clients, in one place.

Both sides import it: the client (``client/``) builds its replies with these names and raises
:class:`ClientJobError` with a :class:`ClientErrorCode`; the coordinator (``coordinator/``)
reads the replies, sends the train config and interprets the codes with the same names. It sits
in ``protos/`` because that is the one layer both may import (``protos/`` imports nothing of
ours, only the standard library here), next to ``report.proto``, the contract between the
coordinator and the reader of a report.

A Flower ``Message`` carries a ``RecordDict``:

- coordinator -> client (train and evaluate): ``RECORD_ARRAYS`` (the global model, one
  ``ArrayRecord``) and ``RECORD_CONFIG`` (the ``CONFIG_*`` keys, a ``ConfigRecord``);
- client -> coordinator, train: ``RECORD_ARRAYS`` (the DELTA, local - global, never the local
  weights), ``RECORD_METRICS`` (the ``METRIC_*`` keys of ``TRAIN_METRICS``) and
  ``RECORD_KERNEL`` (``KERNEL_SHA256``: which kernel trained the delta);
- client -> coordinator, evaluate: ``RECORD_METRICS`` (``EVALUATE_METRICS``);
- or an error reply whose code is a :class:`ClientErrorCode`.

Plain ``str`` and ``int`` constants, not ``StrEnum`` members, for the keys: record keys travel
through Flower's serde and the local engine's pickle transfer, which admits Flower's record
classes and builtins only.
"""

from __future__ import annotations

import enum

# -- records in a message's RecordDict ----------------------------------------------------------
RECORD_ARRAYS = "arrays"
RECORD_CONFIG = "config"
RECORD_METRICS = "metrics"
RECORD_KERNEL = "kernel"  # a ConfigRecord: a MetricRecord holds numbers only
KERNEL_SHA256 = "sha256"  # the one key of RECORD_KERNEL

# -- config keys the coordinator sends (RECORD_CONFIG) ------------------------------------------
CONFIG_SERVER_ROUND = "server-round"
CONFIG_LR = "lr"
CONFIG_LOCAL_EPOCHS = "local-epochs"
CONFIG_BATCH_SIZE = "batch-size"
CONFIG_PROXIMAL_MU = "proximal-mu"
CONFIG_SEED = "seed"
CONFIG_MODEL = "model"
CONFIG_KERNEL_SHA256 = "kernel-sha256"  # the pin; "" accepts the default shipped kernel
# Set only for simulated devices (coordinator/clock.py): the job's budgets.
CONFIG_FUEL_BUDGET = "fuel-budget"  # int >= 0; -1 or absent: none
CONFIG_MAX_STEPS = "max-steps"  # int >= 0; -1 or absent: none
CONFIG_METER_FUEL = "meter-fuel"  # bool: measure the fuel even without a budget
CONFIG_DEVICE_MEMORY_MB = "device-memory-mb"  # a simulated device's memory cap

# Every train and evaluate config carries these; a client refuses a config without one.
REQUIRED_CONFIG: tuple[str, ...] = (
    CONFIG_SERVER_ROUND,
    CONFIG_LR,
    CONFIG_LOCAL_EPOCHS,
    CONFIG_BATCH_SIZE,
    CONFIG_PROXIMAL_MU,
    CONFIG_SEED,
    CONFIG_MODEL,
)

# -- metric keys a client replies with (RECORD_METRICS) -----------------------------------------
METRIC_NUM_EXAMPLES = "num-examples"  # Flower's own weighting key: required in every reply
METRIC_PARTITION_ID = "partition-id"  # NO_PARTITION on a device with its own data
METRIC_TRAIN_LOSS = "train-loss"
METRIC_KERNEL_SECONDS = "kernel-seconds"
METRIC_FUEL_USED = "fuel-used"
METRIC_REPLY_BYTES = "reply-bytes"
METRIC_STEPS_DONE = "steps-done"  # < METRIC_STEPS_PLANNED when a budget stopped the job
METRIC_STEPS_PLANNED = "steps-planned"
METRIC_FUEL_PLANNING = "fuel-planning"
METRIC_EVAL_LOSS = "eval-loss"
METRIC_EVAL_ACCURACY = "eval-accuracy"

TRAIN_METRICS: tuple[str, ...] = (
    METRIC_NUM_EXAMPLES,
    METRIC_TRAIN_LOSS,
    METRIC_KERNEL_SECONDS,
    METRIC_FUEL_USED,
    METRIC_REPLY_BYTES,
    METRIC_PARTITION_ID,
    METRIC_STEPS_DONE,
    METRIC_STEPS_PLANNED,
    METRIC_FUEL_PLANNING,
)
EVALUATE_METRICS: tuple[str, ...] = (
    METRIC_NUM_EXAMPLES,
    METRIC_EVAL_LOSS,
    METRIC_EVAL_ACCURACY,
    METRIC_PARTITION_ID,
)

# The partition id of a client that holds no simulated partition (a device with its own data).
NO_PARTITION = -1


class ClientErrorCode(enum.IntEnum):
    """Codes of Sandflower's client error replies (Flower's own codes are 0..8).

    1900-1999 are left to simulated faults (``simulations/faults.py``), which are not part of
    what a real client can send.
    """

    BAD_CONFIG = 1001  # a config value of the wrong type or range (coordinator's or node's)
    DATA = 1002  # the local data cannot be loaded or does not fit the model
    KERNEL_MISMATCH = 1003  # the kernel's sha256 is not the coordinator's pin
    KERNEL_FAILED = 1004  # the kernel trapped, ran out of its budget, or could not compile
    NOTHING_TO_EVALUATE = 1005  # the local held-out split is empty (e.g. a 1-sample client)
    KERNEL_UNSUPPORTED = 1006  # this device's runtime lacks a feature the kernel needs


class ClientJobError(Exception):
    """A job a client cannot do; the client replies with an error of :attr:`code`.

    Parameters
    ----------
    code : ClientErrorCode
        What went wrong, as the coordinator counts it.
    reason : str
        What was given and what was expected; becomes the error reply's reason.
    """

    def __init__(self, code: ClientErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = ClientErrorCode(code)
