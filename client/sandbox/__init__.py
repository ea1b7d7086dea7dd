"""The wasm sandbox: load a kernel module once, run each job in a fresh, capped Store.

This is the only package of the project that imports wasmtime; its raw C API calls are
confined to ``ffi``. It knows the kernel ABI's surface (kernels/registry.py, kernels/ABI.md:
export names, signatures, ``sf_abi_version``, ``sf_alloc``, status codes) but nothing about
models.

- A module is compiled once per process and engine configuration, and cached on disk as
  wasmtime's serialized form, keyed by the module's sha256, the wasmtime version, the machine
  and the engine flags. A corrupt or stale cache entry is recompiled, never trusted.
- A module is refused before it is compiled if its bytes declare more than
  :class:`~client.sandbox.bounds.ModuleBounds` allows (size, imports, exports, functions,
  tables, memories, globals, segments, a start function; client/sandbox/bounds.py), and before
  anything of it runs if it is not valid wasm, lacks a required export (or has the wrong
  signature), or reports another ``sf_abi_version``. Only an accepted module is written to the
  disk cache or kept in this process.
- Each job gets a fresh Store and Instance with a linear-memory cap, an optional fuel budget
  and an optional wall-clock deadline. Traps become typed errors naming the entry and the job;
  the process and the next job are unaffected.

The package, one module per concept: ``errors`` (the typed errors), ``limits`` (what a job may
use), ``abi`` (the exports, signatures and status codes, from kernels/registry.py), ``bounds``
(what a module may declare, read from its bytes), ``ffi`` (the raw wasmtime C API calls),
``engine`` (one Engine per configuration, the epoch ticker, runtime features), ``cache``
(compiled modules in this process and on disk), ``module`` (:class:`KernelModule`: the checks
and the ABI probe) and ``jobs`` (:class:`Job`). Import the public names from here.
"""

from __future__ import annotations

from client.sandbox.abi import (
    ABI_VERSION,
    KERNEL_EXPORTS,
    KERNEL_SIGNATURES,
    MEMORY_EXPORT,
    STATUS_NAMES,
    STATUS_NO_MEMORY,
    STATUS_OK,
)
from client.sandbox.bounds import ModuleBounds, ModuleBoundsError, check_module_bounds
from client.sandbox.cache import (
    CACHE_DIR_ENV,
    WASMTIME_VERSION,
    cache_path,
    clear_compiled_cache,
    default_cache_dir,
)
from client.sandbox.engine import KERNEL_FEATURES, features_needed
from client.sandbox.errors import (
    DeadlineExceeded,
    KernelError,
    KernelStatusError,
    KernelTrapped,
    MemoryLimitReached,
    ModuleRefused,
    OutOfBounds,
    OutOfFuel,
    SandboxError,
)
from client.sandbox.jobs import Job
from client.sandbox.limits import MAX_MEMORY_BYTES, WASM_PAGE_BYTES, Limits
from client.sandbox.module import KernelModule

__all__ = [
    "ABI_VERSION",
    "CACHE_DIR_ENV",
    "KERNEL_EXPORTS",
    "KERNEL_FEATURES",
    "KERNEL_SIGNATURES",
    "MAX_MEMORY_BYTES",
    "MEMORY_EXPORT",
    "STATUS_NAMES",
    "STATUS_NO_MEMORY",
    "STATUS_OK",
    "WASMTIME_VERSION",
    "WASM_PAGE_BYTES",
    "DeadlineExceeded",
    "Job",
    "KernelError",
    "KernelModule",
    "KernelStatusError",
    "KernelTrapped",
    "Limits",
    "MemoryLimitReached",
    "ModuleBounds",
    "ModuleBoundsError",
    "ModuleRefused",
    "OutOfBounds",
    "OutOfFuel",
    "SandboxError",
    "cache_path",
    "check_module_bounds",
    "clear_compiled_cache",
    "default_cache_dir",
    "features_needed",
]
