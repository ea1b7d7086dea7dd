"""coordinator/reports/report_json.py: report.json round trip, clear errors for bad files."""

import json
import math

import pytest
from google.protobuf import json_format

from coordinator.reports.report_json import ReportError, load_report, parse_report, report_to_json
from coordinator.reports.run_config import config_json_object
from protos.report_pb2 import FAILED, REJECTED, ClientResult, RoundReport, RunReport
from tests.coordinator.report_factory import make_report


def test_report_json_keeps_field_names_and_prints_zeros():
    report = make_report()
    report.rounds[0].clients[0].fuel_used = 0
    document = json.loads(report_to_json(report))
    client = document["rounds"][0]["clients"][0]
    assert client["fuel_used"] == "0"  # int64 is a JSON string; zero printed, not left out
    assert client["aggregation_weight"] > 0 and "node_id" in client and "nodeId" not in client
    assert document["error"] == "" and document["rounds"][0]["clients"][0]["reason"] == ""


def test_round_trip_through_json_format_parse(tmp_path):
    report = make_report(num_rounds=2)  # no NaN: NaN != NaN would make equality meaningless
    path = tmp_path / "report.json"
    path.write_text(report_to_json(report))
    parsed = RunReport()
    json_format.Parse(path.read_text(), parsed)
    assert parsed == report
    assert load_report(tmp_path) == report
    assert load_report(path) == report


def test_round_trip_keeps_statuses_and_non_finite_norms(tmp_path):
    report = make_report(num_rounds=3)
    (tmp_path / "report.json").write_text(report_to_json(report))
    loaded = load_report(tmp_path)
    # Compared as parsed JSON: the config Struct is a map, its key order is not kept.
    assert json.loads(report_to_json(loaded)) == json.loads(report_to_json(report))
    assert [c.status for c in loaded.rounds[1].clients][1:3] == [FAILED, REJECTED]
    assert math.isnan(loaded.rounds[2].clients[0].delta_norm)
    assert loaded.config["training"]["lr"] == 0.05


def test_missing_run_folder_and_missing_file_are_named(tmp_path):
    with pytest.raises(ReportError, match="no report.json in this run folder") as info:
        load_report(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ReportError, match="no such file") as info:
        load_report(tmp_path / "elsewhere" / "report.json")
    assert "elsewhere" in str(info.value)


def test_unreadable_report_is_named(tmp_path):
    (tmp_path / "report.json").mkdir()  # exists but cannot be read as a file
    with pytest.raises(ReportError, match="report.json: cannot read the report"):
        load_report(tmp_path)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReportError, match=r"binary\.json: cannot read the report"):
        load_report(binary)


def test_invalid_json_names_file_line_and_column(tmp_path):
    (tmp_path / "report.json").write_text('{\n "scenario": "x",\n "seed": \n}')
    with pytest.raises(ReportError) as info:
        load_report(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "report.json") in message
    assert "not valid JSON" in message and "line 4" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"scenario": "x", "no_such_field": 1}', "no_such_field"),
        ('{"seed": "twelve"}', "seed"),
        ('{"rounds": [{"clients": [{"status": "SOMETIMES"}]}]}', "SOMETIMES"),
        ("[1, 2, 3]", "RunReport"),
    ],
)
def test_json_that_is_not_a_run_report_is_refused(text, problem):
    with pytest.raises(ReportError) as info:
        parse_report(text, source="runs/x/report.json")
    message = str(info.value)
    assert message.startswith("runs/x/report.json: not a RunReport")
    assert problem in message


@pytest.mark.parametrize("num_rounds", [0, 1, 3])
def test_report_json_holds_what_message_to_json_holds(num_rounds):
    report = make_report(num_rounds=num_rounds, status="running")  # NaN finals included
    reference = json.loads(
        json_format.MessageToJson(
            report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )
    # Two documented differences: an unset optional scalar (not measured) is printed as null
    # rather than left out, and the config's integers are integers.
    reference["config"] = config_json_object(report)
    for round_dict in reference["rounds"]:
        _with_nulls(round_dict, RoundReport.DESCRIPTOR)
        for client_dict in round_dict["clients"]:
            _with_nulls(client_dict, ClientResult.DESCRIPTOR)
    assert json.loads(report_to_json(report)) == reference


def _with_nulls(as_dict, descriptor):
    for field in descriptor.fields:
        if field.has_presence and field.message_type is None:
            as_dict.setdefault(field.name, None)


def test_unmeasured_figures_are_null_and_read_back_as_unset():
    report = make_report(num_rounds=1)
    client = report.rounds[0].clients[0]
    client.ClearField("eval_loss")
    client.eval_accuracy = 0.0  # measured zero
    written = json.loads(report_to_json(report))["rounds"][0]["clients"][0]
    assert written["eval_loss"] is None and written["eval_accuracy"] == 0.0
    assert written["sim_seconds"] is None  # make_report simulates no devices
    loaded = parse_report(report_to_json(report))
    assert loaded == report
    assert not loaded.rounds[0].clients[0].HasField("eval_loss")
    assert loaded.rounds[0].clients[0].HasField("eval_accuracy")


def test_report_json_is_one_line_per_round_in_proto_field_order():
    lines = report_to_json(make_report(num_rounds=3)).splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert [json.loads(line.rstrip(","))["round"] for line in lines if '"round": ' in line] == [
        1,
        2,
        3,
    ]
    names = [line.split('"')[1] for line in lines[1:] if line.startswith(' "')]
    assert names == [field.name for field in RunReport.DESCRIPTOR.fields]


def test_a_changed_round_is_serialized_again():
    # Round JSON is cached by the round's bytes: a change must never serve the old text.
    report = make_report(num_rounds=2)
    first = json.loads(report_to_json(report))
    report.rounds[0].clients[0].reason = "changed after the first write"
    second = json.loads(report_to_json(report))
    assert first["rounds"][0]["clients"][0]["reason"] == ""
    assert second["rounds"][0]["clients"][0]["reason"] == "changed after the first write"
