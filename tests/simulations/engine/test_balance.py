"""simulations/engine/balance.py: home workers unless moving a few jobs evens the loads."""

import numpy as np
import pytest

from simulations.datasets import synthetic_device_size
from simulations.engine.balance import MAX_MOVED_FRACTION, balance


def _loads(assignment, costs, workers):
    loads = [0.0] * workers
    for worker, cost in zip(assignment, costs, strict=True):
        loads[worker] += cost
    return loads


def test_balanced_homes_stay_home():
    homes = [0, 1, 0, 1]
    assert balance(homes, [5.0, 5.0, 3.0, 3.0], 2) == homes


def test_one_worker_or_no_job_is_left_alone():
    assert balance([0, 0, 0], [1.0, 9.0, 3.0], 1) == [0, 0, 0]
    assert balance([], [], 3) == []


def test_a_skewed_batch_moves_the_job_that_closes_the_gap():
    # Worker 0 holds 10 + 4 + 1 + 0.5 * 5 = 17.5, worker 1 holds 1: half the gap is 8.25, and
    # the 10 is nearest it (17.5 / 1 -> 7.5 / 11). Then worker 1 is the heavy one, half its gap
    # is 1.75: its 1 moves (8.5 / 10). Half the gap is now 0.75 and worker 1 holds only the 10.
    costs = [10.0, 4.0, 1.0] + [0.5] * 5 + [1.0]
    assignment = balance([0] * 8 + [1], costs, 2)
    assert assignment == [1] + [0] * 8
    assert _loads(assignment, costs, 2) == [8.5, 10.0]


def test_a_tie_moves_the_cheaper_job():
    assert balance([0, 0, 0, 1], [10.0, 4.0, 1.0, 1.0], 2) == [0, 1, 0, 1]


def test_a_job_bigger_than_the_gap_never_moves():
    # Moving the 9 would make worker 1 the late one (9 + 2 > 9): nothing moves.
    assert balance([0, 1], [9.0, 2.0], 2) == [0, 1]


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_synthetic_populations_end_within_one_job_of_even(workers):
    # FedProx's synthetic devices: lognormal(4, 2) + 50 samples, one job per client.
    sizes = [190.0 + synthetic_device_size(device, 42) for device in range(1000)]
    homes = [device % workers for device in range(1000)]
    before = _loads(homes, sizes, workers)
    assignment = balance(homes, sizes, workers)
    after = _loads(assignment, sizes, workers)
    assert max(after) < max(before)
    assert max(after) - min(after) <= max(sizes)
    moved = sum(a != h for a, h in zip(assignment, homes, strict=True))
    assert 0 < moved <= MAX_MOVED_FRACTION * len(homes)
    assert balance(homes, sizes, workers) == assignment  # deterministic


def test_at_most_a_fraction_of_the_batch_moves():
    homes = [0] * 100
    assignment = balance(homes, [1.0] * 100, 2)
    assert sum(assignment) == int(100 * MAX_MOVED_FRACTION)


def test_homes_and_costs_must_match():
    with pytest.raises(ValueError, match="3 homes for 2 costs"):
        balance([0, 1, 0], [1.0, 2.0], 2)


def test_synthetic_device_size_is_the_devices_own_size():
    from simulations.datasets import synthetic_device

    for device in (0, 1, 17, 999):
        x, y = synthetic_device(1.0, 1.0, device, 42)
        assert synthetic_device_size(device, 42) == len(x) == len(y)
    assert np.ptp([synthetic_device_size(d, 42) for d in range(50)]) > 100  # they differ
