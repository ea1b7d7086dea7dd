"""One function call run on its own thread while the caller waits for something else.

The round loop starts the central evaluation of a new model here and then sends the federated
evaluation batch: the workers and the central evaluation (native code in the coordinator's
process, which releases the GIL) then share the machine instead of taking turns.
:meth:`BackgroundCall.result` hands back the call's value, or raises the call's own exception,
so that a caller sees the same outcome as had it called the function in line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundCall(Generic[T]):
    """Run ``function()`` on a daemon thread, started at construction.

    A daemon thread: an interrupted run (Ctrl-C) never waits at exit for a call whose result
    nobody will read.

    Parameters
    ----------
    function : the call to run, without arguments.
    name : the thread's name (for logs and profilers).
    """

    def __init__(self, function: Callable[[], T], *, name: str = "sandflower-background") -> None:
        self._function = function
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as error:  # handed to the caller by result(), whatever it is
            self._error = error

    def result(self) -> T:
        """Wait for the call; return its value or raise the exception it raised."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            # Raised with its own traceback (where the call failed), as an in-line call would.
            raise error
        return self._value  # type: ignore[return-value]  # set: the call returned

    def wait(self) -> None:
        """Wait for the call to finish, ignoring its outcome (the caller is already failing)."""
        self._thread.join()


__all__ = ["BackgroundCall"]
