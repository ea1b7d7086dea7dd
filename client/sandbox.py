"""The wasm sandbox: load a kernel module once, run each job in a fresh, capped Store.

This is the only module of the project that imports wasmtime (and the only one that touches
raw ctypes). It knows the kernel ABI's surface (kernels/ABI.md: export names, signatures,
``sf_abi_version``, ``sf_alloc``, status codes) but nothing about models.

- A module is compiled once per process and engine configuration, and cached on disk as
  wasmtime's serialized form, keyed by the module's sha256, the wasmtime version, the machine
  and the engine flags. A corrupt or stale cache entry is recompiled, never trusted.
- A module is refused before it is compiled if its bytes declare more than
  :class:`~client.sandbox_bounds.ModuleBounds` allows (size, imports, exports, functions,
  tables, memories, globals, segments, a start function; client/sandbox_bounds.py), and before
  anything of it runs if it is not valid wasm, lacks a required export (or has the wrong
  signature), or reports another ``sf_abi_version``. Only an accepted module is written to the
  disk cache or kept in this process.
- Each job gets a fresh Store and Instance with a linear-memory cap, an optional fuel budget
  and an optional wall-clock deadline. Traps become typed errors naming the entry and the job;
  the process and the next job are unaffected.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import re
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from importlib.metadata import version as _package_version
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from wasmtime import _ffi as wasmtime_ffi
from wasmtime._extern import wrap_extern

from client.sandbox_bounds import ModuleBounds, ModuleBoundsError, check_module_bounds

log = logging.getLogger(__name__)

ABI_VERSION = 1

# Every export kernels/ABI.md names, with its wasm signature (params, results). A module that
# lacks one, or has it with another signature, is refused before it runs.
KERNEL_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sf_abi_version": ((), ("i32",)),
    "sf_alloc": (("i32",), ("i32",)),
    "sf_heap_reset": ((), ()),
    "sf_sgemm": (("i32",) * 9, ()),
    "sf_dense_forward": (("i32",) * 7, ()),
    "sf_dense_backward": (("i32",) * 9, ()),
    "sf_relu": (("i32",) * 3, ()),
    "sf_relu_backward": (("i32",) * 4, ()),
    "sf_softmax_xent": (("i32",) * 5, ("f32",)),
    "sf_sgd_update": (("i32",) * 4 + ("f32", "f32"), ()),
    "sf_model_forward": (("i32",) * 5, ("i32",)),
    "sf_model_loss_grad": (("i32",) * 7, ("i32",)),
    "sf_train": (("i32",) * 8 + ("f32", "f32", "i64", "i32"), ("i32",)),
    "sf_train_budget": (("i32",) * 8 + ("f32", "f32", "i64", "i32", "i32", "i32"), ("i32",)),
    "sf_evaluate": (("i32",) * 6, ("i32",)),
}
MEMORY_EXPORT = "memory"
KERNEL_EXPORTS: tuple[str, ...] = (*KERNEL_SIGNATURES, MEMORY_EXPORT)

# Status codes of the model-level entries (kernels/ABI.md, "Status codes").
STATUS_OK = 0
STATUS_NO_MEMORY = 2
STATUS_NAMES = {0: "SF_OK", 1: "SF_BAD_SPEC", 2: "SF_NO_MEMORY", 3: "SF_BAD_ARGUMENT"}

WASMTIME_VERSION = _package_version("wasmtime")
WASM_PAGE_BYTES = 65536
MAX_MEMORY_BYTES = 2**32  # wasm32: 65536 pages of 64 KiB

# Bump when the engine configuration below changes: it is part of the disk cache key.
ENGINE_CONFIG_REVISION = 2
# Wall-clock resolution of deadlines: the epoch ticker's period.
EPOCH_TICK_SECONDS = 0.01
# The ticker thread stops after this long without deadline jobs.
EPOCH_IDLE_SECONDS = 2.0
# Budget for the refusal probe (instantiate + sf_abi_version): a hostile module cannot hang it
# or make it allocate more than this, whatever it declares.
PROBE_FUEL = 10_000_000
PROBE_DEADLINE_SECONDS = 1.0
PROBE_MEMORY_BYTES = 64 * 2**20
# The probe's engine has both fuel and epochs: the ClientApp's default limits use the same
# engine, so loading a module and running its jobs compile it once.
PROBE_FLAGS_FUEL, PROBE_FLAGS_EPOCH = True, True

CACHE_DIR_ENV = "SANDFLOWER_CACHE_DIR"
_CACHE_MAGIC = b"SFCWASM1"


# -- errors ---------------------------------------------------------------------------------
class SandboxError(Exception):
    """Base of every error the sandbox raises."""


class ModuleRefused(SandboxError):
    """The module is not one we run: invalid wasm, imports, missing exports, other ABI."""


class KernelError(SandboxError):
    """A failure while running one entry of one job; the message names both."""

    def __init__(self, message: str, *, entry: str, job: str) -> None:
        super().__init__(f"job {job!r}, entry {entry}: {message}")
        self.entry = entry
        self.job = job


class KernelTrapped(KernelError):
    """The kernel trapped; ``trap_code`` is wasmtime's TrapCode, or None when unknown."""

    def __init__(self, message: str, *, entry: str, job: str, trap_code: Any = None) -> None:
        super().__init__(message, entry=entry, job=job)
        self.trap_code = trap_code


