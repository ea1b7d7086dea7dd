"""Finding headless chromium for the tests, and the flags it runs with on this network.

Without chromium the browser tests skip, except under CI=true, where they fail: CI installs
Debian's chromium (.ci/run). The flags keep chromium from reaching for the network (this
machine has none) and from needing a display or a sandbox (tests run as root).
"""

from __future__ import annotations

import os
import shutil

import pytest

HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_chromium(candidates: list[str | None] | None = None) -> str:
    """The first executable of ``candidates``; skip without one, or fail under CI=true."""
    if candidates is None:
        candidates = ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = "chromium not found at /usr/bin/chromium (install it: apt-get install -y chromium)"
    if under_ci():
        pytest.fail(f"CI=true and {reason}; the browser tests must run in CI")
    pytest.skip(f"{reason}; this test is required (fails) under CI=true")
