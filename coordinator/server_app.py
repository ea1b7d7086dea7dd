"""The Sandflower ServerApp: rounds of delta aggregation, central evaluation, the run report.

:func:`build_coordinator_server_app` builds the Flower ``ServerApp`` for a central evaluation
the caller supplies (``simulations.flower_app.build_scenario_server_app`` builds the one that
evaluates on a scenario's test set); its ``main(grid, context)`` reads the run config (or
``run_config_override``: ``flwr.simulation.run_simulation`` leaves ``context.run_config``
empty) and hands over to :func:`run_rounds_on_grid`, which runs the rounds on any Grid (tests
drive it with an in-process grid; no engine needed).

Per round: sample and train (:class:`coordinator.strategy.DeltaStrategy`), federated
evaluation, central evaluation through ``central_evaluate`` (supplied by the layer that owns a
test set), then the round's checkpoint (``coordinator.checkpoint``), then the RunReport
(``coordinator.reports.writer.write_run``), so that a run that dies after round k leaves a valid
report of k rounds and a checkpoint to continue from. The run config key ``resume-from``
continues a run folder from its newest checkpoint (``coordinator.resume``), on any engine. A
round without a usable reply ends the run: the report says "failed" and why, then
:class:`FederationFailedError` is raised.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import platform
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp
from google.protobuf.timestamp_pb2 import Timestamp

from protos.report_pb2 import RoundReport, RunReport, Versions

from . import strategy_state
from .aggregation import model_sha256
from .background_call import BackgroundCall
from .checkpoint import Checkpoint, write_checkpoint
from .config import FederationConfig
from .file_writes import BackgroundWrites
from .flower_strategies import build_flower_strategy
from .guarded_grid import guard_replies
from .reports.run_config import set_run_config
from .resume import starting_point
from .strategy import (
    DeltaStrategy,
    ExpectedExamples,
    FaultLabels,
    RoundFailedError,
    grid_partitions,
)
from .validation import WeightPolicy

logger = logging.getLogger(__name__)

FINAL_MODEL_FILE = "final_model.npz"
# How long a round waits for replies (Flower's Strategy.start default).
REPLY_TIMEOUT_SECONDS = 3600.0

CentralEvaluate = Callable[[dict[str, np.ndarray]], tuple[float, float]]
OnRound = Callable[[RoundReport], None]
WriteReport = Callable[[Path, RunReport], None]


class StreamingGrid(Protocol):
    """A grid whose ``streams_replies`` is true: it calls ``on_reply`` as each reply arrives."""

    def send_and_receive(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | None = None,
        on_reply: Callable[[Message], None] | None = None,
    ) -> Iterable[Message]:
        """Send ``messages``; return their replies, calling ``on_reply`` on each as it comes."""
        ...


class FederationFailedError(RuntimeError):
    """The run stopped: a round had no usable reply (the report holds every client's reason)."""


def build_coordinator_server_app(
    *,
    central_evaluate: CentralEvaluate | None = None,
    run_config_override: Mapping[str, Any] | None = None,
    on_round: OnRound | None = None,
) -> ServerApp:
    """Build a ServerApp that runs :func:`run_rounds_on_grid` with the given central evaluation.

    Parameters
    ----------
    central_evaluate : ``arrays -> (loss, accuracy)`` on a held-out test set, called with the
        global model after every round; None skips central evaluation (its report fields are
        NaN).
    run_config_override : the flat run config to use instead of ``context.run_config``.
    on_round : called with a copy of each finished RoundReport (e.g. a progress bar).

    Returns
    -------
    flwr.serverapp.ServerApp
        Its main raises :class:`FederationFailedError` when a round has no usable reply, and
        ``coordinator.config.RunConfigError`` for a bad run config.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = run_config_override if run_config_override is not None else context.run_config
        config = FederationConfig.from_run_config(dict(run_config))
        run_rounds_on_grid(grid, config, central_evaluate=central_evaluate, on_round=on_round)

    return app


def run_rounds_on_grid(
    grid: Grid,
    config: FederationConfig,
    *,
    central_evaluate: CentralEvaluate | None = None,
    on_round: OnRound | None = None,
    timeout: float = REPLY_TIMEOUT_SECONDS,
    write_report: WriteReport | None = None,
    expected_num_examples: ExpectedExamples | None = None,
    fault_labels: FaultLabels | None = None,
    check_partitions: Callable[[Mapping[int, int]], None] | None = None,
) -> RunReport:
    """Run ``config.num_rounds`` rounds on ``grid``; write the run folder; return the report.

    Parameters
    ----------
    grid : the Flower Grid (anything with ``get_node_ids`` and ``send_and_receive``).
    config : the validated run config.
    central_evaluate, on_round : as in :func:`build_coordinator_server_app`.
    timeout : seconds a round waits for replies.
    write_report : ``(out_dir, report) -> None``, called at the start, after every round and
        at the end; default ``coordinator.reports.writer.write_run``.
    expected_num_examples : ``(partition id, "train" | "evaluate") -> count | None``, where
        the layer above knows each partition's size (simulation): a larger claim is clipped.
    fault_labels : ``(partition id, round) -> (fault, attack)`` from a simulation that injects
        faults; the report marks each client with them.
    check_partitions : ``{node id: partition id} -> None``, called once before round 1 with
        the partitions the nodes reported (simulation engines); it raises to refuse the run
        (e.g. fewer SuperNodes than the scenario's partitions).

    Raises
    ------
    FederationFailedError
        When a round has no usable reply (after the report recorded status "failed").
    coordinator.checkpoint.CheckpointError
        When ``config.resume_from`` cannot be resumed (no usable checkpoint, a run config
        that differs from the checkpoint's, fewer rounds than done); nothing is written.
    """
    out_dir = Path(config.out_dir)
    # The default writer's files and the checkpoints are written on one background thread,
    # in order (a checkpoint still lands before the report that claims its round); a caller's
    # own writer is called in line, and then the checkpoints are written in line too.
    files = BackgroundWrites() if write_report is None else None
    write = write_report or functools.partial(_write_run, background=files)
    # A SuperLink's grid decodes devices' bytes: one that cannot be decoded must fail its
    # client, not the run (coordinator/guarded_grid.py).
    grid = guard_replies(grid)
    engine = _engine_of(grid)
    strategy = DeltaStrategy(
        flower_strategy_of(config),
        seed=config.seed,
        server_lr=config.server_lr,
        max_delta_norm=config.max_delta_norm,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        rule_name=config.strategy,
        clip_delta_norm=config.clip_delta_norm,
        weight_policy=WeightPolicy(config.max_num_examples, config.max_examples_ratio),
        expected_num_examples=expected_num_examples,
        fault_labels=fault_labels,
        devices=config.devices,
    )
    strategy.summary()
    # Before anything is written: a refused resume leaves the run folder as it was.
    start = starting_point(config, strategy, new_run_report(config, engine=engine), engine=engine)
    report, global_weights = start.report, start.global_weights
    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir, report)
    try:
        needs_partitions = (
            config.fraction_train < 1.0
            or fault_labels is not None
            or config.devices is not None
            or check_partitions is not None
            # Learned from round 1's replies instead, a node that lies from its first reply
            # would be believed (the weight bound included).
            or grid_partitions(grid) is not None
        )
        if needs_partitions and _partitions_needed(grid, strategy, start.resumed):
            # Partial sampling draws from nodes in partition order, which needs the partitions
            # before round 1 (with full training, round 1's replies tell them in time for the
            # evaluation sample). Fault labels need them too: a crashed client's error reply
            # names no partition; simulated devices are looked up by partition. A resumed run
            # asks again: simulated node ids are new per run.
            found = strategy.learn_partitions(
                grid,
                _arrays(global_weights),
                ConfigRecord({**config.client_config(0)}),
                timeout=timeout,
            )
            logger.info("partition ids known for %d nodes", found)
        if check_partitions is not None:
            # The nodes connected now: a resumed run's map also holds the previous segment's
            # node ids (simulated node ids are new per run).
            connected = set(grid.get_node_ids())
            check_partitions(
                {
                    node: partition
                    for node, partition in strategy.node_partitions.items()
                    if node in connected
                }
            )
        for server_round in range(start.finished_rounds + 1, config.num_rounds + 1):
            global_weights = _run_round(
                grid, strategy, config, server_round, global_weights, central_evaluate, timeout
            )
            round_report = strategy.round_report(server_round)
            report.rounds.add().CopyFrom(round_report)
            report.total_bytes_uploaded += round_report.bytes_uploaded
            report.total_bytes_downloaded += round_report.bytes_downloaded
            strategy.forget_round(server_round)
            # The checkpoint of round k is complete before the report claims round k.
            _checkpoint(
                out_dir, config, strategy, server_round, global_weights, report, background=files
            )
            write(out_dir, report)
            if on_round is not None:
                snapshot = RoundReport()
                snapshot.CopyFrom(round_report)
                on_round(snapshot)
    except RoundFailedError as error:
        failed_round = error.round_report
        failed_round.wall_seconds = strategy.round_report(error.server_round).wall_seconds
        # Nothing was evaluated in a round that produced no model.
        for name in (
            "federated_eval_loss",
            "federated_eval_accuracy",
            "central_loss",
            "central_accuracy",
        ):
            setattr(failed_round, name, math.nan)
        report.rounds.add().CopyFrom(failed_round)
        report.total_bytes_uploaded += failed_round.bytes_uploaded
        report.total_bytes_downloaded += failed_round.bytes_downloaded
        _finish(report, out_dir, write, files, status="failed", error=str(error))
        raise FederationFailedError(f"run {config.scenario!r} failed: {error}") from error
    except KeyboardInterrupt:
        # Ctrl-C / SIGTERM (the engine turns it into KeyboardInterrupt): the finished rounds
        # stay in the report, which says the run was stopped, not that it failed.
        finished = len(report.rounds)
        _finish(
            report,
            out_dir,
            write,
            files,
            status="interrupted",
            error=f"interrupted after {finished} finished round(s)",
        )
        raise
    except BaseException as error:
        _finish(
            report, out_dir, write, files, status="failed", error=f"{type(error).__name__}: {error}"
        )
        raise

    if start.resumed and start.finished_rounds == config.num_rounds:
        # No round ran in this segment: checkpoint again so its resume event is kept.
        _checkpoint(
            out_dir, config, strategy, config.num_rounds, global_weights, report, background=files
        )
    np.savez(out_dir / FINAL_MODEL_FILE, **dict[str, Any](global_weights))
    report.final_model_sha256 = model_sha256(global_weights)
    if report.rounds:
        last = report.rounds[-1]
        report.final_central_loss = last.central_loss
        report.final_central_accuracy = last.central_accuracy
        report.final_federated_eval_accuracy = last.federated_eval_accuracy
    _finish(report, out_dir, write, files, status="completed", error="")
    return report


def _checkpoint(
    out_dir: Path,
    config: FederationConfig,
    strategy: DeltaStrategy,
    server_round: int,
    global_weights: dict[str, np.ndarray],
    report: RunReport,
    *,
    background: BackgroundWrites | None,
) -> None:
    """Write the checkpoint of ``server_round`` and add the time it took to the report.

    With ``background``, the time is that of serializing it (the round waits for nothing
    else); the files are written on the background thread.
    """
    started = time.perf_counter()
    names = list(config.model.array_shapes())
    write_checkpoint(
        out_dir,
        Checkpoint(
            round=server_round,
            model=global_weights,
            strategy_state=strategy_state.capture(strategy.flower_strategy, names),
            node_partitions=dict(strategy.node_partitions),
            report=report,
            config=config.to_run_config(),
        ),
        background=background,
    )
    report.checkpoint_seconds += time.perf_counter() - started


def _partitions_needed(grid: Grid, strategy: DeltaStrategy, resumed: bool) -> bool:
    if not resumed:
        return True
    return any(node_id not in strategy.node_partitions for node_id in grid.get_node_ids())


def flower_strategy_of(config: FederationConfig):
    """Build the Flower strategy (the aggregation rule) ``config`` names, with its parameters."""
    return build_flower_strategy(
        config.strategy,
        config.strategy_params,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        server_lr=config.server_lr,
        proximal_mu=config.proximal_mu,
        lr=config.lr,
    )


def _run_round(
    grid: Grid,
    strategy: DeltaStrategy,
    config: FederationConfig,
    server_round: int,
    global_weights: dict[str, np.ndarray],
    central_evaluate: CentralEvaluate | None,
    timeout: float,
) -> dict[str, np.ndarray]:
    """One round: train, federated evaluation, central evaluation. Returns the new weights.

    The central evaluation of the new model needs no client reply: it runs on its own thread
    while the grid runs the federated evaluation batch (:func:`_evaluate`), and its outcome
    (its values, or its exception) is taken once that batch is aggregated, as it was when it
    ran after it.
    """
    client_config = ConfigRecord({**config.client_config(server_round)})
    messages = strategy.configure_train(server_round, _arrays(global_weights), client_config, grid)
    if getattr(grid, "streams_replies", False):
        # Each reply is validated as it arrives, while the other clients still train.
        replies = cast(StreamingGrid, grid).send_and_receive(
            messages,
            timeout=timeout,
            on_reply=functools.partial(strategy.receive_train_reply, server_round),
        )
    else:
        replies = grid.send_and_receive(messages, timeout=timeout)
    new_arrays, _ = strategy.aggregate_train(server_round, replies)
    assert new_arrays is not None  # aggregate_train raises instead of returning None
    new_weights = {name: np.asarray(array.numpy()) for name, array in new_arrays.items()}
    round_report = strategy.round_report(server_round)

    central: BackgroundCall[tuple[float, float]] | None = None
    if central_evaluate is not None:
        # A copy: the evaluation must not see (or make) changes to the returned weights.
        copies = {name: array.copy() for name, array in new_weights.items()}
        central = BackgroundCall(
            functools.partial(central_evaluate, copies), name="sandflower-central-evaluation"
        )
    try:
        if config.fraction_evaluate > 0.0:
            messages = strategy.configure_evaluate(server_round, new_arrays, client_config, grid)
            replies = grid.send_and_receive(messages, timeout=timeout)
            strategy.aggregate_evaluate(server_round, replies)
        else:
            round_report.federated_eval_loss = math.nan
            round_report.federated_eval_accuracy = math.nan
    except Exception:
        # The federated evaluation's error wins (the central one was never reached before);
        # the evaluation thread is let finish so that nothing runs on past the round.
        if central is not None:
            central.wait()
        raise

    if central is not None:
        loss, accuracy = central.result()
        round_report.central_loss = float(loss)
        round_report.central_accuracy = float(accuracy)
    else:
        round_report.central_loss = math.nan
        round_report.central_accuracy = math.nan
    logger.info(
        "round %d: %d ok, %d failed, %d rejected; train loss %.4g; central accuracy %.4g",
        server_round,
        round_report.clients_succeeded,
        round_report.clients_failed,
        round_report.clients_rejected,
        round_report.train_loss,
        round_report.central_accuracy,
    )
    return new_weights


# -- the report -------------------------------------------------------------------------------
def new_run_report(config: FederationConfig, *, engine: str) -> RunReport:
    """Return a RunReport with status "running" and everything known before the first round."""
    report = RunReport(
        scenario=config.scenario,
        seed=config.seed,
        status="running",
        engine=engine,
        versions=_versions(),
        kernel_sha256=config.kernel_sha256,
        num_rounds=config.num_rounds,
        final_central_loss=math.nan,
        final_central_accuracy=math.nan,
        final_federated_eval_accuracy=math.nan,
    )
    set_run_config(report, config.to_run_config())
    report.started_at.CopyFrom(_now())
    return report


def _finish(
    report: RunReport,
    out_dir: Path,
    write: WriteReport,
    files: BackgroundWrites | None,
    *,
    status: str,
    error: str,
) -> None:
    report.status = status
    report.error = error
    report.finished_at.CopyFrom(_now())
    write(out_dir, report)
    if files is not None:
        # Every file is on disk when the run returns (or raises); a failed write raises here.
        try:
            files.flush()
        finally:
            files.close()


def _write_run(
    out_dir: Path, report: RunReport, *, background: BackgroundWrites | None = None
) -> None:
    from .reports.writer import write_run

    write_run(out_dir, report, background=background)


def _now() -> Timestamp:
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    return timestamp


def _versions() -> Versions:
    return Versions(
        sandflower=_sandflower_version(),
        flwr=_package_version("flwr"),
        # Read from the package metadata: the coordinator never imports wasmtime.
        wasmtime=_package_version("wasmtime"),
        python=platform.python_version(),
    )


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _sandflower_version() -> str:
    installed = _package_version("sandflower")
    if installed:
        return installed
    # Running from a source tree (not pip-installed): the version pyproject.toml declares.
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ""


def _engine_of(grid: Grid) -> str:
    # A grid may name its engine (the local engine's LocalGrid says "local"); Flower's
    # simulation engine serves the ServerApp an InMemoryGrid; a SuperLink, HttpGrid.
    named = getattr(grid, "engine_name", None)
    if isinstance(named, str) and named:
        return named
    return "simulation" if type(grid).__name__ == "InMemoryGrid" else "deployment"


def _arrays(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(
        {name: Array(np.asarray(array, np.float32)) for name, array in weights.items()}
    )
