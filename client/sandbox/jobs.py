"""A job: one unit of work in a fresh, capped Store and Instance; traps become typed errors."""

from __future__ import annotations

import ctypes
import math
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import wasmtime

from client.sandbox.abi import (
    MEMORY_EXPORT,
    STATUS_NAMES,
    STATUS_NO_MEMORY,
    STATUS_OK,
    _format_signature,
)
from client.sandbox.engine import EPOCH_TICK_SECONDS, _engine, _EngineFlags
from client.sandbox.errors import (
    DeadlineExceeded,
    KernelError,
    KernelStatusError,
    KernelTrapped,
    MemoryLimitReached,
    OutOfBounds,
    OutOfFuel,
    _one_line,
    _trap_cause,
)
from client.sandbox.ffi import _instance_export, call_numeric
from client.sandbox.limits import WASM_PAGE_BYTES, Limits, _set_store_limits

if TYPE_CHECKING:
    from client.sandbox.module import KernelModule


class Job:
    """One unit of work in its own Store and Instance; nothing survives it.

    Not thread-safe: use one job per thread (jobs in different threads run in parallel,
    since wasmtime releases the GIL while wasm runs). Open it with ``with module.job(...)``.
    """

    def __init__(self, module: KernelModule, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.kernel_seconds = 0.0
        self._opened = time.perf_counter()
        self._module = module
        self._failed: str | None = None
        self._final_fuel_used: int | None = None
        flags = _EngineFlags(
            fuel=limits.fuel is not None, epoch=limits.deadline_seconds is not None
        )
        engine = _engine(flags)
        compiled = module._compiled(flags)
        self._store: wasmtime.Store | None = wasmtime.Store(engine.engine)
        _set_store_limits(self._store, limits.memory_bytes, module.bounds)
        if limits.fuel is not None:
            self._store.set_fuel(limits.fuel)
        self._release_ticker = None
        if engine.ticker is not None:
            assert limits.deadline_seconds is not None
            generation = engine.ticker.acquire()
            # weakref.finalize: the ticker is released even if the job is never closed.
            self._release_ticker = weakref.finalize(self, engine.ticker.release, generation)
            # +1: the tick in progress when the job opens may be almost over.
            ticks = math.ceil(limits.deadline_seconds / EPOCH_TICK_SECONDS) + 1
            self._store.set_epoch_deadline(ticks)
        try:
            self._instance: wasmtime.Instance | None = wasmtime.Instance(self._store, compiled, [])
        except wasmtime.Trap as error:
            self.close()
            raise self._trap_error(error, "instantiate") from error
        except wasmtime.WasmtimeError as error:
            self.close()
            if "memory limits" in str(error):
                raise MemoryLimitReached(
                    f"the module's initial memory exceeds the cap of {limits.memory_bytes} "
                    f"bytes: {_one_line(error)}",
                    entry="instantiate",
                    job=name,
                ) from error
            raise KernelError(_one_line(error), entry="instantiate", job=name) from error
        # Exports are looked up by name when first used (never all of them): opening a job costs
        # the same whatever the module exports.
        self._funcs: dict[str, wasmtime.Func] = {}
        self._memory: wasmtime.Memory | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Job:
        """Open the job's context (the job is already open)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the job."""
        self.close()

    def close(self) -> None:
        """Free the Store (idempotent); fuel_used and kernel_seconds stay readable."""
        if self._store is None:
            return
        self._final_fuel_used = self._current_fuel_used()
        if self._release_ticker is not None:
            self._release_ticker()
        self._store = None
        self._instance = None
        self._funcs = {}
        self._memory = None

    @property
    def fuel_used(self) -> int | None:
        """Fuel consumed by this job so far (budget - remaining); None when unmetered."""
        if self._store is None:
            return self._final_fuel_used
        return self._current_fuel_used()

    def _current_fuel_used(self) -> int | None:
        if self.limits.fuel is None or self._store is None:
            return None
        return self.limits.fuel - self._store.get_fuel()

    # -- calls ------------------------------------------------------------------------------
    def call(self, entry: str, *args: Any) -> Any:
        """Run the export ``entry``; traps become typed :class:`KernelError` subclasses."""
        store = self._open_store(entry)
        if self._failed is not None:
            raise KernelError(
                f"not run: the job already failed ({self._failed}); its memory is not trusted",
                entry=entry,
                job=self.name,
            )
        func = self._funcs.get(entry)
        signature = self._module._functions.get(entry)
        if signature is None:
            raise KernelError(
                f"module {self._module.name} has no function export {entry!r}",
                entry=entry,
                job=self.name,
            )
        params, results = signature
        if "other" in params or "other" in results:
            raise KernelError(
                f"cannot call an export with non-numeric parameters or results "
                f"{_format_signature(signature)}",
                entry=entry,
                job=self.name,
            )
        if len(args) != len(params):
            raise ValueError(
                f"job {self.name!r}, entry {entry}: expected {len(params)} arguments "
                f"{_format_signature(signature)}, given {len(args)}"
            )
        values = [
            _to_wasm_value(t, v, entry, i)
            for i, (t, v) in enumerate(zip(params, args, strict=True))
        ]
        if func is None:
            assert self._instance is not None  # set with the Store, cleared with it
            found = _instance_export(store, self._instance, entry)
            if not isinstance(found, wasmtime.Func):
                raise KernelError(
                    f"module {self._module.name} has no function export {entry!r}",
                    entry=entry,
                    job=self.name,
                )
            func = found
            self._funcs[entry] = func
        started = time.perf_counter()
        try:
            return call_numeric(store, func, params, results, values)
        except wasmtime.Trap as error:
            failure = self._trap_error(error, entry)
            self._failed = str(failure)
            raise failure from error
        except wasmtime.WasmtimeError as error:
            self._failed = str(error)
            raise KernelError(_one_line(error), entry=entry, job=self.name) from error
        finally:
            self.kernel_seconds += time.perf_counter() - started

    def call_status(self, entry: str, *args: Any) -> None:
        """Run ``entry``; a non-zero i32 status -> MemoryLimitReached (2) / KernelStatusError."""
        status = self.call(entry, *args)
        if not isinstance(status, int):
            raise KernelError(
                f"expected an i32 status result, given {status!r}", entry=entry, job=self.name
            )
        if status == STATUS_OK:
            return
        name = STATUS_NAMES.get(status, "unknown status")
        if status == STATUS_NO_MEMORY:
            raise MemoryLimitReached(
                f"returned status {status} ({name}): scratch allocation failed under the "
                f"memory cap of {self.limits.memory_bytes} bytes",
                entry=entry,
                job=self.name,
            )
        raise KernelStatusError(
            f"returned status {status} ({name})", entry=entry, job=self.name, status=status
        )

    def _trap_error(self, error: wasmtime.Trap, entry: str) -> KernelError:
        code = error.trap_code
        cause = _trap_cause(error.message)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return OutOfFuel(
                f"used up its fuel budget of {self.limits.fuel}",
                entry=entry,
                job=self.name,
                trap_code=code,
            )
        if code == wasmtime.TrapCode.INTERRUPT:
            return DeadlineExceeded(
                f"ran past the deadline of {self.limits.deadline_seconds} s "
                f"({time.perf_counter() - self._opened:.3f} s since the job opened)",
                entry=entry,
                job=self.name,
                trap_code=code,
            )
        if code == wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS:
            return OutOfBounds(cause, entry=entry, job=self.name, trap_code=code)
        if code == wasmtime.TrapCode.UNREACHABLE and self._memory_is_full():
            # The only signal of a refused memory.grow is -1 inside wasm; a kernel that aborts
            # on it (C's __builtin_trap) reaches `unreachable` with its memory at the cap.
            return MemoryLimitReached(
                f"trapped ({cause}) with linear memory at the cap of "
                f"{self.limits.memory_bytes} bytes: memory.grow was refused",
                entry=entry,
                job=self.name,
            )
        return KernelTrapped(
            f"trapped ({code}): {cause}", entry=entry, job=self.name, trap_code=code
        )

    def _memory_is_full(self) -> bool:
        memory = self._find_memory()
        if memory is None or self._store is None:
            return False
        return memory.data_len(self._store) + WASM_PAGE_BYTES > self.limits.memory_bytes

    # -- memory -----------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` with the module's sf_alloc; MemoryLimitReached when it returns 0."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 0:
            raise ValueError(f"alloc: expected a byte count >= 0, given {nbytes!r}")
        if nbytes >= 2**31:
            raise MemoryLimitReached(
                f"cannot allocate {nbytes} bytes in a wasm32 memory",
                entry="sf_alloc",
                job=self.name,
            )
        ptr = self.call("sf_alloc", int(nbytes))
        if ptr == 0:
            raise MemoryLimitReached(
                f"sf_alloc({nbytes}) returned 0 under the memory cap of "
                f"{self.limits.memory_bytes} bytes",
                entry="sf_alloc",
                job=self.name,
            )
        return ptr & 0xFFFFFFFF

    def put(self, array: np.ndarray) -> int:
        """Allocate room for ``array`` and copy it in; returns its pointer."""
        array = _plain_array(array, "put")
        # sf_alloc(0) may legitimately return 0; one byte keeps "0 means failure" unambiguous.
        ptr = self.alloc(max(array.nbytes, 1))
        self.write(ptr, array)
        return ptr

    def put_all(self, items: Sequence[np.ndarray | int]) -> list[int]:
        """Place every item in ONE ``sf_alloc`` region; return their pointers, in order.

        An array is copied in; an int is a byte count of zeroed scratch (a result buffer).
        Each item gets the slot a single ``sf_alloc`` of its size gets under the ABI (16-byte
        aligned, at least 16 bytes, consecutive in a bump allocator), so the pointers are the
        ones a ``put``/``alloc`` per item returns from the reference allocator, and the
        kernel sees the same heap. One wasm call instead of one per buffer: in a fresh
        instance each costs ~40-80 us, ~0.3 ms of a small training job.
        """
        arrays: list[np.ndarray | None] = []
        sizes: list[int] = []
        for item in items:
            if isinstance(item, bool | np.bool_):
                raise ValueError(f"put_all: expected an array or a byte count, given {item!r}")
            if isinstance(item, int | np.integer):
                if item < 0:
                    raise ValueError(f"put_all: expected a byte count >= 0, given {item!r}")
                arrays.append(None)
                sizes.append(int(item))
            else:
                array = _plain_array(item, "put")
                arrays.append(array)
                sizes.append(array.nbytes)
        offsets = []
        total = 0
        for size in sizes:
            offsets.append(total)
            total += _slot_bytes(size)
        base = self.alloc(max(total, 1))
        address = self._checked_address(base, total, "host write")
        for placed, offset in zip(arrays, offsets, strict=True):
            if placed is not None and placed.nbytes:
                ctypes.memmove(address + offset, placed.ctypes.data, placed.nbytes)
        return [base + offset for offset in offsets]

    def write(self, ptr: int, array: np.ndarray) -> None:
        """Copy ``array``'s bytes (C order, little-endian) into linear memory at ``ptr``."""
        array = _plain_array(array, "write")
        address = self._checked_address(ptr, array.nbytes, "host write")
        if array.nbytes:
            ctypes.memmove(address, array.ctypes.data, array.nbytes)

    def read(self, ptr: int, shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
        """Copy out the array of ``shape`` and ``dtype`` stored at ``ptr``."""
        dtype = np.dtype(dtype).newbyteorder("<")
        if dtype.hasobject:
            raise ValueError(f"read: expected a plain numeric dtype, given {dtype}")
        out = np.empty(shape, dtype=dtype)
        address = self._checked_address(ptr, out.nbytes, "host read")
        if out.nbytes:
            ctypes.memmove(out.ctypes.data, address, out.nbytes)
        return out

    def memory_size(self) -> int:
        """Return the current size of linear memory in bytes."""
        store = self._open_store("memory")
        memory = self._find_memory()
        if memory is None:
            raise KernelError(
                f"module {self._module.name} exports no memory", entry="memory", job=self.name
            )
        return memory.data_len(store)

    def _checked_address(self, ptr: int, nbytes: int, what: str) -> int:
        # Re-read base and length on every copy: any call may have grown (and moved) memory.
        store = self._open_store(what)
        memory = self._find_memory()
        if memory is None:
            raise KernelError(
                f"module {self._module.name} exports no memory", entry=what, job=self.name
            )
        if isinstance(ptr, bool) or not isinstance(ptr, int | np.integer):
            raise ValueError(f"{what}: expected an int pointer, given {ptr!r}")
        ptr = int(ptr)
        size = memory.data_len(store)
        if ptr < 0 or ptr + nbytes > size:
            raise OutOfBounds(
                f"{nbytes} bytes at {ptr} are outside linear memory of {size} bytes",
                entry=what,
                job=self.name,
            )
        base = ctypes.cast(memory.data_ptr(store), ctypes.c_void_p).value or 0
        return base + ptr

    def _find_memory(self) -> wasmtime.Memory | None:
        if self._memory is None and self._store is not None:
            memories = self._module._memories
            name = MEMORY_EXPORT if MEMORY_EXPORT in memories else next(iter(memories), None)
            if name is not None and self._instance is not None:
                found = _instance_export(self._store, self._instance, name)
                if isinstance(found, wasmtime.Memory):
                    self._memory = found
        return self._memory

    def _open_store(self, entry: str) -> wasmtime.Store:
        if self._store is None:
            raise KernelError("the job is closed", entry=entry, job=self.name)
        return self._store


_I32_MIN, _U32_END = -(2**31), 2**32
_I64_MIN, _U64_END = -(2**63), 2**64


def _to_wasm_value(type_name: str, value: Any, entry: str, index: int) -> int | float:
    if type_name in ("f32", "f64"):
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            return float(value)
        raise ValueError(
            f"{entry}: argument {index} expected a number ({type_name}), given {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(
            f"{entry}: argument {index} expected an int ({type_name}), given {value!r}"
        )
    value = int(value)
    low, end, bits = (_I32_MIN, _U32_END, 32) if type_name == "i32" else (_I64_MIN, _U64_END, 64)
    if not low <= value < end:
        raise ValueError(
            f"{entry}: argument {index} expected an {type_name} in [{low}, {end}), given {value}"
        )
    # wasm integers are sign-agnostic; hand wasmtime the signed two's-complement reading.
    return value - end if value >= end // 2 else value


def _slot_bytes(nbytes: int) -> int:
    """Return the bytes one ``sf_alloc(nbytes)`` takes (ABI.md, "Memory"): 16-aligned, >= 16."""
    return max(16, (nbytes + 15) & ~15)


def _plain_array(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.hasobject or array.dtype.kind not in "biufc":
        raise ValueError(f"{what}: expected a numeric array, given dtype {array.dtype}")
    # Linear memory is little-endian and the kernels read C order.
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
