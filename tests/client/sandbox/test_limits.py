"""client/sandbox/limits.py: what a job may use is checked when it is given."""

import pytest

from client.sandbox import (
    Limits,
)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=2**33)
    with pytest.raises(ValueError, match="fuel"):
        Limits(fuel=0)
    with pytest.raises(ValueError, match="deadline_seconds"):
        Limits(deadline_seconds=float("nan"))
