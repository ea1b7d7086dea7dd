"""simulations/devices.py and the [devices] scenario table: profiles, calibration, and whole
federations on the in-process grid with the real ClientApp and kernel (drop vs partial)."""

import math

import numpy as np
import pytest

from coordinator.clock import DeviceSimulation
from coordinator.reports.report_json import load_report
from simulations import devices
from simulations.inprocess import simulate_in_process
from simulations.scenario import Scenario, ScenarioError, find_scenario, load_scenario

DISTRIBUTION = devices.DeviceDistribution(
    speed=1e7, speed_sigma=0.5, memory_mb=64, uplink=1e5, downlink=1e6, bandwidth_sigma=0.2,
    availability=0.9,
)  # fmt: skip


def test_profiles_drawn_from_the_seed_are_reproducible_and_spread():
    first = devices.draw_profiles(DISTRIBUTION, 30, seed=4)
    assert first == devices.draw_profiles(DISTRIBUTION, 30, seed=4)
    assert first != devices.draw_profiles(DISTRIBUTION, 30, seed=5)
    speeds = np.array([p.speed for p in first])
    assert speeds.min() < 1e7 < speeds.max()
    assert {p.memory_mb for p in first} == {64} and {p.availability for p in first} == {0.9}


def test_profiles_from_a_csv_file(tmp_path):
    path = tmp_path / "devices.csv"
    path.write_text(
        "speed,memory_mb,uplink,downlink,availability\n1e6,32,100,200,1\n2e6,64,5,6,0.5\n"
    )
    profiles = devices.read_profiles(path, 2)
    assert [p.to_list() for p in profiles] == [
        [1e6, 32, 100.0, 200.0, 1.0],
        [2e6, 64, 5.0, 6.0, 0.5],
    ]
    with pytest.raises(devices.DevicesError, match="expected 3 rows"):
        devices.read_profiles(path, 3)
    path.write_text("speed,memory\n1,2\n")
    with pytest.raises(devices.DevicesError, match="header"):
        devices.read_profiles(path, 1)
    path.write_text("speed,memory_mb,uplink,downlink,availability\n0,32,100,200,1\n")
    with pytest.raises(devices.DevicesError, match=":2: speed"):
        devices.read_profiles(path, 1)


def test_calibrated_deadline_splits_the_clients_at_the_share():
    times = [float(t) for t in range(1, 11)]
    assert devices.calibrate_deadline(times, 0.0) == math.inf
    assert devices.calibrate_deadline(times, 0.5) == 5.5
    assert devices.calibrate_deadline(times, 0.9) == 1.5
    for share in (0.5, 0.9):
        deadline = devices.calibrate_deadline(times, share)
        assert sum(t > deadline for t in times) == round(10 * share)
    with pytest.raises(devices.DevicesError):
        devices.calibrate_deadline(times, 1.0)


def small(name: str, share: float, **changes) -> Scenario:
    """A bundled straggler scenario cut down to a few quick rounds."""
    raw = load_scenario(find_scenario(name)).to_dict()
    raw["federation"]["rounds"] = 3
    raw["training"]["local_epochs"] = 2
    raw["devices"]["straggler_share"] = share
    for key, value in changes.items():
        section, field = key.split(".")
        raw[section][field] = value
    return Scenario.from_dict(raw, source=name)


def test_scenario_devices_table_reaches_the_run_config():
    scenario = small("synthetic-1-1-stragglers-50-fedprox", 0.5)
    run_config = scenario.to_run_config()
    simulated = DeviceSimulation.from_json(run_config["devices"])
    assert simulated.policy == "partial" and len(simulated.profiles) == 30
    assert 0 < simulated.deadline_seconds < math.inf
    assert run_config == scenario.to_run_config()  # calibration is deterministic
    plain = load_scenario(find_scenario("synthetic-1-1-fedprox"))
    assert "devices" not in plain.to_run_config()
    with pytest.raises(ScenarioError, match=r"\[devices\] policy"):
        Scenario.from_dict({**plain.to_dict(), "devices": {"policy": "wait"}})


@pytest.fixture(scope="module")
def straggler_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stragglers")
    runs = {}
    for name in ("fedavg", "fedprox"):
        scenario = small(f"synthetic-1-1-stragglers-90-{name}", 0.9)
        runs[name] = simulate_in_process(scenario.to_run_config(), out / name)
    runs["fedprox-again"] = simulate_in_process(
        small("synthetic-1-1-stragglers-90-fedprox", 0.9).to_run_config(), out / "again"
    )
    runs["out"] = out
    return runs


def test_fedavg_drops_the_stragglers_past_the_deadline(straggler_runs):
    report = straggler_runs["fedavg"]
    deadline = DeviceSimulation.from_json(report.config["devices"]).deadline_seconds
    assert report.status == "completed"
    clients = [c for r in report.rounds for c in r.clients]
    dropped = [c for c in clients if c.device_status == "dropped"]
    assert dropped and all(c.sim_seconds > deadline and "straggler" in c.reason for c in dropped)
    assert all(c.steps_done == c.steps_planned > 0 for c in clients)  # FedAvg: whole jobs
    kept = [c for c in clients if c.device_status == "on-time"]
    assert all(c.sim_seconds <= deadline for c in kept)
    for r in report.rounds:
        assert (
            r.clients_dropped
            == r.stragglers
            == sum(c.device_status == "dropped" for c in r.clients)
        )
        assert r.sim_round_seconds == deadline  # the server waited for a dropped client
    elapsed = np.cumsum([r.sim_round_seconds for r in report.rounds])
    assert [r.sim_elapsed_seconds for r in report.rounds] == pytest.approx(elapsed.tolist())


def test_fedprox_keeps_partial_work_that_fits_the_deadline(straggler_runs):
    report = straggler_runs["fedprox"]
    deadline = DeviceSimulation.from_json(report.config["devices"]).deadline_seconds
    clients = [c for r in report.rounds for c in r.clients]
    partial = [c for c in clients if c.device_status == "partial"]
    assert partial, "at 90% stragglers some client must stop early"
    for client in partial:
        assert 0 < client.steps_done < client.steps_planned
        assert client.fuel_used <= client.fuel_budget
        assert client.sim_seconds <= deadline
        assert client.status == 1  # OK: aggregated
    assert all(r.sim_round_seconds <= deadline for r in report.rounds)
    assert sum(r.clients_partial for r in report.rounds) == len(partial)


def test_same_scenario_same_model_and_same_simulated_times(straggler_runs):
    first, again = straggler_runs["fedprox"], straggler_runs["fedprox-again"]
    assert first.final_model_sha256 == again.final_model_sha256
    times = [[(c.sim_seconds, c.fuel_used, c.steps_done) for c in r.clients] for r in first.rounds]
    assert times == [
        [(c.sim_seconds, c.fuel_used, c.steps_done) for c in r.clients] for r in again.rounds
    ]
    assert load_report(straggler_runs["out"] / "fedprox").rounds[-1].sim_elapsed_seconds > 0
