"""The kernel ABI's surface as the sandbox checks it: exports, signatures, status codes.

All of it comes from kernels/registry.py, the one table of the ABI: the sandbox refuses a
module whose exports or signatures differ from that table, or whose ``sf_abi_version`` is not
the table's.
"""

from __future__ import annotations

from kernels import registry

ABI_VERSION = registry.ABI_VERSION

# Every export kernels/ABI.md names, with its wasm signature (params, results). A module that
# lacks one, or has it with another signature, is refused before it runs.
KERNEL_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = registry.wasm_signatures()
MEMORY_EXPORT = registry.MEMORY_EXPORT
KERNEL_EXPORTS: tuple[str, ...] = registry.export_names()

# Status codes of the model-level entries (kernels/ABI.md, "Status codes").
STATUS_OK = registry.STATUS_CODES["SF_OK"]
STATUS_NO_MEMORY = registry.STATUS_CODES["SF_NO_MEMORY"]
STATUS_NAMES: dict[int, str] = dict(registry.STATUS_NAMES)


def _format_signature(signature: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = signature
    return f"({', '.join(params)}) -> ({', '.join(results)})"
