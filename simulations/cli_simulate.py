"""`sandflower simulate`: run a scenario on the local engine (default) or Flower's Ray engine."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def simulate(
    scenario: str = typer.Argument(
        None,
        help="A scenario TOML file, or the name of a bundled scenario (`sandflower scenario "
        "list` lists them). Default: digits-mlp-dirichlet.",
        show_default=False,
    ),
    rounds: int = typer.Option(None, "--rounds", help="Override the number of rounds."),
    clients: int = typer.Option(None, "--clients", help="Override the number of clients."),
    seed: int = typer.Option(None, "--seed", help="Override the seed."),
    sets: list[str] = typer.Option(
        [], "--set", help="Override any scenario key: --set training.lr=0.05 (repeatable)."
    ),
    out: Path = typer.Option(
        None, "--out", help="Run folder (default: runs/<scenario>-<timestamp>/)."
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local: worker processes on this machine; ray: Flower's Ray engine.",
    ),
    workers: int = typer.Option(
        None, "--workers", help="Local engine: worker processes (default: one per core)."
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray engine: join an existing cluster (the address `ray start --head` printed).",
    ),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue a stopped (or finished) run folder from its latest checkpoint; "
        "--rounds N extends it.",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Write into the folder given by --out even if it holds a run or other files.",
    ),
) -> None:
    """Train a scenario across simulated clients, each in its own Wasm sandbox."""
    from simulations.cli_output import (
        EXIT_FAILED,
        fail,
        literal,
        print_error,
        stderr_console,
        stdout_console,
    )
    from simulations.roles import RoleNotInstalled, require_role

    try:
        require_role("simulation", "sandflower simulate")
    except RoleNotInstalled as error:
        fail(error)
    from simulations.engine.stopping import EXIT_INTERRUPTED, stop_on_signals
    from simulations.run_folder import RunFolderError, check_run_folder
    from simulations.scenario import ScenarioError, default_scenario_path, find_scenario
    from simulations.simulate import ENGINES, SimulationError, simulate_on_engine
    from simulations.summary import print_summary

    console = stdout_console()
    try:
        if resume is not None:
            from simulations.resume import resume_arguments

            run_config = resume_arguments(resume, scenario, rounds, clients, seed, sets, out)
        else:
            path = find_scenario(scenario) if scenario else default_scenario_path()
            loaded = _load(path)
            overrides = parse_sets(sets)
            loaded = loaded.with_overrides(
                rounds=rounds, clients=clients, seed=seed, sets=overrides
            )
            run_config = loaded.to_run_config()
        if engine not in ENGINES:
            raise ValueError(f"--engine: expected one of {', '.join(ENGINES)}, given {engine!r}")
        if workers is not None and workers < 1:
            raise ValueError(f"--workers: expected an int >= 1, given {workers}")
        if ray_address and engine != "ray":
            raise ValueError("--ray-address: only with --engine ray")
    except (ScenarioError, ValueError, OSError) as error:
        fail(error)

    name = str(run_config["scenario"])
    out_dir = out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume is not None:
        out_dir = Path(str(run_config["out-dir"]))
    resuming_in_place = resume is not None and out_dir.resolve() == resume.resolve()
    try:
        check_run_folder(out_dir, force=force, resuming=resuming_in_place)
    except RunFolderError as error:
        fail(error)
    num_rounds = int(run_config["num-rounds"])
    if resume is not None:
        console.print(f"resuming [bold]{literal(resume)}[/] from its latest checkpoint")
    console.print(
        f"[bold]{literal(name)}[/]: {run_config['num-partitions']} clients, {num_rounds} rounds, "
        + literal(
            f"strategy {run_config['strategy']}, model {run_config['model']}, "
            f"seed {run_config['seed']}, engine {engine}"
        )
    )
    # Flower logs every round at INFO; the progress bar says the same in one line. (Its
    # console handler, not the logger: importing flwr resets the logger's level.)
    from flwr.common.logger import update_console_handler

    update_console_handler(level=logging.WARNING)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("round", total=num_rounds, status="starting the engine")
    # Clients done within the current round (local engine): at 1000+ clients a round is
    # long enough to need its own bar.
    clients_task = progress.add_task("  clients", total=None, visible=False, status="")

    def on_progress(received: int, sent: int) -> None:
        progress.update(
            clients_task,
            completed=received,
            total=sent,
            visible=sent > 0,
            status="clients replied",
        )

    def on_round(round_report) -> None:
        progress.update(
            task,
            completed=round_report.round,
            status=(
                f"central acc {round_report.central_accuracy:.3f}  "
                f"ok {round_report.clients_succeeded} failed {round_report.clients_failed} "
                f"rejected {round_report.clients_rejected}"
            ),
        )

    try:
        with stop_on_signals(), progress:
            report = simulate_on_engine(
                run_config,
                out_dir,
                engine=engine,
                workers=workers,
                on_round=on_round,
                on_progress=on_progress if engine == "local" else None,
                ray_address=ray_address,
            )
    except SimulationError as error:
        print_error(error, label="the run failed")
        stderr_console().print(
            f"partial report (finished rounds): {out_dir / 'report.html'}", markup=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        print_error("every worker stopped", label="interrupted", style="magenta")
        stderr_console().print(
            f"partial report (finished rounds): {out_dir / 'report.html'}", markup=False
        )
        # The report is written and every worker is gone: skip the interpreter's teardown of
        # the loaded libraries (seconds on a busy machine), the user asked to stop now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    print_summary(report, console, out_dir)


def _load(path: Path):
    from simulations.scenario import load_scenario

    return load_scenario(path)


def parse_sets(sets: list[str]) -> dict[str, str]:
    """Return the ``--set KEY=VALUE`` items as a dict; raise ValueError on an item without ``=``."""
    overrides: dict[str, str] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.05")
        overrides[key.strip()] = value.strip()
    return overrides
