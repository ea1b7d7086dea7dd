"""coordinator/reports/csv_tables.py: rounds.csv and clients.csv, empty where not measured."""

import csv
import io
import math

from coordinator.reports.csv_tables import CLIENT_COLUMNS, ROUND_COLUMNS, clients_csv, rounds_csv
from protos.report_pb2 import FAILED, OK, ClientResult, RunReport


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def report_with(clients: list[ClientResult], **round_fields) -> RunReport:
    report = RunReport()
    round_report = report.rounds.add(round=1, **round_fields)
    round_report.clients.extend(clients)
    return report


def test_unset_client_fields_are_empty_and_measured_zeros_are_zero():
    measured_zero = ClientResult(
        node_id="1",
        status=OK,
        num_examples=0,
        train_loss=0.0,
        kernel_seconds=0.0,
        eval_loss=0.0,
        eval_num_examples=0,
        fuel_used=0,
        delta_norm=0.0,
    )
    never_measured = ClientResult(node_id="2", status=FAILED, reason="no reply")
    rows = read(clients_csv(report_with([measured_zero, never_measured])))
    assert list(rows[0]) == list(CLIENT_COLUMNS)
    for column in (
        "num_examples",
        "train_loss",
        "kernel_seconds",
        "eval_loss",
        "eval_num_examples",
        "fuel_used",
        "delta_norm",
        "cosine_to_update",
        "sim_seconds",
        "fuel_budget",
    ):
        assert rows[1][column] == "", column
        expected_zero = column not in ("cosine_to_update", "sim_seconds", "fuel_budget")
        assert (float(rows[0][column]) == 0.0) if expected_zero else rows[0][column] == "", column
    # Fields without presence are always measured: 0 stays 0.
    assert rows[1]["bytes_uploaded"] == "0" and rows[1]["aggregation_weight"] == "0.0"
    assert rows[1]["selected"] == "false" and rows[1]["status"] == "FAILED"


def test_a_nan_delta_norm_stays_nan_in_clients_csv():
    rows = read(clients_csv(report_with([ClientResult(node_id="1", delta_norm=math.nan)])))
    assert rows[0]["delta_norm"] == "nan" and math.isnan(float(rows[0]["delta_norm"]))


def test_rounds_csv_leaves_nan_figures_and_unset_device_fields_empty():
    report = report_with(
        [],
        train_loss=0.5,
        central_loss=math.nan,
        central_accuracy=math.nan,
        federated_eval_loss=0.0,
        update_norm=0.0,
    )
    device_round = report.rounds.add(round=2, stragglers=0, sim_round_seconds=0.0)
    device_round.central_loss = 1.5
    rows = read(rounds_csv(report))
    assert list(rows[0]) == list(ROUND_COLUMNS)
    first, second = rows
    assert first["central_loss"] == first["central_accuracy"] == ""
    assert first["train_loss"] == "0.5" and first["federated_eval_loss"] == "0.0"
    assert first["update_norm"] == "0.0" and first["clients_failed"] == "0"
    assert first["stragglers"] == first["sim_round_seconds"] == first["clients_offline"] == ""
    assert second["stragglers"] == "0" and second["sim_round_seconds"] == "0.0"
    assert second["central_loss"] == "1.5"


def test_infinities_stay_readable():
    report = report_with([ClientResult(node_id="1", delta_norm=math.inf)], update_norm=math.inf)
    assert read(clients_csv(report))[0]["delta_norm"] == "inf"
    assert read(rounds_csv(report))[0]["update_norm"] == "inf"
