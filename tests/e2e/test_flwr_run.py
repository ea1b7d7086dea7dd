"""The repository is a valid Flower App: `flwr run .` trains with pyproject's run config.

A simulation SuperLink is started by this test (its own FLWR_HOME, free ports) and stopped by
its pid; `flwr run` submits the app and streams the run to its end; the run folder must hold
the report of the requested rounds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.reports.report_json import ReportError, load_report
from protos.report_pb2 import ClientStatus
from simulations.deploy.processes import (
    ProcessError,
    ProcessSupervisor,
    find_free_port,
    flower_environment,
    pid_running,
    port_accepts,
    wait_until,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def _status(out_dir: Path) -> str:
    try:
        return load_report(out_dir).status
    except ReportError:
        return "running"  # not written yet


def test_flwr_run_dot_trains_with_the_pyproject_run_config(tmp_path):
    out_dir = tmp_path / "run"
    completed, logs = _flwr_run(
        tmp_path, f"num-rounds=2 num-partitions=3 out-dir='{out_dir}'", 3, out_dir
    )
    assert completed.returncode == 0, logs[-6000:]

    report = load_report(out_dir)
    assert report.status == "completed"
    assert report.scenario == "digits-mlp-dirichlet"  # pyproject's run config
    assert [r.round for r in report.rounds] == [1, 2]
    for round_report in report.rounds:
        assert round_report.clients_succeeded >= 1 and round_report.clients_failed == 0
        # rows of clients sampled only for federated evaluation have no train status
        trained = [
            c for c in round_report.clients if c.status != ClientStatus.CLIENT_STATUS_UNSPECIFIED
        ]
        assert len(trained) == round_report.clients_sampled
        assert all(c.status == ClientStatus.OK for c in trained)
        assert 0.0 < round_report.central_accuracy <= 1.0
    assert len(report.final_model_sha256) == 64


def _flwr_run(
    tmp_path: Path,
    run_config: str,
    num_supernodes: int,
    out_dir: Path,
) -> tuple[subprocess.CompletedProcess, str]:
    """``flwr run .`` on a simulation SuperLink this test starts and stops (by pid).

    Returns the finished ``flwr run`` and its output followed by the SuperLink's log, after
    waiting for the run's final report in ``out_dir`` (completed or failed).
    """
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    # Flower 1.42 serves the Control, Fleet and Runtime APIs on the one HTTP port; the
    # CLI connects there (as its own `:local:` connection does).
    control_port, http_port = find_free_port(), find_free_port()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "sim"\n\n'
        f'[superlink.sim]\naddress = "{LOOPBACK}:{http_port}"\ninsecure = true\n'
    )
    env = flower_environment(flwr_home)
    bin_dir = Path(sys.executable).parent
    superlink_log = tmp_path / "superlink.log"
    with ProcessSupervisor(env) as supervisor:
        superlink = supervisor.start(
            "superlink",
            [
                str(bin_dir / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--control-api-address",
                f"{LOOPBACK}:{control_port}",
                "--host",
                LOOPBACK,
                "--port",
                str(http_port),
                "--database",
                str(tmp_path / "state.db"),
            ],
            superlink_log,
        )
        wait_until(lambda: port_accepts(LOOPBACK, http_port), "the SuperLink", 60, [superlink])
        completed = subprocess.run(
            [
                str(bin_dir / "flwr"),
                "run",
                str(REPO),
                "sim",
                "--stream",
                "--run-config",
                run_config,
                "--federation-config",
                f"num-supernodes={num_supernodes}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        # `--stream` can return as the run is marked finished, before the ServerApp process
        # has written its last report: give it a moment before stopping the SuperLink.
        try:
            wait_until(lambda: _status(out_dir) != "running", "the final report", 60, [superlink])
        except ProcessError as error:
            raise AssertionError(f"{error}\nflwr run said:\n{completed.stdout[-6000:]}") from None
        started = supervisor.all_pids()
    assert not [pid for pid in started if pid_running(pid)], "a process outlived the test"
    logs = completed.stdout + completed.stderr
    if superlink_log.exists():
        logs += superlink_log.read_text(errors="replace")
    return completed, logs


def test_flwr_run_refuses_fewer_supernodes_than_the_scenarios_partitions(tmp_path):
    # Flower's default local federation starts 2 SuperNodes; the scenario here has 3.
    out_dir = tmp_path / "run"
    _, logs = _flwr_run(
        tmp_path,
        f"num-rounds=1 num-partitions=3 out-dir='{out_dir}'",
        2,
        out_dir,
    )
    assert "num-partitions = 3, but Flower started 2 SuperNodes" in logs, logs[-4000:]
    assert "options.num-supernodes = 3" in logs
    report = load_report(out_dir)
    assert not report.rounds  # not one round trained on a part of the data
    assert report.status == "failed" and "options.num-supernodes = 3" in report.error


def test_flwr_run_scenario_key_selects_the_bundled_scenario(tmp_path):
    out_dir = tmp_path / "run"
    completed, logs = _flwr_run(
        tmp_path,
        f"scenario='digits-mlp-iid' num-rounds=1 num-partitions=3 out-dir='{out_dir}'",
        3,
        out_dir,
    )
    assert completed.returncode == 0, logs[-6000:]
    report = load_report(out_dir)
    assert report.scenario == "digits-mlp-iid" and report.status == "completed"
    # The run config the report records: iid's partitioning, the user's overrides.
    assert report.config["partitioning"] == "iid"
    assert report.config["num-partitions"] == 3 and report.config["num-rounds"] == 1
    assert [r.round for r in report.rounds] == [1]
