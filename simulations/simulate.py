"""Run a scenario on a simulation engine and return its RunReport.

Two engines run the same ServerApp logic
(``simulations.flower_app.build_scenario_server_app``, i.e.
``coordinator.server_app.run_rounds_on_grid``) and the same ClientApp:

- ``local`` (default): :class:`simulations.engine.LocalGrid` over a pool of worker
  processes on this machine (one per core by default).
- ``ray``: Flower's simulation engine (Ray backend), for populations that outgrow one
  machine; ``ray_address`` points it at an existing cluster (``ray start --head``).

``flwr.simulation.run_simulation`` leaves ``context.run_config`` empty, so the scenario's
run config reaches the ServerApp through ``build_scenario_server_app(run_config_override=...)``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simulations.environment import apply_flower_env, limit_blas_threads

ENGINES = ("local", "ray")
DEFAULT_ENGINE = "local"

OnProgress = Callable[[int, int], None]


class SimulationError(RuntimeError):
    """The simulation did not complete (the message says why)."""


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def simulate_on_engine(
    run_config: Mapping[str, Any],
    out_dir: Path,
    *,
    engine: str = DEFAULT_ENGINE,
    workers: int | None = None,
    client_app=None,
    on_round: Callable | None = None,
    on_progress: OnProgress | None = None,
    num_cpus_per_client: float = 1.0,
    ray_address: str | None = None,
):
    """Train ``run_config`` on ``engine``; write the run folder ``out_dir``.

    Parameters
    ----------
    run_config : the flat run config (``Scenario.to_run_config()``).
    out_dir : the run folder (report.json, rounds.csv, clients.csv, report.html, final_model.npz).
    engine : "local" (worker processes on this machine) or "ray" (Flower's Ray engine).
    workers : local engine: the number of worker processes (default: one per core).
    client_app : the ClientApp to run, a ``"module:attribute"`` reference to one, or a
        factory (default: ``simulations.client_app.app``, wrapped by ``simulations.faults`` when the
        run config has ``faults-*`` keys); tests pass a wrapped one to play a misbehaving client.
    on_round : called with each finished RoundReport (progress display).
    on_progress : local engine: ``(clients replied, clients sent)`` within a round.
    num_cpus_per_client : ray engine: CPUs reserved per client actor.
    ray_address : ray engine: the address of an existing Ray cluster (None: start one).

    Returns
    -------
    RunReport read back from ``out_dir/report.json``.

    Raises
    ------
    SimulationError
        The run failed (the partial report is written).
    KeyboardInterrupt
        The run was interrupted (the report says "interrupted"; every worker is stopped).
    """
    if engine not in ENGINES:
        raise SimulationError(f"engine: expected one of {', '.join(ENGINES)}, given {engine!r}")
    apply_flower_env()
    limit_blas_threads()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(run_config) | {"out-dir": str(out_dir)}
    if client_app is None:
        client_app = default_client_app(config)
    if engine == "local":
        _run_local(config, workers, client_app, on_round, on_progress)
    else:
        _run_ray(config, client_app, on_round, num_cpus_per_client, ray_address)
    from coordinator.reports.report_json import load_report

    return load_report(out_dir)


def default_client_app(run_config: Mapping[str, Any]) -> str:
    """Return the simulation's ClientApp, wrapped for faults if asked.

    ``simulations.client_app``: the scenario's partitions as its data; the fault injector wraps
    it when the run config asks for faults (``[faults]`` in the scenario).
    """
    from simulations.faults import FaultConfig

    if FaultConfig.from_mapping(run_config).active:
        return "simulations.faults:app"
    return "simulations.client_app:app"


def _run_local(config, workers, client_app, on_round, on_progress) -> None:
    from flwr.app import Context, RecordDict

    from coordinator.config import FederationConfig
    from simulations.engine import LocalGrid, WorkerPool, stopping
    from simulations.engine.collector import thaw
    from simulations.flower_app import build_scenario_server_app, resolve_run_config

    num_workers = default_workers() if workers is None else workers
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise SimulationError(f"workers: expected an int >= 1, given {workers!r}")
    num_clients = int(config["num-partitions"])
    resolved = resolve_run_config(config)  # compiles (or loads) the kernel here, once
    pool = WorkerPool(
        min(num_workers, num_clients),
        client_app,
        resolved,
        num_clients,
        start_method=_start_method(resolved, client_app),
        job_cost=_job_cost(resolved),
    )
    stopping.register(pool)
    try:
        if pool.start_method == "lean":
            # A lean worker shares nothing with the coordinator: started first, its imports
            # (~1 s) run while the coordinator builds the central test set.
            pool.spawn()
        _load_data_before_forking(resolved)
        server_app = build_scenario_server_app(
            run_config_override=resolved,
            on_round=_freeze_after_first_round(
                _stop_after_last_round(
                    pool, lambda: FederationConfig.from_run_config(resolved).num_rounds, on_round
                )
            ),
        )
        pool.start()
        grid = LocalGrid(pool, num_clients, on_progress=on_progress)
        context = Context(
            run_id=pool.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=resolved
        )
        try:
            server_app(grid, context)
        except Exception as error:  # the ServerApp's own error (its report is written)
            raise SimulationError(f"{type(error).__name__}: {error}") from error
    finally:
        thaw()  # this process may go on (a test, a notebook): its objects are collected again
        pool.stop()
        stopping.unregister(pool)
        last_pool_stats.clear()
        last_pool_stats.update(
            vars(pool.stats) | {"workers": pool.num_workers, "pids": list(pool.started_pids)}
        )


def _freeze_after_first_round(on_round: Callable) -> Callable:
    """Wrap ``on_round`` so that what is alive after this process's first round is frozen.

    By then the coordinator holds most of what it keeps for the run (libraries imported, the
    central test set; matplotlib only once the writes thread has rendered a report.html with
    plots, which may be later); later full collections skip it
    (simulations/engine/collector.py: 0.10-0.18 s of a 1000-client round's aggregation gap,
    ~0.02 s frozen). ``_run_local`` thaws when the run ends.
    """
    from simulations.engine.collector import freeze_survivors

    frozen = False

    def round_finished(round_report) -> None:
        nonlocal frozen
        if not frozen:
            frozen = True
            freeze_survivors()
        on_round(round_report)

    return round_finished


def _stop_after_last_round(
    pool, num_rounds: Callable[[], int], on_round: Callable | None
) -> Callable:
    """Wrap ``on_round`` so that the workers are stopped once round ``num_rounds()`` is done.

    After its last round the ServerApp sends nothing more to a client: it saves the final
    model and writes the final report, whose report.html imports matplotlib and draws every
    plot (~45 MB and ~1 s at 1000 clients). Stopped first, the workers (~290 MB with their
    clients' data at 1000 clients) are not alive during that peak. ``_run_local`` still
    stops the pool in every other case (a failed or interrupted run). ``num_rounds`` is
    read when a round has finished: the ServerApp has validated the run config by then.
    """

    def round_finished(round_report) -> None:
        if round_report.round >= num_rounds():
            pool.stop()
        if on_round is not None:
            on_round(round_report)

    return round_finished


def _start_method(run_config: Mapping[str, Any], client_app: Any) -> str:
    """How the workers start: "lean" when a forked worker would share nothing worth sharing.

    A lazy data set (synthetic devices) is built client by client inside the workers, so a
    forked worker would only inherit the coordinator's resident pages (its libraries, the
    report), which summed RSS counts again per worker; a lean worker imports only what it
    needs. An eager data set (digits, a folder) is built once before the workers fork and
    shared copy-on-write; a lean worker would build it again. A ClientApp object (not a
    ``"module:attribute"`` reference) reaches a worker only by fork.
    """
    from simulations.federated_data import DataConfig, is_lazy

    if isinstance(client_app, str) and is_lazy(DataConfig.from_mapping(run_config)):
        return "lean"
    return "fork"


# A job's fixed cost, in samples: at 1000 synthetic clients a train job took ~0.9 ms + 15 us
# per sample inside the kernel, and ~2 ms of ClientApp and sandbox set-up around it.
JOB_OVERHEAD_SAMPLES = 190


def _job_cost(run_config: Mapping[str, Any]) -> Callable[[int], float]:
    """Client partition id -> its job's estimated cost, for the pool to balance its workers."""
    from client.data import DataFileError
    from simulations.federated_data import DataConfig, DataConfigError, partition_size

    config = DataConfig.from_mapping(run_config)

    def cost(partition_id: int) -> float:
        try:
            return JOB_OVERHEAD_SAMPLES + partition_size(config, partition_id)
        except (DataConfigError, DataFileError):
            # Only a schedule hint: the client's own job reports what is wrong with its data.
            return JOB_OVERHEAD_SAMPLES

    return cost


def _load_data_before_forking(run_config: Mapping[str, Any]) -> None:
    # The coordinator needs the data set for central evaluation anyway; built before the
    # workers fork, it is shared with them copy-on-write instead of being built (and its
    # libraries imported) again in every worker during round 1.
    # (A lazy data set, e.g. synthetic devices, builds only the bounded central test set.)
    from simulations.engine.memory import release_free_memory
    from simulations.federated_data import load_central_test

    load_central_test(run_config)
    # Building it (e.g. 1000 synthetic devices, 10 MB kept of 113 MB made) leaves freed heap
    # that the workers would otherwise inherit and summed RSS count once more per process.
    release_free_memory()


# What the last local run's pool measured (transfer costs, replaced workers): the benchmark
# and tests read it.
last_pool_stats: dict[str, Any] = {}


def _run_ray(config, client_app, on_round, num_cpus_per_client, ray_address) -> None:
    from flwr.simulation import run_simulation

    from simulations.client_app import with_run_config
    from simulations.flower_app import build_scenario_server_app

    if isinstance(client_app, str) or not hasattr(client_app, "_call"):
        from simulations.engine.worker import load_client_app

        client_app = load_client_app(client_app)
    # run_simulation leaves context.run_config empty: the clients read the data keys there.
    client_app = with_run_config(client_app, config)
    server_app = build_scenario_server_app(run_config_override=config, on_round=on_round)
    num_clients = int(config["num-partitions"])
    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "log_to_driver": False,
    }
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["num_cpus"] = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": num_cpus_per_client, "num_gpus": 0.0},
        "init_args": init_args,
    }
    # Ray's actors start with the coordinator's environment: one BLAS thread each, as the
    # local engine's workers (and the coordinator) have.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        with warnings.catch_warnings():
            # run_simulation is deprecated in Flower 1.42 (its successor, `flwr run` on a
            # local SuperLink, cannot take a ServerApp object); its warning would be printed
            # over the progress bar.
            warnings.simplefilter("ignore")
            _quiet_flower_deprecations()
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_clients,
                backend_config=backend_config,
            )
    except Exception as error:  # the ServerApp's own error, re-raised by run_simulation
        raise SimulationError(f"{type(error).__name__}: {error}") from error


def _quiet_flower_deprecations() -> None:
    from flwr.common.logger import FLOWER_LOGGER

    class _NoDeprecation(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "deprecated" not in record.getMessage().lower()

    logger = FLOWER_LOGGER  # the logger object itself
    if not any(isinstance(f, _NoDeprecation) for f in logger.filters):
        logger.addFilter(_NoDeprecation())
    for handler in logger.handlers:
        if not any(isinstance(f, _NoDeprecation) for f in handler.filters):
            handler.addFilter(_NoDeprecation())
