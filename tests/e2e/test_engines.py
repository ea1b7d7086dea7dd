"""The local engine against Flower's Ray engine, and stopping a real `sandflower simulate`.

Same bits: for the same scenario and seed both engines give the same final model (the
default scenario, a robust rule and a server optimizer). Stopping: a real subprocess gets a
real SIGINT/SIGTERM; it must exit 130 within ~2 s, with the report saying "interrupted" and
every worker process gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from coordinator.reports.report_json import load_report
from simulations.scenario import default_scenario_path, find_scenario, load_scenario
from simulations.simulate import simulate_on_engine

pytestmark = pytest.mark.e2e

SANDFLOWER = Path(sys.executable).with_name("sandflower")


def _config(path, **overrides) -> dict:
    sets = overrides.pop("sets", {})
    return load_scenario(path).with_overrides(sets=sets, **overrides).to_run_config()


@pytest.mark.parametrize(
    "scenario, overrides",
    [
        ("default", {"rounds": 3}),
        (
            "digits-mlp-iid",
            {"rounds": 2, "clients": 6, "sets": {"federation.strategy": "fedmedian"}},
        ),
        (
            "digits-mlp-iid",
            {
                "rounds": 2,
                "clients": 6,
                "sets": {"federation.strategy": "fedadam", "federation.server_lr": "0.05"},
            },
        ),
    ],
    ids=["default-3-rounds", "fedmedian", "fedadam"],
)
def test_local_and_ray_engines_give_the_same_final_model(tmp_path, scenario, overrides):
    path = default_scenario_path() if scenario == "default" else find_scenario(scenario)
    run_config = _config(path, **overrides)
    local = simulate_on_engine(run_config, tmp_path / "local", engine="local", workers=2)
    ray = simulate_on_engine(run_config, tmp_path / "ray", engine="ray")
    assert local.status == ray.status == "completed"
    assert local.engine == "local" and ray.engine == "simulation"
    assert len(local.final_model_sha256) == 64
    assert local.final_model_sha256 == ray.final_model_sha256
    for mine, theirs in zip(local.rounds, ray.rounds, strict=True):
        assert [c.partition_id for c in mine.clients] == [c.partition_id for c in theirs.clients]
    # The coordinator's own BLAS calls run on one thread (the OpenBLAS hang under Ray).
    assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")


def test_lean_and_forked_local_workers_give_the_same_final_model(tmp_path, monkeypatch):
    # Synthetic devices are lazy, so the local engine starts lean workers; forced to fork, the
    # same run must give the same bits (and the fork engine's bits are Ray's, test above).
    import simulations.simulate as simulate

    run_config = _config(find_scenario("synthetic-1-1-fedavg"), rounds=2, clients=12)
    assert simulate._start_method(run_config, "simulations.client_app:app") == "lean"
    lean = simulate_on_engine(run_config, tmp_path / "lean", engine="local", workers=2)
    monkeypatch.setattr(simulate, "_start_method", lambda *_: "fork")
    forked = simulate_on_engine(run_config, tmp_path / "fork", engine="local", workers=2)
    assert lean.status == forked.status == "completed"
    assert len(lean.final_model_sha256) == 64
    assert lean.final_model_sha256 == forked.final_model_sha256


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:
            continue  # a thread that ended since the listing (it has no children left)
        found += [int(child) for child in text]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _start_long_run(tmp_path, *scenario: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [str(SANDFLOWER), "simulate", *scenario, "--rounds", "400", "--workers", "2"]
        + ["--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        report = out / "report.json"
        if report.exists():
            try:
                if len(json.loads(report.read_text())["rounds"]) >= 2:
                    return process, out
            except (json.JSONDecodeError, KeyError):
                pass  # replaced between our exists() and read: try again
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the run did not reach round 2: {process.stderr.read().decode()[-2000:]}")


@pytest.mark.parametrize(
    "signum, scenario",
    [
        (signal.SIGINT, ()),
        (signal.SIGTERM, ()),
        # Lazy synthetic devices: lean workers (not forked; simulations/engine/lean.py).
        (signal.SIGINT, ("synthetic-1-1-fedavg", "--clients", "40")),
    ],
    ids=["SIGINT", "SIGTERM", "SIGINT-lean-workers"],
)
def test_the_first_signal_stops_the_run_within_two_seconds(tmp_path, signum, scenario):
    process, out = _start_long_run(tmp_path, *scenario)
    workers = _children(process.pid)
    assert len(workers) >= 2
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    elapsed = time.monotonic() - sent
    assert code == 130
    assert elapsed < 3.0, f"took {elapsed:.1f} s to stop"
    report = load_report(out)
    assert report.status == "interrupted"
    assert len(report.rounds) >= 2
    assert f"after {len(report.rounds)} finished round" in report.error
    assert not any(_alive(pid) for pid in workers)


def test_a_second_signal_exits_at_once(tmp_path):
    process, _ = _start_long_run(tmp_path)
    workers = _children(process.pid)
    process.send_signal(signal.SIGINT)
    # Two signals that arrive before Python runs its handler count as one: let the first
    # be handled (the run is now writing its final report) before sending the second.
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    assert code == 130
    assert time.monotonic() - sent < 1.0
    time.sleep(0.2)  # SIGKILLed workers are reaped by init
    assert not any(_alive(pid) for pid in workers)
