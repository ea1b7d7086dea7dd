"""`sandflower bench`: experiments that run whole federations (the kernels' own benchmark is
`sandflower kernels bench`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Experiments over whole federations.", no_args_is_help=True)


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
        "inprocess", "--engine", help="inprocess (one process, no engine start) or ray."
    ),
) -> None:
    """FedProx's heterogeneity grid: FedAvg (drop) vs FedProx (partial) on Synthetic data."""
    from simulations import stragglers as grid

    unknown = [d for d in dataset if d not in grid.DATASETS]
    if unknown or any(s not in grid.STRAGGLER_SHARES for s in share):
        typer.echo(
            f"error: --dataset takes {', '.join(grid.DATASETS)}; --stragglers takes "
            f"{', '.join(map(str, grid.STRAGGLER_SHARES))}",
            err=True,
        )
        raise typer.Exit(2)
    if engine not in ("inprocess", "ray"):
        typer.echo(f"error: --engine: expected inprocess or ray, given {engine!r}", err=True)
        raise typer.Exit(2)
    if engine == "ray":
        from simulations.simulate import run_federation
    else:
        from simulations.inprocess import run_federation

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
        run_federation=run_federation,
        on_run=show,
    )
    typer.echo(f"table: {out / 'stragglers.md'}; plot: {out / 'stragglers.svg'}")
