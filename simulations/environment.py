"""The environment every Flower process we start runs with.

No telemetry, no update check, no runtime dependency installation (README, "Flower App"),
and Ray's accelerator override off.
"""

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


def limit_blas_threads() -> None:
    """Run every BLAS call of this process on one thread (until the process ends).

    Root cause of the hang under Ray (issue 8): OpenBLAS shuts its thread pool down in a
    ``pthread_atfork`` handler, so a ``fork()`` in one thread while a multi-threaded BLAS
    call runs in another leaves that call waiting for threads that are gone; it spins in
    ``exec_blas`` forever. The ServerApp thread generated the synthetic data (a dgemm) while
    Ray was starting processes; the local engine forks its workers from the coordinator
    too. A one-thread call never hands work to the pool, so no fork can strand it
    (tests/simulations/test_environment.py reproduces both). The coordinator's BLAS calls
    are small: threads buy nothing there, and the clients' training runs in wasm.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
