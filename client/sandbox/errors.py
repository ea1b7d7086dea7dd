"""The errors the sandbox raises, and how wasmtime's messages become one line of them."""

from __future__ import annotations

import re
from typing import Any


class SandboxError(Exception):
    """Base of every error the sandbox raises."""


class ModuleRefused(SandboxError):
    """The module is not one we run: invalid wasm, imports, missing exports, other ABI."""


class KernelError(SandboxError):
    """A failure while running one entry of one job; the message names both."""

    def __init__(self, message: str, *, entry: str, job: str) -> None:
        super().__init__(f"job {job!r}, entry {entry}: {message}")
        self.entry = entry
        self.job = job


class KernelTrapped(KernelError):
    """The kernel trapped; ``trap_code`` is wasmtime's TrapCode, or None when unknown."""

    def __init__(self, message: str, *, entry: str, job: str, trap_code: Any = None) -> None:
        super().__init__(message, entry=entry, job=job)
        self.trap_code = trap_code


class OutOfBounds(KernelTrapped):
    """A memory access outside linear memory (by the kernel, or a host read/write)."""


class OutOfFuel(KernelTrapped):
    """The job used up its fuel budget (``Limits.fuel``)."""


class DeadlineExceeded(KernelTrapped):
    """The job ran past its wall-clock deadline (``Limits.deadline_seconds``)."""


class MemoryLimitReached(KernelError):
    """The kernel needed more memory than the cap: grow refused, sf_alloc 0, SF_NO_MEMORY."""


class KernelStatusError(KernelError):
    """An entry returned a non-zero status other than SF_NO_MEMORY."""

    def __init__(self, message: str, *, entry: str, job: str, status: int) -> None:
        super().__init__(message, entry=entry, job=job)
        self.status = status


def _one_line(error: Exception) -> str:
    # wasmtime's errors are "what failed\n\nCaused by:\n    why": keep both, on one line.
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(line for line in lines if line and line != "Caused by:")


def _trap_cause(message: str) -> str:
    # wasmtime's message is a wasm backtrace, then "Caused by:" and numbered causes.
    lines = [line.strip() for line in message.strip().splitlines()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1 :]
    causes = [re.sub(r"^\d+:\s*", "", line) for line in lines if line]
    return "; ".join(causes[-2:])
