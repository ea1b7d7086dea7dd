"""simulations/splitting.py: IID, Dirichlet, shards and natural splits of a labelled pool."""

from __future__ import annotations

import numpy as np
import pytest

from simulations import splitting
from simulations.splitting import PartitionError

NUM_CLASSES = 10


def _labels(num_samples: int = 1500, seed: int = 0) -> np.ndarray:
    # Stored by class, as many data sets are: a split that forgets to shuffle shows up.
    return np.sort(np.random.default_rng(seed).integers(0, NUM_CLASSES, num_samples))


SPLITS = {
    "iid": lambda labels, clients, seed: splitting.iid(labels, clients, seed),
    "dirichlet": lambda labels, clients, seed: splitting.dirichlet(labels, clients, 0.5, seed),
    "shards": lambda labels, clients, seed: splitting.shards(labels, clients, 2, seed),
}


def _mean_label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the pool's."""
    pool = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    distances = [
        0.5 * np.abs(np.bincount(labels[part], minlength=NUM_CLASSES) / len(part) - pool).sum()
        for part in parts
    ]
    return float(np.mean(distances))


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_partitions_are_disjoint_sorted_non_empty_and_cover_the_pool(name):
    labels = _labels()
    parts = SPLITS[name](labels, 20, 7)
    assert len(parts) == 20
    assert all(len(part) > 0 for part in parts)
    assert all(np.all(np.diff(part) > 0) for part in parts)  # sorted, no repeats
    used = np.concatenate(parts)
    assert len(np.unique(used)) == len(used)  # disjoint
    assert used.min() >= 0 and used.max() < len(labels)
    if name == "shards":
        # Documented: the samples that do not fill a shard are left out.
        assert len(used) == len(labels) - len(labels) % (20 * 2)
    else:
        assert len(used) == len(labels)


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_partitions_are_deterministic_from_the_seed(name):
    labels = _labels()
    first = SPLITS[name](labels, 10, 3)
    second = SPLITS[name](labels, 10, 3)
    other = SPLITS[name](labels, 10, 4)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_sizes_differ_by_at_most_one_and_mix_the_classes():
    labels = _labels(1003)
    parts = splitting.iid(labels, 10, 0)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    # A sorted pool cut into slices would give each client one or two classes.
    assert all(len(np.unique(labels[part])) == NUM_CLASSES for part in parts)
    assert _mean_label_skew(labels, parts) < 0.15


def test_dirichlet_skews_labels_more_as_alpha_shrinks():
    labels = _labels()
    iid_skew = _mean_label_skew(labels, splitting.iid(labels, 20, 1))
    skew = {
        alpha: _mean_label_skew(labels, splitting.dirichlet(labels, 20, alpha, 1))
        for alpha in (0.1, 0.5, 100.0)
    }
    assert skew[0.1] > skew[0.5] > skew[100.0]
    assert skew[0.5] > 2 * iid_skew
    assert skew[100.0] < 0.2


def test_dirichlet_gives_every_client_the_minimum():
    labels = _labels()
    parts = splitting.dirichlet(labels, 30, 0.3, 5)
    assert min(len(part) for part in parts) >= splitting.DIRICHLET_MIN_PARTITION_SIZE


def test_shards_give_each_client_few_classes():
    labels = _labels()
    parts = splitting.shards(labels, 20, 2, 0)
    classes = [len(np.unique(labels[part])) for part in parts]
    # Two shards of a class-sorted pool: two classes, or a few more where a shard
    # straddles a class boundary.
    assert max(classes) <= 4
    assert np.mean(classes) < 3
    assert len({len(part) for part in parts}) == 1  # equal shards


def test_natural_gives_one_partition_per_group():
    parts = splitting.natural([3, 1, 2])
    assert [part.tolist() for part in parts] == [[0, 1, 2], [3], [4, 5]]
    with pytest.raises(PartitionError, match=r"groups \[1\] have no samples"):
        splitting.natural([3, 0, 2])


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (lambda labels: splitting.iid(labels, 0, 0), r"expected an int in 1\.\.100"),
        (lambda labels: splitting.iid(labels, 101, 0), r"given 101"),
        (lambda labels: splitting.dirichlet(labels, 5, 0.0, 0), "expected a float > 0"),
        (lambda labels: splitting.dirichlet(labels, 11, 0.5, 0), r"need >= 110 samples"),
        (lambda labels: splitting.shards(labels, 10, 0, 0), "expected an int >= 1"),
        (lambda labels: splitting.shards(labels, 30, 4, 0), r"need >= 120 samples"),
    ],
)
def test_impossible_splits_raise_partition_error(split, message):
    with pytest.raises(PartitionError, match=message):
        split(_labels(100))


