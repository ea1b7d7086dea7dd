"""coordinator/sampling.py: the seeded, order-independent draw of a round's nodes."""

import pytest

from coordinator.sampling import sample_count, sample_nodes


def test_sampling_is_reproducible_and_independent_of_listing_order():
    nodes = list(range(100, 200))
    first = sample_nodes(nodes, fraction=0.3, min_nodes=1, seed=5, server_round=2, purpose=0)
    again = sample_nodes(
        list(reversed(nodes)), fraction=0.3, min_nodes=1, seed=5, server_round=2, purpose=0
    )
    assert first == again and len(first) == 30 and len(set(first)) == 30
    other_round = sample_nodes(nodes, fraction=0.3, min_nodes=1, seed=5, server_round=3, purpose=0)
    other_seed = sample_nodes(nodes, fraction=0.3, min_nodes=1, seed=6, server_round=2, purpose=0)
    assert other_round != first and other_seed != first


@pytest.mark.parametrize(
    "count, fraction, min_nodes, expected",
    [
        (100, 0.29, 1, 29),
        (3, 0.1, 1, 1),
        (3, 0.1, 2, 2),
        (3, 1.0, 1, 3),
        (2, 0.5, 5, 2),
        (10, 0.0, 1, 0),
    ],
)
def test_sample_size(count, fraction, min_nodes, expected):
    picked = sample_nodes(
        range(count), fraction=fraction, min_nodes=min_nodes, seed=0, server_round=1, purpose=0
    )
    assert len(picked) == expected
    # What a scenario checks before the run (simulations/scenario.py) is what is drawn.
    assert sample_count(count, fraction=fraction, min_nodes=min_nodes) == expected
