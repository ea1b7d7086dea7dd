"""``sandflower deploy local``: the whole deployment path on this machine's loopback.

A SuperLink with TLS and SuperNode authentication, N SuperNodes each with its own key and
its own data file (partition K of the scenario, written as ``node-K.npz``), the node keys
registered, the scenario submitted with ``flwr run``, the run followed until it finishes,
and every process stopped by its pid afterwards: on success, on failure and on Ctrl-C.

The key material and FLWR_HOME live in a private temporary folder that is deleted at the
end; the run folder (``out_dir``) receives the report (written by the ServerApp to the run
config's ``out-dir``), the run's log and one log file per process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from simulations.deploy import layout as deploy_layout
from simulations.deploy.device import build_device_venv
from simulations.deploy.layout import DeploymentError, DeploymentLayout, DeploymentPlan
from simulations.deploy.processes import (
    ManagedProcess,
    ProcessError,
    ProcessSupervisor,
    find_free_port,
    flower_environment,
    port_accepts,
    wait_until,
)

LOOPBACK = "127.0.0.1"
CLI_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 60.0
# Each poll runs the flwr CLI (~1 s of CPU on 2 cores): poll the SuperLink gently.
CLI_POLL_INTERVAL_S = 1.0


class LocalDeploymentError(RuntimeError):
    """The local deployment did not complete (the message says why and where the logs are)."""


@dataclass(frozen=True)
class Timeouts:
    """How long to wait for each stage (seconds)."""

    startup: float = STARTUP_TIMEOUT_S  # SuperLink listening, SuperNodes online
    run: float = 900.0  # the submitted run finished


@dataclass
class Federation:
    """A running SuperLink and its SuperNodes (what :func:`start_federation` returns)."""

    layout: DeploymentLayout
    plan: DeploymentPlan
    env: dict[str, str]
    supervisor: ProcessSupervisor
    superlink: ManagedProcess
    supernodes: list[ManagedProcess] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)

    def flwr(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this federation's private FLWR_HOME."""
        return run_flwr(self.env, args, timeout_s)


@dataclass(frozen=True)
class LocalRunResult:
    """What a finished local deployment run left behind."""

    run_id: int
    status: str  # Flower's status text, e.g. "finished:completed"
    out_dir: Path
    log_dir: Path
    pids: frozenset[int]  # every process started, and their descendants seen while running


# -- bringing a federation up ----------------------------------------------------------------
def loopback_plan(num_nodes: int, app_dir: Path) -> DeploymentPlan:
    """Return a plan on 127.0.0.1 with free ports (bound to port 0 by the OS just before)."""
    superlink_port = find_free_port(LOOPBACK)
    supernode_ports: list[int] = []
    while len(supernode_ports) < num_nodes:
        port = find_free_port(LOOPBACK)
        if port != superlink_port and port not in supernode_ports:
            supernode_ports.append(port)
    return DeploymentPlan(
        num_nodes=num_nodes,
        hosts=(LOOPBACK, "localhost", "::1"),
        superlink_port=superlink_port,
        supernode_ports=tuple(supernode_ports),
        app_dir=app_dir,
    )