def test_a_dirichlet_draw_that_never_satisfies_the_minimum_is_reported():
    # 200 samples, 20 clients of >= 10 each: only an exactly even draw would do.
    with pytest.raises(PartitionError, match="dirichlet alpha 0.05: no draw in 300 gave all 20"):
        splitting.dirichlet(_labels(200), 20, 0.05, 0)


# -- the same indices as the libraries they replace ----------------------------------------------
def _flwr_datasets_parts(partitioner, labels: np.ndarray) -> list[np.ndarray] | None:
    """Run a flwr-datasets partitioner on the pool; None when it gives up (no draw fits)."""
    import warnings

    from datasets import Dataset

    partitioner.dataset = Dataset.from_dict(
        {"label": labels.astype(np.int64), "position": np.arange(len(labels), dtype=np.int64)}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return [
                np.sort(np.asarray(partitioner.load_partition(p)["position"], np.int64))
                for p in range(partitioner.num_partitions)
            ]
    except ValueError as error:
        assert "max number of attempts" in str(error)
        return None


def _assert_same_parts(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.dtype == np.int64
        np.testing.assert_array_equal(mine, reference)


@pytest.mark.parametrize(("num_samples", "clients"), [(1, 1), (37, 5), (1437, 20), (1500, 7)])
def test_iid_is_flwr_datasets_iid_partitioner_on_the_seeded_permutation(num_samples, clients):
    from flwr_datasets.partitioner import IidPartitioner

    labels = _labels(num_samples, seed=num_samples)
    for seed in range(5):
        order = np.random.default_rng([seed, 0x11D]).permutation(num_samples)
        theirs = _flwr_datasets_parts(IidPartitioner(num_partitions=clients), labels[order])
        assert theirs is not None
        # The partitioner saw the permuted pool: its positions index the permutation.
        _assert_same_parts(
            splitting.iid(labels, clients, seed), [np.sort(order[part]) for part in theirs]
        )


@pytest.mark.parametrize(
    ("num_samples", "clients", "alpha"),
    [(1437, 20, 0.5), (1437, 20, 0.1), (1500, 7, 5.0), (300, 20, 0.3), (1437, 10, 1.0)],
)
def test_dirichlet_draws_are_flwr_datasets_dirichlet_partitioner(num_samples, clients, alpha):
    from flwr_datasets.partitioner import DirichletPartitioner

    labels = np.random.default_rng(num_samples).integers(0, NUM_CLASSES, num_samples)
    gave_up = 0
    for attempt in range(12):
        seed = splitting._partitioner_seed(attempt, attempt)
        theirs = _flwr_datasets_parts(
            DirichletPartitioner(
                num_partitions=clients,
                partition_by="label",
                alpha=alpha,
                min_partition_size=splitting.DIRICHLET_MIN_PARTITION_SIZE,
                self_balancing=False,
                shuffle=True,
                seed=seed,
            ),
            labels,
        )
        ours = splitting._dirichlet_draws(
            labels, clients, alpha, splitting.DIRICHLET_MIN_PARTITION_SIZE, seed
        )
        if theirs is None:
            assert ours is None
            gave_up += 1
        else:
            assert ours is not None
            _assert_same_parts(ours, theirs)
    if (num_samples, clients) == (300, 20):
        assert gave_up > 0  # the give-up path is compared too


@pytest.mark.parametrize("fraction", [0.03, 0.1, 0.15, 0.2, 0.5, 0.9])
def test_stratified_holdout_is_scikit_learns_stratified_train_test_split(fraction):
    from sklearn.model_selection import train_test_split

    from simulations.datasets import load_digits

    _, digits = load_digits()
    for labels in (digits, np.random.default_rng(1).integers(0, 3, 101)):
        for seed in (0, 1, 42, 2**32 - 1, 123456789):
            kept, held_out = splitting.stratified_holdout(labels, fraction, seed)
            reference = train_test_split(
                np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed
            )
            np.testing.assert_array_equal(kept, np.sort(reference[0]))
            np.testing.assert_array_equal(held_out, np.sort(reference[1]))


@pytest.mark.parametrize(
    ("labels", "fraction", "message"),
    [
        (np.repeat(np.arange(3), 5), 0.0, r"expected a float in \(0, 1\), given 0.0"),
        (np.repeat(np.arange(3), 5), 1.0, r"expected a float in \(0, 1\), given 1.0"),
        (np.array([0, 0, 1, 1, 2]), 0.5, r"classes \[2\] have 1"),
        (np.repeat(np.arange(10), 10), 0.05, "holds out 5; each side needs >= 10"),
        (np.repeat(np.arange(10), 10), 0.95, "keeps 5 and holds out 95"),
    ],
)
def test_a_stratified_holdout_that_cannot_be_made_is_refused(labels, fraction, message):
    with pytest.raises(PartitionError, match=message):
        splitting.stratified_holdout(labels, fraction, 0)
