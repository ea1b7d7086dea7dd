"""`sandflower simulate`: run a scenario on Flower's simulation engine."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def simulate(
    scenario: str = typer.Argument(
        None,
        help="Scenario TOML file, or the name of a bundled one (default: digits-mlp-dirichlet).",
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
) -> None:
    """Train a scenario across simulated clients, each in its own Wasm sandbox."""
    from rich.markup import escape

    from simulations.roles import RoleNotInstalled, require_role

    try:
        require_role("simulation", "sandflower simulate")
    except RoleNotInstalled as error:
        Console().print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(2) from None
    from simulations.scenario import ScenarioError, default_scenario_path, find_scenario
    from simulations.simulate import SimulationError, run_federation
    from simulations.summary import print_summary

    console = Console()
    if not console.is_terminal:
        # Piped into a log or a file, rich assumes 80 columns and elides the figures.
        console = Console(width=120)
    try:
        path = find_scenario(scenario) if scenario else default_scenario_path()
        loaded = _load(path)
        overrides = parse_sets(sets)
        loaded = loaded.with_overrides(rounds=rounds, clients=clients, seed=seed, sets=overrides)
    except (ScenarioError, ValueError, OSError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None

    run_config = loaded.to_run_config()
    name = str(run_config["scenario"])
    out_dir = out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    num_rounds = int(run_config["num-rounds"])
    console.print(
        f"[bold]{name}[/]: {run_config['num-partitions']} clients, {num_rounds} rounds, "
        f"strategy {run_config['strategy']}, model {run_config['model']}, seed {run_config['seed']}"
    )
    # Flower logs every round at INFO; the progress bar says the same in one line. (Its
    # console handler, not the logger: importing flwr resets the logger's level.)
    from flwr.common.logger import update_console_handler

    update_console_handler(level=logging.WARNING)
    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("rounds", total=num_rounds, status="starting the engine")

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
        with progress:
            report = run_federation(run_config, out_dir, on_round=on_round)
    except SimulationError as error:
        console.print(f"[red]the run failed:[/] {error}")
        console.print(f"partial report (finished rounds): {out_dir / 'report.html'}")
        raise typer.Exit(1) from None
    print_summary(report, console, out_dir)


def _load(path: Path):
    from simulations.scenario import load_scenario

    return load_scenario(path)


def parse_sets(sets: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.05")
        overrides[key.strip()] = value.strip()
    return overrides
