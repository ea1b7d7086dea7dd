"""simulations/simulate.py: the local engine's run life cycle (workers, memory, start-up)."""

from __future__ import annotations

import os
import types

import pytest

from simulations import simulate
from simulations.scenario import default_scenario_path, load_scenario


class _Pool:
    def __init__(self) -> None:
        self.stopped_after: list[int] = []
        self.seen: list[int] = []

    def stop(self) -> None:
        self.stopped_after.append(self.seen[-1] if self.seen else 0)


def test_the_workers_stop_once_the_last_round_is_done_and_the_callback_still_runs():
    pool = _Pool()
    calls: list[int] = []

    def on_round(round_report) -> None:
        calls.append(round_report.round)
        pool.seen.append(round_report.round)

    wrapped = simulate._stop_after_last_round(pool, lambda: 3, on_round)
    for server_round in (1, 2, 3):
        wrapped(types.SimpleNamespace(round=server_round))
    assert calls == [1, 2, 3]
    assert pool.stopped_after == [2]  # stopped before the callback of round 3, once
    simulate._stop_after_last_round(pool, lambda: 1, None)(types.SimpleNamespace(round=1))
    assert len(pool.stopped_after) == 2


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_no_worker_is_alive_while_the_final_report_is_written(tmp_path, monkeypatch):
    # The final report.html render (matplotlib) is the coordinator's largest moment; the
    # workers, with their clients' data, must be gone by then, not only after it.
    import coordinator.reports.writer as writer
    from simulations.engine import pool as pool_module

    started: list[int] = []
    real_spawn = pool_module.WorkerPool._spawn

    def spawn(self, index):
        worker = real_spawn(self, index)
        started.append(worker.pid)
        return worker

    alive_at_final_write: list[bool] = []
    real_write = writer.write_run

    def write_run(out_dir, report, **kwargs):
        if report.status == "completed":
            alive_at_final_write.extend(_alive(pid) for pid in started)
        return real_write(out_dir, report, **kwargs)

    monkeypatch.setattr(pool_module.WorkerPool, "_spawn", spawn)
    monkeypatch.setattr(writer, "write_run", write_run)
    run_config = (
        load_scenario(default_scenario_path()).with_overrides(rounds=2, clients=4).to_run_config()
    )
    report = simulate.simulate_on_engine(run_config, tmp_path / "run", workers=2)
    assert report.status == "completed" and len(report.rounds) == 2
    assert len(started) == 2
    assert alive_at_final_write == [False, False]


def test_the_default_scenario_imports_no_data_library_and_no_matplotlib_before_round_1(tmp_path):
    # Start-up: scikit-learn, flwr-datasets and datasets took ~3 s and ~200 MB of the default
    # scenario's coordinator (forked workers inherit it), matplotlib ~1 s before round 1.
    # A fresh interpreter: this one may have imported them for other tests.
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from simulations.scenario import default_scenario_path, load_scenario\n"
        "from simulations.simulate import simulate_on_engine\n"
        "seen = []\n"
        "heavy = ('sklearn', 'scipy', 'flwr_datasets', 'datasets', 'matplotlib')\n"
        "def on_round(round_report):\n"
        "    if not seen:\n"
        "        seen.append(sorted(m for m in heavy if m in sys.modules))\n"
        "config = load_scenario(default_scenario_path()).with_overrides(rounds=1, clients=4)\n"
        f"report = simulate_on_engine(config.to_run_config(), {str(tmp_path / 'run')!r},\n"
        "                            workers=2, on_round=on_round)\n"
        "assert report.status == 'completed', report.status\n"
        "print(seen[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_coordinator_freezes_after_its_first_round_and_thaws_when_the_run_ends(tmp_path):
    # simulations/engine/collector.py: later full collections skip what round 1 left alive.
    import gc

    frozen_at_round: list[int] = []
    run_config = (
        load_scenario(default_scenario_path()).with_overrides(rounds=3, clients=4).to_run_config()
    )
    assert gc.get_freeze_count() == 0
    report = simulate.simulate_on_engine(
        run_config,
        tmp_path / "run",
        workers=1,
        on_round=lambda round_report: frozen_at_round.append(gc.get_freeze_count()),
    )
    assert report.status == "completed"
    first, second, third = frozen_at_round
    # Frozen once, before round 1's callback (frozen objects that die later leave the count).
    assert first > 10_000 and first >= second >= third > 0
    assert gc.get_freeze_count() == 0  # thawed: this process goes on
