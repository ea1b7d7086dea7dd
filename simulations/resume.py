"""``--resume RUN_DIR``: the run config that continues a stopped run folder.

The run config comes from the folder's newest checkpoint (``coordinator.checkpoint``), or
from its report.json when the run stopped before round 1 finished. A scenario or override
given with ``--resume`` must resolve to the same config (the keys that differ are named);
only ``num-rounds`` may change, to extend a run. The coordinator checks the same again when
the run starts (``resume-from``), for every engine; this early check refuses before an
engine is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.checkpoint import (
    CHECKPOINT_DIR,
    ResumeConfigError,
    config_differences,
    encode_config,
    latest_config,
)
from coordinator.config import FederationConfig, RunConfigError
from coordinator.reports.report_json import REPORT_FILE_NAME, ReportError, load_report
from coordinator.reports.run_config import run_config as recorded_run_config

# Keys whose values are text: "inf" there is a word, not a number.
TEXT_KEYS = frozenset(
    {
        "scenario",
        "strategy",
        "strategy-params",
        "model",
        "out-dir",
        "kernel-sha256",
        "dataset",
        "dataset-path",
        "partitioning",
        "resume-from",
    }
)
# Reports written before RunReport.config_integer_keys existed give every config number as a
# float (a protobuf Struct holds doubles); these keys are integers.
INTEGER_KEYS = frozenset(
    {"seed", "num-rounds", "local-epochs", "batch-size", "num-partitions", "shards-per-client"}
)
_NON_FINITE = frozenset({"inf", "-inf", "infinity", "-infinity", "nan"})


class ResumeError(ValueError):
    """The run folder cannot be resumed as asked (the message says why)."""


def is_run_folder(path: Path | str) -> bool:
    """Return True when ``path`` holds a run (report or checkpoints) a new run must not reuse."""
    path = Path(path)
    return (path / REPORT_FILE_NAME).is_file() or (path / CHECKPOINT_DIR).is_dir()


def saved_run_config(run_dir: Path | str) -> tuple[dict[str, Any], int]:
    """Return the run config a run folder was run with, and how many rounds its checkpoint holds.

    Raises
    ------
    ResumeError
        When the folder has neither an intact checkpoint manifest nor a readable report.json.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResumeError(f"{run_dir}: no such run folder")
    found = latest_config(run_dir)
    if found is not None:
        config, path = found
        return _decoded(config), int(path.name.split("-")[-1])
    try:
        report = load_report(run_dir)
    except ReportError as error:
        raise ResumeError(f"{run_dir}: no checkpoint and no readable report ({error})") from None
    return _decoded(recorded_run_config(report)), 0


def resume_run_config(
    run_dir: Path | str,
    *,
    requested: Mapping[str, Any] | None = None,
    rounds: int | None = None,
    out_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Return the run config that continues ``run_dir``.

    Parameters
    ----------
    run_dir : the stopped (or finished) run folder.
    requested : the run config the command line asked for (a scenario and overrides, with the
        kernel pin resolved), or None to take the folder's own.
    rounds : the new total of rounds (extends the run), or None to keep the planned total.
    out_dir : where the continued run writes (default: ``run_dir`` itself).

    Raises
    ------
    ResumeError
        When ``requested`` differs in other keys than num-rounds (each key named), when
        ``rounds`` is fewer than the rounds already done, or the saved config is invalid.
    """
    run_dir = Path(run_dir)
    saved, done = saved_run_config(run_dir)
    if requested is not None:
        differences = config_differences(encode_config(saved), encode_config(requested))
        if differences:
            raise ResumeError(str(ResumeConfigError(differences, str(run_dir))))
    config = dict(saved)
    if rounds is not None:
        config["num-rounds"] = int(rounds)
    if int(config["num-rounds"]) < done:
        raise ResumeError(
            f"{run_dir}: {done} rounds are done already; --rounds must be at least {done}"
        )
    # Absolute: a SuperLink's ServerApp runs in another working directory.
    config["out-dir"] = str(Path(out_dir if out_dir is not None else run_dir).resolve())
    config["resume-from"] = str(run_dir.resolve())
    try:
        FederationConfig.from_run_config(config)
    except RunConfigError as error:
        raise ResumeError(f"{run_dir}: the saved run config is not valid: {error}") from None
    return config


def _decoded(config: Mapping[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str) and key not in TEXT_KEYS and value.strip().lower() in _NON_FINITE:
            value = float(value)  # JSON has no inf: the checkpoint keeps it as text
        elif isinstance(value, float) and key in INTEGER_KEYS and value.is_integer():
            value = int(value)
        decoded[key] = value
    return decoded


def resume_arguments(
    run_dir: Path,
    scenario: str | None,
    rounds: int | None,
    clients: int | None,
    seed: int | None,
    sets: list[str],
    out: Path | None,
) -> dict[str, Any]:
    """``sandflower simulate --resume RUN_DIR [SCENARIO] [options]`` -> the run config.

    With a SCENARIO, it and its overrides must resolve to the folder's config; without one,
    ``--clients`` and ``--seed`` are compared with the folder's config directly, and
    ``--set`` (dotted scenario keys) needs the SCENARIO it applies to.

    Raises
    ------
    ResumeError, simulations.scenario.ScenarioError, ValueError
        With the message the command line prints.
    """
    requested: dict[str, Any] | None = None
    if scenario is not None:
        from simulations.cli_simulate import parse_sets
        from simulations.flower_app import resolve_run_config
        from simulations.scenario import find_scenario, load_scenario

        loaded = load_scenario(find_scenario(scenario)).with_overrides(
            clients=clients, seed=seed, sets=parse_sets(sets)
        )
        requested = resolve_run_config(loaded.to_run_config())
    elif sets:
        raise ResumeError("--set with --resume needs the SCENARIO it applies to")
    elif clients is not None or seed is not None:
        requested = dict(saved_run_config(run_dir)[0])
        if clients is not None:
            requested["num-partitions"] = clients
        if seed is not None:
            requested["seed"] = seed
    return resume_run_config(run_dir, requested=requested, rounds=rounds, out_dir=out)
