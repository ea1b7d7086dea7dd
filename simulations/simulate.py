"""Run a scenario on Flower's simulation engine (Ray backend) and return its RunReport.

The ServerApp and ClientApp are the same ones a deployment runs; only the engine differs.
``flwr.simulation.run_simulation`` leaves ``context.run_config`` empty, so the scenario's run
config reaches the ServerApp through ``make_server_app(run_config_override=...)``, and the
clients get everything they need from the train/evaluate messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simulations.environment import apply_flower_env


class SimulationError(RuntimeError):
    """The simulation did not complete (the message says why)."""


def run_federation(
    run_config: Mapping[str, Any],
    out_dir: Path,
    *,
    client_app=None,
    on_round: Callable | None = None,
    num_cpus_per_client: float = 1.0,
):
    """Train ``run_config`` on the simulation engine; write the run folder ``out_dir``.

    Parameters
    ----------
    run_config : the flat run config (``Scenario.to_run_config()``).
    out_dir : the run folder (report.json, rounds.csv, clients.csv, report.html, final_model.npz).
    client_app : the ClientApp to run (default: ``client.client_app.app``, wrapped by
        ``simulations.faults`` when the run config has ``faults-*`` keys); tests pass a
        wrapped one to play a misbehaving client.
    on_round : called with each finished RoundReport (progress display).

    Returns
    -------
    RunReport read back from ``out_dir/report.json``.
    """
    apply_flower_env()
    from flwr.simulation import run_simulation

    from coordinator.report_io import load_report
    from simulations.flower_app import build_server_app

    if client_app is None:
        from simulations.faults import FaultConfig

        if FaultConfig.from_mapping(run_config).active:
            from simulations.faults import app as client_app
        else:
            from client.client_app import app as client_app

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(run_config) | {"out-dir": str(out_dir)}
    server_app = build_server_app(run_config_override=config, on_round=on_round)
    num_clients = int(config["num-partitions"])
    backend_config = {
        "client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "include_dashboard": False,
            "logging_level": "ERROR",
            "log_to_driver": False,
        },
    }
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_clients,
            backend_config=backend_config,
        )
    except Exception as error:  # the ServerApp's own error, re-raised by run_simulation
        raise SimulationError(f"{type(error).__name__}: {error}") from error
    return load_report(out_dir)
