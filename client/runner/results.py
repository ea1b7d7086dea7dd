"""What a kernel job gives back: :class:`TrainResult` and :class:`EvalResult`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one local training job.

    Attributes
    ----------
    params
        The NEW local parameters, by name (``ModelSpec.array_shapes()``).
    loss
        Mean per-sample training loss over all minibatches of all epochs.
    seconds
        Wall time spent inside kernel calls.
    fuel_used
        Fuel the job consumed, None when it ran unmetered. With a budget or ``meter``: the
        fuel of the training call alone (what the simulated clock charges).
    num_examples
        Training samples (per epoch).
    steps_done
        Minibatch steps run (fewer than ``steps_planned`` when a budget stopped the job).
    steps_planned
        Minibatch steps of the whole job (``epochs * ceil(n / batch_size)``).
    fuel_planning
        Fuel of the metered probes (a warm-up, 0 steps, 1 step) that turned a fuel budget into
        a step budget (not part of ``fuel_used``); 0 without a fuel budget; the warm-up only
        when this process already probed a job of the same shapes.
    """

    params: dict[str, np.ndarray]
    loss: float
    seconds: float
    fuel_used: int | None
    num_examples: int
    steps_done: int = 0
    steps_planned: int = 0
    fuel_planning: int = 0

    @property
    def partial(self) -> bool:
        """True when a budget stopped the job before all its planned steps."""
        return self.steps_done < self.steps_planned


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and accuracy (argmax, first max wins) over ``num_examples`` samples."""

    loss: float
    accuracy: float
    num_examples: int
