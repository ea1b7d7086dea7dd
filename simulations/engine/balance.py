"""Which worker runs which job of a batch: each client's own worker, unless that unbalances it.

A client's jobs run on its home worker (``partition_id % num_workers``), which keeps its data
from round to round. Clients are not equal, though: FedProx's synthetic devices draw
lognormal(4, 2) + 50 samples, so one device may hold 17,000 samples where the median holds 100,
and with two workers at full participation one worker had 16% more kernel work than the other
(3.57 s against 3.08 s a round, 1000 clients): the round waits for the slower one.

:func:`balance` starts from the home workers and moves single jobs from the most loaded worker
to the least loaded one while a move lowers the larger of the two loads. Moves are few (only
what closes the gap) and deterministic: the same batch and costs give the same assignment, so
a moved client moves every round at full participation, and its data is cached on the worker
it moved to. Which worker runs a job changes no bit of its result (each job's result depends
on its own seed and data alone).
"""

from __future__ import annotations

from collections.abc import Sequence

# At most this fraction of a batch moves away from its home workers (the rest keeps its
# data caches warm however skewed the costs).
MAX_MOVED_FRACTION = 0.25


def balance(homes: Sequence[int], costs: Sequence[float], num_workers: int) -> list[int]:
    """Return the worker of each job: its home, or another one that evens the loads out.

    Parameters
    ----------
    homes : each job's home worker, in 0 .. num_workers - 1.
    costs : each job's estimated cost (any unit, >= 0), in the same order.
    num_workers : the number of workers (>= 1).

    Returns
    -------
    list[int]
        One worker per job. Ties are broken by job order, so the result is deterministic.
    """
    if len(homes) != len(costs):
        raise ValueError(f"balance: {len(homes)} homes for {len(costs)} costs")
    assignment = list(homes)
    if num_workers < 2 or not assignment:
        return assignment
    loads = [0.0] * num_workers
    jobs_on: list[list[int]] = [[] for _ in range(num_workers)]
    for job, (worker, cost) in enumerate(zip(homes, costs, strict=True)):
        loads[worker] += cost
        jobs_on[worker].append(job)
    for _ in range(max(1, int(len(assignment) * MAX_MOVED_FRACTION))):
        heavy = max(range(num_workers), key=loads.__getitem__)
        light = min(range(num_workers), key=loads.__getitem__)
        gap = loads[heavy] - loads[light]
        # The job closest to half the gap lowers max(heavy, light) the most (on a tie, the
        # cheaper one: less data to build elsewhere); a job of cost >= gap would only swap
        # which worker is late.
        best, best_key = None, (gap, gap)
        for job in jobs_on[heavy]:
            if 0 < costs[job] < gap:
                key = (abs(gap / 2 - costs[job]), costs[job])
                if key < best_key:
                    best, best_key = job, key
        if best is None:
            break
        jobs_on[heavy].remove(best)
        jobs_on[light].append(best)
        loads[heavy] -= costs[best]
        loads[light] += costs[best]
        assignment[best] = light
    return assignment
