"""The Sandflower ClientApp: local training and evaluation inside the wasm sandbox.

A train message carries the global arrays and the train config (messages: README,
"Messages"). The client loads its private data, runs the whole local job in ONE sandboxed
kernel call, and replies with the DELTA (local - global) and metrics: never the local weights,
never any data. Whatever stops a client from training (a bad data file, a kernel whose sha256
is not the pinned one, a trapping kernel) becomes an error reply that names the problem; the
coordinator counts it and the run goes on.

Where the data comes from is the app's :class:`~client.data_source.DataSource`
(:func:`make_client_app`): ``app``, a device's ClientApp, reads the file named by the node
config ``data-path`` (.npz with x/y, or .csv). A simulation composes its own app with a source
that loads the scenario's partition (``simulations.client_app``), so this module, like all of
client/, imports nothing of coordinator/ or simulations/: a device needs client/, kernels/ and
protos/ alone. The record, metric and config keys and the error codes are the message contract
(``protos.contract``), which the coordinator reads with the same names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import SType

from client import kernel_source
from client.data import DataFileError, LocalData, check_labels
from client.data_source import (
    DEFAULT_TEST_FRACTION,
    RUN_TEST_FRACTION,
    DataSource,
    device_data,
)
from client.delta import delta
from client.node_config import (
    NODE_DATA_PATH,
    NODE_DEADLINE_S,
    NODE_DISABLED_FEATURES,
    NODE_FUEL,
    NODE_KERNEL_PATH,
    NODE_MEMORY_MB,
    NODE_PARTITION_ID,
    node_number,
)
from client.runner import KernelRunner
from client.sandbox import KERNEL_FEATURES, Limits, SandboxError
from kernels.build import SHIPPED_SUFFIX
from kernels.spec import ModelSpec, ModelSpecError
from protos import contract
from protos.contract import NO_PARTITION, ClientErrorCode, ClientJobError
from protos.npy import decode_float32, encode_float32, npy_shortfall

DEFAULT_MEMORY_MB = 512
# Default job budgets, derived from the job's size so that a kernel that loops or stalls ends
# and an honest job never comes near them. Fuel of the bundled kernel per sample and epoch,
# measured (tests/client/test_client_app.py checks it stays below the estimate):
# ~3,500 + params * (5 + 30 / batch_size) fuel units, ~1e7 to set a job up.
FUEL_PER_SAMPLE = 4_000
FUEL_PER_PARAM_SAMPLE = 5.0
FUEL_PER_PARAM_SAMPLE_BATCH = 30.0
FUEL_PER_JOB = 10_000_000
FUEL_HEADROOM = 16  # default fuel budget = 16x the estimate
# Deadline: 10 s plus the estimate at 1e7 fuel per second, 10-400x slower than this project's
# 2-core machine runs the kernel (slow devices, loaded hosts).
DEADLINE_BASE_SECONDS = 10.0
DEADLINE_FUEL_PER_SECOND = 1e7
# ...and never past an hour by default (the coordinator's own reply timeout): the estimate
# grows with the epochs the coordinator asks for, and 10**9 epochs must not become a job that
# never ends. A device owner who wants longer jobs sets the node config's deadline-seconds.
DEADLINE_DEFAULT_MAX_SECONDS = 3600.0


def make_client_app(data_source: DataSource = device_data) -> ClientApp:
    """Build a Sandflower ClientApp whose clients take their data from ``data_source``.

    Parameters
    ----------
    data_source : DataSource
        Where each job's data comes from (default: the device's file, node config
        ``data-path``). The simulation layer passes the scenario's partitions.

    Returns
    -------
    ClientApp
        Handles train and evaluate messages with :func:`train` and :func:`evaluate`.
    """
    client_app = ClientApp()

    @client_app.train()
    def train_job(message: Message, context: Context) -> Message:
        return train(message, context, data_source)

    @client_app.evaluate()
    def evaluate_job(message: Message, context: Context) -> Message:
        return evaluate(message, context, data_source)

    return client_app


def train(message: Message, context: Context, data_source: DataSource = device_data) -> Message:
    """Reply to a train message: the delta and metrics, or an error reply that says why."""
    try:
        return Message(_train(message, context, data_source), reply_to=message)
    except ClientJobError as error:
        return _error_reply(message, error.code, str(error))
    except (ValueError, TypeError, KeyError) as error:
        # A config value of the wrong type or range (the coordinator's or the node's).
        return _error_reply(message, ClientErrorCode.BAD_CONFIG, f"bad job configuration: {error}")


def evaluate(message: Message, context: Context, data_source: DataSource = device_data) -> Message:
    """Reply to an evaluate message: loss and accuracy on the local held-out data, or an error."""
    try:
        return Message(_evaluate(message, context, data_source), reply_to=message)
    except ClientJobError as error:
        return _error_reply(message, error.code, str(error))
    except (ValueError, TypeError, KeyError) as error:
        return _error_reply(message, ClientErrorCode.BAD_CONFIG, f"bad job configuration: {error}")


def _error_reply(message: Message, code: ClientErrorCode, reason: str) -> Message:
    # A plain int on the wire: the local engine's reply unpickler admits builtins and Flower's
    # record classes only, and Flower's serde expects an int.
    return Message(Error(code=int(code), reason=reason), reply_to=message)


# -- the two jobs ---------------------------------------------------------------------------
def _train(message: Message, context: Context, data_source: DataSource) -> RecordDict:
    config = _config(message)
    spec, global_weights = _global_model(message, config)
    data = _local_data(data_source, context, config, spec)
    epochs, batch_size = (
        int(config[contract.CONFIG_LOCAL_EPOCHS]),
        int(config[contract.CONFIG_BATCH_SIZE]),
    )
    limits = _limits(context.node_config, config, spec, data.num_train, epochs, batch_size)
    runner = _runner(context.node_config, config, limits)
    server_round = int(config[contract.CONFIG_SERVER_ROUND])
    partition_id = _partition_id(context.node_config)
    job_seed = _job_seed(
        int(config[contract.CONFIG_SEED]), server_round, partition_id, context.node_id
    )
    try:
        result = runner.train(
            spec,
            global_weights,
            data.x_train,
            data.y_train,
            epochs=epochs,
            batch_size=batch_size,
            lr=float(config[contract.CONFIG_LR]),
            mu=float(config[contract.CONFIG_PROXIMAL_MU]),
            seed=job_seed,
            global_params=global_weights,
            job_name=f"train round {server_round} node {context.node_id}",
            **_work_budget(config),
        )
    except SandboxError as error:
        raise ClientJobError(
            ClientErrorCode.KERNEL_FAILED, f"local training failed: {error}"
        ) from error
    update = delta(result.params, global_weights)
    reply_bytes = sum(array.nbytes for array in update.values())
    metrics = MetricRecord(
        {
            contract.METRIC_NUM_EXAMPLES: int(data.num_train),
            contract.METRIC_TRAIN_LOSS: float(result.loss),
            contract.METRIC_KERNEL_SECONDS: float(result.seconds),
            contract.METRIC_FUEL_USED: int(result.fuel_used or 0),
            contract.METRIC_REPLY_BYTES: int(reply_bytes),
            contract.METRIC_PARTITION_ID: partition_id,
            # Work done against the job's plan: < planned when a budget stopped it.
            contract.METRIC_STEPS_DONE: int(result.steps_done),
            contract.METRIC_STEPS_PLANNED: int(result.steps_planned),
            contract.METRIC_FUEL_PLANNING: int(result.fuel_planning),
        }
    )
    # Filled item by item: ArrayRecord(dict) copies every Array into a new one (~45 us a job
    # for the two arrays of a logreg delta); the record and its pickled bytes are the same.
    arrays = ArrayRecord()
    for name, array in update.items():
        arrays[name] = _npy_array(array)
    # Which kernel trained this delta: a MetricRecord holds numbers only, so a ConfigRecord.
    kernel = ConfigRecord({contract.KERNEL_SHA256: runner.module.sha256})
    return RecordDict(
        {
            contract.RECORD_ARRAYS: arrays,
            contract.RECORD_METRICS: metrics,
            contract.RECORD_KERNEL: kernel,
        }
    )


def _evaluate(message: Message, context: Context, data_source: DataSource) -> RecordDict:
    config = _config(message)
    spec, global_weights = _global_model(message, config)
    data = _local_data(data_source, context, config, spec)
    if data.num_test == 0:
        # Defined behaviour (issue 9): no held-out sample, no evaluation; an error reply
        # rather than a metric over nothing. Training uses the sample as usual.
        test_fraction = context.run_config.get(RUN_TEST_FRACTION, DEFAULT_TEST_FRACTION)
        raise ClientJobError(
            ClientErrorCode.NOTHING_TO_EVALUATE,
            f"no local held-out samples to evaluate on ({data.num_train} training sample(s), "
            f"test-fraction {test_fraction})",
        )
    limits = _limits(context.node_config, config, spec, data.num_test, 1, data.num_test)
    runner = _runner(context.node_config, config, limits)
    try:
        result = runner.evaluate(
            spec,
            global_weights,
            data.x_test,
            data.y_test,
            job_name=f"evaluate round {config[contract.CONFIG_SERVER_ROUND]} "
            f"node {context.node_id}",
        )
    except SandboxError as error:
        raise ClientJobError(
            ClientErrorCode.KERNEL_FAILED, f"local evaluation failed: {error}"
        ) from error
    metrics = MetricRecord(
        {
            contract.METRIC_NUM_EXAMPLES: int(result.num_examples),
            contract.METRIC_EVAL_LOSS: float(result.loss),
            contract.METRIC_EVAL_ACCURACY: float(result.accuracy),
            contract.METRIC_PARTITION_ID: _partition_id(context.node_config),
        }
    )
    return RecordDict({contract.RECORD_METRICS: metrics})


# -- reading the message --------------------------------------------------------------------
def _config(message: Message) -> dict[str, Any]:
    # What content.config_records holds under the key, read without building that view
    # (each view re-sets every record of its kind into the RecordDict, ~10 us a job).
    record = message.content.get(contract.RECORD_CONFIG)
    if not isinstance(record, ConfigRecord):
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG,
            f"the message has no ConfigRecord {contract.RECORD_CONFIG!r}",
        )
    config = dict(record)
    missing = [key for key in contract.REQUIRED_CONFIG if key not in config]
    if missing:
        raise ClientJobError(ClientErrorCode.BAD_CONFIG, f"the message config lacks {missing}")
    return config


def _global_model(message: Message, config: Mapping[str, Any]) -> tuple[ModelSpec, dict]:
    try:
        spec = ModelSpec.parse(str(config[contract.CONFIG_MODEL]))
    except ModelSpecError as error:
        raise ClientJobError(ClientErrorCode.BAD_CONFIG, str(error)) from error
    # content.array_records's values, in order, without building that view (see _config).
    array_records = [
        record for record in message.content.values() if isinstance(record, ArrayRecord)
    ]
    if len(array_records) != 1:
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG, f"expected one ArrayRecord, given {len(array_records)}"
        )
    record = array_records[0]
    global_weights = {name: _read_array(array) for name, array in record.items()}
    try:
        spec.flatten(global_weights)  # checks names and shapes against the spec
    except ModelSpecError as error:
        raise ClientJobError(ClientErrorCode.BAD_CONFIG, f"global model: {error}") from error
    return spec, global_weights


def _read_array(array: Array) -> np.ndarray:
    # Every job decodes the global model: numpy's exact bytes for a float32 array read as a
    # view (protos.npy), anything else through Flower's np.load (same values, same checks).
    if array.dtype == "float32" and array.stype == SType.NUMPY:
        values = decode_float32(array.data, array.shape)
        if values is not None:
            return values
    # np.load allocates what a header claims before reading: a short array is refused first.
    short = npy_shortfall(array.data)
    if short:
        raise ClientJobError(ClientErrorCode.BAD_CONFIG, f"global model array: {short}")
    return array.numpy()


def _npy_array(values: np.ndarray) -> Array:
    # The bytes np.save writes (what Array(ndarray) holds), without its constructor's cost.
    if values.dtype == np.float32:
        return Array(
            dtype="float32",
            shape=tuple(int(n) for n in values.shape),
            stype=SType.NUMPY,
            data=encode_float32(values),
        )
    return Array(values)


def _partition_id(node_config: Mapping[str, Any]) -> int:
    if NODE_DATA_PATH in node_config or NODE_PARTITION_ID not in node_config:
        return NO_PARTITION
    return int(node_config[NODE_PARTITION_ID])


def _job_seed(seed: int, server_round: int, partition_id: int, node_id: int) -> int:
    # (seed, round, client) -> one 63-bit stream seed; a partition id is stable across runs
    # (node ids are not), so it names the client when there is one.
    client = partition_id if partition_id != NO_PARTITION else node_id
    words = np.random.SeedSequence([seed, server_round, client]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def _work_budget(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the train call's budget options from the config.

    ``fuel-budget`` (>= 0; -1 or absent: none), ``max-steps`` (likewise), ``meter-fuel``
    (measure the fuel even without a budget).
    """
    options: dict[str, Any] = {}
    for key, option in (
        (contract.CONFIG_FUEL_BUDGET, "fuel_budget"),
        (contract.CONFIG_MAX_STEPS, "max_steps"),
    ):
        value = config.get(key, -1)
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ClientJobError(
                ClientErrorCode.BAD_CONFIG,
                f"config {key!r}: expected an int >= -1, given {value!r}",
            )
        if value >= 0:
            options[option] = value
    meter = config.get(contract.CONFIG_METER_FUEL, False)
    if not isinstance(meter, bool):
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG, f"config 'meter-fuel': expected a bool, given {meter!r}"
        )
    options["meter"] = meter
    return options