class OutOfBounds(KernelTrapped):
    """A memory access outside linear memory (by the kernel, or a host read/write)."""


class OutOfFuel(KernelTrapped):
    """The job used up its fuel budget (``Limits.fuel``)."""


class DeadlineExceeded(KernelTrapped):
    """The job ran past its wall-clock deadline (``Limits.deadline_seconds``)."""


class MemoryLimitReached(KernelError):
    """The kernel needed more memory than the cap: grow refused, sf_alloc 0, SF_NO_MEMORY."""


class KernelStatusError(KernelError):
    """An entry returned a non-zero status other than SF_NO_MEMORY."""

    def __init__(self, message: str, *, entry: str, job: str, status: int) -> None:
        super().__init__(message, entry=entry, job=job)
        self.status = status


# -- limits ---------------------------------------------------------------------------------
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
        """Check every limit's type and range; raise ValueError naming the field."""
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


# -- engines --------------------------------------------------------------------------------
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

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="sandflower-epoch", daemon=True).start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1

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


_PROBE_FLAGS = _EngineFlags(fuel=PROBE_FLAGS_FUEL, epoch=PROBE_FLAGS_EPOCH)


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


# -- compiled modules: in-process and disk caches ---------------------------------------------
_compiled_modules: dict[tuple[str, _EngineFlags], wasmtime.Module] = {}
_compiled_lock = threading.RLock()  # _load_compiled calls _remember under it


def clear_compiled_cache() -> None:
    """Forget the modules compiled in this process (the disk cache stays)."""
    with _compiled_lock:
        _compiled_modules.clear()


