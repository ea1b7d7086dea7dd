"""The `sandflower` command line: one root, one module per command group."""

from __future__ import annotations

import typer

from simulations import cli_bench, cli_deploy, cli_kernels, cli_report, cli_simulate

app = typer.Typer(
    name="sandflower",
    help="Federated learning with Flower; local training runs in WebAssembly sandboxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(cli_kernels.app, name="kernels")
app.command("simulate")(cli_simulate.simulate)
app.command("report")(cli_report.report)
app.add_typer(cli_deploy.app, name="deploy")
app.add_typer(cli_bench.app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
