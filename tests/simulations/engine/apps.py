"""Small real ClientApps for the engine tests (they run in real worker processes).

``probe_app`` replies to a train message with ``delta = partition id * ones`` of the global
arrays' shapes and metrics that say where and how it ran (pid, partition id, the node
config). Some partitions misbehave on purpose (``BEHAVIOURS``): raise, hang, or announce
themselves in a marker file and then sleep (the first time) so that a test can SIGKILL
their worker.
"""

from __future__ import annotations

import gc
import itertools
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

RAISES = 5
# Set by a test before the pool forks: partition -> ("hang", seconds) | ("mark-and-sleep", dir)
# (or the run config's "probe-behaviours", for workers that are not forked)
BEHAVIOURS: dict[int, tuple[str, object]] = {}

probe_app = ClientApp()
_jobs_run = itertools.count()  # per process: the order in which a worker ran its jobs


@probe_app.train()
def train(message: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    # A lean worker does not inherit BEHAVIOURS: its test puts them in the run config.
    given = BEHAVIOURS or context.run_config.get("probe-behaviours", {})
    behaviour, argument = given.get(partition, ("honest", None))
    if partition == RAISES:
        raise RuntimeError(f"partition {partition} raises on purpose")
    if behaviour == "exit":
        raise SystemExit(3)
    if behaviour == "hang":
        time.sleep(float(argument))
    marker = Path(str(argument)) / f"started-{partition}"
    if behaviour == "mark-and-sleep" and not marker.exists():  # only the first time
        # Whole or absent (a test kills this worker as soon as the marker exists).
        partial = marker.with_suffix(".partial")
        partial.write_text(str(os.getpid()))
        os.replace(partial, marker)
        time.sleep(60)
    arrays = message.content.array_records["arrays"]
    delta = {name: np.full_like(array.numpy(), float(partition)) for name, array in arrays.items()}
    metrics = MetricRecord(
        {
            "num-examples": 1 + partition,
            "pid": os.getpid(),
            "partition-id": partition,
            "num-partitions": int(context.node_config["num-partitions"]),
            "node-id": int(context.node_id),
            "job-sequence": next(_jobs_run),
            "lazy-cache-size": _lazy_cache_size(),
            "frozen-objects": gc.get_freeze_count(),
        }
    )
    if behaviour == "huge-reply":  # far more than a reply to this instruction may hold
        delta["huge"] = np.zeros(int(argument), np.float32)
    if behaviour == "numpy-metric":  # a float subclass Flower's records admit
        metrics["numpy-value"] = np.float64(partition) / 4
    content = RecordDict(
        {"arrays": ArrayRecord({n: Array(a) for n, a in delta.items()}), "metrics": metrics}
    )
    if behaviour == "foreign-object":  # a sound envelope holding what the reply gate refuses
        array = next(iter(content.array_records["arrays"].values()))
        array.__dict__["dtype"] = np.str_("float32")
    return Message(content, reply_to=message)


@probe_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The same probe for an evaluate message (where it ran, what it was given)."""
    return train(message, context)


def _lazy_cache_size() -> int:
    # How many simulated clients this worker process keeps (sized by the worker at start).
    from simulations import federated_data

    return int(federated_data._synthetic_client_cached.cache_parameters()["maxsize"])


def make_probe_app() -> ClientApp:
    """A factory (the pool accepts one)."""
    return probe_app
