"""A round of a device simulation: fuel budgets out to the devices, simulated time back.

The coordinator's half of the simulated device clock (:mod:`coordinator.clock` models the time
itself). Before a round, each sampled device's instruction carries the fuel its speed allows
before the deadline, and its memory cap (:func:`device_instructions`). After it, each valid
reply is charged its simulated download + compute + upload time, and the straggler policy
turns the late ones into failures (:func:`charge_replies`). :class:`coordinator.strategy.
DeltaStrategy` calls both when its run simulates devices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from protos import contract
from protos.report_pb2 import FAILED, RoundReport

from . import clock
from .round_messages import ARRAYS_KEY, CONFIG_KEY, instructions
from .validation import TrainReply

# What a round sent a device: its profile (None: no profile for its partition), its speed this
# round (fuel per simulated second) and its fuel budget (-1: none).
Planned = tuple[clock.DeviceProfile | None, float, int]
UNPLANNED: Planned = (None, math.inf, -1)


@dataclass
class DevicePlan:
    """What a round of a device simulation sent: the model's payload, each node's budget."""

    payload_bytes: int = 0
    nodes: dict[int, Planned] = field(default_factory=dict)


def device_instructions(
    devices: clock.DeviceSimulation,
    record: RecordDict,
    global_weights: Mapping[str, np.ndarray],
    train_nodes: Sequence[int],
    server_round: int,
    *,
    profile_of: Callable[[int], clock.DeviceProfile | None],
    speed_of: Callable[[int], float],
) -> tuple[list[Message], DevicePlan]:
    """One train instruction per node: the shared record plus its fuel budget and memory cap.

    ``profile_of`` and ``speed_of`` give a node's device profile and its speed this round.
    """
    plan = DevicePlan(payload_bytes=clock.payload_bytes(global_weights))
    messages = []
    for node_id in train_nodes:
        profile = profile_of(node_id)
        speed = speed_of(node_id)
        budget = (
            devices.fuel_budget(profile, speed, plan.payload_bytes) if profile is not None else -1
        )
        plan.nodes[node_id] = (profile, speed, budget)
        config = ConfigRecord(dict(cast(ConfigRecord, record[CONFIG_KEY])))
        config[contract.CONFIG_METER_FUEL] = True
        config[contract.CONFIG_FUEL_BUDGET] = int(budget)
        if profile is not None:
            config[contract.CONFIG_DEVICE_MEMORY_MB] = int(profile.memory_mb)
        node_record = RecordDict({ARRAYS_KEY: record[ARRAYS_KEY], CONFIG_KEY: config})
        messages += instructions(node_record, [node_id], MessageType.TRAIN, server_round)
    return messages, plan


def charge_replies(
    devices: clock.DeviceSimulation,
    plan: DevicePlan,
    checked: Sequence[TrainReply],
    work: Mapping[int, tuple[int, int] | None],
    report: RoundReport,
) -> tuple[list[TrainReply], dict[int, dict[str, Any]]]:
    """Charge each reply its simulated time; drop the stragglers the policy drops.

    ``work`` holds each node's (steps done, steps planned), None where its reply lacked valid
    ones. Sets the round's straggler counts and ``sim_round_seconds`` in ``report``.

    Returns
    -------
    The replies (dropped ones turned FAILED with the reason) and, per node, the ClientResult
    fields of the clock.
    """
    deadline = devices.deadline_seconds
    # Measured for every round of a device simulation, zeros included.
    report.stragglers = report.clients_dropped = report.clients_partial = 0
    results: dict[int, dict[str, Any]] = {}
    kept_times: list[float] = []
    out: list[TrainReply] = []
    for reply in checked:
        profile, speed, budget = plan.nodes.get(reply.node_id, UNPLANNED)
        done, planned = work.get(reply.node_id) or (0, 0)
        if not reply.ok:
            out.append(reply)
            results[reply.node_id] = {"fuel_budget": budget}
            continue
        if work.get(reply.node_id) is None:
            out.append(
                dataclasses.replace(
                    reply,
                    status=FAILED,
                    reason="device simulation: the reply lacks valid steps-done and "
                    "steps-planned metrics",
                    delta=None,
                )
            )
            continue
        times = devices.client_time(profile, speed, plan.payload_bytes, reply.fuel_used)
        fields: dict[str, Any] = {
            "sim_seconds": times.total,
            "sim_download_seconds": times.download,
            "sim_compute_seconds": times.compute,
            "sim_upload_seconds": times.upload,
            "fuel_budget": budget,
            "steps_done": done,
            "steps_planned": planned,
        }
        late = times.total > deadline
        partial = done < planned
        if late or partial:
            report.stragglers += 1
        if late or (partial and done == 0):
            why = (
                f"straggler: {times.total:.4g} simulated s > deadline {deadline:.4g} s"
                if late
                else "straggler: not one minibatch step fits before the deadline"
            )
            report.clients_dropped += 1
            fields["device_status"] = clock.DEVICE_DROPPED
            reply = dataclasses.replace(reply, status=FAILED, reason=why, delta=None)
        else:
            kept_times.append(times.total)
            if partial:
                report.clients_partial += 1
            fields["device_status"] = clock.DEVICE_PARTIAL if partial else clock.DEVICE_ON_TIME
        results[reply.node_id] = fields
        out.append(reply)
    report.sim_round_seconds = clock.round_seconds(kept_times, report.clients_dropped > 0, deadline)
    return out, results
