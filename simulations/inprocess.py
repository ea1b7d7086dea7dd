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
    client_app : the ClientApp (default: ``client.client_app.app``).
    num_nodes : nodes, one per partition (node config ``partition-id``, ``num-partitions``).
    seed : node ids are drawn from it (like an engine, ids are not the partition ids).
    """

    def __init__(self, client_app, num_nodes: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 0x6E6F6465])
        node_ids = rng.choice(2**40, size=num_nodes, replace=False).tolist()
        self.client_app = client_app
        self.contexts = {
            int(node_id): Context(
                run_id=1,
                node_id=int(node_id),
                node_config={"partition-id": partition, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for partition, node_id in enumerate(node_ids)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return [
            self.client_app(message, self.contexts[message.metadata.dst_node_id])
            for message in messages
        ]


def run_federation(
    run_config: Mapping[str, Any],
    out_dir: Path,
    *,
    client_app=None,
    on_round=None,
):
    """``simulations.simulate.run_federation`` on an :class:`InProcessGrid`: the same
    arguments, the same run folder, the same RunReport."""
    from flwr.supercore.task_identity import TaskIdentity

    from coordinator.config import FederationConfig
    from coordinator.report_io import load_report
    from coordinator.server_app import run_federation as run_rounds
    from simulations.central import make_central_evaluate
    from simulations.flower_app import resolve_run_config

    if client_app is None:
        from client.client_app import app as client_app

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = resolve_run_config(dict(run_config) | {"out-dir": str(out_dir)})
    config = FederationConfig.from_run_config(run_config)
    # Flower's engine sets the process-wide task identity that new messages read.
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 1, 1
    grid = InProcessGrid(client_app, int(run_config["num-partitions"]), config.seed)
    central = make_central_evaluate(run_config, config.model)
    run_rounds(
        grid, config, central_evaluate=central, on_round=on_round, write_report=_write_report
    )
    return load_report(out_dir)


def _write_report(out_dir: Path, report) -> None:
    # report.json and the CSVs every round; report.html (its plots take about a second) once,
    # when the run ends.
    from coordinator.report_writer import write_run

    write_run(out_dir, report, render_html=report.status != "running")
