"""The one definition of a client's update: ``delta = local - global``.

The client computes it before replying (only the delta leaves the device); the coordinator's
aggregation math and its tests use the same function (coordinator/aggregation.py re-exports it).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


class ArrayLayoutError(ValueError):
    """Two sets of named arrays that should match differ in names or shapes."""


def check_same_layout(given: Arrays, expected: Arrays, given_name: str, expected_name: str) -> None:
    """Raise :class:`ArrayLayoutError` naming the difference unless names and shapes match."""
    if set(given) != set(expected):
        missing = sorted(set(expected) - set(given))
        extra = sorted(set(given) - set(expected))
        raise ArrayLayoutError(
            f"{given_name} vs {expected_name}: missing arrays {missing}, unexpected {extra}"
        )
    for name in expected:
        if np.shape(given[name]) != np.shape(expected[name]):
            raise ArrayLayoutError(
                f"{given_name}[{name!r}]: shape {np.shape(given[name])}, expected "
                f"{np.shape(expected[name])} as in {expected_name}"
            )


def delta(local: Arrays, global_weights: Arrays) -> dict[str, np.ndarray]:
    """Return a client's update: ``local - global_weights``, array by array, in float32.

    Parameters
    ----------
    local : the client's weights after local training.
    global_weights : the weights the client started from.

    Raises
    ------
    ArrayLayoutError
        When the names or shapes differ.
    """
    check_same_layout(local, global_weights, "local", "global_weights")
    return {
        name: (np.asarray(local[name], np.float32) - np.asarray(global_weights[name], np.float32))
        for name in global_weights
    }
