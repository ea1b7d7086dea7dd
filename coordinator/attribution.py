"""What an aggregation rule did with each client's delta: its weight, whether it was picked.

For the report only; nothing here changes the aggregate. Each function takes the deltas in the
order the rule saw them and returns one :class:`Attribution` per delta. ``weight`` is the
client's share of the aggregate and sums to 1 over the deltas: for the coordinate-wise rules
(median, trimmed mean, Bulyan's second stage) it is the client's share averaged over all
coordinates, computed with the same ordering operations Flower uses, so ties are broken the
way Flower broke them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .aggregation import Arrays

# Coordinate-wise attribution stacks every delta (n x d floats plus an n x d index array);
# above this many values it is skipped and the note says so.
MAX_STACKED_VALUES = 50_000_000


@dataclass(frozen=True)
class Attribution:
    """What a rule did with one client's delta (for the report).

    ``weight``: its share of the aggregate; ``selected``: whether the rule kept it; ``note``: why.
    """

    weight: float
    selected: bool
    note: str


def num_examples_shares(num_examples: Sequence[int], rule: str) -> list[Attribution]:
    """FedAvg-style rules: each client weighs num_examples / total."""
    total = float(sum(num_examples))
    return [
        Attribution(count / total, True, f"{rule}: weighted mean by num-examples")
        for count in num_examples
    ]


def krum_selection(
    ranks: Sequence[int], num_selected: int, num_examples: Sequence[int], rule: str
) -> list[Attribution]:
    """Krum/MultiKrum: the ``num_selected`` best-scored deltas, averaged by num_examples.

    ``ranks[i]`` is delta i's place in Flower's Krum score order (0 = best).
    """
    total = float(
        sum(count for count, rank in zip(num_examples, ranks, strict=True) if rank < num_selected)
    )
    results = []
    for count, rank in zip(num_examples, ranks, strict=True):
        selected = rank < num_selected
        place = f"Krum score rank {rank + 1} of {len(ranks)}"
        results.append(
            Attribution(
                count / total if selected else 0.0,
                selected,
                f"{rule}: {'selected' if selected else 'not selected'} ({place})",
            )
        )
    return results


def median(deltas: Sequence[Arrays]) -> list[Attribution]:
    """Attribute the coordinate-wise median: each client's share of median coordinates.

    The share of coordinates where the client's value was the median (half a share per
    coordinate for each of the two middle values when n is even).
    """
    count = len(deltas)
    middle = [(count - 1) // 2] if count % 2 else [count // 2 - 1, count // 2]
    share_per_rank = 1.0 / len(middle)
    shares = _rank_shares(deltas, {rank: share_per_rank for rank in middle})
    if shares is None:
        return _unknown(count, "median")
    return [
        Attribution(
            float(shares[index]),
            True,
            f"median: its value was the median in {100 * shares[index] * len(middle):.1f}% "
            "of coordinates",
        )
        for index in range(count)
    ]


def trimmed_mean(deltas: Sequence[Arrays], beta: float) -> list[Attribution]:
    """Flower's trim_mean: per coordinate the lowest and highest int(beta * n) values are cut."""
    count = len(deltas)
    cut = int(beta * count)
    kept = count - 2 * cut
    shares = _rank_shares(deltas, {rank: 1.0 / kept for rank in range(cut, count - cut)})
    low = _rank_shares(deltas, {rank: 1.0 for rank in range(cut)})
    high = _rank_shares(deltas, {rank: 1.0 for rank in range(count - cut, count)})
    if shares is None or low is None or high is None:
        return _unknown(count, "trimmed mean")
    return [
        Attribution(
            float(shares[index]),
            True,
            f"trimmed mean (beta={beta}, {cut} cut per tail): trimmed as low in "
            f"{100 * low[index]:.1f}% and as high in {100 * high[index]:.1f}% of coordinates",
        )
        for index in range(count)
    ]


def bulyan(
    deltas: Sequence[Arrays], selection_order: Sequence[int], num_malicious: int
) -> list[Attribution]:
    """Attribute Bulyan: MultiKrum's picks, then each client's share of the averaged values.

    MultiKrum picks theta = n - 2f deltas (``selection_order``: their indices, in the order
    Flower returned them), then per coordinate the beta = theta - 2f values closest to the
    picked deltas' median are averaged.
    """
    count = len(deltas)
    theta = len(selection_order)
    beta = theta - 2 * num_malicious
    picked = [deltas[index] for index in selection_order]
    shares = np.zeros(count)
    size = sum(np.size(array) for array in picked[0].values()) if picked else 0
    if picked and theta * size <= MAX_STACKED_VALUES:
        for name in picked[0]:
            layer_stack = np.stack([np.asarray(item[name]) for item in picked])
            reference = np.median(layer_stack, axis=0)
            # The same call Flower's aggregate_n_closest_weights makes, so the same ties win.
            closest = np.argpartition(np.abs(layer_stack - reference), beta - 1, axis=0)[:beta]
            counts = np.bincount(closest.ravel(), minlength=theta)
            for position, index in enumerate(selection_order):
                shares[index] += counts[position] / (beta * size)
        known = True
    else:
        known = False
    results = []
    for index in range(count):
        selected = index in selection_order
        if not selected:
            results.append(
                Attribution(0.0, False, f"bulyan: not among the {theta} picked by MultiKrum")
            )
        elif known:
            results.append(
                Attribution(
                    float(shares[index]),
                    True,
                    f"bulyan: picked by MultiKrum; among the {beta} closest to the median in "
                    f"{100 * shares[index] * beta:.1f}% of coordinates",
                )
            )
        else:
            results.append(
                Attribution(
                    float("nan"),
                    True,
                    "bulyan: picked by MultiKrum; per-coordinate share not computed "
                    "(model too large)",
                )
            )
    return results


def _rank_shares(deltas: Sequence[Arrays], share_of_rank: dict[int, float]) -> np.ndarray | None:
    """Per client, the mean over coordinates of the share its rank earns there."""
    count = len(deltas)
    size = sum(np.size(array) for array in deltas[0].values())
    if count * size > MAX_STACKED_VALUES:
        return None
    shares = np.zeros(count)
    if not share_of_rank or size == 0:
        return shares
    for name in deltas[0]:
        stack = np.stack([np.asarray(item[name]).ravel() for item in deltas])
        order = np.argsort(stack, axis=0, kind="stable")  # order[rank, j] = client at that rank
        for rank, share in share_of_rank.items():
            shares += share * np.bincount(order[rank], minlength=count) / size
    return shares


def _unknown(count: int, rule: str) -> list[Attribution]:
    return [
        Attribution(float("nan"), True, f"{rule}: per-client share not computed (model too large)")
        for _ in range(count)
    ]
