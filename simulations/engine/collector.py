"""Python's cyclic garbage collector in the engine's processes: what lives for the run, frozen.

A 1000-client round makes and drops hundreds of thousands of container objects (each job's
Flower records in a worker; a thousand reply Messages in the coordinator). Every ~700 net
allocations the cyclic collector runs, and every hundredth of those runs is a full
collection that walks EVERY tracked object: the imported libraries, the central test set, the
caches. Measured on a 1000-client round (synthetic-1-1-fedavg, fraction_train 1.0): the
coordinator spent 0.10-0.18 s per round in collections, mostly in the aggregation gap in
which the workers wait; ~0.02 s with the objects alive after round 1 frozen. A worker's 500
train jobs: 0.087 s, 0.011 s frozen.

``gc.freeze`` moves every object tracked now into a permanent generation that collections
skip. A frozen object is still freed by reference counting; only one that later becomes part
of a garbage cycle stays until :func:`thaw`. So freeze once set-up is done, when what is alive
is what lives for the run, and thaw when the run ends in a process that goes on.
"""

from __future__ import annotations

import gc


def freeze_survivors() -> int:
    """Exempt every object alive now from later collections; return the frozen count."""
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Return every frozen object to the collector (the run is over; the process goes on)."""
    gc.unfreeze()
