"""What one job may use (:class:`Limits`), and how a Store is capped to it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import wasmtime

from client.sandbox.bounds import ModuleBounds

WASM_PAGE_BYTES = 65536
MAX_MEMORY_BYTES = 2**32  # wasm32: 65536 pages of 64 KiB


@dataclass(frozen=True)
class Limits:
    """What one job may use.

    Attributes
    ----------
    memory_bytes
        Cap on the instance's linear memory (``memory.grow`` past it returns -1 in wasm).
    fuel
        Deterministic compute budget (wasmtime fuel, about one unit per wasm instruction);
        None runs unmetered, which is faster (metering costs ~40% on tight loops).
    deadline_seconds
        Wall-clock limit for the whole job, from when it opens; enforced by epoch
        interruption with a resolution of ``EPOCH_TICK_SECONDS``. None: no deadline.
    """

    memory_bytes: int = 512 * 2**20
    fuel: int | None = None
    deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        """Check every limit: a bad one raises ValueError naming it."""
        if isinstance(self.memory_bytes, bool) or not isinstance(self.memory_bytes, int):
            raise ValueError(f"memory_bytes: expected an int, given {self.memory_bytes!r}")
        if not WASM_PAGE_BYTES <= self.memory_bytes <= MAX_MEMORY_BYTES:
            raise ValueError(
                f"memory_bytes: expected {WASM_PAGE_BYTES}..{MAX_MEMORY_BYTES} (wasm32), "
                f"given {self.memory_bytes}"
            )
        if self.fuel is not None and (
            isinstance(self.fuel, bool) or not isinstance(self.fuel, int) or self.fuel <= 0
        ):
            raise ValueError(f"fuel: expected a positive int or None, given {self.fuel!r}")
        if self.deadline_seconds is not None:
            seconds = self.deadline_seconds
            if not isinstance(seconds, int | float) or not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(
                    f"deadline_seconds: expected a positive finite number or None, "
                    f"given {seconds!r}"
                )


def _set_store_limits(store: wasmtime.Store, memory_bytes: int, bounds: ModuleBounds) -> None:
    # One instance, at most the tables and memories the bounds let a module declare, tables
    # capped at the declared bound too: nothing but the linear-memory cap decides how much a
    # store may hold (a table.grow by 3e8 entries fails inside wasm instead of allocating).
    store.set_limits(
        memory_size=memory_bytes,
        table_elements=max(bounds.max_table_elements, 1),
        instances=1,
        tables=max(bounds.max_tables, 1),
        memories=max(bounds.max_memories, 1),
    )