def default_cache_dir() -> Path:
    """$SANDFLOWER_CACHE_DIR, else ~/.cache/sandflower."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "sandflower"


def cache_path(cache_dir: Path, sha256: str, flags: _EngineFlags) -> Path:
    """Where the serialized module for ``sha256`` under ``flags`` lives."""
    machine = platform.machine() or "unknown"
    name = (
        f"{sha256}-wasmtime{WASMTIME_VERSION}-{machine}-{flags.tag}"
        f"-cfg{ENGINE_CONFIG_REVISION}.cwasm"
    )
    return cache_dir / name


def _compile(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    # A seam of its own so tests can count compilations.
    return wasmtime.Module(engine, wasm)


def _read_cache(path: Path, engine: wasmtime.Engine, sha256: str) -> wasmtime.Module | None:
    # Serialized modules are native code that wasmtime trusts; a digest over the payload keeps
    # a truncated or corrupted file from ever reaching Module.deserialize. The digest is no
    # defence against someone who can write the file, so an entry that another user owns or
    # that others may write is never deserialized either.
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                log.warning("module cache %s is writable by others or not ours: recompiling", path)
                return None
            blob = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("module cache %s unreadable (%s): recompiling", path, error)
        return None
    header = len(_CACHE_MAGIC) + 64
    payload = blob[header:]
    if (
        blob[: len(_CACHE_MAGIC)] != _CACHE_MAGIC
        or blob[len(_CACHE_MAGIC) : len(_CACHE_MAGIC) + 32] != bytes.fromhex(sha256)
        or blob[len(_CACHE_MAGIC) + 32 : header] != hashlib.sha256(payload).digest()
    ):
        log.warning("module cache %s is corrupt: recompiling", path)
        return None
    try:
        return wasmtime.Module.deserialize(engine, payload)
    except wasmtime.WasmtimeError as error:
        log.warning("module cache %s does not fit this engine (%s): recompiling", path, error)
        return None


def _write_cache(path: Path, module: wasmtime.Module, sha256: str) -> None:
    payload = bytes(module.serialize())
    blob = _CACHE_MAGIC + bytes.fromhex(sha256) + hashlib.sha256(payload).digest() + payload
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Atomic: readers (other processes) see the old file or the whole new one.
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(blob)
            os.replace(temp_name, path)
        except BaseException:
            os.unlink(temp_name)
            raise
    except OSError as error:
        log.warning("cannot write module cache %s (%s): running without it", path, error)


def _load_compiled(
    wasm: bytes, sha256: str, name: str, flags: _EngineFlags, cache_dir: Path, *, accepted: bool
) -> tuple[wasmtime.Module, bool]:
    """Return the module compiled for ``flags`` and whether this call compiled it.

    The module comes from this process, from the disk cache, or is compiled now.

    Only an ``accepted`` module (one that passed every check) is kept in this process and
    written to the disk cache: a refused module leaves nothing behind.
    """
    key = (sha256, flags)
    with _compiled_lock:
        found = _compiled_modules.get(key)
        if found is not None:
            return found, False
        engine = _engine(flags).engine
        path = cache_path(cache_dir, sha256, flags)
        # Entries exist only for modules that were accepted once; the checks run again anyway.
        module = _read_cache(path, engine, sha256)
        fresh = module is None
        if module is None:
            try:
                module = _compile(engine, wasm)
            except wasmtime.WasmtimeError as error:
                raise ModuleRefused(
                    f"module {name}: not a valid wasm module: {_one_line(error)}"
                ) from error
        if accepted:
            _remember(module, sha256, flags, cache_dir, write=fresh)
        return module, fresh


def _remember(
    module: wasmtime.Module, sha256: str, flags: _EngineFlags, cache_dir: Path, *, write: bool
) -> None:
    """Keep an accepted module in this process, and on disk when it was freshly compiled."""
    with _compiled_lock:
        _compiled_modules.setdefault((sha256, flags), module)
    if write:
        _write_cache(cache_path(cache_dir, sha256, flags), module, sha256)


# -- value types, read without wasmtime's ValType.__str__/__eq__ --------------------------------
# wasmtime-py aborts the whole process when it asks a v128 (or reference) type for its kind, so
# a hostile module exporting `(func (param v128))` must never reach ValType.__eq__, __str__ or
# Func.__call__. wasmtime_wasm_valtype_equal compares without asking for the kind.
_NUMBER_TYPES = {
    "i32": wasmtime.ValType.i32(),
    "i64": wasmtime.ValType.i64(),
    "f32": wasmtime.ValType.f32(),
    "f64": wasmtime.ValType.f64(),
}


def _type_name(value_type: wasmtime.ValType) -> str:
    for type_name, known in _NUMBER_TYPES.items():
        if wasmtime_ffi.wasmtime_wasm_valtype_equal(value_type.ptr(), known.ptr()):
            return type_name
    return "other"


def _signature(func_type: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(_type_name(t) for t in func_type.params),
        tuple(_type_name(t) for t in func_type.results),
    )


def _format_signature(signature: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = signature
    return f"({', '.join(params)}) -> ({', '.join(results)})"


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


# -- the module -----------------------------------------------------------------------------
class KernelModule:
    """A validated kernel module, compiled once per process and engine configuration.

    Build one with :meth:`from_file` or :meth:`from_bytes`; run work with :meth:`job`.

    Attributes
    ----------
    sha256
        Hex sha256 of the module's wasm bytes (what a coordinator pins).
    name
        Where the module came from, for messages.
    bounds
        What the module was allowed to declare (:class:`ModuleBounds`).

    Loading checks, in this order, stopping at the first refusal: the declared counts and
    sizes against ``bounds`` (on the bytes, nothing compiled), compilation (wasmtime validates),
    imports and required exports, then ``sf_abi_version`` in a throwaway Store capped in fuel,
    time, memory, tables and instances. Only then is the compiled module cached.
    """

    def __init__(
        self,
        wasm: bytes,
        *,
        name: str,
        cache_dir: str | os.PathLike | None,
        required_exports: tuple[str, ...] | list[str],
        abi_version: int | None,
        bounds: ModuleBounds | None = None,
    ) -> None:
        self.name = name
        self.bounds = bounds or ModuleBounds()
        if not isinstance(self.bounds, ModuleBounds):
            raise TypeError(f"bounds: expected a ModuleBounds, given {type(bounds)}")
        try:
            check_module_bounds(wasm, self.bounds)
        except ModuleBoundsError as error:
            raise ModuleRefused(f"module {name}: {error}") from error
        self.sha256 = hashlib.sha256(wasm).hexdigest()
        self._wasm = wasm
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._accepted = False
        # One compilation for all checks: the probe's engine (fuel + epoch interruption).
        probed, fresh = _load_compiled(
            wasm, self.sha256, name, _PROBE_FLAGS, self._cache_dir, accepted=False
        )
        self._functions, self._memories = self._check_interface(probed, tuple(required_exports))
        if abi_version is not None:
            self._check_abi_version(abi_version, probed)
        self._accepted = True
        _remember(probed, self.sha256, _PROBE_FLAGS, self._cache_dir, write=fresh)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        required_exports: tuple[str, ...] | list[str] = KERNEL_EXPORTS,
        abi_version: int | None = ABI_VERSION,
        bounds: ModuleBounds | None = None,
    ) -> KernelModule:
        """Load, validate and compile the .wasm file at ``path`` (OSError if unreadable).

        A file over ``bounds.max_module_bytes`` is refused without reading it whole.
        """
        bounds = bounds or ModuleBounds()
        with open(path, "rb") as handle:
            wasm = handle.read(bounds.max_module_bytes + 1)
        return cls(
            wasm,
            name=str(path),
            cache_dir=cache_dir,
            required_exports=required_exports,
            abi_version=abi_version,
            bounds=bounds,
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | str,
        *,
        name: str,
        cache_dir: str | os.PathLike | None = None,
        required_exports: tuple[str, ...] | list[str] = KERNEL_EXPORTS,
        abi_version: int | None = ABI_VERSION,
        bounds: ModuleBounds | None = None,
    ) -> KernelModule:
        """Validate and compile a module given as wasm bytes, or as WAT text when ``str``."""
        if isinstance(data, str):
            try:
                wasm = bytes(wasmtime.wat2wasm(data))
            except wasmtime.WasmtimeError as error:
                raise ModuleRefused(f"module {name}: not valid WAT: {_one_line(error)}") from error
        elif isinstance(data, bytes | bytearray):
            wasm = bytes(data)
        else:
            raise TypeError(f"module {name}: expected bytes or WAT text, given {type(data)}")
        return cls(
            wasm,
            name=name,
            cache_dir=cache_dir,
            required_exports=required_exports,
            abi_version=abi_version,
            bounds=bounds,
        )

    def __repr__(self) -> str:
        """Return the module's name and the start of its sha256."""
        return f"KernelModule(name={self.name!r}, sha256={self.sha256[:12]}...)"

    def job(self, name: str, limits: Limits = Limits()) -> Job:
        """Return a fresh Store and Instance for one unit of work; use it as a context manager."""
        return Job(self, name, limits)

    # -- internals --------------------------------------------------------------------------
    def _compiled(self, flags: _EngineFlags) -> wasmtime.Module:
        module, _ = _load_compiled(
            self._wasm, self.sha256, self.name, flags, self._cache_dir, accepted=self._accepted
        )
        return module

    def _check_interface(
        self, module: wasmtime.Module, required: tuple[str, ...]
    ) -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], set[str]]:
        imports = [f"{item.module}.{item.name}" for item in module.imports]
        if imports:
            raise ModuleRefused(
                f"module {self.name}: imports {imports}; a kernel module must import nothing"
            )
        functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        memories: set[str] = set()
        for export in module.exports:
            export_type = export.type
            if isinstance(export_type, wasmtime.FuncType):
                functions[export.name] = _signature(export_type)
            elif isinstance(export_type, wasmtime.MemoryType):
                memories.add(export.name)
        missing = [name for name in required if name not in functions and name not in memories]
        if missing:
            raise ModuleRefused(
                f"module {self.name}: lacks required exports {missing} "
                f"(it exports {sorted(functions) + sorted(memories)})"
            )
        for name in required:
            expected = KERNEL_SIGNATURES.get(name)
            if name == MEMORY_EXPORT and name not in memories:
                raise ModuleRefused(f"module {self.name}: export {name!r} must be a memory")
            if expected is None:
                continue
            if name not in functions:
                raise ModuleRefused(f"module {self.name}: export {name!r} must be a function")
            if functions[name] != expected:
                raise ModuleRefused(
                    f"module {self.name}: export {name} has signature "
                    f"{_format_signature(functions[name])}, expected "
                    f"{_format_signature(expected)} (kernels/ABI.md)"
                )
        return functions, memories

    def _check_abi_version(self, expected: int, module: wasmtime.Module) -> None:
        signature = self._functions.get("sf_abi_version")
        if signature != KERNEL_SIGNATURES["sf_abi_version"]:
            raise ModuleRefused(
                f"module {self.name}: needs an export sf_abi_version () -> (i32) to check "
                f"ABI version {expected}"
            )
        # A throwaway store capped in fuel, wall time, memory, tables and instances: an
        # sf_abi_version that loops, grows a table or memory is refused rather than hanging or
        # exhausting the loader (start functions are refused before compiling). The module
        # imports nothing, so whatever ran here runs the same way in every later job.
        engine = _engine(_PROBE_FLAGS)
        store = wasmtime.Store(engine.engine)
        _set_store_limits(store, PROBE_MEMORY_BYTES, self.bounds)
        store.set_fuel(PROBE_FUEL)
        assert engine.ticker is not None
        engine.ticker.acquire()
        store.set_epoch_deadline(math.ceil(PROBE_DEADLINE_SECONDS / EPOCH_TICK_SECONDS) + 1)
        try:
            instance = wasmtime.Instance(store, module, [])
            version_func = _instance_export(store, instance, "sf_abi_version")
            assert isinstance(version_func, wasmtime.Func)
            given = version_func(store)
        except wasmtime.Trap as error:
            raise ModuleRefused(
                f"module {self.name}: trapped while reporting its ABI version "
                f"({error.trap_code}): {_trap_cause(error.message)}"
            ) from error
        except wasmtime.WasmtimeError as error:
            raise ModuleRefused(
                f"module {self.name}: cannot be instantiated to check its ABI version: "
                f"{_one_line(error)}"
            ) from error
        finally:
            engine.ticker.release()
        if given != expected:
            raise ModuleRefused(
                f"module {self.name}: sf_abi_version() returned {given}, expected {expected}"
            )


