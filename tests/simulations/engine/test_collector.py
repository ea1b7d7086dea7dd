"""simulations/engine/collector.py: objects alive at a freeze are left out of collections."""

import gc
import weakref

from simulations.engine.collector import freeze_survivors, thaw


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_alive_at_a_freeze_are_skipped_until_thawed():
    gc.collect()
    try:
        before = _Node()
        frozen = freeze_survivors()
        assert frozen == gc.get_freeze_count() > 0
        # Objects made after the freeze are collected as usual; the frozen cycle is not.
        after = _Node()
        before_ref, after_ref = weakref.ref(before), weakref.ref(after)
        del after, before
        gc.collect()
        assert before_ref() is not None and after_ref() is None
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert before_ref() is None  # thawed: collected as usual again
