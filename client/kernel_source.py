"""Where a client's kernel comes from, and the checks it passes before it is compiled.

On a device that joins through a Flower App, nothing of Sandflower is installed: the app
bundle (FAB) that ``flwr run`` sends carries the ClientApp's code and, since a Flower 1.42
bundle never carries ``.wasm`` files, each kernel build as ``kernels/wasm/<build>.json`` (the
bytes in base64 with their sha256, written by ``sandflower kernels build``). The coordinator
pins one build's sha256 in every message (``kernel-sha256``); the device

1. finds the shipped kernel whose declared sha256 is the pin (or the device owner's own
   ``kernel-path``), refusing a file larger than :data:`MAX_SHIPPED_BYTES` before reading it;
2. decodes it, bounded by :data:`MAX_KERNEL_BYTES`, and hashes the bytes it decoded: they must
   have the pinned sha256 (a tampered bundle is refused here, with ``KernelMismatch``);
3. checks that its runtime has every WebAssembly feature the bytes need (``KernelUnsupported``
   names the missing one, e.g. relaxed SIMD, and how the coordinator ships another flavour);
4. and only then compiles it, once per sha256: the process keeps the compiled module, and
   client/sandbox/'s disk cache (keyed by the sha256) spares a new process the compilation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import kernels
from client.sandbox import KernelModule, SandboxError, features_needed
from kernels.build import FLAVOURS, SHIPPED_FORMAT, SHIPPED_SUFFIX
from protos.untrusted_file import read_regular_file

# A kernel is ~28 KB; 4 MiB leaves room for much larger models' kernels and still bounds what
# a hostile bundle or file can make a device read, decode and hash.
MAX_KERNEL_BYTES = 4 * 2**20
# base64 grows 3 bytes into 4; the rest of the JSON is a few hundred bytes.
MAX_SHIPPED_BYTES = 4 * (MAX_KERNEL_BYTES // 3 + 1) + 64 * 2**10
DEFAULT_FLAVOUR = "relaxed"


class KernelSourceError(Exception):
    """The kernel cannot be used; the message names the file and what was expected."""


class KernelMismatch(KernelSourceError):
    """The kernel's bytes are not the pinned ones (or no shipped kernel has the pin)."""