# -- a job ----------------------------------------------------------------------------------
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
        self._store = wasmtime.Store(engine.engine)
        _set_store_limits(self._store, limits.memory_bytes, module.bounds)
        if limits.fuel is not None:
            self._store.set_fuel(limits.fuel)
        self._release_ticker = None
        if engine.ticker is not None:
            assert limits.deadline_seconds is not None
            engine.ticker.acquire()
            # weakref.finalize: the ticker is released even if the job is never closed.
            self._release_ticker = weakref.finalize(self, engine.ticker.release)
            # +1: the tick in progress when the job opens may be almost over.
            ticks = math.ceil(limits.deadline_seconds / EPOCH_TICK_SECONDS) + 1
            self._store.set_epoch_deadline(ticks)
        try:
            self._instance = wasmtime.Instance(self._store, compiled, [])
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
        """Return this job; :meth:`__exit__` closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the job (its Store and Instance), whatever happened inside the block."""
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
            return func(store, *values)
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

    def write(self, ptr: int, array: np.ndarray) -> None:
        """Copy ``array``'s bytes (C order, little-endian) into linear memory at ``ptr``."""
        array = _plain_array(array, "write")
        address = self._checked_address(ptr, array.nbytes, "host write")
        if array.nbytes:
            ctypes.memmove(address, array.ctypes.data, array.nbytes)

    def read(self, ptr: int, shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
        """Return a copy of the array of ``shape`` and ``dtype`` stored at ``ptr``."""
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
            if name is not None:
                found = _instance_export(self._store, self._instance, name)
                if isinstance(found, wasmtime.Memory):
                    self._memory = found
        return self._memory

    def _open_store(self, entry: str) -> wasmtime.Store:
        if self._store is None:
            raise KernelError("the job is closed", entry=entry, job=self.name)
        return self._store


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


def _instance_export(
    store: wasmtime.Store, instance: wasmtime.Instance, name: str
) -> wasmtime.Func | wasmtime.Memory | Any | None:
    # Instance.exports() wraps every export of the instance (its cost grows with the export
    # count, ~25 s for 40,000); this asks wasmtime for one export by name.
    raw = name.encode("utf-8")
    buffer = ctypes.create_string_buffer(raw, len(raw))
    item = wasmtime_ffi.wasmtime_extern_t()
    found = wasmtime_ffi.wasmtime_instance_export_get(
        store._context(),
        ctypes.byref(instance._instance),
        ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)),
        len(raw),
        ctypes.byref(item),
    )
    return wrap_extern(item) if found else None


