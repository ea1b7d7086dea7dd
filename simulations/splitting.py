"""Split one pool of labelled samples across simulated clients.

Each function returns one index array per client (into the pool), sorted, disjoint, and none
empty; the same inputs and seed give the same split. The splitting itself is flwr-datasets'
(IidPartitioner, DirichletPartitioner, ShardPartitioner) run on an in-memory
``datasets.Dataset`` of the pool's labels and positions: it works offline and takes
milliseconds on these sizes. What this module adds around it:

- IidPartitioner takes contiguous slices and has no seed, so the pool is permuted with the
  seed first (otherwise a data set stored by writer or class would not be IID).
- DirichletPartitioner draws until every partition has ``min_partition_size`` samples and
  gives up after 10 draws; it is retried with seeds derived from the run seed, and only
  when every attempt fails is that a PartitionError naming the alpha.
- ShardPartitioner (the FedAvg paper's pathological split) sorts by label, cuts
  ``clients * shards_per_client`` equal shards and drops the ``len(pool) % num_shards``
  samples that do not fill a shard; that is documented behaviour, kept.
- "natural" (one device's data per client) needs no partitioner: see :func:`natural`.
"""

from __future__ import annotations

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


def iid(labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Uniformly random, near-equal partitions (sizes differ by at most one).

    Parameters
    ----------
    labels : int [n], the pool's labels (only its length matters here).
    num_partitions : number of clients, 1..n.
    seed : the permutation's seed.
    """
    from flwr_datasets.partitioner import IidPartitioner

    _check_sizes(labels, num_partitions)
    order = np.random.default_rng([seed, 0x11D]).permutation(len(labels))
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = _dataset(labels[order], order)
    return _load_all(partitioner, num_partitions)


def dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label-skewed partitions: each class is divided across clients by a Dirichlet(alpha) draw.

    Smaller ``alpha`` gives more skew. Every partition gets at least
    ``DIRICHLET_MIN_PARTITION_SIZE`` samples (flwr-datasets redraws until it does).
    """
    from flwr_datasets.partitioner import DirichletPartitioner

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
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=True,
            seed=_partitioner_seed(seed, attempt),
        )
        partitioner.dataset = _dataset(labels, np.arange(len(labels)))
        try:
            with warnings.catch_warnings():
                # It warns on every redraw; a redraw is expected at small alpha.
                warnings.simplefilter("ignore", UserWarning)
                return _load_all(partitioner, num_partitions)
        except ValueError as error:
            if "max number of attempts" not in str(error):
                raise PartitionError(f"dirichlet split: {error}") from error
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
        raise PartitionError(
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


__all__ = ["PARTITIONINGS", "PartitionError", "dirichlet", "iid", "natural", "shards"]
