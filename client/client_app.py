"""The Sandflower ClientApp: local training and evaluation inside the wasm sandbox.

A train message carries the global arrays and the train config (messages: README,
"Messages"). The client loads its private data, runs the whole local job in ONE sandboxed
kernel call, and replies with the DELTA (local - global) and metrics: never the local weights,
never any data. Whatever stops a client from training (a bad data file, a kernel whose sha256
is not the pinned one, a trapping kernel) becomes an error reply that names the problem; the
coordinator counts it and the run goes on.

Where the data comes from:
- on a device, the file named by the node config ``data-path`` (.npz with x/y, or .csv);
- in simulation, the node's partition (``partition-id``) of the scenario's data set, built by
  ``simulations.partitions``. That module is imported only on this path, so a device needs
  client/, kernels/ and protos/ alone.
"""

from __future__ import annotations

import functools
import importlib
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

from client import kernel_source
from client.data import (
    DEFAULT_MAX_DATA_BYTES,
    DataFileError,
    LocalData,
    check_labels,
    load_data_file,
    split_local,
)
from client.delta import delta
from client.runner import KernelRunner
from client.sandbox import KERNEL_FEATURES, Limits, SandboxError
from kernels.spec import ModelSpec, ModelSpecError

# Error codes of Sandflower's error replies (Flower's own codes are 0..8).
ERROR_BAD_CONFIG = 1001
ERROR_DATA = 1002
ERROR_KERNEL_MISMATCH = 1003
ERROR_KERNEL_FAILED = 1004
ERROR_NOTHING_TO_EVALUATE = 1005  # the local held-out split is empty (e.g. a 1-sample client)
ERROR_KERNEL_UNSUPPORTED = 1006  # this device's runtime lacks a feature the kernel needs

# Node config keys a device owner may set (flower-supernode --node-config).
NODE_DATA_PATH = "data-path"
NODE_KERNEL_PATH = "kernel-path"  # the device's own .wasm instead of the app bundle's
# WebAssembly features this device's runtime must not use, e.g. "relaxed-simd" (comma-separated)
NODE_DISABLED_FEATURES = "disabled-wasm-features"
NODE_MEMORY_MB = "memory-mb"  # linear-memory cap of the sandbox
NODE_FUEL = "fuel"  # deterministic compute budget per job (absent: derived; 0: unmetered)
NODE_DEADLINE_S = "deadline-seconds"  # wall-clock limit per job (absent: derived; 0: none)
NODE_MAX_DATA_MB = "max-data-mb"  # cap on the data file and the arrays it declares

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

NO_PARTITION = -1


