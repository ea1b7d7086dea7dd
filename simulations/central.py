"""Central evaluation: the global model on the scenario's held-out test set, in the sandbox."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from client.runner import KernelRunner
from kernels.spec import ModelSpec
from simulations.federated_data import DataConfig, load_central_test


def make_central_evaluate(
    data_config: DataConfig | Mapping[str, Any],
    spec: ModelSpec,
    runner: KernelRunner | None = None,
) -> Callable[[dict[str, np.ndarray]], tuple[float, float]]:
    """``arrays -> (loss, accuracy)`` on the central test set of the run's data set.

    ``data_config`` is the run's validated :class:`DataConfig` (or a flat run config, read
    through the same schema); ``runner`` runs the evaluation (default: the bundled kernel).
    """
    x_test, y_test = load_central_test(data_config)
    runner = runner if runner is not None else KernelRunner()

    def central_evaluate(arrays: dict[str, np.ndarray]) -> tuple[float, float]:
        result = runner.evaluate(spec, arrays, x_test, y_test, job_name="central evaluation")
        return float(result.loss), float(result.accuracy)

    return central_evaluate