# -- data -----------------------------------------------------------------------------------
def _local_data(
    data_source: DataSource, context: Context, config: Mapping[str, Any], spec: ModelSpec
) -> LocalData:
    source = _data_label(context.node_config, context.run_config)
    try:
        data = data_source(context.node_config, context.run_config, config)
        _check_features(data, spec, source)
        check_labels(data.y_train, spec.num_classes, source)
        check_labels(data.y_test, spec.num_classes, source)
    except (DataFileError, ValueError) as error:
        raise ClientJobError(ClientErrorCode.DATA, str(error)) from error
    return data


def _data_label(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> str:
    # How an error message names the data (a source's own errors name it themselves).
    if NODE_DATA_PATH in node_config:
        return str(node_config[NODE_DATA_PATH])
    if NODE_PARTITION_ID in node_config:
        return f"partition {node_config[NODE_PARTITION_ID]} of {run_config.get('dataset')!r}"
    return "the node's data"


def _check_features(data: LocalData, spec: ModelSpec, source: str) -> None:
    if data.x_train.shape[1] != spec.input_dim:
        raise DataFileError(
            source,
            f"expected {spec.input_dim} features per sample for model {spec}, "
            f"given {data.x_train.shape[1]}",
        )


# -- the kernel -----------------------------------------------------------------------------
def _runner(
    node_config: Mapping[str, Any], config: Mapping[str, Any], limits: Limits
) -> KernelRunner:
    # The kernel arrives in the app bundle (client/kernel_source.py): hashed against the
    # coordinator's pin and checked against this runtime's features BEFORE it is compiled.
    pin = str(config.get(contract.CONFIG_KERNEL_SHA256) or "")
    own_path = str(node_config.get(NODE_KERNEL_PATH) or "") or None
    unavailable = _unavailable_features(node_config)
    try:
        # Verified once per (pin, kernel files as they are on disk): re-reading and hashing
        # the kernel for every job cost ~0.7 ms of a ~10 ms simulated job. An edited or
        # replaced file changes its stat, and is verified again before it is used.
        files = _kernel_files_stat(own_path)
        key = (pin, own_path, unavailable, files)
        module = _verified_modules.get(key) if files is not None else None
        if module is None:
            kernel = kernel_source.pinned_kernel(pin, own_path)
            kernel_source.check_runtime_supports(kernel, unavailable)
            module = kernel_source.compiled_module(kernel)
            if len(_verified_modules) >= 8:
                _verified_modules.clear()
            if files is not None:
                _verified_modules[key] = module
    except kernel_source.KernelMismatch as error:
        raise ClientJobError(ClientErrorCode.KERNEL_MISMATCH, str(error)) from error
    except kernel_source.KernelUnsupported as error:
        raise ClientJobError(ClientErrorCode.KERNEL_UNSUPPORTED, str(error)) from error
    except (kernel_source.KernelSourceError, SandboxError) as error:
        raise ClientJobError(ClientErrorCode.KERNEL_FAILED, f"kernel: {error}") from error
    return KernelRunner(module, limits)


_verified_modules: dict[tuple, Any] = {}


def _kernel_files_stat(own_path: str | None) -> tuple | None:
    """Stat of the file(s) a job's kernel may come from, to key the verified module; None: unknown.

    A device's own kernel: (name, mtime, size, inode) of that file. Shipped kernels: the
    directory's (mtime, ctime, inode), then that of each shipped kernel file in it (the
    ``*.wasm.json`` files ``kernel_source.pinned_kernel`` reads kernels from; it reads nothing
    else of the directory).
    """
    try:
        if own_path:
            found = os.stat(Path(own_path).expanduser())
            return ((own_path, found.st_mtime_ns, found.st_size, found.st_ino),)
        return _shipped_files_stat(str(kernel_source.shipped_dir()))
    except OSError:
        return None  # unreadable: never cached, pinned_kernel says why


# The shipped kernel files' names by directory, with the directory's stat when it was listed.
# Every job stats the directory: a file created, removed or renamed in it changes that stat, and
# only then is it listed again (a scandir and a stat per entry cost ~35 us a job; this ~15 us).
_shipped_listing: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {}


def _shipped_files_stat(directory: str) -> tuple:
    found = os.stat(directory)
    directory_key = (found.st_mtime_ns, found.st_ctime_ns, found.st_ino)
    listed = _shipped_listing.get(directory)
    if listed is None or listed[0] != directory_key:
        with os.scandir(directory) as entries:
            names = tuple(sorted(entry.name for entry in entries if entry.name.endswith(_SHIPPED)))
        if len(_shipped_listing) >= 8:
            _shipped_listing.clear()
        _shipped_listing[directory] = listed = (directory_key, names)
    files = tuple(
        (name, stat.st_mtime_ns, stat.st_size, stat.st_ino)
        for name in listed[1]
        for stat in (os.stat(os.path.join(directory, name)),)
    )
    return (directory_key, *files)


_SHIPPED = f".wasm{SHIPPED_SUFFIX}"


def _unavailable_features(node_config: Mapping[str, Any]) -> frozenset[str]:
    text = str(node_config.get(NODE_DISABLED_FEATURES) or "")
    features = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(features - set(KERNEL_FEATURES))
    if unknown:
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG,
            f"node config {NODE_DISABLED_FEATURES!r}: unknown features {unknown}, "
            f"expected a comma-separated subset of {list(KERNEL_FEATURES)}",
        )
    return features


