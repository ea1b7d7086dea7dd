"""Start and stop the Flower processes of a local deployment, each by its pid.

Every process is started in its own session (its pid is its process-group id) with its output
in a log file. Flower's SuperLink and SuperNode start helpers of their own (``flower-superexec``
in a *detached* session, which then starts ``flwr-serverapp``/``flwr-clientapp``), so stopping
the group alone could leave them behind. Before stopping, we therefore take a snapshot of the
process tree under each pid (Linux ``/proc``; the start time guards against a reused pid),
send SIGTERM to the group and to every pid of the snapshot, wait, and SIGKILL what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulations.environment import FLOWER_ENV

STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.2


class ProcessError(RuntimeError):
    """A process did not start, died early, or did not get ready in time."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it: bind to port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def flower_environment(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment of every Flower process we start.

    ``FLWR_HOME`` is private to the deployment; the venv's bin directory comes first on
    ``PATH`` because the SuperLink and SuperNodes start ``flower-superexec`` by name.
    """
    env = dict(os.environ if base is None else base)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class ManagedProcess:
    """One process we started: its name, Popen handle and log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.popen.pid

    def is_running(self) -> bool:
        """Return True while the process has not exited."""
        return self.popen.poll() is None

    def log_tail(self, num_lines: int = 20) -> str:
        """Return the last ``num_lines`` lines of the process's log (for error messages)."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-num_lines:])


@dataclass
class ProcessSupervisor:
    """Starts processes and guarantees they (and the helpers they start) are stopped.

    Use as a context manager: leaving the ``with`` block, normally or by an exception
    (KeyboardInterrupt included), stops every process started through it.
    """

    env: Mapping[str, str]
    stop_timeout_s: float = STOP_TIMEOUT_S
    processes: list[ManagedProcess] = field(default_factory=list)
    # every pid we signalled, with its start time: tests check none is left running
    signalled_pids: set[int] = field(default_factory=set)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env_overrides: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` in a new session with stdout and stderr going to ``log_path``.

        ``env_overrides`` are set on top of the supervisor's environment for this process.
        """
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**self.env, **(env_overrides or {})},
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as error:
                raise ProcessError(f"{name}: cannot start {argv[0]!r}: {error}") from error
        process = ManagedProcess(name, popen, log_path)
        self.processes.append(process)
        return process

    def all_pids(self) -> set[int]:
        """Every pid we started, and every descendant of them alive right now."""
        pids: set[int] = set()
        for process in self.processes:
            pids.add(process.pid)
            pids.update(pid for pid, _ in descendants(process.pid))
        return pids

    def stop_all(self) -> None:
        """Stop every process (newest first, so SuperNodes go before their SuperLink).

        SIGINT and SIGTERM are held back meanwhile: a second Ctrl-C must not cut the
        clean-up short; they are delivered when it is done.
        """
        with _signals_held():
            self._stop_all()

    def _stop_all(self) -> None:
        snapshot = {process.pid: descendants(process.pid) for process in self.processes}
        for process in reversed(self.processes):
            self._terminate(process, snapshot[process.pid])
        deadline = time.monotonic() + self.stop_timeout_s
        for process in reversed(self.processes):
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=remaining)
        for process in reversed(self.processes):
            leftovers = [item for item in snapshot[process.pid] if _same_process(*item)]
            if process.is_running() or leftovers or _group_alive(process.pid):
                _signal_group(process.pid, signal.SIGKILL)
                for pid, _ in leftovers:
                    _signal_pid(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(timeout=self.stop_timeout_s)
        _wait_gone([item for items in snapshot.values() for item in items], self.stop_timeout_s)

    def _terminate(self, process: ManagedProcess, tree: list[tuple[int, int]]) -> None:
        self.signalled_pids.add(process.pid)
        self.signalled_pids.update(pid for pid, _ in tree)
        _signal_group(process.pid, signal.SIGTERM)
        for pid, start_time in tree:
            if _same_process(pid, start_time):
                _signal_pid(pid, signal.SIGTERM)

    def __enter__(self) -> ProcessSupervisor:
        """Return this supervisor; :meth:`__exit__` stops every process it started."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Stop every process this supervisor started, whatever happened inside the block."""
        self.stop_all()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float,
    watched: Sequence[ManagedProcess] = (),
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Poll ``condition`` every ``interval_s`` until it holds; fail early if a process exits.

    Raises
    ------
    ProcessError
        A watched process exited (its log tail is in the message), or ``timeout_s`` passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for process in watched:
            if not process.is_running():
                raise ProcessError(
                    f"{process.name} (pid {process.pid}) exited with code "
                    f"{process.popen.returncode} while waiting for {what}; "
                    f"its log {process.log_path} ends:\n{process.log_tail()}"
                )
        if condition():
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{p.name}: {p.log_path}" for p in watched) or "none"
            raise ProcessError(
                f"timed out after {timeout_s:.0f} s waiting for {what} (logs: {names})"
            )
        time.sleep(interval_s)


def port_accepts(host: str, port: int) -> bool:
    """Return True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_running(pid: int) -> bool:
    """Return True when ``pid`` names a live process (a zombie counts as gone)."""
    stat = _read_stat(pid)
    if stat is not None:
        return stat[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every live descendant of ``pid`` (empty without /proc)."""
    children: dict[int, list[int]] = {}
    start_times: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is None:
            continue
        _, parent, start_time = stat
        children.setdefault(parent, []).append(int(entry.name))
        start_times[int(entry.name)] = start_time
    found: list[tuple[int, int]] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append((child, start_times[child]))
        stack.extend(children.get(child, []))
    return found


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) from /proc/PID/stat, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _same_process(pid: int, start_time: int) -> bool:
    stat = _read_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[2] == start_time


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def _signals_held():
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _wait_gone(items: list[tuple[int, int]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_same_process(*item) for item in items) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
