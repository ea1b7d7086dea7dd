"""`sandflower bench`: benchmarks and experiments that run whole federations.

`engines` (the local engine against Flower's Ray engine) and `stragglers` (FedProx's
heterogeneity grid); the kernels' own benchmark is `sandflower kernels bench`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from simulations.cli_output import fail, literal, stdout_console

app = typer.Typer(help="Benchmarks that run whole simulations.", no_args_is_help=True)


@app.command()
def engines(
    json_path: Path = typer.Option(None, "--json", help="Also write the figures to this file."),
    quick: bool = typer.Option(
        False, "--quick", help="3 rounds and 100 clients (a smoke test, rough figures)."
    ),
) -> None:
    """Benchmark the local engine against Flower's Ray engine, each run in its own process.

    The runs: the default scenario (30 rounds) and synthetic-1-1-fedavg with 1000 clients at
    full participation (3 rounds).
    """
    from simulations.bench_engines import RUN_KEYS, plan, ratios, run_all

    console = stdout_console()
    with console.status("benchmarking") as status:
        figures = run_all(
            plan(quick),
            progress=lambda run: status.update(
                f"benchmarking: {run.scenario} {run.clients or ''} on {run.engine}"
            ),
        )
    table = Table(title="engines (each run in its own process; figures in seconds and MB)")
    for key in RUN_KEYS + ("total_s", "peak_pss_mb"):
        table.add_column(key, overflow="fold")
    for run in figures["runs"]:
        table.add_row(
            *(
                literal(str(run[key])[:12] if key == "final_model_sha256" else run[key])
                for key in RUN_KEYS + ("total_s", "peak_pss_mb")
            )
        )
    console.print(table)
    targets = Table(title="targets (ratios from this invocation)")
    for column in ("figure", "measured", "target", "met"):
        targets.add_column(column)
    for name, value, target, met in ratios(figures):
        targets.add_row(name, str(value), target, {True: "yes", False: "NO", None: "-"}[met])
    console.print(targets)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"figures written to {literal(json_path)}")


@app.command()
def stragglers(
    out: Path = typer.Option(Path("runs/stragglers"), "--out", help="Folder for the runs."),
    rounds: int = typer.Option(
        0, "--rounds", min=0, help="Rounds per run (0: the scenarios' 200, the paper's)."
    ),
    dataset: list[str] = typer.Option(
        [], "--dataset", help="Only these data sets (0-0, 0.5-0.5, 1-1); repeatable."
    ),
    share: list[int] = typer.Option(
        [], "--stragglers", help="Only these straggler shares in % (0, 50, 90); repeatable."
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (worker processes), ray, or inprocess (one process, no workers).",
    ),
) -> None:
    """FedProx's heterogeneity grid: FedAvg (drop) vs FedProx (partial) on Synthetic data."""
    from simulations import stragglers as grid

    unknown = [d for d in dataset if d not in grid.DATASETS]
    if unknown or any(s not in grid.STRAGGLER_SHARES for s in share):
        fail(
            f"--dataset takes {', '.join(grid.DATASETS)}; --stragglers takes "
            f"{', '.join(map(str, grid.STRAGGLER_SHARES))}"
        )
    if engine not in ("local", "ray", "inprocess"):
        fail(f"--engine: expected local, ray or inprocess, given {engine!r}")
    from functools import partial

    from simulations.inprocess import simulate_in_process
    from simulations.simulate import simulate_on_engine

    simulate: Callable[..., Any] = (
        simulate_in_process if engine == "inprocess" else partial(simulate_on_engine, engine=engine)
    )

    def show(result: grid.GridResult) -> None:
        typer.echo(
            f"{grid.scenario_name(result.dataset, result.share, result.algorithm)}: "
            f"accuracy {result.final_accuracy:.4f} after {result.rounds} rounds, "
            f"{result.mean_stragglers:.1f} stragglers per round, "
            f"{result.sim_seconds:.1f} simulated s"
        )

    grid.run_grid(
        out,
        rounds=rounds or None,
        datasets=dataset or grid.DATASETS,
        shares=share or grid.STRAGGLER_SHARES,
        simulate=simulate,
        on_run=show,
    )
    typer.echo(f"table: {out / 'stragglers.md'}; plot: {out / 'stragglers.svg'}")