# -- job limits -----------------------------------------------------------------------------
def estimated_fuel(spec: ModelSpec, num_samples: int, epochs: int, batch_size: int) -> int:
    """Fuel the bundled kernel needs for a job of this size, an upper estimate (see FUEL_*)."""
    params = sum(math.prod(shape) for shape in spec.array_shapes().values())
    per_sample = FUEL_PER_SAMPLE + params * (
        FUEL_PER_PARAM_SAMPLE + FUEL_PER_PARAM_SAMPLE_BATCH / max(batch_size, 1)
    )
    return int(FUEL_PER_JOB + max(epochs, 1) * max(num_samples, 1) * per_sample)


def default_limits(
    spec: ModelSpec, num_samples: int, epochs: int, batch_size: int, memory_mb: int
) -> Limits:
    """Return a job's limits when the node config sets none: fuel and deadline by size."""
    estimate = estimated_fuel(spec, num_samples, epochs, batch_size)
    return Limits(
        memory_bytes=memory_mb * 2**20,
        fuel=FUEL_HEADROOM * estimate,
        deadline_seconds=min(
            DEADLINE_BASE_SECONDS + estimate / DEADLINE_FUEL_PER_SECOND,
            DEADLINE_DEFAULT_MAX_SECONDS,
        ),
    )


