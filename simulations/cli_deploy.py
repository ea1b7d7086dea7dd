"""`sandflower deploy`: run the same apps on real devices (SuperLink + SuperNodes over TLS)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from simulations.cli_output import EXIT_FAILED, fail, literal, print_error, stdout_console

app = typer.Typer(
    help="Deploy to edge devices: a SuperLink on the coordinator, a SuperNode per device.",
    no_args_is_help=True,
)


@app.command("init")
def init(
    directory: Annotated[
        Path, typer.Argument(help="The deployment folder to create (new or empty).")
    ],
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="How many SuperNodes (devices).")],
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A name or IP the SuperLink is reached by (repeatable; the first is the one "
            "dialled). Default: 127.0.0.1, localhost, ::1.",
        ),
    ] = None,
    superlink_port: Annotated[
        int, typer.Option("--superlink-port", help="The SuperLink's HTTPS port.")
    ] = 9092,
    supernode_port: Annotated[
        int,
        typer.Option(
            "--supernode-port", help="Runtime-API port of SuperNode 0; SuperNode K uses this + K."
        ),
    ] = 9100,
    app_dir: Annotated[
        Path | None,
        typer.Option("--app", help="The Flower App `flwr run` submits (default: this source)."),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            help="Also write data/node-K.npz: partition K of this scenario's data set "
            "(a file or a bundled name), to try the deployment with bundled data.",
        ),
    ] = None,
) -> None:
    """Write certificates, node keys, the Flower connection and COMMANDS.txt."""
    from simulations.deploy.certs import DEFAULT_HOSTS, CertificateError
    from simulations.deploy.layout import DeploymentError, DeploymentPlan, write_deployment

    console = stdout_console()
    run_config = _scenario_run_config(scenario, nodes) if scenario else None
    try:
        plan = DeploymentPlan(
            num_nodes=nodes,
            hosts=tuple(hosts or ()) or DEFAULT_HOSTS,
            superlink_port=superlink_port,
            supernode_ports=tuple(supernode_port + node for node in range(nodes)),
            # without a source folder, COMMANDS.txt says `flwr run .` (run it in one)
            app_dir=app_dir.resolve() if app_dir else (source_app_dir() or Path(".")),
        )
        layout = write_deployment(directory, plan)
    except (DeploymentError, CertificateError, OSError) as error:
        fail(error)
    if run_config is not None:
        from simulations.deploy.local import write_node_data_files

        paths = write_node_data_files(run_config, layout, nodes)
        console.print(
            f"wrote {len(paths)} data files of {run_config['scenario']} to {layout.data_dir}",
            markup=False,
        )
    console.print(
        f"wrote a deployment for {nodes} SuperNodes to {layout.root}\n"
        f"  SuperLink address {plan.superlink_address} "
        f"(certificate for {', '.join(plan.certificate_hosts)})\n"
        f"  commands, in order: {layout.commands}",
        markup=False,
    )


@app.command("local")
def local(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="A scenario TOML file, or the name of a bundled scenario (`sandflower "
            "scenario list` lists them). Default: digits-mlp-dirichlet.",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes", min=1, help="How many SuperNodes (default 3; --resume: as before)."
        ),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="Override the number of rounds.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder (default: runs/<scenario>-deploy-<timestamp>/)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the seed.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override any scenario key: --set federation.fraction_train=1.0 (repeatable).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the run to finish.")
    ] = 900.0,
    app: Annotated[
        Path | None,
        typer.Option("--app", help="The Flower App to run (default: this sandflower source)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this run folder from its latest checkpoint (--rounds N extends it).",
        ),
    ] = None,
    device_venv: Annotated[
        Path | None,
        typer.Option(
            "--device-venv",
            help="The device runtime's virtualenv the SuperNodes run from, built there with "
            "pip on first use (default: $SANDFLOWER_CACHE_DIR/device-venv, else "
            "~/.cache/sandflower/device-venv).",
        ),
    ] = None,
    supernodes_here: Annotated[
        bool,
        typer.Option(
            "--supernodes-here",
            help="Run the SuperNodes from this environment instead of a device runtime venv.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write into the folder given by --out even if it holds a run or other files.",
        ),
    ] = False,
) -> None:
    """Run a scenario through a real SuperLink and SuperNodes on this machine (TLS, auth).

    The SuperNodes run COMMANDS.txt's device commands from a virtualenv that holds only the
    device runtime (flwr, wasmtime, numpy): the app bundle brings the ClientApp and kernel.
    """
    from simulations.roles import RoleNotInstalled, require_role

    try:  # the node data files are partitions of the scenario; the ServerApp runs here
        require_role("simulation", "sandflower deploy local")
    except RoleNotInstalled as error:
        fail(error)
    from simulations.cli_simulate import parse_sets
    from simulations.deploy.device import DeviceRuntimeError, default_device_venv
    from simulations.deploy.layout import DeploymentError
    from simulations.deploy.local import LocalDeploymentError, Timeouts, run_local_deployment
    from simulations.deploy.processes import ProcessError
    from simulations.run_folder import RunFolderError, check_run_folder
    from simulations.scenario import (
        ScenarioError,
        default_scenario_path,
        find_scenario,
        load_scenario,
    )

    console = stdout_console()
    try:
        if resume is not None:
            from simulations.resume import resume_arguments

            run_config = resume_arguments(resume, scenario, rounds, nodes, seed, sets or [], out)
            nodes = int(run_config["num-partitions"])
        else:
            nodes = nodes or 3
            path = find_scenario(scenario) if scenario else default_scenario_path()
            overrides = parse_sets(sets or [])
            loaded = load_scenario(path).with_overrides(
                rounds=rounds, clients=nodes, seed=seed, sets=overrides
            )
            run_config = loaded.to_run_config()
    except (ScenarioError, ValueError, OSError) as error:
        fail(error)
    app_dir = app or source_app_dir()
    if app_dir is None:
        fail(
            "no Flower App to run: this sandflower is not a source folder; "
            "pass --app DIR (the sandflower source folder)"
        )
    name = str(run_config["scenario"])
    out_dir = out or Path("runs") / f"{name}-deploy-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume is not None:
        out_dir = Path(str(run_config["out-dir"]))
    resuming_in_place = resume is not None and Path(out_dir).resolve() == resume.resolve()
    try:  # before any process starts: a run must not overwrite another run or the user's files
        check_run_folder(Path(out_dir), force=force, resuming=resuming_in_place)
    except RunFolderError as error:
        fail(error)
    if resume is not None:
        console.print(f"resuming [bold]{literal(resume)}[/] from its latest checkpoint")
    console.print(
        f"[bold]{literal(name)}[/]: {nodes} SuperNodes on loopback (TLS, node authentication), "
        f"{run_config['num-rounds']} rounds"
    )
    try:
        result = run_local_deployment(
            run_config,
            nodes,
            out_dir,
            app_dir,
            timeouts=Timeouts(run=timeout),
            on_status=lambda text: console.print(f"  {text}", markup=False),
            device_venv=None if supernodes_here else (device_venv or default_device_venv()),
        )
    except (DeploymentError, LocalDeploymentError, ProcessError, DeviceRuntimeError) as error:
        print_error(
            f"{error}\nprocess logs: {Path(out_dir) / 'logs'}", label="the deployment failed"
        )
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        print_error("every process was stopped", label="interrupted", style="yellow")
        raise typer.Exit(130) from None
    _print_result(console, result)


def _scenario_run_config(scenario: str, nodes: int) -> dict:
    from simulations.scenario import ScenarioError, find_scenario, load_scenario

    try:
        return load_scenario(find_scenario(scenario)).with_overrides(clients=nodes).to_run_config()
    except (ScenarioError, ValueError, OSError) as error:
        fail(error)


def source_app_dir() -> Path | None:
    """Return the sandflower source folder (the Flower App) this code runs from, if it is one.

    A source checkout or an editable install has pyproject.toml next to the packages; a
    regular install (site-packages) has none.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _print_result(console: Console, result) -> None:
    report_path = result.out_dir / "report.json"
    console.print(
        f"run {result.run_id}: {result.status}; run folder {result.out_dir}", markup=False
    )
    if report_path.is_file():
        from coordinator.reports.report_json import load_report
        from simulations.summary import print_summary

        print_summary(load_report(result.out_dir), console, result.out_dir)
    else:
        print_error(
            f"no report.json in {result.out_dir}; see {result.log_dir}",
            label="warning",
            style="yellow",
        )
