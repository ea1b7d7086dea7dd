"""The node config a device owner may set (``flower-supernode --node-config``), and its reader.

The node config belongs to the device, not to the run: its keys say where the device's data is,
which kernel it runs and what a job may cost it. Engines set ``partition-id`` and
``num-partitions`` in simulation (Flower's convention); a device with its own data names it with
``data-path`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from protos.contract import ClientErrorCode, ClientJobError

NODE_DATA_PATH = "data-path"  # the device's data file (.npz with x/y, or .csv)
NODE_PARTITION_ID = "partition-id"  # set by a simulation engine: the node's partition
NODE_NUM_PARTITIONS = "num-partitions"  # set by a simulation engine
NODE_KERNEL_PATH = "kernel-path"  # the device's own .wasm instead of the app bundle's
# WebAssembly features this device's runtime must not use, e.g. "relaxed-simd" (comma-separated)
NODE_DISABLED_FEATURES = "disabled-wasm-features"
NODE_MEMORY_MB = "memory-mb"  # linear-memory cap of the sandbox
NODE_FUEL = "fuel"  # deterministic compute budget per job (absent: derived; 0: unmetered)
NODE_DEADLINE_S = "deadline-seconds"  # wall-clock limit per job (absent: derived; 0: none)
NODE_MAX_DATA_MB = "max-data-mb"  # cap on the data file and the arrays it declares


def node_number(node_config: Mapping[str, Any], key: str, default: Any) -> float:
    """Read the number >= 0 that node config ``key`` holds (a number or a numeric string).

    Parameters
    ----------
    node_config : Mapping[str, Any]
        The node's config (``context.node_config``).
    key : str
        The key to read.
    default : Any
        The value when ``key`` is absent.

    Raises
    ------
    ClientJobError
        ``BAD_CONFIG`` when the value is not a finite number >= 0; the error names the key.
    """
    given = node_config.get(key, default)
    value = math.nan
    if isinstance(given, int | float) and not isinstance(given, bool):
        value = given
    elif isinstance(given, str):
        try:
            value = float(given)
        except ValueError:
            pass
    if not math.isfinite(value) or value < 0:
        raise ClientJobError(
            ClientErrorCode.BAD_CONFIG,
            f"node config {key!r}: expected a number >= 0, given {given!r}",
        )
    return value
