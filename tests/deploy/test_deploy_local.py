"""Real Flower processes on loopback: a SuperLink with TLS and node authentication.

These start `flower-superlink`, `flower-supernode` and the `flwr` CLI, so they are e2e.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.deploy import layout as deploy_layout
from simulations.deploy import local
from simulations.deploy.processes import (
    ProcessSupervisor,
    descendants,
    flower_environment,
    pid_running,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _wait_exit(process, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while process.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return process.popen.poll()


def test_registered_supernodes_join_over_tls_and_an_unregistered_one_is_refused(tmp_path):
    plan = local.loopback_plan(num_nodes=4, app_dir=REPO)
    layout = deploy_layout.write_deployment(tmp_path / "deployment", plan)
    log_dir = tmp_path / "logs"
    env = flower_environment(layout.flwr_home)
    with ProcessSupervisor(env) as supervisor:
        superlink = local.start_superlink(layout, plan, supervisor, log_dir)
        federation = local.Federation(layout, plan, env, supervisor, superlink)
        # nodes 0-2 are registered; node 3 has a key pair but nobody registered it
        federation.node_ids = [local.register_node(env, layout, node) for node in range(3)]
        federation.supernodes = [
            local.start_supernode(layout, plan, supervisor, node, log_dir) for node in range(3)
        ]
        local.wait_nodes_online(federation, federation.node_ids)
        intruder = local.start_supernode(layout, plan, supervisor, 3, log_dir)

        assert _wait_exit(intruder, 60) not in (None, 0)
        assert "Failed to activate SuperNode" in intruder.log_tail(50)
        assert local.online_node_ids(env) == set(federation.node_ids)
        assert len(set(federation.node_ids)) == 3
        # registering the same key twice is refused too
        with pytest.raises(local.LocalDeploymentError, match="already in use"):
            local.register_node(env, layout, 0)
        started = supervisor.all_pids()
        ours = (superlink.pid, *(node.pid for node in federation.supernodes))
        assert all(pid_running(pid) for pid in ours)
        assert len(started) > 4  # the SuperLink and SuperNodes each started flower-superexec
    assert not [pid for pid in started | supervisor.signalled_pids if pid_running(pid)]


def test_a_supernode_without_the_ca_cannot_connect(tmp_path):
    plan = local.loopback_plan(num_nodes=1, app_dir=REPO)
    layout = deploy_layout.write_deployment(tmp_path / "deployment", plan)
    other_ca = deploy_layout.write_deployment(
        tmp_path / "other", local.loopback_plan(num_nodes=1, app_dir=REPO)
    )
    env = flower_environment(layout.flwr_home)
    with ProcessSupervisor(env) as supervisor:
        local.start_superlink(layout, plan, supervisor, tmp_path / "logs")
        local.register_node(env, layout, 0)
        argv = deploy_layout.supernode_argv(layout, plan, 0)
        argv[argv.index("--root-certificates") + 1] = str(other_ca.ca_certificate)
        argv += ["--max-retries", "1"]
        stranger = supervisor.start(
            "stranger", local._resolve(argv, env), tmp_path / "logs" / "stranger.log"
        )
        assert _wait_exit(stranger, 60) not in (None, 0)
        assert "CERTIFICATE_VERIFY_FAILED" in stranger.log_tail(50)
        assert local.online_node_ids(env) == set()


# A minimal Flower App (written to a temporary folder): the ServerApp asks every node how
# many samples its data file holds and writes the answers to the run config's out-dir. It
# checks the deployment machinery (data files, flwr run, waiting, logs, clean-up) on its own.
ECHO_PYPROJECT = """
[project]
name = "echoapp"
version = "1.0.0"
description = "deploy test app"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "sandflower-tests"

[tool.flwr.app.components]
serverapp = "echo_app:serverapp"
clientapp = "echo_app:clientapp"

[tool.flwr.app.config]
{config}
"""

ECHO_APP = """
import json
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