class ClientJobError(Exception):
    """A job this client cannot do; becomes an error reply with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    try:
        return Message(_train(message, context), reply_to=message)
    except ClientJobError as error:
        return Message(Error(code=error.code, reason=str(error)), reply_to=message)
    except (ValueError, TypeError, KeyError) as error:
        # A config value of the wrong type or range (the coordinator's or the node's).
        reason = f"bad job configuration: {error}"
        return Message(Error(code=ERROR_BAD_CONFIG, reason=reason), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    try:
        return Message(_evaluate(message, context), reply_to=message)
    except ClientJobError as error:
        return Message(Error(code=error.code, reason=str(error)), reply_to=message)
    except (ValueError, TypeError, KeyError) as error:
        reason = f"bad job configuration: {error}"
        return Message(Error(code=ERROR_BAD_CONFIG, reason=reason), reply_to=message)


# -- the two jobs ---------------------------------------------------------------------------
def _train(message: Message, context: Context) -> RecordDict:
    config = _config(message)
    spec, global_weights = _global_model(message, config)
    data = _local_data(context.node_config, config, spec)
    epochs, batch_size = int(config["local-epochs"]), int(config["batch-size"])
    limits = _limits(context.node_config, config, spec, data.num_train, epochs, batch_size)
    runner = _runner(context.node_config, config, limits)
    server_round = int(config["server-round"])
    partition_id = _partition_id(context.node_config)
    job_seed = _job_seed(int(config["seed"]), server_round, partition_id, context.node_id)
    try:
        result = runner.train(
            spec,
            global_weights,
            data.x_train,
            data.y_train,
            epochs=epochs,
            batch_size=batch_size,
            lr=float(config["lr"]),
            mu=float(config["proximal-mu"]),
            seed=job_seed,
            global_params=global_weights,
            job_name=f"train round {server_round} node {context.node_id}",
            **_work_budget(config),
        )
    except SandboxError as error:
        raise ClientJobError(ERROR_KERNEL_FAILED, f"local training failed: {error}") from error
    update = delta(result.params, global_weights)
    reply_bytes = sum(array.nbytes for array in update.values())
    metrics = MetricRecord(
        {
            "num-examples": int(data.num_train),
            "train-loss": float(result.loss),
            "kernel-seconds": float(result.seconds),
            "fuel-used": int(result.fuel_used or 0),
            "reply-bytes": int(reply_bytes),
            "partition-id": partition_id,
            # Work done against the job's plan: < planned when a budget stopped it.
            "steps-done": int(result.steps_done),
            "steps-planned": int(result.steps_planned),
            "fuel-planning": int(result.fuel_planning),
        }
    )
    arrays = ArrayRecord({name: Array(array) for name, array in update.items()})
    # Which kernel trained this delta: a MetricRecord holds numbers only, so a ConfigRecord.
    kernel = ConfigRecord({"sha256": runner.module.sha256})
    return RecordDict({"arrays": arrays, "metrics": metrics, "kernel": kernel})


def _evaluate(message: Message, context: Context) -> RecordDict:
    config = _config(message)
    spec, global_weights = _global_model(message, config)
    data = _local_data(context.node_config, config, spec)
    if data.num_test == 0:
        # Defined behaviour (issue 9): no held-out sample, no evaluation; an error reply
        # rather than a metric over nothing. Training uses the sample as usual.
        raise ClientJobError(
            ERROR_NOTHING_TO_EVALUATE,
            f"no local held-out samples to evaluate on ({data.num_train} training sample(s), "
            f"test-fraction {config.get('test-fraction', 0.2)})",
        )
    limits = _limits(context.node_config, config, spec, data.num_test, 1, data.num_test)
    runner = _runner(context.node_config, config, limits)
    try:
        result = runner.evaluate(
            spec,
            global_weights,
            data.x_test,
            data.y_test,
            job_name=f"evaluate round {config['server-round']} node {context.node_id}",
        )
    except SandboxError as error:
        raise ClientJobError(ERROR_KERNEL_FAILED, f"local evaluation failed: {error}") from error
    metrics = MetricRecord(
        {
            "num-examples": int(result.num_examples),
            "eval-loss": float(result.loss),
            "eval-accuracy": float(result.accuracy),
            "partition-id": _partition_id(context.node_config),
        }
    )
    return RecordDict({"metrics": metrics})


# -- reading the message --------------------------------------------------------------------
_REQUIRED_CONFIG = (
    "server-round",
    "lr",
    "local-epochs",
    "batch-size",
    "proximal-mu",
    "seed",
    "model",
)


def _config(message: Message) -> dict[str, Any]:
    records = message.content.config_records
    if "config" not in records:
        raise ClientJobError(ERROR_BAD_CONFIG, "the message has no ConfigRecord 'config'")
    config = dict(records["config"])
    missing = [key for key in _REQUIRED_CONFIG if key not in config]
    if missing:
        raise ClientJobError(ERROR_BAD_CONFIG, f"the message config lacks {missing}")
    return config


def _global_model(message: Message, config: Mapping[str, Any]) -> tuple[ModelSpec, dict]:
    try:
        spec = ModelSpec.parse(str(config["model"]))
    except ModelSpecError as error:
        raise ClientJobError(ERROR_BAD_CONFIG, str(error)) from error
    array_records = message.content.array_records
    if len(array_records) != 1:
        raise ClientJobError(
            ERROR_BAD_CONFIG, f"expected one ArrayRecord, given {len(array_records)}"
        )
    record = next(iter(array_records.values()))
    global_weights = {name: array.numpy() for name, array in record.items()}
    try:
        spec.flatten(global_weights)  # checks names and shapes against the spec
    except ModelSpecError as error:
        raise ClientJobError(ERROR_BAD_CONFIG, f"global model: {error}") from error
    return spec, global_weights


def _partition_id(node_config: Mapping[str, Any]) -> int:
    if NODE_DATA_PATH in node_config or "partition-id" not in node_config:
        return NO_PARTITION
    return int(node_config["partition-id"])


def _job_seed(seed: int, server_round: int, partition_id: int, node_id: int) -> int:
    # (seed, round, client) -> one 63-bit stream seed; a partition id is stable across runs
    # (node ids are not), so it names the client when there is one.
    client = partition_id if partition_id != NO_PARTITION else node_id
    words = np.random.SeedSequence([seed, server_round, client]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def _work_budget(config: Mapping[str, Any]) -> dict[str, Any]:
    """The train call's budget options from the config: ``fuel-budget`` (>= 0; -1 or absent:
    none), ``max-steps`` (likewise), ``meter-fuel`` (measure the fuel even without a budget)."""
    options: dict[str, Any] = {}
    for key, option in (("fuel-budget", "fuel_budget"), ("max-steps", "max_steps")):
        value = config.get(key, -1)
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ClientJobError(
                ERROR_BAD_CONFIG, f"config {key!r}: expected an int >= -1, given {value!r}"
            )
        if value >= 0:
            options[option] = value
    meter = config.get("meter-fuel", False)
    if not isinstance(meter, bool):
        raise ClientJobError(
            ERROR_BAD_CONFIG, f"config 'meter-fuel': expected a bool, given {meter!r}"
        )
    options["meter"] = meter
    return options


# -- data -----------------------------------------------------------------------------------
def _local_data(
    node_config: Mapping[str, Any], config: Mapping[str, Any], spec: ModelSpec
) -> LocalData:
    try:
        if NODE_DATA_PATH in node_config:
            path = Path(str(node_config[NODE_DATA_PATH])).expanduser()
            test_fraction = float(config.get("test-fraction", 0.2))
            max_mb = _node_number(node_config, NODE_MAX_DATA_MB, DEFAULT_MAX_DATA_BYTES // 2**20)
            if max_mb <= 0:
                raise ClientJobError(
                    ERROR_BAD_CONFIG,
                    f"node config {NODE_MAX_DATA_MB!r}: expected a number > 0, given {max_mb}",
                )
            data = _device_data(str(path), test_fraction, int(config["seed"]), int(max_mb * 2**20))
            source = str(path)
        elif "partition-id" in node_config:
            # Simulation only: the scenario's partition for this node.
            partitions = importlib.import_module("simulations.partitions")
            data = partitions.load_client_data(config, int(node_config["partition-id"]))
            source = f"partition {node_config['partition-id']} of {config.get('dataset')!r}"
        else:
            raise DataFileError(
                "<node config>",
                f"no data: set the node config '{NODE_DATA_PATH}' to a .npz or .csv file",
            )
        _check_features(data, spec, source)
        check_labels(data.y_train, spec.num_classes, source)
        check_labels(data.y_test, spec.num_classes, source)
    except (DataFileError, ValueError) as error:
        raise ClientJobError(ERROR_DATA, str(error)) from error
    return data


def _check_features(data: LocalData, spec: ModelSpec, source: str) -> None:
    if data.x_train.shape[1] != spec.input_dim:
        raise DataFileError(
            source,
            f"expected {spec.input_dim} features per sample for model {spec}, "
            f"given {data.x_train.shape[1]}",
        )


@functools.lru_cache(maxsize=4)
def _device_data_cached(
    path: str, mtime_ns: int, size: int, test_fraction: float, seed: int, max_bytes: int
):
    x, y = load_data_file(path, max_bytes=max_bytes)
    return split_local(x, y, test_fraction, seed)


def _device_data(path: str, test_fraction: float, seed: int, max_bytes: int) -> LocalData:
    # Cached per process (a SuperNode runs many rounds); keyed by mtime and size so an
    # edited file is read again.
    try:
        stat = os.stat(path)
    except OSError as error:
        raise DataFileError(path, f"cannot read the data file: {error.strerror}") from error
    return _device_data_cached(path, stat.st_mtime_ns, stat.st_size, test_fraction, seed, max_bytes)


# -- the kernel -----------------------------------------------------------------------------
def _runner(
    node_config: Mapping[str, Any], config: Mapping[str, Any], limits: Limits
) -> KernelRunner:
    # The kernel arrives in the app bundle (client/kernel_source.py): hashed against the
    # coordinator's pin and checked against this runtime's features BEFORE it is compiled.
    pin = str(config.get("kernel-sha256") or "")
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
        raise ClientJobError(ERROR_KERNEL_MISMATCH, str(error)) from error
    except kernel_source.KernelUnsupported as error:
        raise ClientJobError(ERROR_KERNEL_UNSUPPORTED, str(error)) from error
    except (kernel_source.KernelSourceError, SandboxError) as error:
        raise ClientJobError(ERROR_KERNEL_FAILED, f"kernel: {error}") from error
    return KernelRunner(module, limits)


_verified_modules: dict[tuple, Any] = {}


def _kernel_files_stat(own_path: str | None) -> tuple | None:
    """(name, mtime, size, inode) of the file(s) a job's kernel may come from; None: unknown."""
    try:
        if own_path:
            found = os.stat(Path(own_path).expanduser())
            return ((own_path, found.st_mtime_ns, found.st_size, found.st_ino),)
        with os.scandir(kernel_source.shipped_dir()) as entries:
            return tuple(
                sorted(
                    (entry.name, stat.st_mtime_ns, stat.st_size, stat.st_ino)
                    for entry in entries
                    for stat in (entry.stat(),)
                )
            )
    except OSError:
        return None  # unreadable: never cached, pinned_kernel says why