def _one_line(error: Exception) -> str:
    # wasmtime's errors are "what failed\n\nCaused by:\n    why": keep both, on one line.
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(line for line in lines if line and line != "Caused by:")


def _trap_cause(message: str) -> str:
    # wasmtime's message is a wasm backtrace, then "Caused by:" and numbered causes.
    lines = [line.strip() for line in message.strip().splitlines()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1 :]
    causes = [re.sub(r"^\d+:\s*", "", line) for line in lines if line]
    return "; ".join(causes[-2:])


def _plain_array(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.hasobject or array.dtype.kind not in "biufc":
        raise ValueError(f"{what}: expected a numeric array, given dtype {array.dtype}")
    # Linear memory is little-endian and the kernels read C order.
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


__all__ = [
    "ABI_VERSION",
    "KERNEL_EXPORTS",
    "KERNEL_SIGNATURES",
    "DeadlineExceeded",
    "Job",
    "KernelError",
    "KernelModule",
    "KernelStatusError",
    "KernelTrapped",
    "Limits",
    "ModuleBounds",
    "MemoryLimitReached",
    "ModuleRefused",
    "OutOfBounds",
    "OutOfFuel",
    "SandboxError",
    "clear_compiled_cache",
    "default_cache_dir",
]


# -- runtime features -------------------------------------------------------------------------
# The WebAssembly proposals a kernel may use, by the names kernels/build.py records (wasmtime's
# Config attribute is ``wasm_`` + the name with "_" for "-"). Turning "simd" off turns off
# "relaxed-simd" too: wasmtime refuses relaxed SIMD without SIMD.
KERNEL_FEATURES = ("simd", "relaxed-simd", "bulk-memory")


@functools.lru_cache(maxsize=16)
def features_needed(wasm_sha256: str, wasm: bytes) -> tuple[str, ...]:
    """Return the features of KERNEL_FEATURES that ``wasm`` cannot validate without.

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
