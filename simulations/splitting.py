"""Split one pool of labelled samples across simulated clients, and hold out a test share.

Each partition function returns one index array per client (into the pool), sorted,
disjoint, and none empty; the same inputs and seed give the same split. The splits are
flwr-datasets' partitioners (IidPartitioner, DirichletPartitioner, ShardPartitioner), and the
central held-out share is scikit-learn's stratified ``train_test_split``. IID, Dirichlet and
the held-out share are computed here with the same numpy draws in the same order, so they
give the same indices (tests compare them with the libraries for many seeds and sizes)
without importing scikit-learn, flwr-datasets and Hugging Face ``datasets``: those imports
took ~3 s and ~200 MB of the default scenario's start-up, in the coordinator and in every
worker forked from it. Shards still run flwr-datasets' partitioner (it sorts through
``datasets``). What this module adds around them:

- IidPartitioner takes contiguous slices and has no seed, so the pool is permuted with the
  seed first (otherwise a data set stored by writer or class would not be IID).
- DirichletPartitioner draws until every partition has ``min_partition_size`` samples and
  gives up after 10 redraws; it is retried with seeds derived from the run seed, and only
  when every attempt fails is that a PartitionError naming the alpha.
- ShardPartitioner (the FedAvg paper's pathological split) sorts by label, cuts
  ``clients * shards_per_client`` equal shards and drops the ``len(pool) % num_shards``
  samples that do not fill a shard; that is documented behaviour, kept.
- "natural" (one device's data per client) needs no partitioner: see :func:`natural`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

# Spelled once, as the Literal type of the schema's [data] partitioning.
Partitioning = Literal["iid", "dirichlet", "shards", "natural"]
PARTITIONINGS: tuple[str, ...] = get_args(Partitioning)

# Every Dirichlet partition gets at least this many samples (flwr-datasets' default is 10),
# so a client always has something to train on and a local held-out sample.
DIRICHLET_MIN_PARTITION_SIZE = 10
# Fresh partitioners tried before a Dirichlet split is declared impossible (10 draws each).
DIRICHLET_ATTEMPTS = 30


class PartitionError(ValueError):
    """A split that cannot be made with the given sizes and parameters."""


class PartitionCountError(PartitionError):
    """A split that cannot be made because of the number of partitions (too many clients)."""


def iid(labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Uniformly random, near-equal partitions (sizes differ by at most one).

    Parameters
    ----------
    labels : int [n], the pool's labels (only its length matters here).
    num_partitions : number of clients, 1..n.
    seed : the permutation's seed.
    """
    _check_sizes(labels, num_partitions)
    order = np.random.default_rng([seed, 0x11D]).permutation(len(labels))
    # IidPartitioner's contiguous shards (datasets' Dataset.shard): the first
    # len % num_partitions get one more; np.array_split cuts exactly so.
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_partitions)]


def dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label-skewed partitions: each class is divided across clients by a Dirichlet(alpha) draw.

    Smaller ``alpha`` gives more skew. Every partition gets at least
    ``DIRICHLET_MIN_PARTITION_SIZE`` samples (flwr-datasets redraws until it does).
    """
    _check_sizes(labels, num_partitions)
    if not alpha > 0:
        raise PartitionError(f"dirichlet alpha: expected a float > 0, given {alpha}")
    min_size = DIRICHLET_MIN_PARTITION_SIZE
    if len(labels) < min_size * num_partitions:
        raise PartitionError(
            f"a Dirichlet split gives every client >= {min_size} samples: {num_partitions} "
            f"clients need >= {min_size * num_partitions} samples, the pool has {len(labels)}"
        )
    # flwr-datasets redraws 10 times and then gives up, which fails often for small alpha
    # (alpha 0.1, 20 clients: 4 seeds in 10). Each attempt here is a fresh partitioner with
    # a seed derived from (seed, attempt), so the result stays a function of the seed.
    for attempt in range(DIRICHLET_ATTEMPTS):
        parts = _dirichlet_draws(
            labels, num_partitions, float(alpha), min_size, _partitioner_seed(seed, attempt)
        )
        if parts is not None:
            return parts
    raise PartitionError(
        f"dirichlet alpha {alpha}: no draw in {DIRICHLET_ATTEMPTS * 10} gave all "
        f"{num_partitions} clients >= {min_size} samples from a pool of {len(labels)}; "
        "raise the alpha or use fewer clients"
    )


def shards(
    labels: np.ndarray, num_partitions: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """Return the FedAvg paper's label shards: sort by label, cut shards, deal them at random.

    With ``shards_per_client = 2`` most clients see two classes. The
    ``len(labels) % (num_partitions * shards_per_client)`` samples that do not fill a
    shard are left out.
    """
    from flwr_datasets.partitioner import ShardPartitioner

    _check_sizes(labels, num_partitions)
    if shards_per_client < 1:
        raise PartitionError(f"shards per client: expected an int >= 1, given {shards_per_client}")
    num_shards = num_partitions * shards_per_client
    if len(labels) < num_shards:
        raise PartitionError(
            f"{num_partitions} clients x {shards_per_client} shards need >= {num_shards} "
            f"samples, the pool has {len(labels)}"
        )
    partitioner = ShardPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_shards_per_partition=shards_per_client,
        keep_incomplete_shard=False,
        shuffle=True,
        seed=_partitioner_seed(seed),
    )
    partitioner.dataset = _dataset(labels, np.arange(len(labels)))
    with warnings.catch_warnings():
        # pyarrow 25 deprecates an argument that datasets' sort passes; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        return _load_all(partitioner, num_partitions)


def _dirichlet_draws(
    labels: np.ndarray, num_partitions: int, alpha: float, min_size: int, seed: int
) -> list[np.ndarray] | None:
    """flwr-datasets 0.6.1's DirichletPartitioner (``self_balancing=False``), same draws.

    Its generator is ``default_rng(seed)``; per class, in sorted label order, one
    Dirichlet(alpha, ..., alpha) draw cuts that class's positions (in pool order) at
    ``int(cumsum(proportions) * count)``. A draw that leaves a partition below ``min_size``
    is redrawn from the same generator, 10 times at most: None when all 11 fail. Its final
    in-partition shuffle does not change which positions a partition holds (they are
    returned sorted), so it is not drawn.
    """
    rng = np.random.default_rng(seed=seed)
    alphas = np.array([alpha], dtype=float).repeat(num_partitions)
    targets = np.asarray(labels, dtype=np.int64)
    classes = sorted(np.unique(targets).tolist())
    for _ in range(11):  # the first draw and flwr-datasets' 10 redraws
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for label in classes:
            positions = np.nonzero(targets == label)[0]
            proportions = rng.dirichlet(alphas)
            cut_at = (np.cumsum(proportions) * len(positions)).astype(int)[:-1]
            for chunk_list, chunk in zip(chunks, np.split(positions, cut_at), strict=True):
                chunk_list.append(chunk)
        parts = [np.sort(np.concatenate(chunk_list)).astype(np.int64) for chunk_list in chunks]
        if min(len(part) for part in parts) >= min_size:
            return parts
    return None


def stratified_holdout(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, held out) positions, sorted: a stratified share ``test_fraction`` held out.

    The same sets as scikit-learn 1.9's ``train_test_split(arange(n), test_size=
    test_fraction, stratify=labels, random_state=seed)`` (its StratifiedShuffleSplit: the
    same ``RandomState(seed)`` draws in the same order), without importing scikit-learn.

    Raises
    ------
    PartitionError
        The fraction is outside (0, 1), a class has fewer than 2 samples, or a side would
        get fewer samples than there are classes.
    """
    labels = np.asarray(labels)
    num_samples = len(labels)
    if not 0 < test_fraction < 1:
        raise PartitionError(f"test fraction: expected a float in (0, 1), given {test_fraction}")
    num_test = math.ceil(test_fraction * num_samples)
    num_train = num_samples - num_test
    classes, class_of, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise PartitionError(
            f"a stratified hold-out needs >= 2 samples per class; classes "
            f"{classes[class_counts < 2].tolist()} have 1"
        )
    if min(num_train, num_test) < len(classes):
        raise PartitionError(
            f"a stratified hold-out of {test_fraction} of {num_samples} samples keeps "
            f"{num_train} and holds out {num_test}; each side needs >= {len(classes)} "
            "(one per class)"
        )
    class_positions = np.split(np.argsort(class_of, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, num_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, num_test, rng)
    kept, held_out = [], []
    for index, positions in enumerate(class_positions):
        shuffled = positions.take(rng.permutation(class_counts[index]), mode="clip")
        kept.append(shuffled[: train_counts[index]])
        held_out.append(shuffled[train_counts[index] : train_counts[index] + test_counts[index]])
    # scikit-learn then permutes both sides; their sets, all that is used, stay the same.
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held_out))


def _approximate_mode(
    class_counts: np.ndarray, num_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    # scikit-learn's utils.extmath._approximate_mode: each class's floored share of the
    # draws, the rest going to the largest remainders, ties broken by rng.choice.
    continuous = class_counts / class_counts.sum() * num_draws
    floored = np.floor(continuous)
    need_to_add = int(num_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def natural(group_sizes: Sequence[int]) -> list[np.ndarray]:
    """One partition per natural group (device, file) of a pool made by concatenating them."""
    if any(size < 1 for size in group_sizes):
        empty = [index for index, size in enumerate(group_sizes) if size < 1]
        raise PartitionError(f"natural split: groups {empty} have no samples")
    bounds = np.cumsum([0, *group_sizes])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(len(group_sizes))]


def _check_sizes(labels: np.ndarray, num_partitions: int) -> None:
    if labels.ndim != 1:
        raise PartitionError(f"labels: expected 1 dimension, given shape {labels.shape}")
    if not 1 <= num_partitions <= len(labels):
        raise PartitionCountError(
            f"num partitions: expected an int in 1..{len(labels)} (the pool's size), "
            f"given {num_partitions}"
        )


def _partitioner_seed(seed: int, attempt: int = 0) -> int:
    # flwr-datasets seeds np.random.default_rng(seed) directly; derive a distinct stream so
    # the partitioner's draws do not repeat any other draw made from the run seed.
    return int(np.random.SeedSequence([seed, 0xD1, attempt]).generate_state(1)[0])


def _dataset(labels: np.ndarray, positions: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict(
        {"label": np.asarray(labels, dtype=np.int64), "position": np.asarray(positions, np.int64)}
    )


def _load_all(partitioner, num_partitions: int) -> list[np.ndarray]:
    parts = []
    for partition_id in range(num_partitions):
        positions = np.asarray(partitioner.load_partition(partition_id)["position"], np.int64)
        if positions.size == 0:
            raise PartitionError(f"partition {partition_id} came out empty")
        parts.append(np.sort(positions))
    return parts


__all__ = [
    "PARTITIONINGS",
    "PartitionError",
    "dirichlet",
    "iid",
    "natural",
    "shards",
    "stratified_holdout",
]