def _limits(
    node_config: Mapping[str, Any],
    config: Mapping[str, Any],
    spec: ModelSpec,
    num_samples: int,
    epochs: int,
    batch_size: int,
) -> Limits:
    memory_mb = node_number(node_config, NODE_MEMORY_MB, DEFAULT_MEMORY_MB)
    device_memory_mb = config.get(
        contract.CONFIG_DEVICE_MEMORY_MB
    )  # a simulated device's cap (issue 13)
    if isinstance(device_memory_mb, int) and not isinstance(device_memory_mb, bool):
        memory_mb = max(1, min(memory_mb, device_memory_mb))
    defaults = default_limits(spec, num_samples, epochs, batch_size, int(memory_mb))
    fuel = node_number(node_config, NODE_FUEL, defaults.fuel)
    deadline = node_number(node_config, NODE_DEADLINE_S, defaults.deadline_seconds)
    try:
        return Limits(
            memory_bytes=int(memory_mb * 2**20),
            fuel=int(fuel) or None,  # 0: the device owner turned metering off
            deadline_seconds=float(deadline) or None,  # 0: no deadline
        )
    except ValueError as error:
        raise ClientJobError(ClientErrorCode.BAD_CONFIG, f"node config: {error}") from error


def kernel_sha256(path: str | os.PathLike | None = None) -> str:
    """Return the sha256 a coordinator pins for the kernel at ``path`` (default: bundled)."""
    if path is None:
        return kernel_source.read_shipped(
            kernel_source.shipped_path(kernel_source.DEFAULT_FLAVOUR)
        ).sha256
    return kernel_source.read_wasm_file(path).sha256


# A device's ClientApp: its data is the file its owner names (node config ``data-path``).
app = make_client_app()

__all__ = [
    "ClientJobError",
    "app",
    "default_limits",
    "estimated_fuel",
    "evaluate",
    "kernel_sha256",
    "make_client_app",
    "train",
]