serverapp = ServerApp()
clientapp = ClientApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    time.sleep(float(context.run_config.get("hold-seconds", 0)))
    expected = int(context.run_config["num-partitions"])
    deadline = time.monotonic() + 60
    while len(list(grid.get_node_ids())) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    messages = [
        Message(RecordDict(), dst_node_id=node_id, message_type="query")
        for node_id in grid.get_node_ids()
    ]
    replies = grid.send_and_receive(messages, timeout=60)
    answers = {
        str(reply.metadata.src_node_id): (
            reply.error.reason if reply.has_error() else reply.content["metrics"]["num-samples"]
        )
        for reply in replies
    }
    out_dir = Path(context.run_config["out-dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "echo.json").write_text(json.dumps(answers))


@clientapp.query()
def query(message: Message, context: Context) -> Message:
    with np.load(str(context.node_config["data-path"])) as data:
        num_samples = int(len(data["y"]))
        assert data["x"].shape[0] == num_samples
    return Message(RecordDict({"metrics": MetricRecord({"num-samples": num_samples})}),
                   reply_to=message)
"""


def _echo_app(tmp_path: Path, run_config: dict) -> Path:
    import tomli_w

    app_dir = tmp_path / "echo-app"
    app_dir.mkdir()
    config = tomli_w.dumps(run_config)
    (app_dir / "pyproject.toml").write_text(ECHO_PYPROJECT.format(config=config))
    (app_dir / "echo_app.py").write_text(ECHO_APP)
    return app_dir


def test_deploy_local_runs_an_app_through_the_supernodes_and_stops_everything(tmp_path):
    import json

    from simulations.federated_data import DataConfig, load_client_data

    data_config = DataConfig(dataset="digits", partitioning="iid", num_partitions=3, seed=7)
    run_config = {**data_config.to_mapping(), "out-dir": ""}
    app_dir = _echo_app(tmp_path, run_config)
    out_dir = tmp_path / "run"

    result = local.run_local_deployment(run_config, 3, out_dir, app_dir)

    assert result.status == "finished:completed"
    answers = json.loads((out_dir / "echo.json").read_text())
    expected = []
    for partition in range(3):
        data = load_client_data(run_config, partition)
        expected.append(len(data.y_train) + len(data.y_test))
    assert sorted(answers.values()) == sorted(expected)
    for name in ("superlink", "supernode-0", "supernode-1", "supernode-2"):
        assert (result.log_dir / f"{name}.log").stat().st_size > 0
    assert (result.log_dir / "run.log").is_file()
    assert len(result.pids) > 4
    assert not [pid for pid in result.pids if pid_running(pid)]


def test_deploy_local_refuses_run_config_keys_the_app_does_not_declare(tmp_path):
    app_dir = _echo_app(tmp_path, {"out-dir": ""})
    with pytest.raises(
        local.DeploymentError, match=r"lacks the run-config keys \['num-partitions', 'seed'\]"
    ):
        local.run_local_deployment({"seed": 1, "num-partitions": 1}, 1, tmp_path / "run", app_dir)


DRIVER = """
import sys
from pathlib import Path
from simulations.deploy import local
from simulations.federated_data import DataConfig

config = {**DataConfig(dataset="digits", partitioning="iid", num_partitions=2, seed=7).to_mapping(),
          "out-dir": "", "hold-seconds": 600.0}
local.run_local_deployment(config, 2, Path(sys.argv[1]) / "run", Path(sys.argv[1]) / "echo-app",
                           on_status=lambda text: print(text, flush=True))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_deploy_local_stops_every_process(tmp_path, signum):
    from simulations.federated_data import DataConfig

    data_config = DataConfig(dataset="digits", partitioning="iid", num_partitions=2, seed=7)
    _echo_app(tmp_path, {**data_config.to_mapping(), "out-dir": "", "hold-seconds": 0.0})
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = []
        for line in driver.stdout:
            output.append(line)
            if "submitted" in line:
                break
        assert any("submitted" in line for line in output), "".join(output)
        time.sleep(2)  # let the ServerApp start
        started = {pid for pid, _ in descendants(driver.pid)}
        assert len(started) > 4, started
        driver.send_signal(signum)  # what Ctrl-C does to the foreground process
        driver.wait(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0
    assert not [pid for pid in started if pid_running(pid)]


# -- the sandflower app itself ---------------------------------------------------------------
SCENARIO = """
[scenario]
name = "deploy-e2e"
seed = 7

[data]
dataset = "digits"
partitioning = "iid"

[federation]
clients = {clients}
rounds = 2

[model]
kind = "mlp"
hidden = [32]
"""


def _run_config(tmp_path: Path, clients: int) -> dict:
    from simulations.scenario import load_scenario

    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(clients=clients))
    return load_scenario(path).to_run_config()


def _tampered_kernel(tmp_path: Path) -> Path:
    """The bundled kernel plus a custom section: still valid wasm, another sha256."""
    from client.runner import default_kernel_path

    name, payload = b"tampered", b"\x00" * 16
    section = bytes([0, 1 + len(name) + len(payload), len(name)]) + name + payload
    path = tmp_path / "tampered.wasm"
    path.write_bytes(default_kernel_path().read_bytes() + section)
    return path


def _sandflower_installed() -> bool:
    try:
        importlib.metadata.distribution("sandflower")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def sandflower_installed(tmp_path_factory):
    """sandflower installed where the SuperLink and SuperNodes run (README: pip install -e .).

    The kernel reaches the ServerApp and ClientApps from the installed package (a Flower app
    bundle cannot carry .wasm files). If this environment lacks it, install a copy of the
    repository (no build files in the tree) into a temporary folder and put that on the
    PYTHONPATH of the processes the deployment starts, as a device would have it installed.
    """
    if _sandflower_installed():
        yield
        return
    source = tmp_path_factory.mktemp("sandflower-source")
    ignore = shutil.ignore_patterns(
        ".git", "runs", "build", "__pycache__", ".pytest_cache", "*.egg-info"
    )
    shutil.copytree(REPO, source, ignore=ignore, dirs_exist_ok=True)
    site = tmp_path_factory.mktemp("sandflower-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(source)],
        check=True,
        timeout=300,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        )
        yield


def test_the_installed_package_check_names_what_is_missing(tmp_path):
    env = flower_environment(tmp_path / "home")
    with pytest.raises(local.DeploymentError, match="no-such-distribution is not installed"):
        local.check_sandflower_installed(env, tmp_path, distribution="no-such-distribution")
    local.check_sandflower_installed(env, tmp_path, distribution="flwr")  # installed: passes


@pytest.mark.usefixtures("sandflower_installed")
def test_deploy_local_trains_a_scenario_on_three_supernodes(tmp_path):
    from client.client_app import kernel_sha256
    from coordinator.reports.report_json import load_report

    out_dir = tmp_path / "run"
    result = local.run_local_deployment(_run_config(tmp_path, 3), 3, out_dir, REPO)

    report = load_report(out_dir)
    assert [round_report.round for round_report in report.rounds] == [1, 2]
    for round_report in report.rounds:
        assert round_report.clients_succeeded == 3, round_report
        assert round_report.clients_failed == 0
    assert report.kernel_sha256 == kernel_sha256()
    for name in ("report.html", "rounds.csv", "clients.csv", "final_model.npz"):
        assert (out_dir / name).is_file(), name
    assert not [pid for pid in result.pids if pid_running(pid)]


@pytest.mark.usefixtures("sandflower_installed")
def test_a_tampered_kernel_and_a_missing_data_file_fail_only_their_nodes(tmp_path):
    from coordinator.reports.report_json import load_report

    missing = tmp_path / "nowhere" / "node-2.npz"
    node_configs = {
        2: {"data-path": str(missing)},
        3: {"kernel-path": str(_tampered_kernel(tmp_path))},
    }
    out_dir = tmp_path / "run"
    result = local.run_local_deployment(
        _run_config(tmp_path, 4), 4, out_dir, REPO, node_configs=node_configs
    )

    report = load_report(out_dir)
    assert len(report.rounds) == 2
    for round_report in report.rounds:
        assert (round_report.clients_succeeded, round_report.clients_failed) == (2, 2)
        reasons = sorted(client.reason for client in round_report.clients if client.reason)
        assert len(reasons) == 2, reasons
        data_reason = next(reason for reason in reasons if str(missing) in reason)
        assert "No such file" in data_reason
        kernel_reason = next(reason for reason in reasons if "tampered.wasm" in reason)
        assert "sha256" in kernel_reason and "pinned" in kernel_reason
    assert report.final_central_accuracy > 0.3  # the two honest nodes carried the run
    assert not [pid for pid in result.pids if pid_running(pid)]