class KernelUnsupported(KernelSourceError):
    """The device's runtime lacks a WebAssembly feature the kernel needs."""

    def __init__(self, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class KernelBytes:
    """Verified kernel bytes: ``sha256`` is the hash of ``wasm``, computed here."""

    wasm: bytes
    sha256: str
    source: str  # the file they came from, for messages
    flavour: str  # "" when not a shipped build (a device's own kernel-path)


def shipped_dir() -> Path:
    """kernels/wasm next to the running code: the app bundle's on a SuperNode."""
    return _wasm_dir_of(str(kernels.__file__))


@functools.lru_cache(maxsize=8)
def _wasm_dir_of(package_file: str) -> Path:
    # Resolved once per location of the kernels package (every job asks; resolve() costs
    # ~65 us of lstat calls); a package imported from elsewhere is a new key.
    return Path(package_file).resolve().parent / "wasm"


def shipped_path(flavour: str, directory: Path | None = None) -> Path:
    """Return the shipped (JSON) file of ``flavour`` (``relaxed`` or ``simd128``)."""
    if flavour not in FLAVOURS:
        raise KernelSourceError(f"kernel flavour {flavour!r}: expected one of {sorted(FLAVOURS)}")
    return (directory or shipped_dir()) / f"{FLAVOURS[flavour]}{SHIPPED_SUFFIX}"


def declared_sha256(path: Path) -> str:
    """Return the sha256 a shipped file declares (not yet checked against its bytes)."""
    return str(_read_shipped_json(path).get("sha256", ""))


def read_shipped(path: str | os.PathLike) -> KernelBytes:
    """Read, bound, decode and hash a shipped kernel; its bytes must match its declared sha256.

    Raises
    ------
    KernelSourceError
        Unreadable, too large, not a shipped kernel, or not valid base64.
    KernelMismatch
        The decoded bytes do not have the sha256 (or size) the file declares.
    """
    path = Path(path)
    document = _read_shipped_json(path)
    encoded = document.get("wasm_base64")
    if not isinstance(encoded, str):
        raise KernelSourceError(f"kernel {path}: 'wasm_base64' must be a string")
    # Bound before decoding: base64 never shrinks below 3/4 of its length.
    if len(encoded) * 3 // 4 > MAX_KERNEL_BYTES:
        raise KernelSourceError(
            f"kernel {path}: encodes about {len(encoded) * 3 // 4} bytes, "
            f"expected at most {MAX_KERNEL_BYTES}"
        )
    try:
        wasm = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise KernelSourceError(f"kernel {path}: 'wasm_base64' is not base64: {error}") from None
    sha256 = hashlib.sha256(wasm).hexdigest()
    declared = document.get("sha256")
    if sha256 != declared or len(wasm) != document.get("bytes"):
        raise KernelMismatch(
            f"kernel {path}: its bytes have sha256 {sha256} ({len(wasm)} bytes), the file "
            f"declares {declared} ({document.get('bytes')} bytes): the bundle was altered"
        )
    return KernelBytes(wasm, sha256, str(path), str(document.get("flavour", "")))


def read_wasm_file(path: str | os.PathLike) -> KernelBytes:
    """Return a device's own ``.wasm`` (node config ``kernel-path``), bounded and hashed."""
    path = Path(path)
    wasm = _read_bounded(path, MAX_KERNEL_BYTES)
    return KernelBytes(wasm, hashlib.sha256(wasm).hexdigest(), str(path), "")


def pinned_kernel(pin: str, kernel_path: str | None = None) -> KernelBytes:
    """Return the kernel a job must run, checked against the coordinator's pin BEFORE any compiling.

    Parameters
    ----------
    pin
        The coordinator's ``kernel-sha256``; "" accepts the default shipped flavour.
    kernel_path
        The device owner's own kernel file (node config ``kernel-path``); None: the shipped
        kernel whose sha256 is the pin.

    Raises
    ------
    KernelMismatch
        No shipped kernel has the pin, or the bytes do not have it.
    KernelSourceError
        A file cannot be read, is too large or is malformed.
    """
    pin = pin.strip().lower()
    if kernel_path:
        found = read_wasm_file(kernel_path)
    elif not pin:
        found = read_shipped(shipped_path(DEFAULT_FLAVOUR))
    else:
        found = read_shipped(_shipped_file_declaring(pin))
    if pin and found.sha256 != pin:
        raise KernelMismatch(
            f"kernel {found.source} has sha256 {found.sha256}, the coordinator pinned {pin}: "
            "refusing to train on a kernel that is not the pinned one"
        )
    return found


def check_runtime_supports(kernel: KernelBytes, unavailable: frozenset[str]) -> None:
    """Refuse a kernel that needs a feature in ``unavailable`` (this device's runtime lacks it).

    The features come from the bytes (client.sandbox.features_needed), not from a manifest.
    """
    if not unavailable:
        return
    missing = tuple(f for f in features_needed(kernel.sha256, kernel.wasm) if f in unavailable)
    if missing:
        alternatives = [flavour for flavour in FLAVOURS if flavour != kernel.flavour] or sorted(
            FLAVOURS
        )
        raise KernelUnsupported(
            f"kernel {kernel.source} (sha256 {kernel.sha256}) needs the WebAssembly feature(s) "
            f"{', '.join(missing)}, which this device's runtime does not support; the "
            f"coordinator can ship another flavour: run config kernel-flavour="
            f"{alternatives[0]!r}",
            missing,
        )


def compiled_module(kernel: KernelBytes) -> KernelModule:
    """Return the compiled module for verified bytes, once per sha256 in this process.

    Raises
    ------
    client.sandbox.SandboxError
        The module is refused (imports, exports, ABI) or cannot be compiled.
    """
    return _compiled_by_sha256(kernel.sha256, kernel.wasm, kernel.source)


@functools.lru_cache(maxsize=4)
def _compiled_by_sha256(sha256: str, wasm: bytes, source: str) -> KernelModule:
    # Keyed by the sha256 (wasm and source ride along): the same bytes from another round,
    # or another path, are the same module. KernelModule's disk cache is keyed by it too.
    module = KernelModule.from_bytes(wasm, name=source)
    if module.sha256 != sha256:  # internal invariant: KernelBytes hashed these very bytes
        raise SandboxError(f"kernel {source}: sha256 changed between hashing and compiling")
    return module


# -- internals --------------------------------------------------------------------------------
def _shipped_file_declaring(pin: str) -> Path:
    directory = shipped_dir()
    candidates = sorted(directory.glob(f"*.wasm{SHIPPED_SUFFIX}"))
    for candidate in candidates:
        if declared_sha256(candidate) == pin:
            return candidate
    shipped = {path.name: declared_sha256(path) for path in candidates}
    raise KernelMismatch(
        f"the coordinator pinned kernel sha256 {pin}, and no kernel shipped in {directory} "
        f"declares it (shipped: {shipped or 'none'})"
    )


def _read_bounded(path: Path, limit: int) -> bytes:
    # Opened, checked (a regular file of at most ``limit`` bytes) and read as one file: a
    # stat-then-read let a fifo stall the job and a link to /dev/zero (size 0) fill memory.
    try:
        return read_regular_file(path, limit)
    except OSError as error:
        raise KernelSourceError(f"kernel {path}: cannot read it: {error.strerror}") from None


def _read_shipped_json(path: Path) -> dict:
    data = _read_bounded(path, MAX_SHIPPED_BYTES)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        # ValueError: not UTF-8, not JSON, an integer of > 4300 digits; RecursionError: nesting.
        raise KernelSourceError(f"kernel {path}: not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != SHIPPED_FORMAT:
        raise KernelSourceError(
            f"kernel {path}: expected a shipped kernel (format {SHIPPED_FORMAT!r}, written by "
            "`sandflower kernels build`)"
        )
    return document