def start_superlink(
    layout: DeploymentLayout,
    plan: DeploymentPlan,
    supervisor: ProcessSupervisor,
    log_dir: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> ManagedProcess:
    """Start ``flower-superlink`` (TLS, node auth) and wait until its port accepts."""
    superlink = supervisor.start(
        "superlink",
        _resolve(deploy_layout.superlink_argv(layout, plan), supervisor.env),
        log_dir / "superlink.log",
        cwd=layout.root,
    )
    wait_until(
        lambda: port_accepts(LOOPBACK, plan.superlink_port),
        f"the SuperLink to listen on {plan.superlink_address}",
        timeout_s,
        [superlink],
    )
    return superlink


def register_node(env: Mapping[str, str], layout: DeploymentLayout, node: int) -> int:
    """``flwr supernode register`` node K's public key; return the node id it got."""
    argv = [*deploy_layout.register_argv(layout, node), "--format", "json"]
    result = run_flwr(env, argv[1:], CLI_TIMEOUT_S)
    payload = _json_payload(result, "flwr supernode register")
    if not payload.get("success"):
        raise LocalDeploymentError(
            f"registering {layout.node_public_key(node)} failed: "
            f"{payload.get('error-message', result.stdout)}"
        )
    return int(payload["node-id"])


def start_supernode(
    layout: DeploymentLayout,
    plan: DeploymentPlan,
    supervisor: ProcessSupervisor,
    node: int,
    log_dir: Path,
    node_config: Mapping[str, str] | None = None,
    device_bin: Path | None = None,
) -> ManagedProcess:
    """Start ``flower-supernode`` K (does not wait: see :func:`wait_nodes_online`).

    Like a device, each SuperNode has its own FLWR_HOME, where it installs the app bundle.
    With ``device_bin`` (a device runtime's virtualenv, simulations/deploy/device.py) it runs
    COMMANDS.txt's device command from there, as on a device: that venv's executables first
    on PATH (the SuperNode starts ``flower-superexec`` by name) and no PYTHONPATH, so the
    ClientApp can import nothing of Sandflower but what the app bundle brings.
    """
    argv = deploy_layout.supernode_argv(layout, plan, node, dict(node_config or {}))
    flwr_home = layout.node_flwr_home(node)
    flwr_home.mkdir(parents=True, exist_ok=True)
    overrides = {"FLWR_HOME": str(flwr_home)}
    if device_bin is not None:
        overrides["PATH"] = os.pathsep.join([str(device_bin), supervisor.env.get("PATH", "")])
        overrides["PYTHONPATH"] = ""
    return supervisor.start(
        f"supernode-{node}",
        _resolve(argv, {**supervisor.env, **overrides}),
        log_dir / f"supernode-{node}.log",
        cwd=flwr_home,
        env_overrides=overrides,
    )


def online_node_ids(env: Mapping[str, str]) -> set[int]:
    """Node ids the SuperLink reports online (``flwr supernode ls``)."""
    result = run_flwr(env, ["supernode", "ls", deploy_layout.CONNECTION_NAME, "--format", "json"])
    payload = _json_payload(result, "flwr supernode ls")
    return {int(node["node-id"]) for node in payload.get("nodes", []) if node["status"] == "online"}


def wait_nodes_online(
    federation: Federation, node_ids: list[int], timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Wait until every one of ``node_ids`` is online; fail early if a process exits."""
    wanted = set(node_ids)
    wait_until(
        lambda: wanted <= online_node_ids(federation.env),
        f"SuperNodes {sorted(wanted)} to come online",
        timeout_s,
        [federation.superlink, *federation.supernodes],
        interval_s=CLI_POLL_INTERVAL_S,
    )


def start_federation(
    layout: DeploymentLayout,
    plan: DeploymentPlan,
    supervisor: ProcessSupervisor,
    log_dir: Path,
    node_configs: Mapping[int, Mapping[str, str]] | None = None,
    timeouts: Timeouts = Timeouts(),
    device_bin: Path | None = None,
) -> Federation:
    """SuperLink up, every node key registered, every SuperNode up and online.

    ``device_bin``: run the SuperNodes from that device-runtime venv (see start_supernode).
    """
    superlink = start_superlink(layout, plan, supervisor, log_dir, timeouts.startup)
    federation = Federation(layout, plan, dict(supervisor.env), supervisor, superlink)
    federation.node_ids = [register_node(federation.env, layout, n) for n in range(plan.num_nodes)]
    for node in range(plan.num_nodes):
        config = (node_configs or {}).get(node)
        federation.supernodes.append(
            start_supernode(layout, plan, supervisor, node, log_dir, config, device_bin)
        )
    wait_nodes_online(federation, federation.node_ids, timeouts.startup)
    return federation


# -- running the scenario --------------------------------------------------------------------
def write_node_data_files(
    run_config: Mapping[str, Any], layout: DeploymentLayout, num_nodes: int
) -> list[Path]:
    """Write partition K of the scenario's data set to ``node-K.npz`` (x, y), K < num_nodes.

    A device holds all its samples in one file; its client splits off the held-out part
    itself (the same ``test-fraction`` and seed), as on a real device.
    """
    from simulations.federated_data import load_client_data

    paths = []
    for node in range(num_nodes):
        data = load_client_data(dict(run_config), node)
        x = np.concatenate([data.x_train, data.x_test]).astype(np.float32, copy=False)
        y = np.concatenate([data.y_train, data.y_test]).astype(np.int32, copy=False)
        path = layout.node_data(node)
        np.savez(path, x=x, y=y)
        paths.append(path)
    return paths


def read_app_config(app_dir: Path) -> dict[str, Any]:
    """Return the Flower App's pyproject.toml, parsed."""
    pyproject = Path(app_dir) / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DeploymentError(f"{pyproject}: cannot read the Flower App config: {error}") from None


def check_run_config_keys(app_dir: Path, run_config: Mapping[str, Any]) -> None:
    """Flower refuses run-config overrides of keys the app does not declare: say which."""
    pyproject = Path(app_dir) / "pyproject.toml"
    declared = read_app_config(app_dir)
    app_config = declared.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    missing = sorted(set(run_config) - set(_flatten(app_config)))
    if missing:
        raise DeploymentError(
            f"{pyproject}: [tool.flwr.app.config] lacks the run-config keys {missing}; "
            "`flwr run --run-config` can only override keys the app declares"
        )


def check_sandflower_installed(
    env: Mapping[str, str], cwd: Path, distribution: str = "sandflower"
) -> None:
    """Check that the coordinator side has an installed sandflower, before starting.

    The SuperLink runs the ServerApp with this environment's packages (the coordinator role:
    ``pip install -e ".[coordinator]"``, or more). ``cwd`` must not hold a source tree.
    """
    probe = "import importlib.metadata as m, sys; print(m.distribution(sys.argv[1]).version)"
    result = subprocess.run(
        [sys.executable, "-c", probe, distribution],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise DeploymentError(
            f"{distribution} is not installed in {sys.prefix}: the SuperLink runs the ServerApp "
            "with this environment's packages; install the coordinator role first, e.g. "
            '`pip install -e ".[coordinator]"` in the source folder'
        )


def submit_run(federation: Federation, run_config: Mapping[str, Any], config_path: Path) -> int:
    """``flwr run APP sandflower --run-config FILE``; return the run id."""
    config_path.write_text(tomli_w.dumps(dict(run_config)), encoding="utf-8")
    result = federation.flwr(
        "run",
        str(federation.plan.app_dir),
        deploy_layout.CONNECTION_NAME,
        "--run-config",
        str(config_path),
        "--format",
        "json",
        # builds and uploads the app bundle: ~10 s of CPU, minutes on a loaded machine
        timeout_s=max(CLI_TIMEOUT_S, 300.0),
    )
    payload = _json_payload(result, "flwr run")
    if not payload.get("success") or payload.get("run-id") is None:
        raise LocalDeploymentError(
            f"flwr run was refused: {payload.get('error-message', result.stdout)}"
        )
    return int(payload["run-id"])


def run_status(federation: Federation, run_id: int) -> str:
    """Flower's status text of ``run_id`` (e.g. ``running``, ``finished:completed``)."""
    result = federation.flwr(
        "ls", deploy_layout.CONNECTION_NAME, "--run-id", str(run_id), "--format", "json"
    )
    payload = _json_payload(result, "flwr ls")
    runs = payload.get("runs", [])
    if not runs:
        raise LocalDeploymentError(f"flwr ls does not know run {run_id}: {payload}")
    return str(runs[0]["status"])


def wait_run_finished(federation: Federation, run_id: int, timeout_s: float) -> str:
    """Poll until the run is finished; return its final status text."""
    status = ""

    def finished() -> bool:
        nonlocal status
        status = run_status(federation, run_id)
        return status.startswith("finished")

    wait_until(
        finished,
        f"run {run_id} to finish",
        timeout_s,
        [federation.superlink],
        interval_s=CLI_POLL_INTERVAL_S,
    )
    return status


def run_local_deployment(
    run_config: Mapping[str, Any],
    num_nodes: int,
    out_dir: Path,
    app_dir: Path,
    *,
    node_configs: Mapping[int, Mapping[str, str]] | None = None,
    timeouts: Timeouts = Timeouts(),
    on_status: Callable[[str], None] | None = None,
    device_venv: Path | None = None,
) -> LocalRunResult:
    """Run ``run_config`` through a SuperLink and ``num_nodes`` SuperNodes on loopback.

    Parameters
    ----------
    run_config : the scenario's flat run config (``Scenario.to_run_config()``); its
        ``num-partitions`` must equal ``num_nodes``.
    num_nodes : how many SuperNodes (node K holds partition K).
    out_dir : the run folder: report files, ``logs/`` (one log per process, the run's log).
    app_dir : the Flower App submitted with ``flwr run`` (the sandflower source folder).
    node_configs : extra node config per node, on top of ``data-path`` (tests use it to
        give one node a missing data file or a tampered kernel).
    on_status : called with a short progress text at each stage.
    device_venv : a virtualenv with only the device runtime (built there first if it is not,
        :func:`simulations.deploy.device.build_device_venv`): the SuperNodes run from it, as
        COMMANDS.txt tells a device to. None: from this environment.

    Raises
    ------
    LocalDeploymentError, ProcessError, DeploymentError
        With the stage that failed and where its log is. Every process is stopped first.
    """
    if int(run_config.get("num-partitions", num_nodes)) != num_nodes:
        raise DeploymentError(
            f"num-partitions {run_config['num-partitions']} != nodes {num_nodes}: "
            "node K holds partition K, so they must match"
        )
    app_dir = Path(app_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"
    config = {**run_config, "out-dir": str(out_dir)}
    check_run_config_keys(app_dir, config)
    say = on_status or (lambda text: None)

    with tempfile.TemporaryDirectory(prefix="sandflower-deploy-") as private:
        plan = loopback_plan(num_nodes, app_dir)
        layout = deploy_layout.write_deployment(Path(private) / "deployment", plan)
        say(f"writing {num_nodes} node data files")
        write_node_data_files(config, layout, num_nodes)
        env = flower_environment(layout.flwr_home)
        if read_app_config(app_dir).get("project", {}).get("name") == "sandflower":
            check_sandflower_installed(env, layout.root)
        device_bin = None
        if device_venv is not None:
            say(f"device runtime: {device_venv}")
            device_bin = build_device_venv(Path(device_venv))
        with _stop_on_sigterm(), ProcessSupervisor(env) as supervisor:
            say("starting the SuperLink and SuperNodes")
            federation = start_federation(
                layout, plan, supervisor, log_dir, node_configs, timeouts, device_bin
            )
            say(f"{num_nodes} SuperNodes online; submitting the run")
            run_id = submit_run(federation, config, log_dir / "run-config.toml")
            say(f"run {run_id} submitted; waiting for it to finish")
            try:
                status = wait_run_finished(federation, run_id, timeouts.run)
            finally:  # the ServerApp's log, also when the wait failed or was interrupted
                seen_pids = supervisor.all_pids()
                _save_run_log(federation, run_id, log_dir / "run.log")
        say("stopped every process")
    pids = frozenset(seen_pids | supervisor.signalled_pids)
    if status != "finished:completed":
        raise LocalDeploymentError(
            f"run {run_id} ended with status {status!r}; see {log_dir / 'run.log'}"
        )
    return LocalRunResult(run_id, status, out_dir, log_dir, pids)


# -- helpers ---------------------------------------------------------------------------------
def run_flwr(
    env: Mapping[str, str], args: list[str] | tuple[str, ...], timeout_s: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run ``flwr ARGS`` with ``env``; raise LocalDeploymentError if it cannot run."""
    argv = _resolve(["flwr", *args], env)
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        command = " ".join(args)
        raise LocalDeploymentError(f"`flwr {command}` timed out after {timeout_s} s") from error


def _json_payload(result: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    # --format json prints one JSON object on stdout (possibly after other lines).
    text = result.stdout.strip()
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        pass
    raise LocalDeploymentError(
        f"{what} printed no JSON (exit code {result.returncode}): "
        f"{text[-2000:]!r} {result.stderr[-2000:]!r}"
    )


def _save_run_log(federation: Federation, run_id: int, path: Path) -> None:
    try:
        result = federation.flwr("log", str(run_id), deploy_layout.CONNECTION_NAME, "--show")
    except (LocalDeploymentError, ProcessError) as error:  # best effort: keep the first error
        path.write_text(f"could not fetch the log of run {run_id}: {error}\n", encoding="utf-8")
        return
    path.write_text(result.stdout + result.stderr, encoding="utf-8")


def _resolve(argv: list[str], env: Mapping[str, str]) -> list[str]:
    executable = shutil.which(argv[0], path=env.get("PATH"))
    if executable is None:
        raise ProcessError(f"{argv[0]!r} is not on PATH ({env.get('PATH')}); is flwr installed?")
    return [executable, *argv[1:]]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks stop our processes."""

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signal handling to the caller
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
