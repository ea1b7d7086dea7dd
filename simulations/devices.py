"""Device profiles of a scenario's clients: drawn from the run seed, or read from a CSV file.

A scenario's ``[devices]`` table (simulations/scenario.py) becomes a
:class:`coordinator.clock.DeviceSimulation`, which the run config carries as JSON to the
coordinator (any engine). A deadline can be given in simulated seconds, or CALIBRATED to a
straggler share: every client's whole local job is run once, metered, on its own partition
(fuel depends on the shapes only, so this is each round's fuel exactly), its simulated time
at the device's nominal speed is computed, and the deadline is set between the
``(1 - share)`` and the next quantile of those times. With ``speed_jitter`` > 0 the per-round
speeds vary, so the realised share per round varies around the target.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.clock import DeviceProfile, DeviceSimulation
from protos.untrusted_file import read_regular_file

# Purpose word of the profile draws: np.random.default_rng([seed, _PURPOSE_PROFILES]).
_PURPOSE_PROFILES = 8
PROFILE_COLUMNS = DeviceProfile.FIELDS
# A row is five numbers (~40 bytes written by hand): a file over this per row is not one.
MAX_BYTES_PER_ROW = 1024


class DevicesError(ValueError):
    """A device profile file or table that cannot be used; the message names it."""


@dataclass(frozen=True)
class DeviceDistribution:
    """How a scenario draws its devices (the ``[devices]`` table, minus the policy)."""

    speed: float  # median fuel per simulated second
    speed_sigma: float  # lognormal spread across devices
    memory_mb: int
    uplink: float  # median bytes per simulated second
    downlink: float
    bandwidth_sigma: float  # lognormal spread across devices
    availability: float


def draw_profiles(
    distribution: DeviceDistribution, num_clients: int, seed: int
) -> list[DeviceProfile]:
    """``num_clients`` devices from the distribution; the same seed gives the same devices."""
    rng = np.random.default_rng([seed, _PURPOSE_PROFILES])
    speed = distribution.speed * np.exp(distribution.speed_sigma * rng.standard_normal(num_clients))
    uplink = distribution.uplink * np.exp(
        distribution.bandwidth_sigma * rng.standard_normal(num_clients)
    )
    downlink = distribution.downlink * np.exp(
        distribution.bandwidth_sigma * rng.standard_normal(num_clients)
    )
    return [
        DeviceProfile(
            speed=float(speed[i]),
            memory_mb=distribution.memory_mb,
            uplink=float(uplink[i]),
            downlink=float(downlink[i]),
            availability=distribution.availability,
        )
        for i in range(num_clients)
    ]


def read_profiles(path: str | Path, num_clients: int) -> list[DeviceProfile]:
    """Read one device per row of a CSV file; row i is client (partition) i.

    The header is ``speed,memory_mb,uplink,downlink,availability``; exactly ``num_clients``
    rows.
    """
    path = Path(path)
    try:
        # A regular file of at most a few hundred bytes a client: a fifo waited for a writer,
        # a link to /dev/zero was read line by line forever.
        raw = read_regular_file(path, MAX_BYTES_PER_ROW * (num_clients + 1))
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        if reader.fieldnames is None or list(reader.fieldnames) != list(PROFILE_COLUMNS):
            raise DevicesError(
                f"{path}: expected the header {','.join(PROFILE_COLUMNS)}, "
                f"given {','.join(reader.fieldnames or [])}"
            )
        rows = list(reader)
    except OSError as error:
        raise DevicesError(f"{path}: cannot read the device profiles: {error.strerror}") from error
    except (UnicodeDecodeError, csv.Error) as error:  # not UTF-8; a NUL byte, a broken quote
        raise DevicesError(f"{path}: not a UTF-8 CSV file: {error}") from error
    if len(rows) != num_clients:
        raise DevicesError(
            f"{path}: expected {num_clients} rows (one per client), given {len(rows)}"
        )
    profiles = []
    for line, row in enumerate(rows, start=2):
        try:
            values = [float(row[column]) for column in PROFILE_COLUMNS]
        except (TypeError, ValueError) as error:
            raise DevicesError(f"{path}:{line}: expected numbers, given {row}") from error
        speed, memory_mb, uplink, downlink, availability = values
        if not all(0 < v < math.inf for v in (speed, uplink, downlink)):
            raise DevicesError(f"{path}:{line}: speed and bandwidths must be finite and > 0")
        if memory_mb < 1 or memory_mb != int(memory_mb) or not 0 <= availability <= 1:
            raise DevicesError(
                f"{path}:{line}: expected memory_mb an integer >= 1 and availability in [0, 1]"
            )
        profiles.append(DeviceProfile(speed, int(memory_mb), uplink, downlink, availability))
    return profiles


def calibrate_deadline(times: Sequence[float], straggler_share: float) -> float:
    """Return a deadline that makes ``straggler_share`` of the clients (by nominal time) stragglers.

    The clients sorted by time; the first ``round(n * (1 - share))`` finish in time; the
    deadline lies halfway between the last of them and the first straggler. Share 0: no
    deadline (inf).
    """
    if not 0 <= straggler_share < 1:
        raise DevicesError(f"straggler_share: expected a share in [0, 1), given {straggler_share}")
    if straggler_share == 0:
        return math.inf
    ordered = sorted(times)
    on_time = max(1, round(len(ordered) * (1 - straggler_share)))
    if on_time >= len(ordered):
        return math.inf
    return (ordered[on_time - 1] + ordered[on_time]) / 2


def job_fuel(run_config: Mapping[str, Any], num_clients: int) -> list[int]:
    """Each client's fuel for its whole local job (one metered run on its own partition)."""
    from client.runner import KernelRunner
    from kernels.spec import ModelSpec
    from simulations.federated_data import load_client_data

    spec = ModelSpec.parse(str(run_config["model"]))
    params = spec.init_params(int(run_config["seed"]))
    runner = KernelRunner()
    fuel = []
    for partition in range(num_clients):
        data = load_client_data(run_config, partition)
        result = runner.train(
            spec,
            params,
            data.x_train,
            data.y_train,
            epochs=int(run_config["local-epochs"]),
            batch_size=int(run_config["batch-size"]),
            lr=float(run_config["lr"]),
            mu=float(run_config["proximal-mu"]),
            seed=0,  # fuel depends on the shapes only, not on the shuffle (ABI.md)
            meter=True,
        )
        assert result.fuel_used is not None
        fuel.append(int(result.fuel_used))
    return fuel


def nominal_times(
    profiles: Sequence[DeviceProfile], fuel: Sequence[int], payload_bytes: int
) -> list[float]:
    """Each client's simulated seconds for its whole job at its nominal speed."""
    return [
        DeviceSimulation.client_time(profile, profile.speed, payload_bytes, job).total
        for profile, job in zip(profiles, fuel, strict=True)
    ]
