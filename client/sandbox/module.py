"""A kernel module: refused or accepted before anything of it runs, then compiled once."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import wasmtime

from client.sandbox.abi import (
    ABI_VERSION,
    KERNEL_EXPORTS,
    KERNEL_SIGNATURES,
    MEMORY_EXPORT,
    _format_signature,
)
from client.sandbox.bounds import ModuleBounds, ModuleBoundsError, check_module_bounds
from client.sandbox.cache import _load_compiled, _remember, default_cache_dir
from client.sandbox.engine import EPOCH_TICK_SECONDS, _engine, _EngineFlags
from client.sandbox.errors import ModuleRefused, _one_line, _trap_cause
from client.sandbox.ffi import _instance_export, _signature
from client.sandbox.jobs import Job
from client.sandbox.limits import Limits, _set_store_limits
from protos.untrusted_file import open_regular_file

# Budget for the refusal probe (instantiate + sf_abi_version): a hostile module cannot hang it
# or make it allocate more than this, whatever it declares.
PROBE_FUEL = 10_000_000
PROBE_DEADLINE_SECONDS = 1.0
PROBE_MEMORY_BYTES = 64 * 2**20
# The probe's engine has both fuel and epochs: the ClientApp's default limits use the same
# engine, so loading a module and running its jobs compile it once.
PROBE_FLAGS_FUEL, PROBE_FLAGS_EPOCH = True, True

# A job's limits when none are given (a frozen dataclass: one shared default is safe).
_DEFAULT_LIMITS = Limits()

_PROBE_FLAGS = _EngineFlags(fuel=PROBE_FLAGS_FUEL, epoch=PROBE_FLAGS_EPOCH)


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
        # A regular file only: open() of a fifo waits for a writer forever (OSError here).
        with open_regular_file(path) as handle:
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
        """Name the module and the start of its sha256."""
        return f"KernelModule(name={self.name!r}, sha256={self.sha256[:12]}...)"

    def job(self, name: str, limits: Limits = _DEFAULT_LIMITS) -> Job:
        """Open a fresh Store and Instance for one unit of work; use it as a context manager."""
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
        generation = engine.ticker.acquire()
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
            engine.ticker.release(generation)
        if given != expected:
            raise ModuleRefused(
                f"module {self.name}: sf_abi_version() returned {given}, expected {expected}"
            )
