"""Where a client's data comes from: the :class:`DataSource` seam and the device's source.

The ClientApp (``client.client_app.make_client_app``) asks its data source for the job's
:class:`~client.data.LocalData` and checks it against the model; it does not know where the
data lives. A device reads the file its owner named in the node config (:func:`device_data`,
the default). A simulation hands the ClientApp a source that loads the scenario's partition
(``simulations.client_app``): the layer that knows data sets composes it, so ``client/``
imports nothing of ``simulations/``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from protos.contract import CONFIG_SEED, ClientErrorCode, ClientJobError

from .data import DEFAULT_MAX_DATA_BYTES, DataFileError, LocalData, load_data_file, split_local
from .node_config import NODE_DATA_PATH, NODE_MAX_DATA_MB, node_number

# The run config key (``context.run_config``) with the share of a device's samples it holds
# out for federated evaluation; the run config reaches every ClientApp on every engine and in
# deployment, so the coordinator does not forward it in each message.
RUN_TEST_FRACTION = "test-fraction"
DEFAULT_TEST_FRACTION = 0.2


class DataSource(Protocol):
    """Where a client's data comes from: ``(node config, run config, job config) -> LocalData``.

    Parameters
    ----------
    node_config : Mapping[str, Any]
        The node's config (``context.node_config``): what the device owner or the engine set.
    run_config : Mapping[str, Any]
        The run's config (``context.run_config``): the same for every client of the run.
    job_config : Mapping[str, Any]
        The message's ``config`` record: this job's keys (``protos.contract.CONFIG_*``).

    Returns
    -------
    LocalData
        The client's training and local held-out data.

    Raises
    ------
    DataFileError, ValueError
        The data cannot be loaded (the ClientApp replies with ``ClientErrorCode.DATA``).
    ClientJobError
        Any other job error, with its own code.
    """

    def __call__(
        self,
        node_config: Mapping[str, Any],
        run_config: Mapping[str, Any],
        job_config: Mapping[str, Any],
    ) -> LocalData:
        """Return the client's data for one job (see the class docstring)."""
        ...


def device_data(
    node_config: Mapping[str, Any],
    run_config: Mapping[str, Any],
    job_config: Mapping[str, Any],
) -> LocalData:
    """Load the device's own data: the file named by node config ``data-path`` (a DataSource).

    The file (``.npz`` with ``x``/``y``, or ``.csv``) is capped by node config ``max-data-mb``
    and split into train and held-out parts by run config ``test-fraction`` (default 0.2) and
    the job's ``seed``. Read once per process while the file is unchanged.

    Raises
    ------
    DataFileError
        No ``data-path`` is set, or the file cannot be read or is malformed.
    ClientJobError
        ``BAD_CONFIG`` for a ``max-data-mb`` that is not a number > 0.
    """
    if NODE_DATA_PATH not in node_config:
        raise DataFileError(
            "<node config>",
            f"no data: set the node config '{NODE_DATA_PATH}' to a .npz or .csv file",
        )
    path = Path(str(node_config[NODE_DATA_PATH])).expanduser()
    test_fraction = float(run_config.get(RUN_TEST_FRACTION, DEFAULT_TEST_FRACTION))
    max_mb = node_number(node_config, NODE_MAX_DATA_MB, DEFAULT_MAX_DATA_BYTES // 2**20)
    if max_mb <= 0:
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG,
            f"node config {NODE_MAX_DATA_MB!r}: expected a number > 0, given {max_mb}",
        )
    return _device_data(str(path), test_fraction, int(job_config[CONFIG_SEED]), int(max_mb * 2**20))


@functools.lru_cache(maxsize=4)
def _device_data_cached(
    path: str, mtime_ns: int, size: int, test_fraction: float, seed: int, max_bytes: int
) -> LocalData:
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
