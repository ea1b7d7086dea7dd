"""Where a run starts: round 0 (a fresh run), or after the rounds of a run folder's checkpoint.

:func:`starting_point` is called by :func:`coordinator.server_app.run_rounds_on_grid` before
anything is written, so every engine that runs ``run_rounds_on_grid`` resumes the same way (the
run config key ``resume-from``). A refused resume (a run config that differs from the
checkpoint's, no usable checkpoint, fewer rounds than already done) raises before the run
folder is touched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from protos.report_pb2 import ResumeEvent, RunReport

from . import strategy_state
from .checkpoint import (
    CheckpointError,
    ResumeConfigError,
    check_config,
    clear_checkpoints,
    config_differences,
    encode_config,
    load_latest,
    remove_partial_writes,
)
from .config import FederationConfig
from .reports.report_json import ReportError, load_report
from .reports.run_config import copy_run_config
from .reports.run_config import run_config as recorded_run_config
from .strategy import DeltaStrategy

logger = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    """The report, global model and finished rounds a run goes on from."""

    report: RunReport
    global_weights: dict[str, np.ndarray]
    finished_rounds: int
    resumed: bool


def starting_point(
    config: FederationConfig,
    strategy: DeltaStrategy,
    fresh_report: RunReport,
    *,
    engine: str,
) -> StartingPoint:
    """Return a fresh start, or the state of ``config.resume_from``'s newest usable checkpoint.

    Parameters
    ----------
    config : the run config; ``resume_from`` names the run folder to continue ("" = fresh).
    strategy : the adapter; its Flower strategy's state and its node -> partition map are
        restored from the checkpoint.
    fresh_report : the report a fresh run starts with (``new_run_report``).
    engine : the engine this segment runs on (for the ResumeEvent).

    Raises
    ------
    coordinator.checkpoint.CheckpointError
        No usable checkpoint while some exist; the folder is not a run folder; the
        checkpoint has more rounds than ``num-rounds``.
    coordinator.checkpoint.ResumeConfigError
        The run config differs from the checkpoint's in keys other than the resumable ones.
    """
    out_dir = Path(config.out_dir)
    shapes = config.model.array_shapes()
    if not config.resume_from:
        clear_checkpoints(out_dir)
        return StartingPoint(fresh_report, config.model.init_params(config.seed), 0, False)

    source = Path(config.resume_from)
    run_config = config.to_run_config()
    loaded = load_latest(
        source,
        array_shapes=shapes,
        state_slots=strategy_state.state_slots(strategy.flower_strategy),
    )
    previous = _previous_report(source)
    checkpoint = loaded.checkpoint
    if checkpoint is None:
        # Stopped before round 1 finished: nothing to restore, but the config must still match.
        if previous is None:
            raise CheckpointError(
                f"{source}: neither a checkpoint nor a report.json: not a Sandflower run folder"
            )
        differences = config_differences(_struct_config(previous), encode_config(run_config))
        if differences:
            raise ResumeConfigError(differences, f"{source}/report.json")
        report, weights, done = fresh_report, config.model.init_params(config.seed), 0
        report.started_at.CopyFrom(previous.started_at)
    else:
        check_config(checkpoint, run_config)
        if checkpoint.round > config.num_rounds:
            raise CheckpointError(
                f"{checkpoint.path}: {checkpoint.round} rounds are done, more than num-rounds "
                f"{config.num_rounds}; give at least {checkpoint.round} rounds to resume"
            )
        try:
            strategy_state.restore(strategy.flower_strategy, checkpoint.strategy_state, shapes)
        except strategy_state.StrategyStateError as error:
            raise CheckpointError(f"{checkpoint.path}: {error}") from error
        strategy.node_partitions.update(checkpoint.node_partitions)
        report, weights, done = checkpoint.report, checkpoint.model, checkpoint.round
        if report.rounds:
            # The simulated device clock goes on from the last finished round (0 when the run
            # simulates no devices).
            strategy.sim_elapsed_seconds = report.rounds[-1].sim_elapsed_seconds
        _reopen(report, fresh_report)
    event = ResumeEvent(
        from_round=done,
        checkpoint=str(checkpoint.path) if checkpoint is not None else "",
        previous_status=previous.status if previous is not None else "unknown",
        previous_num_rounds=previous.num_rounds if previous is not None else 0,
        engine=engine,
        refused_checkpoints=loaded.refused,
    )
    event.resumed_at.CopyFrom(_now())
    report.resumes.append(event)
    for reason in loaded.refused:
        logger.warning("checkpoint refused: %s", reason)
    logger.info("resuming %s after round %d (%s)", source, done, event.checkpoint or "round 0")
    if source.resolve() == out_dir.resolve():
        remove_partial_writes(out_dir)
    else:  # continuing into another folder: its old checkpoints are not this run's
        clear_checkpoints(out_dir)
    return StartingPoint(report, weights, done, True)


def _reopen(report: RunReport, fresh_report: RunReport) -> None:
    """Make a checkpoint's report the report of a running run with the new plan and config."""
    report.status = "running"
    report.error = ""
    report.ClearField("finished_at")
    report.num_rounds = fresh_report.num_rounds
    report.engine = fresh_report.engine
    report.versions.CopyFrom(fresh_report.versions)
    copy_run_config(fresh_report, report)
    report.final_model_sha256 = ""
    report.final_central_loss = math.nan
    report.final_central_accuracy = math.nan
    report.final_federated_eval_accuracy = math.nan


def _previous_report(source: Path) -> RunReport | None:
    try:
        return load_report(source)
    except ReportError as error:
        logger.warning("resume: %s", error)
        return None


def _struct_config(report: RunReport) -> dict[str, object]:
    # Reports written before config_integer_keys give floats; the comparison treats numbers
    # by value.
    return recorded_run_config(report)


def _now() -> Timestamp:
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    return timestamp
