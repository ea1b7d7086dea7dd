"""A single-process Grid: the same ServerApp logic and ClientApp, no engine.

For experiments that run many short federations (``sandflower bench stragglers``): Flower's
Ray engine spends seconds starting per run, and on a loaded machine its start can time out.
Every message is handed to the real ClientApp in this process, one after the other, in the
order the strategy sent them, so a run gives the same bits as on any engine (the model and the
simulated clock depend on the seed and on fuel, never on timing). The local multi-process
engine (issue 8) is the general tool; this one exists so the experiment does not wait for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict


class InProcessGrid:
    """Delivers each message to the ClientApp of its node, in this process.

    Parameters
    ----------
    client_app : the ClientApp (default: ``simulations.client_app.app``).
    num_nodes : nodes, one per partition (node config ``partition-id``, ``num-partitions``).
    seed : node ids are drawn from it (like an engine, ids are not the partition ids).
    run_config : every node's ``context.run_config`` (as an engine gives it: the data keys).
    """

    def __init__(
        self, client_app, num_nodes: int, seed: int, run_config: Mapping[str, Any] | None = None
    ) -> None:
        rng = np.random.default_rng([seed, 0x6E6F6465])
        node_ids = rng.choice(2**40, size=num_nodes, replace=False).tolist()
        self.client_app = client_app
        self.contexts = {
            int(node_id): Context(
                run_id=1,
                node_id=int(node_id),
                node_config={"partition-id": partition, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for partition, node_id in enumerate(node_ids)
        }

    def get_node_ids(self) -> list[int]:
        """Return the node ids, one per partition."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Run each message through the ClientApp in this process; return the replies in order."""
        return [
            self.client_app(message, self.contexts[message.metadata.dst_node_id])
            for message in messages
        ]


def simulate_in_process(
    run_config: Mapping[str, Any],
    out_dir: Path,
    *,
    client_app=None,
    on_round=None,
):
    """Run a simulation on an :class:`InProcessGrid`, in this process.

    Like ``simulations.simulate.simulate_on_engine``: the same arguments, the same ServerApp
    (``simulations.flower_app.build_scenario_server_app``: central evaluation, the kernel pin,
    partition sizes and fault labels), the same run folder and RunReport.
    """
    from flwr.supercore.task_identity import TaskIdentity

    from coordinator.reports.report_json import load_report
    from simulations.engine.worker import load_client_app
    from simulations.environment import apply_flower_env
    from simulations.flower_app import build_scenario_server_app, resolve_run_config
    from simulations.simulate import SimulationError, default_client_app

    apply_flower_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_run_config(dict(run_config) | {"out-dir": str(out_dir)})
    if client_app is None:
        client_app = default_client_app(config)
    if isinstance(client_app, str) or not hasattr(client_app, "_call"):
        client_app = load_client_app(client_app)
    # Flower's engine sets the process-wide task identity that new messages read.
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 1, 1
    grid = InProcessGrid(client_app, int(config["num-partitions"]), int(config["seed"]), config)
    server_app = build_scenario_server_app(run_config_override=config, on_round=on_round)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    try:
        # InProcessGrid is a duck-typed Grid: it has the two methods the ServerApp logic calls
        # (get_node_ids, send_and_receive), not the abstract class's SuperLink plumbing.
        server_app(grid, context)  # type: ignore[arg-type]
    except Exception as error:  # the ServerApp's own error (its report is written)
        raise SimulationError(f"{type(error).__name__}: {error}") from error
    return load_report(out_dir)
