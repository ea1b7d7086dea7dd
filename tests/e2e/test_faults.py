"""End to end: a scenario with [faults] on Flower's real simulation engine (Ray), real wasmtime.

Seed 7 with 4 clients and 2 rounds makes the fault plan hit every kind at least once (checked
below from the plan itself): a crash (error reply), a slow client (the real kernel runs out of
its 1000-unit fuel budget), and a Byzantine client sending NaN deltas (rejected). Every round
completes, and each client's row says what was injected and what the coordinator made of it.
"""

from __future__ import annotations

import math

import pytest

from protos.report_pb2 import FAILED, OK, REJECTED
from simulations.faults import ERROR_CRASH, FaultConfig
from simulations.scenario import find_scenario, load_scenario
from simulations.simulate import simulate_on_engine

pytestmark = pytest.mark.e2e

SEED = 7
CLIENTS = 4
ROUNDS = 2


def test_faults_are_injected_recorded_and_survived(tmp_path):
    scenario = load_scenario(find_scenario("digits-mlp-iid")).with_overrides(
        rounds=ROUNDS,
        clients=CLIENTS,
        seed=SEED,
        sets={
            "federation.fraction_train": "1.0",
            "federation.fraction_evaluate": "0.0",
            "faults.crash": "0.25",
            "faults.slow": "0.25",
            "faults.byzantine": "0.25",
            "faults.attack": "nan",
        },
    )
    run_config = scenario.to_run_config()
    plan = FaultConfig.from_mapping(run_config)
    attackers = plan.byzantine_partitions(SEED, CLIENTS)
    expected = {
        (server_round, partition): plan.round_fault(SEED, server_round, partition)
        for server_round in range(1, ROUNDS + 1)
        for partition in range(CLIENTS)
    }
    assert {"crash", "slow"} <= set(expected.values()) and len(attackers) == 1

    report = simulate_on_engine(run_config, tmp_path / "run")

    assert report.status == "completed" and len(report.rounds) == ROUNDS
    assert all(math.isfinite(r.central_accuracy) for r in report.rounds)
    seen_attack = False
    for round_report in report.rounds:
        assert len(round_report.clients) == CLIENTS
        for client in round_report.clients:
            fault = expected[(round_report.round, client.partition_id)]
            assert client.injected_fault == fault
            assert client.attack == ("nan" if client.partition_id in attackers else "")
            if fault == "crash":
                assert client.status == FAILED and f"client error {ERROR_CRASH}" in client.reason
            elif fault == "slow":
                assert client.status == FAILED and "fuel" in client.reason
            elif client.partition_id in attackers:
                assert client.status == REJECTED and "non-finite" in client.reason
                seen_attack = True
            else:
                assert client.status == OK and client.aggregation_weight > 0
    assert seen_attack
