"""Which nodes take part in a round: a seeded draw, independent of how the grid lists them.

Flower's own strategies sample with an unseeded ``random.sample``; a run must be reproducible
from its seed, so the adapter draws with this function instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def sample_nodes(
    node_ids: Iterable[int],
    *,
    fraction: float,
    min_nodes: int,
    seed: int,
    server_round: int,
    purpose: int,
    order_key: Callable[[int], Any] = lambda node_id: node_id,
) -> list[int]:
    """Draw ``max(min_nodes, int(n * fraction))`` of ``node_ids`` (at most n), reproducibly.

    The nodes are put in a canonical order (``order_key``) before the draw, so the same set of
    nodes gives the same sample for the same ``(seed, server_round, purpose)``, whatever order
    the grid listed them in. Returns the sample in that canonical order.
    """
    ordered = sorted(set(node_ids), key=order_key)
    count = sample_count(len(ordered), fraction=fraction, min_nodes=min_nodes)
    if count == 0:
        return []
    rng = np.random.default_rng([seed, server_round, purpose])
    picked = rng.choice(len(ordered), size=count, replace=False)
    return [ordered[index] for index in sorted(picked.tolist())]


def sample_count(num_nodes: int, *, fraction: float, min_nodes: int) -> int:
    """Return how many of ``num_nodes`` nodes :func:`sample_nodes` draws at ``fraction``."""
    if fraction <= 0.0 or num_nodes == 0:
        return 0
    # The epsilon keeps 0.29 * 100 from rounding down to 28.
    return min(num_nodes, max(min_nodes, int(num_nodes * fraction + 1e-9)))
