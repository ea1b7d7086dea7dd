"""Lean workers: a fresh interpreter per worker that imports only what a worker needs.

A forked worker starts with the coordinator's whole resident set (scikit-learn, matplotlib,
the report, ...), and summed RSS counts those pages again for every worker. A lean worker is
a new ``python`` running :func:`main` of this module: it imports the worker loop, reads its
arguments (the ClientApp reference, the run config, ...) from the pipe it inherited, says it
is ready, and runs :func:`.worker.run_worker`. Measured: ~75 MB resident after imports,
against ~190 MB for a forked worker at 1000 clients.

Why not ``multiprocessing``'s "spawn" or "forkserver": both import the caller's ``__main__``
again in the child, so a user's script that calls ``simulate_on_engine`` without an
``if __name__ == "__main__"`` guard would start runs recursively. A subprocess of our own
module never does. :class:`LeanProcess` gives the pool the part of ``multiprocessing.Process``
it uses (pid, sentinel, join, is_alive, exitcode); the sentinel is a pidfd (Linux >= 5.3), so
``multiprocessing.connection.wait`` watches a lean worker exactly as a forked one.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

READY = b"ready"


class LeanProcess:
    """A lean worker process (the subset of ``multiprocessing.Process`` the pool uses).

    Parameters
    ----------
    child_end : the worker's end of the pipe (the child inherits it; the caller closes it).
    parent_end : the coordinator's end, which hands the child its arguments.
    args : the arguments of :func:`.worker.run_worker` after the connection (picklable).
    name : shown in error messages.
    """

    def __init__(
        self, child_end: Connection, parent_end: Connection, args: tuple[Any, ...], name: str
    ) -> None:
        self.name = name
        self._child_end = child_end
        self._parent_end = parent_end
        self._args = args
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None

    def start(self) -> None:
        """Start the child and hand it its arguments (pickled through the pipe)."""
        fd = self._child_end.fileno()
        # Pickled before the child exists: an unpicklable ClientApp fails here, in the caller.
        payload = pickle.dumps(self._args, protocol=pickle.HIGHEST_PROTOCOL)
        # The child imports modules exactly as this process would: -P keeps the current
        # directory off its path (a user's own client/ folder must not shadow ours), and
        # PYTHONPATH gives it this process's path (e.g. a test's root).
        environment = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._popen = subprocess.Popen(
            [sys.executable, "-P", "-c", f"from simulations.engine.lean import main; main({fd})"],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            env=environment,
        )
        self._pidfd = os.pidfd_open(self._popen.pid)
        self._parent_end.send_bytes(payload)

    def wait_ready(self, parent_end: Connection, timeout: float) -> None:
        """Wait until the child has imported its worker and ClientApp.

        Raises
        ------
        RuntimeError
            The child died or did not get ready within ``timeout`` seconds.
        """
        problem = ""
        try:
            if not parent_end.poll(timeout):
                problem = f"not ready within {timeout:g} s"
            elif parent_end.recv_bytes() != READY:
                problem = "sent something else than its ready signal"
        except (EOFError, OSError):
            problem = (
                f"exited (code {self._popen.wait() if self._popen else None}) before it was ready"
            )
        if problem:
            raise RuntimeError(f"lean worker {self.name} (pid {self.pid}) {problem}")

    @property
    def pid(self) -> int | None:
        """The child's pid (None before start)."""
        return None if self._popen is None else self._popen.pid

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the process ends (a pidfd)."""
        assert self._pidfd is not None, "not started"
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        """None while running; -N when killed by signal N (as ``multiprocessing``)."""
        return None if self._popen is None else self._popen.poll()

    def is_alive(self) -> bool:
        """Whether the child is still running."""
        return self._popen is not None and self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the process to end (and reap it)."""
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return

    def __del__(self) -> None:
        """Close the pidfd (kept open while the pool may still wait on it, even after join)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def main(fd: int) -> None:
    """Run a lean worker: read the arguments from pipe ``fd``, then the worker loop."""
    # The worker's own Ctrl-C handling is set in run_worker; until then (imports) a Ctrl-C
    # in the terminal must not print a traceback from every worker.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .worker import load_client_app, run_worker

    connection = Connection(fd)
    try:
        args = pickle.loads(connection.recv_bytes())
    except (EOFError, OSError):
        return  # the coordinator went away before the worker started
    if isinstance(args[0], str):
        load_client_app(args[0])  # imports the ClientApp's module before saying ready
    connection.send_bytes(READY)
    run_worker(connection, *args)
