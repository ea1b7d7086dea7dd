"""The `sandflower` command line: one root, one module per command group."""

from __future__ import annotations

import typer

from simulations import (
    cli_bench,
    cli_deploy,
    cli_kernels,
    cli_report,
    cli_scenario,
    cli_simulate,
)

app = typer.Typer(
    name="sandflower",
    help="Federated learning with Flower; local training runs in WebAssembly sandboxes.",
    no_args_is_help=True,
    # `sandflower --install-completion` / `--show-completion` for bash, zsh, fish, PowerShell.
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sandflower {_version()}")
        raise typer.Exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sandflower")
    except PackageNotFoundError:  # a source tree that was not pip-installed
        return "unknown (not installed)"


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False,
        "--version",
        help="Print the installed Sandflower version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Federated learning with Flower; local training runs in WebAssembly sandboxes."""


app.add_typer(cli_kernels.app, name="kernels")
app.command("simulate")(cli_simulate.simulate)
app.command("report")(cli_report.report)
app.add_typer(cli_deploy.app, name="deploy")
app.add_typer(cli_bench.app, name="bench")
app.add_typer(cli_scenario.app, name="scenario")


def main() -> None:
    """Run the ``sandflower`` command line (the console script's entry point)."""
    app()


if __name__ == "__main__":
    main()
