"""Compiled modules: the in-process cache and the disk cache of wasmtime's serialized form.

A module is compiled once per process and engine configuration, and cached on disk keyed by
the module's sha256, the wasmtime version, the machine and the engine flags. A corrupt or
stale cache entry is recompiled, never trusted. Only an accepted module is written to the
disk cache or kept in this process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
import threading
from importlib.metadata import version as _package_version
from pathlib import Path

import wasmtime

from client.sandbox.engine import ENGINE_CONFIG_REVISION, _engine, _EngineFlags
from client.sandbox.errors import ModuleRefused, _one_line
from protos.untrusted_file import open_regular_file

log = logging.getLogger(__name__)

WASMTIME_VERSION = _package_version("wasmtime")

CACHE_DIR_ENV = "SANDFLOWER_CACHE_DIR"
_CACHE_MAGIC = b"SFCWASM1"


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
        # A regular file only: a fifo here made every job wait for a writer (OSError now).
        with open_regular_file(path) as handle:
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
    """Get the module compiled for ``flags``, and whether this call compiled it.

    From this process, the disk cache, or compiled now.

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
