"""The simulated device clock: device profiles, per-round availability, deadlines, stragglers.

Simulators usually time clients by the wall clock, so their results depend on the machine. Here
a client's compute time is its training FUEL (wasmtime's deterministic instruction count)
divided by its device's speed, so the same scenario and seed give the same simulated times,
stragglers and model on every machine:

    client seconds = download bytes / downlink + fuel / speed + upload bytes / uplink

The bytes are the model's payload (the float32 arrays: the global model down, the delta up,
both the model's size), not Flower's message framing, so that a budget computed before the
round is exactly the time the reply is charged after it.

A round has a deadline in simulated seconds. Two straggler policies, as in the FedProx paper:
``drop`` (FedAvg's baseline): every client runs its whole job and those past the deadline are
dropped; ``partial`` (FedProx): each client gets the fuel that fits before the deadline and
sends the minibatch steps it managed (``client.runner.KernelRunner.train(fuel_budget=...)``).

The device table travels in the flat run config as JSON (key ``devices``), so it works with
any engine that runs the ServerApp logic; the layer that owns scenarios builds it
(``simulations.devices``). Randomness per round derives from ``(seed, round, partition)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POLICIES = ("drop", "partial")
# Purpose word of the per-round device draws in np.random.default_rng([seed, round, ...]).
_PURPOSE_DEVICE = 7

DEVICE_ON_TIME = "on-time"
DEVICE_PARTIAL = "partial"
DEVICE_DROPPED = "dropped"


class DeviceConfigError(ValueError):
    """The ``devices`` run config is malformed; the message names the field."""


@dataclass(frozen=True)
class DeviceProfile:
    """One device.

    Attributes
    ----------
    speed
        Compute speed in fuel (wasm instructions) per simulated second.
    memory_mb
        The sandbox's linear-memory cap on this device.
    uplink, downlink
        Bandwidth in bytes per simulated second.
    availability
        Probability that the device is online in a round.
    """

    speed: float
    memory_mb: int
    uplink: float
    downlink: float
    availability: float

    FIELDS = ("speed", "memory_mb", "uplink", "downlink", "availability")

    def to_list(self) -> list[float | int]:
        """Return the profile as a row of ``FIELDS`` (the devices CSV's column order)."""
        return [self.speed, self.memory_mb, self.uplink, self.downlink, self.availability]


@dataclass(frozen=True)
class ClientTime:
    """Where one client's simulated seconds went."""

    download: float
    compute: float
    upload: float

    @property
    def total(self) -> float:
        """Return the client's simulated seconds: download + compute + upload."""
        return self.download + self.compute + self.upload


@dataclass(frozen=True)
class DeviceSimulation:
    """Profiles by partition id, the round deadline, the straggler policy.

    Build with :meth:`from_json`; the run config carries :meth:`to_json`.
    """

    profiles: tuple[DeviceProfile, ...]
    deadline_seconds: float  # inf: no deadline
    policy: str
    speed_jitter: float  # sigma of a per-round lognormal factor on the speed (0: none)

    # -- (de)serialization -------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> DeviceSimulation:
        """Parse the run config's ``devices`` JSON; raise :class:`DeviceConfigError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeviceConfigError(f"devices: not valid JSON ({error.msg})") from error
        except (ValueError, RecursionError) as error:  # > 4300-digit integer; deep nesting
            raise DeviceConfigError(
                f"devices: not valid JSON ({type(error).__name__}: {error})"
            ) from error
        if not isinstance(data, dict):
            raise DeviceConfigError(f"devices: expected a JSON object, given {text[:80]!r}")
        expected = {"profiles", "deadline_seconds", "policy", "speed_jitter"}
        if set(data) != expected:
            raise DeviceConfigError(
                f"devices: expected the keys {sorted(expected)}, given {sorted(data)}"
            )
        policy = data["policy"]
        if policy not in POLICIES:
            raise DeviceConfigError(f"devices.policy: expected one of {POLICIES}, given {policy!r}")
        deadline = _number(data["deadline_seconds"], "devices.deadline_seconds")
        if not deadline > 0:
            raise DeviceConfigError(
                f"devices.deadline_seconds: expected a number > 0 (inf: none), given {deadline}"
            )
        jitter = _number(data["speed_jitter"], "devices.speed_jitter")
        if not 0 <= jitter < math.inf:
            raise DeviceConfigError(
                f"devices.speed_jitter: expected a finite number >= 0, given {jitter}"
            )
        rows = data["profiles"]
        if not isinstance(rows, list) or not rows:
            raise DeviceConfigError("devices.profiles: expected a non-empty list of profiles")
        return cls(
            profiles=tuple(_profile(row, f"devices.profiles[{i}]") for i, row in enumerate(rows)),
            deadline_seconds=deadline,
            policy=policy,
            speed_jitter=jitter,
        )

    def to_json(self) -> str:
        """Canonical JSON (inf deadline written as the string "inf")."""
        deadline: float | str = self.deadline_seconds
        if math.isinf(self.deadline_seconds):
            deadline = "inf"
        return json.dumps(
            {
                "deadline_seconds": deadline,
                "policy": self.policy,
                "profiles": [profile.to_list() for profile in self.profiles],
                "speed_jitter": self.speed_jitter,
            },
            sort_keys=True,
        )

    # -- per round -----------------------------------------------------------------------------
    def profile(self, partition_id: int) -> DeviceProfile | None:
        """Return the partition's device; None without a partition or beyond the table."""
        if 0 <= partition_id < len(self.profiles):
            return self.profiles[partition_id]
        return None

    def round_state(self, seed: int, server_round: int, partition_id: int) -> tuple[bool, float]:
        """(online, speed) of the partition's device in ``server_round``; deterministic."""
        profile = self.profile(partition_id)
        if profile is None:
            return True, math.inf
        rng = np.random.default_rng([seed, server_round, _PURPOSE_DEVICE, partition_id])
        online_draw, jitter_draw = rng.random(), rng.standard_normal()
        speed = profile.speed
        if self.speed_jitter > 0:
            speed *= math.exp(self.speed_jitter * jitter_draw)
        return bool(online_draw < profile.availability), speed

    def fuel_budget(self, profile: DeviceProfile, speed: float, payload_bytes: int) -> int:
        """Fuel that fits before the deadline after the download and the upload; -1: none."""
        if math.isinf(self.deadline_seconds) or self.policy != "partial":
            return -1
        transfer = payload_bytes / profile.downlink + payload_bytes / profile.uplink
        return max(0, math.floor((self.deadline_seconds - transfer) * speed))

    @staticmethod
    def client_time(
        profile: DeviceProfile | None, speed: float, payload_bytes: int, fuel: int
    ) -> ClientTime:
        """Return the client's simulated seconds: download, compute (fuel / speed), upload."""
        if profile is None:
            return ClientTime(0.0, 0.0, 0.0)
        return ClientTime(
            download=payload_bytes / profile.downlink,
            compute=fuel / speed,
            upload=payload_bytes / profile.uplink,
        )


def payload_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the float32 arrays a train message carries down (and a delta carries up)."""
    return int(sum(np.asarray(array).size * 4 for array in arrays.values()))


def round_seconds(times: Sequence[float], any_dropped: bool, deadline: float) -> float:
    """Return the round's simulated seconds.

    A round lasts until its last kept client is done, or until the deadline when the server
    waited for a client it then dropped.
    """
    longest = max(times, default=0.0)
    return max(longest, deadline) if any_dropped and math.isfinite(deadline) else longest


def _number(value: Any, what: str) -> float:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeviceConfigError(f"{what}: expected a number, given {value!r}")
    if math.isnan(value):
        raise DeviceConfigError(f"{what}: expected a number, given nan")
    return float(value)


def _profile(row: Any, what: str) -> DeviceProfile:
    if not isinstance(row, list) or len(row) != len(DeviceProfile.FIELDS):
        raise DeviceConfigError(
            f"{what}: expected [{', '.join(DeviceProfile.FIELDS)}], given {row!r}"
        )
    speed, memory_mb, uplink, downlink, availability = (
        _number(value, f"{what}.{name}")
        for value, name in zip(row, DeviceProfile.FIELDS, strict=True)
    )
    for name, value in (("speed", speed), ("uplink", uplink), ("downlink", downlink)):
        if not 0 < value < math.inf:
            raise DeviceConfigError(f"{what}.{name}: expected a finite number > 0, given {value}")
    if not (memory_mb >= 1 and memory_mb == int(memory_mb)):
        raise DeviceConfigError(f"{what}.memory_mb: expected an integer >= 1, given {memory_mb}")
    if not 0 <= availability <= 1:
        raise DeviceConfigError(
            f"{what}.availability: expected a probability in [0, 1], given {availability}"
        )
    return DeviceProfile(speed, int(memory_mb), uplink, downlink, availability)
