"""`sandflower bench engines`: the local engine against Flower's Ray engine, same invocation.

Each run is its own child process (``python -m simulations.bench_engines --child ...``), so
that its peak memory is measured alone: the parent samples, every ``SAMPLE_SECONDS``, the
resident set of the child and of every process below it (the local engine's workers; Ray's
GCS, raylet and actors) and keeps the largest sum. Shared pages are counted once per
process (that is what summed RSS means; forked workers share the coordinator's libraries,
so ``peak_pss_mb``, proportional set size, is given too).

Figures per run (``RUN_KEYS``):

- ``first_round_s``: from calling the engine (after imports) to the end of round 1: engine
  start-up, data set-up, the kernel, round 1;
- ``median_round_s``: median time between the ends of consecutive rounds from round 2 on
  (a round's training, evaluation and report writing);
- ``kernel_bound_s``: median over those rounds of the clients' summed kernel seconds divided
  by the number of workers (the local engine's workers; Ray's CPUs): what the round would
  take if the engine cost nothing;
- ``peak_rss_mb``: see above; ``final_model_sha256``: the run's final model.

Beyond those keys each run also has ``total_s`` (calling the engine to its return: the
end-to-end ratio), ``rounds``, ``workers`` and ``peak_pss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.1
RUN_KEYS = (
    "scenario",
    "clients",
    "engine",
    "first_round_s",
    "median_round_s",
    "kernel_bound_s",
    "peak_rss_mb",
    "final_model_sha256",
)


@dataclass(frozen=True)
class BenchRun:
    """One run of the benchmark."""

    scenario: str
    clients: int | None  # None: the scenario's own
    rounds: int
    engine: str
    sets: tuple[tuple[str, str], ...] = ()


def plan(quick: bool = False) -> list[BenchRun]:
    """Return the runs the issue asks for (``quick``: fewer rounds and clients, a smoke test)."""
    full = (("federation.fraction_train", "1.0"),)
    default_rounds, big_clients = (3, 100) if quick else (30, 1000)
    runs = []
    for engine in ("local", "ray"):
        runs.append(BenchRun("digits-mlp-dirichlet", None, default_rounds, engine))
        runs.append(BenchRun("synthetic-1-1-fedavg", big_clients, 3, engine, full))
    return runs


def run_all(runs: list[BenchRun], *, progress=None) -> dict[str, Any]:
    """Run every ``BenchRun`` in its own child process; return ``{"runs": [...]}``."""
    results = []
    for run in runs:
        if progress is not None:
            progress(run)
        results.append(measure(run))
    return {"runs": results}


def measure(run: BenchRun) -> dict[str, Any]:
    """Run ``run`` in a child process, sampling its process tree's memory."""
    with tempfile.TemporaryDirectory(prefix="sandflower-bench-") as folder:
        result_file = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "simulations.bench_engines",
            "--child",
            json.dumps(
                {
                    "scenario": run.scenario,
                    "clients": run.clients,
                    "rounds": run.rounds,
                    "engine": run.engine,
                    "sets": dict(run.sets),
                    "out": str(Path(folder) / "run"),
                    "result": str(result_file),
                }
            ),
        ]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak_rss = peak_pss = 0
        while child.poll() is None:
            rss, pss = tree_memory(child.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(SAMPLE_SECONDS)
        stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
        if child.returncode != 0 or not result_file.exists():
            raise RuntimeError(
                f"benchmark run {run} failed (exit {child.returncode}): {stderr[-3000:]}"
            )
        figures = json.loads(result_file.read_text())
    figures["peak_rss_mb"] = round(peak_rss / 2**20, 1)
    figures["peak_pss_mb"] = round(peak_pss / 2**20, 1)
    return figures


def tree_memory(root: int) -> tuple[int, int]:
    """Return (summed RSS, summed PSS) in bytes of ``root`` and every process below it (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The name (2nd field) may hold spaces: the fields after its ")" are fixed.
                fields = stat.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def _child(spec: dict[str, Any]) -> None:
    from simulations.scenario import default_scenario_path, find_scenario, load_scenario
    from simulations.simulate import default_workers, simulate_on_engine

    path = find_scenario(spec["scenario"]) if spec["scenario"] else default_scenario_path()
    scenario = load_scenario(path).with_overrides(
        rounds=spec["rounds"], clients=spec["clients"], sets=spec["sets"]
    )
    run_config = scenario.to_run_config()
    round_ends: list[float] = []
    started = time.perf_counter()
    report = simulate_on_engine(
        run_config,
        Path(spec["out"]),
        engine=spec["engine"],
        on_round=lambda _: round_ends.append(time.perf_counter()),
    )
    finished = time.perf_counter()
    if report.status != "completed":
        raise SystemExit(f"run {report.status}: {report.error}")
    workers = default_workers()
    later = list(zip(round_ends, round_ends[1:], strict=False))
    kernel_bounds = [
        sum(client.kernel_seconds for client in round_report.clients) / workers
        for round_report in report.rounds[1:]
    ]
    figures = {
        "scenario": str(run_config["scenario"]),
        "clients": int(run_config["num-partitions"]),
        "engine": spec["engine"],
        "first_round_s": round(round_ends[0] - started, 3),
        "median_round_s": round(statistics.median(b - a for a, b in later), 4) if later else None,
        "kernel_bound_s": round(statistics.median(kernel_bounds), 4) if kernel_bounds else None,
        "final_model_sha256": report.final_model_sha256,
        # Beyond the keys: the whole run (for the end-to-end ratio), its rounds, and
        # the workers kernel_bound_s divides by.
        "total_s": round(finished - started, 3),
        "rounds": len(report.rounds),
        "workers": workers,
    }
    Path(spec["result"]).write_text(json.dumps(figures))


def ratios(figures: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    """Return the issue's targets as (name, measured ratio or value, target, met) rows."""
    runs = {(run["scenario"], run["engine"]): run for run in figures["runs"]}
    rows: list[tuple[str, float | None, str, bool | None]] = []

    def row(name: str, value: float | None, target: str, met: bool | None) -> None:
        rows.append((name, value, target, met))

    for scenario in sorted({run["scenario"] for run in figures["runs"]}):
        local, ray = runs.get((scenario, "local")), runs.get((scenario, "ray"))
        if local and ray:
            per_round = _ratio(ray["median_round_s"], local["median_round_s"])
            row(f"{scenario}: ray / local median round", per_round, ">= 5", _at_least(per_round, 5))
            end_to_end = _ratio(ray["total_s"], local["total_s"])
            row(f"{scenario}: ray / local whole run", end_to_end, ">= 5", _at_least(end_to_end, 5))
            same = local["final_model_sha256"] == ray["final_model_sha256"]
            row(f"{scenario}: same final_model_sha256", 1.0 if same else 0.0, "identical", same)
        if local:
            bound = _ratio(local["median_round_s"], local["kernel_bound_s"])
            row(
                f"{scenario}: local median round / kernel_bound",
                bound,
                "<= 1.25",
                None if bound is None else bound <= 1.25,
            )
            row(
                f"{scenario}: local peak RSS MB",
                local["peak_rss_mb"],
                "<= 500",
                local["peak_rss_mb"] <= 500,
            )
    return rows


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", required=True, help="the run, as JSON (internal)")
    _child(json.loads(parser.parse_args().child))
