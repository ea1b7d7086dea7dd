"""Processes are started in their own session and stopped by pid, helpers included."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from simulations.deploy import processes
from simulations.deploy.processes import ProcessError, ProcessSupervisor, pid_running


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# A parent that starts a DETACHED helper (own session, like flower-superexec) and writes its
# pid to a file, then sleeps.
PARENT_WITH_DETACHED_HELPER = """
    import subprocess, sys, time
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              start_new_session=True)
    open(sys.argv[1], "w").write(str(helper.pid))
    print("ready", flush=True)
    time.sleep(600)
"""

IGNORES_SIGTERM = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(600)
"""


def _wait_for_text(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path} never said {text!r}"
        time.sleep(0.05)


def test_stop_all_stops_a_process_and_the_detached_helper_it_started(tmp_path):
    helper_pid_file = tmp_path / "helper.pid"
    with ProcessSupervisor(env=processes.flower_environment(tmp_path)) as supervisor:
        parent = supervisor.start(
            "parent",
            [*_python(PARENT_WITH_DETACHED_HELPER), str(helper_pid_file)],
            tmp_path / "parent.log",
        )
        _wait_for_text(parent.log_path, "ready")
        helper_pid = int(helper_pid_file.read_text())
        assert pid_running(parent.pid) and pid_running(helper_pid)
        assert helper_pid in supervisor.all_pids()
    assert not pid_running(parent.pid)
    assert not pid_running(helper_pid)
    assert {parent.pid, helper_pid} <= supervisor.signalled_pids


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout(tmp_path):
    supervisor = ProcessSupervisor(env=processes.flower_environment(tmp_path), stop_timeout_s=1.0)
    stubborn = supervisor.start("stubborn", _python(IGNORES_SIGTERM), tmp_path / "stubborn.log")
    _wait_for_text(stubborn.log_path, "ready")
    started = time.monotonic()
    supervisor.stop_all()
    assert not pid_running(stubborn.pid)
    assert stubborn.popen.returncode == -9
    assert time.monotonic() - started < 5.0


def test_processes_are_stopped_when_the_block_is_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ProcessSupervisor(env=processes.flower_environment(tmp_path)) as supervisor:
            sleeper = supervisor.start(
                "sleeper", _python("import time; time.sleep(600)"), tmp_path / "s.log"
            )
            raise KeyboardInterrupt
    assert not pid_running(sleeper.pid)


def test_wait_until_fails_early_with_the_log_tail_of_a_process_that_died(tmp_path):
    with ProcessSupervisor(env=processes.flower_environment(tmp_path)) as supervisor:
        dying = supervisor.start(
            "dying", _python("print('bad flag --x'); raise SystemExit(3)"), tmp_path / "d.log"
        )
        started = time.monotonic()
        with pytest.raises(ProcessError, match=r"dying .* exited with code 3(.|\n)*bad flag --x"):
            processes.wait_until(lambda: False, "something", timeout_s=30, watched=[dying])
        assert time.monotonic() - started < 10


def test_wait_until_times_out_naming_what_it_waited_for():
    with pytest.raises(ProcessError, match="timed out after 0 s waiting for the moon"):
        processes.wait_until(lambda: False, "the moon", timeout_s=0.3)


def test_a_missing_program_is_a_process_error(tmp_path):
    supervisor = ProcessSupervisor(env=processes.flower_environment(tmp_path))
    with pytest.raises(ProcessError, match="no-such-program"):
        supervisor.start("ghost", [str(tmp_path / "no-such-program")], tmp_path / "g.log")


def test_find_free_port_gives_a_bindable_port():
    port = processes.find_free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
    assert not processes.port_accepts("127.0.0.1", port)


def test_flower_environment_is_private_and_quiet(tmp_path):
    env = processes.flower_environment(tmp_path / "home", base={"PATH": "/usr/bin"})
    assert env["FLWR_HOME"] == str(tmp_path / "home")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "0"
    # flower-superlink starts flower-superexec by name: the venv's bin must come first
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_descendants_finds_grandchildren(tmp_path):
    with ProcessSupervisor(env=processes.flower_environment(tmp_path)) as supervisor:
        parent = supervisor.start(
            "parent",
            [*_python(PARENT_WITH_DETACHED_HELPER), str(tmp_path / "helper.pid")],
            tmp_path / "parent.log",
        )
        _wait_for_text(parent.log_path, "ready")
        helper_pid = int((tmp_path / "helper.pid").read_text())
        assert helper_pid in {pid for pid, _ in processes.descendants(parent.pid)}
