"""`sandflower bench engines`: the local engine against Flower's Ray engine."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Benchmarks that run whole simulations.", no_args_is_help=True)


@app.command()
def engines(
    json_path: Path = typer.Option(None, "--json", help="Also write the figures to this file."),
    quick: bool = typer.Option(
        False, "--quick", help="3 rounds and 100 clients (a smoke test, rough figures)."
    ),
) -> None:
    """The default scenario (30 rounds) and synthetic-1-1-fedavg with 1000 clients at full
    participation (3 rounds), on the local and the Ray engine, each run in its own process."""
    from simulations.bench_engines import RUN_KEYS, plan, ratios, run_all

    console = Console()
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
                str(run[key])[:12] if key == "final_model_sha256" else str(run[key])
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
        console.print(f"figures written to {json_path}")
