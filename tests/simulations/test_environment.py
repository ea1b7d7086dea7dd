"""The OpenBLAS hang under Ray, reproduced at its root: a fork during a threaded BLAS call.

Each case runs in its own subprocess with OPENBLAS_NUM_THREADS unset (the user's default):
a thread runs dgemms while the main thread forks, as Ray (or the local engine) starts
processes while the ServerApp thread computes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simulations.environment import apply_flower_env

STRESS = """
import os, sys, threading, time
import numpy as np
if sys.argv[1] == "limited":
    from simulations.environment import limit_blas_threads
    limit_blas_threads()
from threadpoolctl import threadpool_info
threads = max([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] or [0])
matrix = np.random.default_rng(0).standard_normal((400, 400))
done = 0
def blas_loop():
    global done
    while True:
        matrix @ matrix
        done += 1
threading.Thread(target=blas_loop, daemon=True).start()
started = time.monotonic()
while time.monotonic() - started < 3:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
before = done
time.sleep(1.5)
print(threads, done - before, flush=True)
os._exit(0)
"""


def _stress(mode: str, timeout: float) -> tuple[int, int] | None:
    """(BLAS threads, dgemms finished after the forks), or None when the process hung
    altogether (the fork itself can wait forever on the stranded pool)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    try:
        result = subprocess.run(
            [sys.executable, "-c", STRESS, mode],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None  # subprocess.run has killed it
    blas_threads, progress = result.stdout.split()
    return int(blas_threads), int(progress)


def test_with_one_blas_thread_forks_never_strand_a_blas_call():
    measured = _stress("limited", timeout=120)
    assert measured is not None, "the stress hung with one BLAS thread"
    blas_threads, progress = measured
    assert blas_threads == 1
    assert progress > 0  # dgemms kept finishing after all the forks


def test_the_hang_reproduces_with_threaded_blas():
    # The control: without the limit, the same stress strands the dgemm (on this machine's
    # OpenBLAS with more than one thread); it shows the test above would catch a regression.
    import numpy  # noqa: F401  (loads its BLAS, so that threadpoolctl can see it)
    from threadpoolctl import threadpool_info

    if os.cpu_count() == 1 or not any(p["internal_api"] == "openblas" for p in threadpool_info()):
        pytest.skip("no multi-threaded OpenBLAS here: nothing to reproduce")
    measured = _stress("default", timeout=30)
    if measured is not None:  # finished: its dgemm must have been stranded
        blas_threads, progress = measured
        assert blas_threads >= 2 and progress == 0


def test_flower_environment_is_set():
    env = apply_flower_env({})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "0"
