"""A simulated client's data and the coordinator's central test set, from the flat data config.

Every ClientApp gets the run config (``context.run_config``), and a simulated client's data
source (``simulations.client_app.scenario_data``) builds its partition from the data keys
(``DATA_KEYS``) there with :func:`load_client_data`; the coordinator evaluates on
:func:`load_central_test`. The simulation engine calls both every round, so both are cached
per process.

How a data set becomes clients (``test-fraction`` = f):

- digits: a stratified, seeded share f of all images is the central test set; the rest is the
  pool that is partitioned (iid, dirichlet or shards); each client holds out a share f of its
  partition as its local test split. No client ever sees a central test image.
- synthetic / folder: each device (generated device / file) is split f held out, as FedProx
  does (90/10 for f = 0.1); the central test set is the union of the held-out splits. With
  ``natural`` partitioning client i is device i. With iid/dirichlet/shards the devices'
  training splits are pooled and re-partitioned, and each client holds out f of its part.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from client.data import DataFileError, LocalData, held_out_count, split_local
from coordinator import schema
from coordinator.config import DATA_KEYS as FORWARDED_DATA_KEYS
from simulations import datasets, splitting
from simulations.scenario_sections import DataSection, SimulatedFederationSection

# The data keys of the flat run config, read by every simulated client from its run config. The
# coordinator owns the list (it records them and must not import simulations/); "seed" is a
# coordinator key that the data also derives from.
DATA_KEYS: tuple[str, ...] = (*FORWARDED_DATA_KEYS, "seed")

# A client needs a sample to train on and one to hold out.
MIN_CLIENT_SAMPLES = 2

# Lazy synthetic clients: how many one process keeps, and how many devices' held-out splits
# make the central test set (all of them in the 30-device FedProx scenarios).
LAZY_CLIENTS_CACHED = 256
CENTRAL_TEST_DEVICES = 1000
# A process that knows how many clients it serves (a simulation worker: its share of the
# population) keeps all of them when they are at most this many: ~65 MB at synthetic's 60
# features (~113 KB per device on average). A larger share keeps LAZY_CLIENTS_CACHED: sampled
# clients rarely come back soon, so a bigger cache would mostly hold memory.
LAZY_CLIENTS_MAX = 576

# How many lazy clients' example counts the coordinator keeps (a few bytes each): every
# client of a 1000-client run, counted once instead of once per reply.
LAZY_COUNTS_CACHED = 1 << 14

# Stream tags so that no two uses of the run seed draw the same numbers.
_CENTRAL_SPLIT = 1
_DEVICE_SPLIT = 2
_CLIENT_SPLIT = 3


# DataConfig field -> (schema section, field) that declares its rule.
_SCHEMA_FIELDS: dict[str, tuple[type, str]] = {
    "dataset": (DataSection, "dataset"),
    "partitioning": (DataSection, "partitioning"),
    "num_partitions": (SimulatedFederationSection, "clients"),
    "seed": (schema.ScenarioSection, "seed"),
    "dataset_path": (DataSection, "path"),
    "synthetic_alpha": (DataSection, "synthetic_alpha"),
    "synthetic_beta": (DataSection, "synthetic_beta"),
    "dirichlet_alpha": (DataSection, "dirichlet_alpha"),
    "shards_per_client": (DataSection, "shards_per_client"),
    "test_fraction": (DataSection, "test_fraction"),
}


class DataConfigError(ValueError):
    """A data config value that is missing or wrong; ``key`` is the flat run-config key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class DataConfig:
    """The validated data keys of a run config (hashable: it keys the caches)."""

    dataset: str
    partitioning: str
    num_partitions: int
    seed: int
    dataset_path: str = ""
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        """Check each key against the schema; raise DataConfigError naming the first bad one."""
        # Each key's rule lives in the one schema (simulations/scenario_sections.py,
        # coordinator/schema.py); only the rules across keys are written here.
        for config_field in fields(self):
            section, name = _SCHEMA_FIELDS[config_field.name]
            value, problem = schema.validate_value(section, name, getattr(self, config_field.name))
            if problem is not None:
                raise DataConfigError(_flat_key(config_field.name), problem)
            # The validated value (an int given for a float becomes the float): a frozen
            # dataclass sets it the way dataclasses do themselves.
            object.__setattr__(self, config_field.name, value)
        if self.dataset == "folder" and not self.dataset_path:
            raise DataConfigError("dataset-path", "the folder data set needs a folder path")
        if self.partitioning == "natural" and self.dataset == "digits":
            raise DataConfigError(
                "partitioning",
                "digits has no natural per-device split; use iid, dirichlet or shards",
            )

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> DataConfig:
        """Read the data keys from a flat config (a run config or a message config).

        Other keys are ignored; keys with a default may be absent.

        Raises
        ------
        DataConfigError
            A required key is missing, or a value has the wrong type or range.
        """
        values: dict[str, Any] = {}
        for config_field in fields(cls):
            key = _flat_key(config_field.name)
            if key not in config:
                if config_field.default is not MISSING:  # a key with a default may be absent
                    continue
                raise DataConfigError(key, "missing from the config")
            values[config_field.name] = _plain(config[key])
        try:
            # The type is part of the key: True == 1 and 1 == 1.0 for a dict, not for the schema.
            return _validated_data_config(
                tuple((name, type(value), value) for name, value in values.items())
            )
        except TypeError:  # an unhashable value: validate it uncached (it is refused)
            return cls(**values)

    def to_mapping(self) -> dict[str, str | int | float]:
        """Return the flat data keys (``DATA_KEYS``), as they go into a run config."""
        return {_flat_key(name): value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class FederatedData:
    """Every client's data and the central test set of one data config (read-only arrays)."""

    clients: tuple[LocalData | None, ...]
    central_x: np.ndarray
    central_y: np.ndarray
    num_features: int
    num_classes: int
    # partition id -> (file, problem) of a folder client whose file cannot be read; its
    # entry in ``clients`` is None and loading it raises that DataFileError.
    unreadable: dict[int, tuple[str, str]] = field(default_factory=dict)


def load_client_data(data_config: Mapping[str, Any], partition_id: int) -> LocalData:
    """Client ``partition_id``'s training data and local held-out split (read-only arrays).

    Parameters
    ----------
    data_config : a flat config holding the data keys (``DATA_KEYS``); other keys ignored.
    partition_id : 0 .. num-partitions - 1.

    Raises
    ------
    DataConfigError
        A bad data key, a partition id out of range, or a split that cannot be made.
    """
    config = DataConfig.from_mapping(data_config)
    if is_lazy(config):
        if not 0 <= int(partition_id) < config.num_partitions:
            raise DataConfigError(
                "num-partitions",
                f"partition id {partition_id} is out of range: there are "
                f"{config.num_partitions} partitions",
            )
        return _synthetic_client_cached(config, int(partition_id))
    federated = build_federated_data(config)
    if not 0 <= int(partition_id) < len(federated.clients):
        raise DataConfigError(
            "num-partitions",
            f"partition id {partition_id} is out of range: there are "
            f"{len(federated.clients)} partitions",
        )
    client = federated.clients[int(partition_id)]
    if client is None:
        source, problem = federated.unreadable[int(partition_id)]
        raise DataFileError(source, problem)
    if data_config.get("faults-label-flip") is True:
        # A label-flipping Byzantine client (simulations.faults): class c becomes C - 1 - c.
        num_classes = data_shape(data_config)[1]
        return LocalData(
            client.x_train,
            (num_classes - 1 - client.y_train).astype(np.int32),
            client.x_test,
            client.y_test,
        )
    return client


def load_central_test(
    data_config: Mapping[str, Any] | DataConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the coordinator's central test set: x float32 [n, d], y int32 [n] (read-only).

    ``data_config`` is a flat config holding the data keys, or a :class:`DataConfig` parsed
    from one. For ``synthetic`` with ``natural`` partitioning: the held-out splits of the first
    ``CENTRAL_TEST_DEVICES`` devices (all of them up to that many), so that the test set, and
    the time to build it, stay bounded however large the population.
    """
    config = (
        data_config if isinstance(data_config, DataConfig) else DataConfig.from_mapping(data_config)
    )
    if is_lazy(config):
        return _synthetic_central_cached(config)
    federated = build_federated_data(config)
    return federated.central_x, federated.central_y


def example_counts(
    data_config: Mapping[str, Any] | DataConfig, partition_id: int
) -> tuple[int, int] | None:
    """Return client ``partition_id``'s (training, held-out) example counts, or None.

    The counts are those of :func:`load_client_data`'s split; None for a partition out of
    range or whose file cannot be read.

    A lazy data set (synthetic devices) is counted from each device's own seed, without
    generating it: the coordinator checks every reply's num-examples against these counts,
    and building the whole population to count it kept ~150 MB in the coordinator at 1000
    clients (and would need ~11 GB at 100,000). An eager data set is built (cached) and
    counted.
    """
    config = (
        data_config if isinstance(data_config, DataConfig) else DataConfig.from_mapping(data_config)
    )
    partition_id = int(partition_id)
    if is_lazy(config):
        if not 0 <= partition_id < config.num_partitions:
            return None
        return _lazy_counts(config, partition_id)
    federated = build_federated_data(config)
    if not 0 <= partition_id < len(federated.clients):
        return None
    client = federated.clients[partition_id]
    if client is None:
        return None
    return len(client.y_train), len(client.y_test)


@functools.lru_cache(maxsize=LAZY_COUNTS_CACHED)
def _lazy_counts(config: DataConfig, partition_id: int) -> tuple[int, int]:
    num_samples = datasets.synthetic_device_size(partition_id, config.seed)
    num_test = held_out_count(num_samples, config.test_fraction)
    return num_samples - num_test, num_test


def partition_size(data_config: Mapping[str, Any] | DataConfig, partition_id: int) -> int:
    """Return how many samples client ``partition_id`` holds (train and held-out); 0: none."""
    counts = example_counts(data_config, partition_id)
    return 0 if counts is None else sum(counts)


def is_lazy(config: DataConfig) -> bool:
    """Whether each client's data is made only when that client asks for it.

    True for ``synthetic`` with ``natural`` partitioning: client i is device i, generated
    from its own seed. Pooled partitionings need every device first, so they are eager.
    """
    return config.dataset == "synthetic" and config.partitioning == "natural"


def data_shape(data_config: Mapping[str, Any] | DataConfig) -> tuple[int, int]:
    """(num_features, num_classes) of the data set, without partitioning it."""
    config = (
        data_config if isinstance(data_config, DataConfig) else DataConfig.from_mapping(data_config)
    )
    try:
        return datasets.dataset_shape(config.dataset, config.dataset_path)
    except (datasets.DatasetError, DataFileError) as error:
        raise DataConfigError("dataset-path", str(error)) from error


def build_federated_data(config: DataConfig) -> FederatedData:
    """Partition ``config``'s data set across its clients (cached per process).

    A folder data set is cached with its files' names, sizes and mtimes, so an edited folder
    is read again.
    """
    return _build_cached(config, _folder_stamp(config))


def size_lazy_cache(clients: int, headroom: int = 0) -> int:
    """Size this process's cache of lazy clients for the ``clients`` it will serve.

    Keeps all of them, and up to ``headroom`` more (clients it may be lent), when ``clients``
    <= ``LAZY_CLIENTS_MAX`` (a simulation worker then generates each of its devices once per
    run instead of once per job), never more than ``LAZY_CLIENTS_MAX``; otherwise
    ``LAZY_CLIENTS_CACHED``. A changed size starts an empty cache. Returns the size.
    """
    global _synthetic_client_cached
    size = (
        min(clients + headroom, LAZY_CLIENTS_MAX)
        if LAZY_CLIENTS_CACHED < clients <= LAZY_CLIENTS_MAX
        else LAZY_CLIENTS_CACHED
    )
    if _synthetic_client_cached.cache_parameters()["maxsize"] != size:
        _synthetic_client_cached = functools.lru_cache(maxsize=size)(_synthetic_client)
    return size


def clear_caches() -> None:
    """Forget every cached data set of this process (tests; a long-lived tool)."""
    _build_cached.cache_clear()
    _synthetic_client_cached.cache_clear()
    _synthetic_central_cached.cache_clear()
    _lazy_counts.cache_clear()


# -- lazy: one synthetic device per client, made when asked -----------------------------------
def _synthetic_client(config: DataConfig, partition_id: int) -> LocalData:
    x, y = datasets.synthetic_device(
        config.synthetic_alpha, config.synthetic_beta, partition_id, config.seed
    )
    data = split_local(x, y, config.test_fraction, _seed(config.seed, _DEVICE_SPLIT, partition_id))
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        array.flags.writeable = False
    return data


# A process keeps the clients it ran recently (a worker's clients come back round after
# round); the bound keeps a 100,000-client population from filling memory.
_synthetic_client_cached = functools.lru_cache(maxsize=LAZY_CLIENTS_CACHED)(_synthetic_client)


@functools.lru_cache(maxsize=2)
def _synthetic_central_cached(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    held_out = [
        _synthetic_client(config, device)
        for device in range(min(config.num_partitions, CENTRAL_TEST_DEVICES))
    ]
    central_x = np.ascontiguousarray(
        np.concatenate([data.x_test for data in held_out]), dtype=np.float32
    )
    central_y = np.ascontiguousarray(
        np.concatenate([data.y_test for data in held_out]), dtype=np.int32
    )
    central_x.flags.writeable = False
    central_y.flags.writeable = False
    return central_x, central_y


def _folder_stamp(config: DataConfig) -> tuple[tuple[str, int, int], ...]:
    if config.dataset != "folder":
        return ()
    try:
        files = datasets.folder_files(config.dataset_path)
        return tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in files)
    except (datasets.DatasetError, OSError) as error:
        raise DataConfigError("dataset-path", str(error)) from error


@functools.lru_cache(maxsize=4)
def _build_cached(config: DataConfig, folder_stamp: tuple) -> FederatedData:
    if config.dataset == "digits":
        return _digits(config)
    if config.dataset == "synthetic":
        devices = datasets.generate_synthetic(
            config.synthetic_alpha, config.synthetic_beta, config.num_partitions, config.seed
        )
        return _from_devices(config, devices, datasets.SYNTHETIC_CLASSES)
    try:
        client_files = datasets.read_folder(config.dataset_path)
        _, num_classes = datasets.folder_shape(config.dataset_path)
    except datasets.DatasetError as error:
        raise DataConfigError("dataset-path", str(error)) from error
    if config.partitioning == "natural":
        if len(client_files) != config.num_partitions:
            raise DataConfigError(
                "num-partitions",
                f"natural partitioning of {config.dataset_path} gives one client per file: "
                f"{len(client_files)} files, but num-partitions is {config.num_partitions}",
            )
        # A client whose file is unreadable fails when it loads its data, like a device with
        # a broken file; the other clients (and the central test set) go on without it.
        devices_or_none = [f.arrays() if f.readable else None for f in client_files]
        unreadable = {
            index: (str(f.path), f.error) for index, f in enumerate(client_files) if not f.readable
        }
        return _from_devices(config, devices_or_none, num_classes, unreadable)
    try:
        devices = [client_file.arrays() for client_file in client_files]
    except DataFileError as error:
        # Pooling needs every file: there is no client to blame for a missing share.
        raise DataConfigError("dataset-path", str(error)) from error
    return _from_devices(config, devices, num_classes)


# -- building ---------------------------------------------------------------------------------
def _digits(config: DataConfig) -> FederatedData:
    features, labels = datasets.load_digits()
    try:
        pool_index, central_index = splitting.stratified_holdout(
            labels, config.test_fraction, _seed(config.seed, _CENTRAL_SPLIT)
        )
    except splitting.PartitionError as error:
        raise DataConfigError("test-fraction", str(error)) from error
    clients = _partition_pool(config, features[pool_index], labels[pool_index])
    return _federated(
        clients,
        features[central_index],
        labels[central_index],
        datasets.DIGITS_FEATURES,
        datasets.DIGITS_CLASSES,
    )


def _from_devices(
    config: DataConfig,
    devices: Sequence[tuple[np.ndarray, np.ndarray] | None],
    num_classes: int,
    unreadable: dict[int, tuple[str, str]] | None = None,
) -> FederatedData:
    device_data = [
        None
        if device is None
        else split_local(*device, config.test_fraction, _seed(config.seed, _DEVICE_SPLIT, index))
        for index, device in enumerate(devices)
    ]
    readable = [data for data in device_data if data is not None]
    central_x = np.concatenate([data.x_test for data in readable])
    central_y = np.concatenate([data.y_test for data in readable])
    num_features = readable[0].num_features
    if config.partitioning == "natural":
        return _federated(
            tuple(device_data), central_x, central_y, num_features, num_classes, unreadable
        )
    pool_x = np.concatenate([data.x_train for data in readable])
    pool_y = np.concatenate([data.y_train for data in readable])
    clients = _partition_pool(config, pool_x, pool_y)
    return _federated(clients, central_x, central_y, num_features, num_classes)


def _partition_pool(
    config: DataConfig, pool_x: np.ndarray, pool_y: np.ndarray
) -> tuple[LocalData, ...]:
    try:
        if config.partitioning == "iid":
            parts = splitting.iid(pool_y, config.num_partitions, config.seed)
        elif config.partitioning == "dirichlet":
            parts = splitting.dirichlet(
                pool_y, config.num_partitions, config.dirichlet_alpha, config.seed
            )
        elif config.partitioning == "shards":
            parts = splitting.shards(
                pool_y, config.num_partitions, config.shards_per_client, config.seed
            )
        else:  # "natural" never reaches a pool: it is handled per device.
            raise AssertionError(f"unexpected partitioning {config.partitioning!r}")
    except splitting.PartitionError as error:
        key = {"dirichlet": "dirichlet-alpha", "shards": "shards-per-client"}.get(
            config.partitioning, "num-partitions"
        )
        if isinstance(error, splitting.PartitionCountError):
            key = "num-partitions"  # too many clients for the pool, whatever the partitioning
        raise DataConfigError(key, str(error)) from error
    smallest = min(len(part) for part in parts)
    if smallest < MIN_CLIENT_SAMPLES:
        raise DataConfigError(
            "num-partitions",
            f"{config.partitioning} split of {len(pool_y)} samples across "
            f"{config.num_partitions} clients gives a client {smallest} sample(s); each client "
            f"needs >= {MIN_CLIENT_SAMPLES} (one to train on, one to hold out)",
        )
    return tuple(
        split_local(
            pool_x[part], pool_y[part], config.test_fraction, _seed(config.seed, _CLIENT_SPLIT, i)
        )
        for i, part in enumerate(parts)
    )


def _federated(
    clients: tuple[LocalData | None, ...],
    central_x: np.ndarray,
    central_y: np.ndarray,
    num_features: int,
    num_classes: int,
    unreadable: dict[int, tuple[str, str]] | None = None,
) -> FederatedData:
    # Cached arrays are shared by every caller in the process: make them read-only so that
    # no caller can change another round's data.
    for client in clients:
        if client is None:
            continue
        for array in (client.x_train, client.y_train, client.x_test, client.y_test):
            array.flags.writeable = False
    central_x = np.ascontiguousarray(central_x, dtype=np.float32)
    central_y = np.ascontiguousarray(central_y, dtype=np.int32)
    central_x.flags.writeable = False
    central_y.flags.writeable = False
    return FederatedData(
        tuple(clients), central_x, central_y, num_features, num_classes, dict(unreadable or {})
    )


# -- helpers ----------------------------------------------------------------------------------
def _seed(seed: int, *words: int) -> int:
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])


def _flat_key(field_name: str) -> str:
    return field_name.replace("_", "-")


@functools.lru_cache(maxsize=64)
def _validated_data_config(items: tuple[tuple[str, type, Any], ...]) -> DataConfig:
    # Every client job of a run reads the same data keys; validating them through the schema
    # costs ~0.1 ms, so the (immutable) result is shared. Errors are not cached: they raise.
    return DataConfig(**{name: value for name, _, value in items})


def _plain(value: Any) -> Any:
    # A numpy scalar (np.int64 from an array) stands for the Python scalar it holds.
    return value.item() if isinstance(value, np.generic) else value


__all__ = [
    "DATA_KEYS",
    "DataConfig",
    "DataConfigError",
    "FederatedData",
    "build_federated_data",
    "clear_caches",
    "data_shape",
    "example_counts",
    "partition_size",
    "load_central_test",
    "load_client_data",
    "is_lazy",
    "size_lazy_cache",
]
