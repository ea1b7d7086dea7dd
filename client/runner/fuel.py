"""Fuel budgets: how a budget of wasmtime fuel becomes a budget of minibatch steps."""

from __future__ import annotations

# The fuel a metered job gets when its Limits set none: far more than any job can use (a
# 2^62-instruction job would run for decades), so metering only counts.
_UNCAPPED_FUEL = 2**62
# Fuel depends on the job's shapes, not its values (kernels/ABI.md, "Step budgets"): the probes
# of a fuel budget are measured once per shape and module. A device runs the same shapes every
# round, and three extra kernel calls cost as much as a small job.
_PROBED_FUEL: dict[tuple, tuple[int, int]] = {}
_PROBE_CACHE_SIZE = 4096


def steps_within_fuel(fuel_budget: int, fuel_no_step: int, fuel_one_step: int) -> int:
    """How many minibatch steps of a job surely fit in ``fuel_budget``.

    ``fuel_no_step`` and ``fuel_one_step`` are the measured fuel of the same job stopped after
    0 and 1 steps. Fuel is deterministic and the kernels' instruction counts depend on shapes
    only, not on values; a step costs at most the first one (a full minibatch plus an epoch's
    shuffle; a later step has at most that, kernels/ABI.md "Step budgets"), so k steps cost at
    most ``fuel_no_step + k * (fuel_one_step - fuel_no_step)``.
    """
    per_step = fuel_one_step - fuel_no_step
    if per_step <= 0:
        raise ValueError(
            f"fuel_one_step: expected more than fuel_no_step = {fuel_no_step}, "
            f"given {fuel_one_step}"
        )
    if fuel_budget < fuel_no_step:
        return 0
    return (fuel_budget - fuel_no_step) // per_step
