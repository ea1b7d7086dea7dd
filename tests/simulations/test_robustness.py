"""simulations/robustness.py: the grid's cells and table; one real cell, one round."""

from __future__ import annotations

import json
import math

from protos.report_pb2 import OK
from simulations.faults import FaultConfig
from simulations.inprocess import simulate_in_process as run_in_process
from simulations.robustness import cell_run_config, markdown_table


def test_a_clean_cell_is_the_attack_scenario_without_attackers():
    attacked = cell_run_config(
        "digits-mlp-byzantine-signflip", "krum", {"num_malicious_nodes": 4}, math.inf, attack=True
    )
    clean = cell_run_config(
        "digits-mlp-byzantine-signflip", "krum", {"num_malicious_nodes": 4}, math.inf, attack=False
    )
    assert FaultConfig.from_mapping(attacked).byzantine == 0.2
    assert not FaultConfig.from_mapping(clean).active
    assert json.loads(clean["strategy-params"]) == {"num_malicious_nodes": 4}
    assert {k: v for k, v in attacked.items() if not k.startswith("faults-")} == clean
    clipped = cell_run_config("digits-mlp-byzantine-signflip", "fedavg", {}, 2.0, attack=True)
    assert clipped["clip-delta-norm"] == 2.0


def test_the_table_has_a_row_per_rule_and_a_column_per_run():
    results = [
        {"rule": "FedAvg", "run": "clean", "final_central_accuracy": 0.98},
        {"rule": "FedAvg", "run": "signflip", "final_central_accuracy": 0.6333},
        {"rule": "Krum", "run": "clean", "final_central_accuracy": 0.8666},
    ]
    assert markdown_table(results).splitlines() == [
        "| rule | clean | signflip |",
        "| --- | --- | --- |",
        "| FedAvg | 0.980 | 0.633 |",
        "| Krum | 0.867 |  |",
    ]


def test_one_round_of_a_real_cell_marks_the_attackers(tmp_path):
    config = cell_run_config(
        "digits-mlp-byzantine-signflip", "fedmedian", {}, math.inf, attack=True, rounds=1
    )
    report = run_in_process(config, tmp_path / "cell")
    assert report.status == "completed" and len(report.rounds) == 1
    attackers = FaultConfig.from_mapping(config).byzantine_partitions(42, 20)
    clients = report.rounds[0].clients
    assert {c.partition_id for c in clients if c.attack == "signflip"} == attackers
    assert all(c.status == OK for c in clients)  # -4 x delta passes validation: the rule decides
    assert report.final_central_accuracy > 0.5
