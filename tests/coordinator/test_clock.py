"""coordinator/clock.py: device profiles, per-round draws, budgets and simulated times."""

import json
import math

import pytest

from coordinator.clock import (
    DeviceConfigError,
    DeviceProfile,
    DeviceSimulation,
    round_seconds,
)

PROFILE = DeviceProfile(speed=1e6, memory_mb=64, uplink=1000.0, downlink=4000.0, availability=0.5)


def simulation(**changes) -> DeviceSimulation:
    values = {
        "profiles": (PROFILE, DeviceProfile(2e6, 128, 500.0, 500.0, 1.0)),
        "deadline_seconds": 10.0,
        "policy": "partial",
        "speed_jitter": 0.0,
    }
    return DeviceSimulation(**(values | changes))


def test_json_round_trip_keeps_everything_including_an_infinite_deadline():
    for deadline in (10.0, math.inf):
        devices = simulation(deadline_seconds=deadline, speed_jitter=0.3)
        assert DeviceSimulation.from_json(devices.to_json()) == devices


def test_client_time_is_download_plus_fuel_over_speed_plus_upload():
    times = DeviceSimulation.client_time(PROFILE, 1e6, payload_bytes=4000, fuel=3_000_000)
    assert (times.download, times.compute, times.upload) == (1.0, 3.0, 4.0)
    assert times.total == 8.0
    assert DeviceSimulation.client_time(None, math.inf, 4000, 10**9).total == 0.0


def test_fuel_budget_is_what_fits_after_the_transfers_and_only_for_partial_work():
    devices = simulation()
    # 10 s deadline - 1 s down - 4 s up = 5 s at 1e6 fuel/s
    assert devices.fuel_budget(PROFILE, 1e6, 4000) == 5_000_000
    assert devices.fuel_budget(PROFILE, 1e6, 40_000) == 0  # the transfers alone miss it
    assert simulation(policy="drop").fuel_budget(PROFILE, 1e6, 4000) == -1
    assert simulation(deadline_seconds=math.inf).fuel_budget(PROFILE, 1e6, 4000) == -1


def test_round_draws_are_seeded_and_availability_shows_in_the_share_online():
    devices = simulation(speed_jitter=0.5)
    draws = [devices.round_state(7, server_round, 0) for server_round in range(1, 401)]
    assert draws == [devices.round_state(7, server_round, 0) for server_round in range(1, 401)]
    online = sum(up for up, _ in draws) / len(draws)
    assert 0.4 < online < 0.6  # availability 0.5
    speeds = {speed for _, speed in draws}
    assert len(speeds) > 300 and min(speeds) < PROFILE.speed < max(speeds)
    assert simulation().round_state(7, 1, 0)[1] == PROFILE.speed  # no jitter: nominal speed
    assert devices.round_state(7, 1, 99) == (True, math.inf)  # no profile: always there


def test_round_seconds_waits_for_the_deadline_only_when_a_client_was_dropped():
    assert round_seconds([1.0, 3.0], any_dropped=False, deadline=10.0) == 3.0
    assert round_seconds([1.0, 3.0], any_dropped=True, deadline=10.0) == 10.0
    assert round_seconds([], any_dropped=False, deadline=10.0) == 0.0


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"policy": "wait"}, "devices.policy"),
        ({"deadline_seconds": 0}, "devices.deadline_seconds"),
        ({"speed_jitter": -1}, "devices.speed_jitter"),
        ({"profiles": []}, "devices.profiles"),
        ({"profiles": [[0, 64, 1, 1, 1]]}, r"devices.profiles\[0\].speed"),
        ({"profiles": [[1, 0.5, 1, 1, 1]]}, r"devices.profiles\[0\].memory_mb"),
        ({"profiles": [[1, 64, 1, 1, 2]]}, r"devices.profiles\[0\].availability"),
        ({"profiles": [[1, 64, 1, 1]]}, r"devices.profiles\[0\]"),
        ({"extra": 1}, "expected the keys"),
    ],
)
def test_bad_device_config_names_the_field(change, names):
    data = json.loads(simulation().to_json()) | change
    with pytest.raises(DeviceConfigError, match=names):
        DeviceSimulation.from_json(json.dumps(data))


def test_the_run_config_carries_devices_and_refuses_bad_ones(tmp_path):
    from coordinator.config import FederationConfig, RunConfigError

    base = {
        "scenario": "s", "seed": 1, "num-rounds": 1, "fraction-train": 1.0,
        "fraction-evaluate": 0.0, "local-epochs": 1, "batch-size": 4, "lr": 0.1,
        "strategy": "fedavg", "model": "logreg:4-3", "max-delta-norm": 10.0,
        "out-dir": str(tmp_path),
    }  # fmt: skip
    assert FederationConfig.from_run_config(base).devices is None
    assert "devices" not in FederationConfig.from_run_config(base).to_run_config()
    devices = simulation()
    config = FederationConfig.from_run_config(base | {"devices": devices.to_json()})
    assert config.devices == devices
    assert config.to_run_config()["devices"] == devices.to_json()
    with pytest.raises(RunConfigError, match="devices"):
        FederationConfig.from_run_config(base | {"devices": "{not json"})
