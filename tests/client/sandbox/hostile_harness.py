"""Run one hostile-module case in this fresh process and print what happened as JSON.

Usage: ``python tests/client/sandbox/hostile_harness.py CASE CACHE_DIR``. The baseline (peak
RSS, after importing everything and running one normal job) is taken before the case; the
case's wall and CPU time and the growth of peak RSS are measured around it alone; then a
normal job runs again and its result is checked. ``test_hostile.py`` asserts on the output.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from client import sandbox  # noqa: E402
from client.sandbox import KernelModule, Limits, SandboxError  # noqa: E402
from tests.client.sandbox.hostile_modules import CASES  # noqa: E402
from tests.client.sandbox.wat import SUM  # noqa: E402

NORMAL = f"""(module (memory (export "memory") 1)
  (func (export "sf_abi_version") (result i32) (i32.const 1))
  {SUM})"""
# The ClientApp's kind of limits: fuel and a deadline, memory capped.
JOB_LIMITS = dict(fuel=2_000_000_000, deadline_seconds=1.0)


def normal_job(cache_dir: str) -> float:
    module = KernelModule.from_bytes(
        NORMAL, name="normal.wat", cache_dir=cache_dir, required_exports=("memory", "sum")
    )
    with module.job("normal", Limits(memory_bytes=2**20, **JOB_LIMITS)) as job:
        values = np.arange(1, 101, dtype=np.float32)
        job.write(64, values)
        return float(job.call("sum", 64, values.size))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(case_name: str, cache_dir: str) -> dict:
    case = CASES[case_name]
    before_sum = normal_job(cache_dir)
    wasm = case.build()
    baseline_rss, started, started_cpu = peak_rss_bytes(), time.perf_counter(), cpu_seconds()
    outcome: dict = {"case": case_name, "loaded": False, "error": None, "error_type": None}
    try:
        module = KernelModule.from_bytes(
            wasm, name=case_name, cache_dir=cache_dir, required_exports=case.required
        )
        outcome["loaded"] = True
        limits = Limits(memory_bytes=case.memory_mb * 2**20, **JOB_LIMITS)
        with module.job(case_name, limits) as job:
            args = [0] if case.entry == "wide" else []
            outcome["result"] = job.call(case.entry, *args)
    except SandboxError as error:
        outcome["error"] = str(error)
        outcome["error_type"] = [cls.__name__ for cls in type(error).__mro__]
    outcome["seconds"] = time.perf_counter() - started
    outcome["cpu_seconds"] = cpu_seconds() - started_cpu
    outcome["rss_growth_bytes"] = peak_rss_bytes() - baseline_rss
    outcome["cache_files"] = sorted(
        path.name for path in Path(cache_dir).glob("*.cwasm") if case_name_sha(wasm) in path.name
    )
    outcome["normal_after"] = normal_job(cache_dir) == before_sum == 5050.0
    return outcome


def case_name_sha(wasm: bytes | str) -> str:
    import hashlib

    import wasmtime

    raw = bytes(wasmtime.wat2wasm(wasm)) if isinstance(wasm, str) else wasm
    return hashlib.sha256(raw).hexdigest()


if __name__ == "__main__":
    sandbox.clear_compiled_cache()
    print(json.dumps(run(sys.argv[1], sys.argv[2])))
