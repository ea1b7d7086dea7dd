"""Engines: one wasmtime Engine per flag combination, the epoch ticker, runtime features."""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass

import wasmtime

# Bump when the engine configuration below changes: it is part of the disk cache key.
ENGINE_CONFIG_REVISION = 2
# Wall-clock resolution of deadlines: the epoch ticker's period.
EPOCH_TICK_SECONDS = 0.01
# The ticker thread stops after this long without deadline jobs.
EPOCH_IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class _EngineFlags:
    fuel: bool
    epoch: bool

    @property
    def tag(self) -> str:
        return f"fuel{int(self.fuel)}-epoch{int(self.epoch)}"


class _EpochTicker:
    """One thread per engine that advances the epoch every tick while deadline jobs are open.

    A job's deadline is a number of ticks relative to the epoch when it opens, so ticks are
    shared by all jobs and a finished job leaves nothing behind that could interrupt a later
    one (a per-job timer calling ``increment_epoch`` would hit every store of the engine,
    including other threads' jobs). Ticks while no deadline job is open reach no store. The
    thread lingers for ``EPOCH_IDLE_SECONDS`` after the last job closes: starting a thread per
    job cost ~1 ms a job, more than the rest of opening and closing it.
    """

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._users = 0
        self._running = False
        self._generation = 0  # bumped in a forked child: jobs the parent opened are not its own

    def acquire(self) -> int:
        """Count an open deadline job; return the generation to release it with."""
        with self._lock:
            self._users += 1
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="sandflower-epoch", daemon=True).start()
            return self._generation

    def release(self, generation: int) -> None:
        """Count a deadline job closed (one opened before a fork does not count in the child)."""
        with self._lock:
            if generation == self._generation:
                self._users -= 1

    def _after_fork(self) -> None:
        """Start over in a forked child: a fresh lock, no ticker thread, no open job."""
        self._lock = threading.Lock()
        self._users = 0
        self._running = False
        self._generation += 1

    def _run(self) -> None:
        idle_ticks = 0
        while True:
            time.sleep(EPOCH_TICK_SECONDS)
            with self._lock:
                idle_ticks = idle_ticks + 1 if self._users == 0 else 0
                if idle_ticks * EPOCH_TICK_SECONDS >= EPOCH_IDLE_SECONDS:
                    self._running = False
                    return
                self._engine.increment_epoch()


@dataclass
class _Engine:
    engine: wasmtime.Engine
    ticker: _EpochTicker | None


# Fuel metering and epoch interruption are Engine settings and change the generated code, so
# each combination needs its own Engine and its own compiled module. Unmetered code is ~40%
# faster, so jobs without fuel or deadline must not pay for them: one Engine per flag
# combination, created on first use and kept for the life of the process.
_engines: dict[_EngineFlags, _Engine] = {}
_engines_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A process forked while another thread held one of these locks (an epoch ticker ticks
    # every 10 ms; the coordinator runs kernels on more than one thread) inherits it held,
    # with no thread left to release it: its first job would wait for ever. The child has
    # only the forking thread, so no ticker runs and no job is open in it.
    global _engines_lock
    _engines_lock = threading.Lock()
    for found in _engines.values():
        if found.ticker is not None:
            found.ticker._after_fork()


def _engine(flags: _EngineFlags) -> _Engine:
    with _engines_lock:
        found = _engines.get(flags)
        if found is None:
            config = wasmtime.Config()
            config.wasm_simd = True
            config.wasm_relaxed_simd = True
            # Same bits on every device: relaxed_madd is always a fused multiply-add (one
            # instruction wherever the CPU has FMA), never mul+add on some hosts.
            config.wasm_relaxed_simd_deterministic = True
            config.wasm_bulk_memory = True
            # Proposals a kernel has no use for stay off: less surface for a hostile module.
            config.wasm_threads = False
            config.wasm_memory64 = False
            config.wasm_multi_memory = False
            config.wasm_gc = False
            config.wasm_exceptions = False
            config.wasm_component_model = False
            config.consume_fuel = flags.fuel
            config.epoch_interruption = flags.epoch
            engine = wasmtime.Engine(config)
            found = _Engine(engine, _EpochTicker(engine) if flags.epoch else None)
            _engines[flags] = found
        return found


# -- runtime features -------------------------------------------------------------------------
# The WebAssembly proposals a kernel may use, by the names kernels/build.py records (wasmtime's
# Config attribute is ``wasm_`` + the name with "_" for "-"). Turning "simd" off turns off
# "relaxed-simd" too: wasmtime refuses relaxed SIMD without SIMD.
KERNEL_FEATURES = ("simd", "relaxed-simd", "bulk-memory")


@functools.lru_cache(maxsize=16)
def features_needed(wasm_sha256: str, wasm: bytes) -> tuple[str, ...]:
    """Find the features of KERNEL_FEATURES that ``wasm`` cannot validate without.

    Found by validating the module (no compilation) under engines that each lack one feature,
    so the answer comes from the bytes themselves, not from what a manifest claims. Cached by
    ``wasm_sha256``, which the caller computed from ``wasm``.
    """
    return tuple(feature for feature in KERNEL_FEATURES if not _validates_without(wasm, feature))


def _validates_without(wasm: bytes, feature: str) -> bool:
    config = wasmtime.Config()
    config.wasm_simd = feature != "simd"
    config.wasm_relaxed_simd = feature not in ("simd", "relaxed-simd")
    config.wasm_bulk_memory = feature != "bulk-memory"
    try:
        wasmtime.Module.validate(wasmtime.Engine(config), wasm)
    except wasmtime.WasmtimeError:
        return False
    return True


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere processes do not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
