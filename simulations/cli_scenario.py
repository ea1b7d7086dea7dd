"""`sandflower scenario schema|list|show`: the scenario files, their schema and resolved config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(
    name="scenario",
    help="Scenario files: their JSON Schema, the bundled ones, a scenario's resolved config.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    # Plain text on stderr: the messages hold TOML table names in brackets, which rich
    # markup would swallow.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("schema")
def schema(
    out: Path = typer.Option(
        None, "--out", "-o", help="Write the schema to this file (default: stdout)."
    ),
) -> None:
    """Print the JSON Schema of a scenario file (for editor completion of .toml files)."""
    from simulations.scenario import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2, allow_nan=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@app.command("list")
def list_scenarios() -> None:
    """List the bundled scenarios, one per line: NAME  DESCRIPTION."""
    from simulations.scenario import describe_bundled

    described = describe_bundled()
    width = max(len(name) for name in described)
    for name, description in described.items():
        typer.echo(f"{name:<{width}}  {description}".rstrip())


@app.command("show")
def show(
    scenario: str = typer.Argument(
        ...,
        help="A bundled scenario's name (see `sandflower scenario list`) or a scenario file.",
        show_default=False,
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Override a key as `simulate` does: --set training.lr=0.05."
    ),
    flat: bool = typer.Option(
        False,
        "--flat",
        help="Print Flower's flat run config instead (what `flwr run --run-config` takes).",
    ),
) -> None:
    """Print a scenario's resolved config (every key, defaults filled in) as TOML."""
    import tomli_w

    from simulations.cli_simulate import parse_sets
    from simulations.scenario import ScenarioError, find_scenario, load_scenario

    try:
        loaded = load_scenario(find_scenario(scenario))
        if sets:
            loaded = loaded.with_overrides(sets=parse_sets(sets))
        if flat:
            text = tomli_w.dumps(loaded.to_run_config())
        else:
            text = tomli_w.dumps(loaded.to_dict())
    except (ScenarioError, ValueError) as error:
        _fail(str(error))
    sys.stdout.write(text)
