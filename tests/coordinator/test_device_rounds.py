"""coordinator/device_rounds.py: budgets in a device round's instructions, simulated time back."""

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from coordinator.clock import (
    DEVICE_DROPPED,
    DEVICE_ON_TIME,
    DEVICE_PARTIAL,
    DeviceProfile,
    DeviceSimulation,
)
from coordinator.device_rounds import DevicePlan, charge_replies, device_instructions
from coordinator.round_messages import ARRAYS_KEY, CONFIG_KEY
from coordinator.validation import TrainReply
from protos import contract
from protos.report_pb2 import FAILED, OK, REJECTED, RoundReport

# 1e6 fuel per simulated second; 1000 B/s down, 1000 B/s up.
PROFILE = DeviceProfile(speed=1e6, memory_mb=64, uplink=1000.0, downlink=1000.0, availability=1)
DEVICES = DeviceSimulation(
    profiles=(PROFILE,), deadline_seconds=10.0, policy="partial", speed_jitter=0.0
)
WEIGHTS = {"w": np.zeros(250, np.float32)}  # 1000 bytes: 1 s down, 1 s up


def test_each_instruction_carries_its_device_budget_and_memory_cap():
    record = RecordDict(
        {ARRAYS_KEY: ArrayRecord({"w": Array(WEIGHTS["w"])}), CONFIG_KEY: ConfigRecord({"lr": 0.1})}
    )
    profiles = {1: PROFILE, 2: None}  # node 2's partition has no profile
    messages, plan = device_instructions(
        DEVICES,
        record,
        WEIGHTS,
        [1, 2],
        server_round=3,
        profile_of=profiles.__getitem__,
        speed_of=lambda node: 5e5 if node == 1 else math.inf,
    )
    assert plan.payload_bytes == 1000
    budget = DEVICES.fuel_budget(PROFILE, 5e5, 1000)
    assert budget == 4_000_000  # (10 s - 1 s down - 1 s up) * 5e5
    assert plan.nodes == {1: (PROFILE, 5e5, budget), 2: (None, math.inf, -1)}
    assert [m.metadata.dst_node_id for m in messages] == [1, 2]
    assert {m.metadata.group_id for m in messages} == {"3"}
    first, second = (m.content.config_records[CONFIG_KEY] for m in messages)
    assert first[contract.CONFIG_FUEL_BUDGET] == budget and first[contract.CONFIG_METER_FUEL]
    assert first[contract.CONFIG_DEVICE_MEMORY_MB] == 64 and first["lr"] == 0.1
    assert second[contract.CONFIG_FUEL_BUDGET] == -1
    assert contract.CONFIG_DEVICE_MEMORY_MB not in second
    # The shared record is copied per node, never changed.
    assert dict(record.config_records[CONFIG_KEY]) == {"lr": 0.1}


def test_replies_are_charged_their_time_and_the_stragglers_are_dropped():
    plan = DevicePlan(payload_bytes=1000, nodes={node: (PROFILE, 1e6, -1) for node in range(7)})
    delta = {"w": np.ones(250, np.float32)}
    ok = dict(status=OK, delta=delta)
    checked = [
        TrainReply(0, fuel_used=3_000_000, **ok),  # 1 + 3 + 1 = 5 s: on time
        TrainReply(1, fuel_used=9_000_000, **ok),  # 11 s > 10 s: late
        TrainReply(2, fuel_used=2_000_000, **ok),  # partial work, on time
        TrainReply(3, fuel_used=1_000, **ok),  # not one step done
        TrainReply(4, fuel_used=1_000, **ok),  # no valid work metrics
        TrainReply(5, REJECTED, "non-finite values in the delta"),
        TrainReply(9, fuel_used=1_000_000, **ok),  # not in the plan: no device, no time
    ]
    work = {0: (10, 10), 1: (10, 10), 2: (4, 10), 3: (0, 10), 4: None, 5: (1, 1), 9: (1, 1)}
    report = RoundReport()
    replies, fields = charge_replies(DEVICES, plan, checked, work, report)
    assert [r.node_id for r in replies] == [0, 1, 2, 3, 4, 5, 9]
    assert [r.status for r in replies] == [OK, FAILED, OK, FAILED, FAILED, REJECTED, OK]
    assert replies[1].reason == "straggler: 11 simulated s > deadline 10 s"
    assert replies[3].reason == "straggler: not one minibatch step fits before the deadline"
    assert "lacks valid steps-done" in replies[4].reason
    assert all(r.delta is None for r in replies if r.status == FAILED)
    assert fields[0]["sim_seconds"] == 5.0 and fields[0]["device_status"] == DEVICE_ON_TIME
    assert (fields[0]["sim_download_seconds"], fields[0]["sim_upload_seconds"]) == (1.0, 1.0)
    assert fields[1]["device_status"] == DEVICE_DROPPED
    assert fields[2]["device_status"] == DEVICE_PARTIAL and fields[2]["steps_done"] == 4
    assert 4 not in fields  # nothing measured for a reply without its work metrics
    assert fields[5] == {"fuel_budget": -1}
    assert fields[9]["sim_seconds"] == 0.0  # an unplanned node: infinite speed, no transfer
    assert (report.stragglers, report.clients_dropped, report.clients_partial) == (3, 2, 1)
    # A dropped client made the server wait until the deadline.
    assert report.sim_round_seconds == 10.0


def test_a_round_without_stragglers_lasts_until_its_slowest_kept_client():
    plan = DevicePlan(payload_bytes=1000, nodes={0: (PROFILE, 1e6, -1), 1: (PROFILE, 2e6, -1)})
    ok = dict(status=OK, delta={"w": np.ones(250, np.float32)})
    checked = [TrainReply(0, fuel_used=2_000_000, **ok), TrainReply(1, fuel_used=2_000_000, **ok)]
    report = RoundReport()
    replies, fields = charge_replies(DEVICES, plan, checked, {0: (5, 5), 1: (5, 5)}, report)
    assert [r.status for r in replies] == [OK, OK]
    assert [fields[n]["sim_seconds"] for n in (0, 1)] == [4.0, 3.0]
    assert report.sim_round_seconds == 4.0
    assert (report.stragglers, report.clients_dropped, report.clients_partial) == (0, 0, 0)
