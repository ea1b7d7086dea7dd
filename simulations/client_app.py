"""The simulation's ClientApp: Sandflower's ClientApp fed by the scenario's partitions.

``client.client_app.make_client_app`` takes a data source; this layer, which knows the data
sets, composes the ClientApp that every engine runs (the local engine's workers, Flower's Ray
engine, ``flwr run .`` and the in-process grid) with :func:`scenario_data` as its source. The
node's partition (node config ``partition-id``, set by the engine) of the data set that the run
config's data keys describe (``simulations.federated_data.DATA_KEYS``, read from
``context.run_config``: the coordinator does not forward them).

``app`` is also the Flower App's ``clientapp`` component (pyproject.toml), so one component
serves both ``flwr run .`` on Flower's simulation engine and a deployment: a device names its
own file (node config ``data-path``) and this source then reads it exactly as the device's
ClientApp does. Why the component lives here and not in client/: a simulation node has only a
``partition-id``, and turning that into data takes simulations/. A device's venv holds only
flwr, wasmtime and numpy (tests/e2e/test_device_venv.py), so this module imports
``simulations.federated_data`` (scikit-learn, flwr-datasets) only inside :func:`scenario_data`,
on the partition path that a device never takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.client_app import make_client_app
from client.data import LocalData
from client.data_source import device_data
from client.node_config import NODE_DATA_PATH, NODE_PARTITION_ID


def scenario_data(
    node_config: Mapping[str, Any],
    run_config: Mapping[str, Any],
    job_config: Mapping[str, Any],
) -> LocalData:
    """Load the node's data: its own file if it names one, else its scenario partition.

    A :class:`client.data_source.DataSource`.

    Raises
    ------
    simulations.federated_data.DataConfigError
        A bad data key in the run config, or a partition id out of range.
    client.data.DataFileError
        The node has neither ``data-path`` nor ``partition-id``, or a file cannot be read.
    """
    if NODE_DATA_PATH in node_config or NODE_PARTITION_ID not in node_config:
        return device_data(node_config, run_config, job_config)
    # Imported here, not at the top: a device (data-path) never reaches this line, and its
    # venv has none of the data-set libraries that simulations.federated_data imports.
    from simulations.federated_data import load_client_data

    return load_client_data(run_config, int(node_config[NODE_PARTITION_ID]))


def with_run_config(inner: ClientApp, run_config: Mapping[str, Any]) -> ClientApp:
    """Wrap ``inner`` to run with ``run_config`` as ``context.run_config`` where that is empty.

    Flower's ``run_simulation`` (the Ray engine here) leaves ``context.run_config`` empty; the
    ServerApp gets the scenario's run config by ``run_config_override`` and this gives the
    ClientApp the same one, so every engine hands the clients the data keys.
    """
    resolved = dict(run_config)
    wrapped = ClientApp()

    def _context(context: Context) -> Context:
        if context.run_config:
            return context
        return Context(
            context.run_id, context.node_id, context.node_config, context.state, dict(resolved)
        )

    @wrapped.train()
    def train(message: Message, context: Context) -> Message:
        return inner(message, _context(context))

    @wrapped.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return inner(message, _context(context))

    return wrapped


app = make_client_app(scenario_data)