def _unavailable_features(node_config: Mapping[str, Any]) -> frozenset[str]:
    text = str(node_config.get(NODE_DISABLED_FEATURES) or "")
    features = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(features - set(KERNEL_FEATURES))
    if unknown:
        raise ClientJobError(
            ERROR_BAD_CONFIG,
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
    """The limits of a job when the node config sets none: fuel and deadline from its size."""
    estimate = estimated_fuel(spec, num_samples, epochs, batch_size)
    return Limits(
        memory_bytes=memory_mb * 2**20,
        fuel=FUEL_HEADROOM * estimate,
        deadline_seconds=DEADLINE_BASE_SECONDS + estimate / DEADLINE_FUEL_PER_SECOND,
    )


def _limits(
    node_config: Mapping[str, Any],
    config: Mapping[str, Any],
    spec: ModelSpec,
    num_samples: int,
    epochs: int,
    batch_size: int,
) -> Limits:
    memory_mb = _node_number(node_config, NODE_MEMORY_MB, DEFAULT_MEMORY_MB)
    device_memory_mb = config.get("device-memory-mb")  # a simulated device's cap (issue 13)
    if isinstance(device_memory_mb, int) and not isinstance(device_memory_mb, bool):
        memory_mb = max(1, min(memory_mb, device_memory_mb))
    defaults = default_limits(spec, num_samples, epochs, batch_size, int(memory_mb))
    fuel = _node_number(node_config, NODE_FUEL, defaults.fuel)
    deadline = _node_number(node_config, NODE_DEADLINE_S, defaults.deadline_seconds)
    try:
        return Limits(
            memory_bytes=int(memory_mb * 2**20),
            fuel=int(fuel) or None,  # 0: the device owner turned metering off
            deadline_seconds=float(deadline) or None,  # 0: no deadline
        )
    except ValueError as error:
        raise ClientJobError(ERROR_BAD_CONFIG, f"node config: {error}") from error


def _node_number(node_config: Mapping[str, Any], key: str, default: Any) -> float:
    given = node_config.get(key, default)
    value = math.nan
    if isinstance(given, int | float) and not isinstance(given, bool):
        value = given
    elif isinstance(given, str):
        try:
            value = float(given)
        except ValueError:
            pass
    if not math.isfinite(value) or value < 0:
        raise ClientJobError(
            ERROR_BAD_CONFIG, f"node config {key!r}: expected a number >= 0, given {given!r}"
        )
    return value


def kernel_sha256(path: str | os.PathLike | None = None) -> str:
    """The sha256 a coordinator pins for the kernel at ``path`` (default: the bundled one)."""
    if path is None:
        return kernel_source.read_shipped(
            kernel_source.shipped_path(kernel_source.DEFAULT_FLAVOUR)
        ).sha256
    return kernel_source.read_wasm_file(path).sha256


__all__ = ["app", "default_limits", "estimated_fuel", "kernel_sha256", "ClientJobError"]
