"""The checks every KernelRunner method runs on its inputs before any of them reaches a job.

Each raises ValueError naming the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from client.runner.fuel import _UNCAPPED_FUEL
from kernels.spec import ModelSpec

_UINT64_END = 2**64
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _fuel(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{what}: expected an int >= 0, given {value!r}")
    if value >= _UNCAPPED_FUEL:
        raise ValueError(f"{what}: expected an int < 2**62, given {value}")
    return int(value)


def _flat_params(spec: ModelSpec, params: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    if not isinstance(params, Mapping):
        raise ValueError(f"{what}: expected a mapping of name -> array, given {type(params)}")
    try:
        flat = spec.flatten(params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: {error}") from error
    if not np.isfinite(flat).all():
        bad = [
            name
            for name, array in params.items()
            if not np.isfinite(np.asarray(array, np.float32)).all()
        ]
        raise ValueError(f"{what}: expected finite values, {bad} have NaN or inf")
    return flat


def _features(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    try:
        features = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"x: expected float32-convertible features, given {error}") from error
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] != spec.input_dim:
        raise ValueError(
            f"x: expected shape [n >= 1, {spec.input_dim}] for model {spec}, "
            f"given {list(np.shape(x))}"
        )
    if not np.isfinite(features).all():
        raise ValueError("x: expected finite features, given NaN or inf (after float32 conversion)")
    return np.ascontiguousarray(features)


def _labels(spec: ModelSpec, y: np.ndarray, num_examples: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y: expected integer class labels, given dtype {labels.dtype}")
    if labels.shape != (num_examples,):
        raise ValueError(
            f"y: expected shape [{num_examples}] (one label per row of x), "
            f"given {list(labels.shape)}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= spec.num_classes:
        raise ValueError(
            f"y: expected labels in [0, {spec.num_classes}) for model {spec}, "
            f"given values in [{low}, {high}]"
        )
    return labels.astype(np.int32)


def _int_at_least(value: int, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, given {value!r}")
    if value >= 2**31:
        raise ValueError(f"{what}: expected an int < 2**31, given {value}")
    return int(value)


def _finite_at_least(value: float, minimum: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what}: expected a number, given {value!r}")
    value = float(value)
    # The kernels take float32: a value that overflows float32 is not finite for them.
    if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX and value >= minimum):
        raise ValueError(f"{what}: expected a finite number >= {minimum}, given {value!r}")
    return value


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed: expected an int, given {seed!r}")
    seed = int(seed)
    if not -(2**63) <= seed < _UINT64_END:
        raise ValueError(f"seed: expected an int in [-2**63, 2**64), given {seed}")
    # The ABI reads the seed as uint64; the sandbox passes the i64 bits unchanged.
    return seed % _UINT64_END
