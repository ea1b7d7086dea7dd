"""Environment every Flower process we start runs with: no telemetry, no update check, no runtime
dependency installation (README, "Flower App"), and Ray's accelerator override off."""

from __future__ import annotations

import os

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    # Ray would otherwise hide all CPUs from actors when num_gpus is 0.
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def apply_flower_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the Flower/Ray variables in ``environ`` (default: this process); return it."""
    target = os.environ if environ is None else environ
    for key, value in FLOWER_ENV.items():
        target[key] = value
    return target  # type: ignore[return-value]
