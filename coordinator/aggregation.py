"""The coordinator's arithmetic on named arrays: delta, weighted averages, the server step.

Pure functions over ``dict[str, np.ndarray]`` (a model or an update, keyed by array name);
nothing here knows Flower. The strategy adapter and the tests share these definitions:

- ``delta = local - global`` is defined once, in ``client/delta.py`` (re-exported here);
- the server applies ``W_next = W + server_lr * aggregate(deltas)`` in :func:`apply_server_step`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from client.delta import ArrayLayoutError as ArrayLayoutError  # re-exported
from client.delta import check_same_layout
from client.delta import delta as delta  # re-exported: the one definition of a delta

Arrays = Mapping[str, np.ndarray]


class AggregationInputError(ArrayLayoutError):
    """Arrays that cannot be combined: different names or shapes, bad weights."""


def weighted_average(deltas: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Return the weighted mean of ``deltas`` (FedAvg's rule): float64 sums, float32 result.

    Parameters
    ----------
    deltas : one named-array mapping per client, all with the same names and shapes.
    weights : one non-negative weight per client (e.g. num_examples), not all zero.

    Raises
    ------
    AggregationInputError
        When there are no deltas, the counts differ, a weight is negative or not finite, all
        weights are zero, or the deltas' names or shapes differ.
    """
    if not deltas:
        raise AggregationInputError("weighted_average of no deltas")
    if len(deltas) != len(weights):
        raise AggregationInputError(
            f"weighted_average: {len(deltas)} deltas but {len(weights)} weights"
        )
    weight_array = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(weight_array)) or np.any(weight_array < 0):
        raise AggregationInputError(f"weights must be finite and >= 0, given {list(weights)}")
    total = float(weight_array.sum())
    if total <= 0:
        raise AggregationInputError(f"weights sum to {total}, expected > 0")
    for index, other in enumerate(deltas[1:], start=1):
        _check_same_layout(other, deltas[0], f"deltas[{index}]", "deltas[0]")
    shares = weight_array / total
    return {
        name: sum(
            share * np.asarray(item[name], np.float64)
            for share, item in zip(shares, deltas, strict=True)
        ).astype(np.float32)
        for name in deltas[0]
    }


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """Return the weighted mean of scalar metrics (e.g. losses); NaN if empty."""
    if len(values) != len(weights):
        raise AggregationInputError(f"{len(values)} values but {len(weights)} weights")
    total = float(sum(weights))
    if not values or total <= 0:
        return math.nan
    return float(sum(float(v) * float(w) for v, w in zip(values, weights, strict=True)) / total)


def apply_server_step(
    global_weights: Arrays, aggregated_delta: Arrays, server_lr: float
) -> dict[str, np.ndarray]:
    """``W_next = W + server_lr * aggregated_delta``, array by array, in float32.

    Raises
    ------
    AggregationInputError
        When the names or shapes differ.
    """
    _check_same_layout(aggregated_delta, global_weights, "aggregated_delta", "global_weights")
    return {
        name: (
            np.asarray(global_weights[name], np.float64)
            + float(server_lr) * np.asarray(aggregated_delta[name], np.float64)
        ).astype(np.float32)
        for name in global_weights
    }


def l2_norm(arrays: Arrays) -> float:
    """Return the L2 norm of all arrays taken together (float64 sum; NaN and Inf propagate)."""
    total = 0.0
    for array in arrays.values():
        values = np.asarray(array, dtype=np.float64).ravel()
        total += float(np.dot(values, values))
    return math.sqrt(total)


def cosine_similarity(first: Arrays, second: Arrays) -> float:
    """Cosine of the angle between two updates seen as one flat vector each.

    Returns NaN when either has zero norm or holds a non-finite value (the angle is undefined).
    """
    return CosineTo(second)(first)


class CosineTo:
    """:func:`cosine_similarity` of many updates against one ``reference``.

    The reference's float64 values and norm are computed once instead of once per update (a
    1000-client round compares every reply's delta with the applied update).
    """

    def __init__(self, reference: Arrays) -> None:
        self._reference = reference
        self._values = {
            name: np.asarray(array, np.float64).ravel() for name, array in reference.items()
        }
        self._norm = l2_norm(reference)

    def __call__(self, update: Arrays) -> float:
        """Return ``cosine_similarity(update, reference)``."""
        _check_same_layout(update, self._reference, "first", "second")
        dot = 0.0
        total = 0.0
        for name in update:
            values = np.asarray(update[name], np.float64).ravel()
            dot += float(np.dot(values, self._values[name]))
            total += float(np.dot(values, values))
        norms = math.sqrt(total) * self._norm
        if not (math.isfinite(dot) and math.isfinite(norms)) or norms == 0.0:
            return math.nan
        return max(-1.0, min(1.0, dot / norms))


def model_sha256(arrays: Arrays) -> str:
    """sha256 of a model: for each array in sorted name order, its name, shape and bytes.

    Each array contributes ``name`` (UTF-8), a NUL, its shape as comma-separated decimals, a
    NUL, then its values as little-endian float32 in C order. Two models hash alike exactly
    when they have the same names, shapes and float32 values.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        # Not ascontiguousarray: it turns a 0-d array into shape (1,).
        array = np.asarray(arrays[name], dtype="<f4")
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(",".join(str(size) for size in array.shape).encode("ascii") + b"\0")
        digest.update(array.tobytes(order="C"))
    return digest.hexdigest()


def zeros_like(arrays: Arrays) -> dict[str, np.ndarray]:
    """float32 zeros with the names and shapes of ``arrays``."""
    return {name: np.zeros(np.shape(array), dtype=np.float32) for name, array in arrays.items()}


def _check_same_layout(given: Arrays, expected: Arrays, given_name: str, expected_name: str):
    try:
        check_same_layout(given, expected, given_name, expected_name)
    except ArrayLayoutError as error:
        raise AggregationInputError(str(error)) from None
