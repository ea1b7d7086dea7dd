"""coordinator/reports/writer.py: the run folder's files, their agreement, crash safety."""

import csv
import json
import math
import os
import stat

import pytest

import coordinator.reports.atomic as atomic
import coordinator.reports.writer as report_writer
from coordinator.reports.csv_tables import CLIENT_COLUMNS, CLIENTS_CSV, ROUNDS_CSV
from coordinator.reports.report_json import load_report
from coordinator.reports.writer import REPORT_HTML, html_due, write_run
from protos.report_pb2 import ClientResult, ClientStatus, RoundReport, RunReport
from tests.coordinator.report_factory import make_report

RUN_FILES = {"report.json", ROUNDS_CSV, CLIENTS_CSV, REPORT_HTML}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_figure(csv_text: str, json_value, field) -> bool:
    """Whether a CSV cell holds the value report.json holds for ``field``."""
    if json_value is None:
        return csv_text == ""  # not measured: null in report.json, an empty cell in the CSV
    if field.is_repeated:
        return csv_text.split(";") == list(json_value)
    if field.enum_type is not None:
        return csv_text == json_value  # both by name
    if field.type == field.TYPE_BOOL:
        return csv_text == ("true" if json_value else "false")
    if field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        # "NaN" in JSON; "nan" in clients.csv, an empty cell in rounds.csv (not measured).
        expected, given = float(json_value), float(csv_text) if csv_text else math.nan
        return (math.isnan(expected) and math.isnan(given)) or expected == given
    if field.type in (field.TYPE_INT64, field.TYPE_INT32):
        return int(csv_text) == int(json_value)
    return csv_text == json_value


def test_write_run_writes_the_four_files_and_no_temporaries(tmp_path):
    write_run(tmp_path / "run", make_report())
    assert {p.name for p in (tmp_path / "run").iterdir()} == RUN_FILES
    plain_file = tmp_path / "plain"
    plain_file.write_text("")  # its mode is what the umask gives any new file
    expected_mode = stat.S_IMODE(plain_file.stat().st_mode)
    for name in RUN_FILES:
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == expected_mode, (name, oct(mode), oct(expected_mode))


def test_report_json_round_trips(tmp_path):
    report = make_report()
    write_run(tmp_path, report, render_html=False)  # the page is not what this test is about
    loaded = load_report(tmp_path)
    assert len(loaded.rounds) == 3
    assert [len(r.clients) for r in loaded.rounds] == [4, 4, 4]
    assert loaded.rounds[1].clients[2].reason == report.rounds[1].clients[2].reason


def test_rounds_csv_matches_the_json_for_every_round(tmp_path):
    write_run(tmp_path, make_report(num_rounds=3), render_html=False)
    document = json.loads((tmp_path / "report.json").read_text())
    rows = read_csv(tmp_path / ROUNDS_CSV)
    round_fields = [f for f in RoundReport.DESCRIPTOR.fields if f.name != "clients"]
    assert list(rows[0]) == [f.name for f in round_fields]
    assert len(rows) == len(document["rounds"]) == 3
    for row, round_json in zip(rows, document["rounds"], strict=True):
        for field in round_fields:
            assert same_figure(row[field.name], round_json[field.name], field), (
                f"round {round_json['round']} {field.name}: csv {row[field.name]!r}, "
                f"json {round_json[field.name]!r}"
            )


def test_clients_csv_matches_the_json_for_every_client_of_every_round(tmp_path):
    write_run(tmp_path, make_report(num_rounds=3, num_clients=5), render_html=False)
    document = json.loads((tmp_path / "report.json").read_text())
    rows = read_csv(tmp_path / CLIENTS_CSV)
    assert tuple(rows[0]) == CLIENT_COLUMNS
    expected = [
        (round_json["round"], client_json)
        for round_json in document["rounds"]
        for client_json in round_json["clients"]
    ]
    assert len(rows) == len(expected) == 15
    for row, (round_number, client_json) in zip(rows, expected, strict=True):
        assert int(row["round"]) == round_number
        for field in ClientResult.DESCRIPTOR.fields:
            assert same_figure(row[field.name], client_json[field.name], field), (
                f"round {round_number} {client_json['node_id']} {field.name}: "
                f"csv {row[field.name]!r}, json {client_json[field.name]!r}"
            )
    statuses = {row["status"] for row in rows}
    assert statuses == {"OK", "FAILED", "REJECTED"}
    assert statuses <= set(ClientStatus.keys())
    tricky = next(row for row in rows if row["round"] == "2" and row["status"] == "REJECTED")
    assert "<script>" in tricky["reason"] and "a,b" in tricky["reason"]  # quoted, not split


def test_a_crash_after_round_k_leaves_a_valid_report_of_k_rounds(tmp_path, monkeypatch):
    # Every round's page too (the time throttle of report.html has its own test below).
    monkeypatch.setattr(report_writer, "HTML_MIN_SECONDS", 0.0)
    monkeypatch.setattr(report_writer, "HTML_MAX_TIME_SHARE", math.inf)
    full = make_report(num_rounds=5)
    crash_after = 3

    def run_rounds() -> None:
        # What the coordinator does: after each round, write the report of the rounds so far.
        so_far = RunReport()
        so_far.CopyFrom(full)
        del so_far.rounds[:]
        so_far.status = "running"
        for round_report in full.rounds:
            if round_report.round > crash_after:
                raise RuntimeError("the coordinator died mid-round")
            so_far.rounds.append(round_report)
            write_run(tmp_path, so_far)

    with pytest.raises(RuntimeError, match="died"):
        run_rounds()
    loaded = load_report(tmp_path)
    assert [r.round for r in loaded.rounds] == [1, 2, 3]
    assert loaded.status == "running"
    assert [int(row["round"]) for row in read_csv(tmp_path / ROUNDS_CSV)] == [1, 2, 3]
    client_rounds = {int(row["round"]) for row in read_csv(tmp_path / CLIENTS_CSV)}
    assert client_rounds == {1, 2, 3}
    page = (tmp_path / REPORT_HTML).read_text()
    assert 'id="round-3-clients"' in page and 'id="round-4-clients"' not in page
    assert {p.name for p in tmp_path.iterdir()} == RUN_FILES


def test_a_failure_while_rendering_leaves_the_previous_files(tmp_path, monkeypatch):
    write_run(tmp_path, make_report(num_rounds=2))
    before = {name: (tmp_path / name).read_bytes() for name in RUN_FILES}

    def broken_render(report):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_writer, "render_report_html", broken_render)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_run(tmp_path, make_report(num_rounds=3))
    assert {name: (tmp_path / name).read_bytes() for name in RUN_FILES} == before
    assert len(load_report(tmp_path).rounds) == 2
    assert {p.name for p in tmp_path.iterdir()} == RUN_FILES


def test_a_failure_while_replacing_removes_the_temporary_file(tmp_path, monkeypatch):
    write_run(tmp_path, make_report(num_rounds=2))
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).endswith(ROUNDS_CSV):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        write_run(tmp_path, make_report(num_rounds=3))
    assert {p.name for p in tmp_path.iterdir()} == RUN_FILES  # no .rounds.csv.*.tmp left
    assert len(read_csv(tmp_path / ROUNDS_CSV)) == 2  # the previous file, whole
    assert len(load_report(tmp_path).rounds) == 3  # written before the failure, whole


def test_html_cadence_for_long_runs():
    short = make_report(num_rounds=3, num_clients=1, status="running")
    assert html_due(short)
    long_running = make_report(
        num_rounds=report_writer.HTML_EVERY_ROUND_UP_TO + 1, num_clients=1, status="running"
    )
    assert not html_due(long_running)
    long_running.status = "completed"
    assert html_due(long_running)
    on_cadence = make_report(
        num_rounds=report_writer.HTML_EVERY_ROUND_UP_TO * 2, num_clients=1, status="running"
    )
    assert len(on_cadence.rounds) % report_writer.HTML_EVERY_ROUNDS == 0
    assert html_due(on_cadence)


def test_skipped_html_keeps_the_previous_page_and_updates_the_data(tmp_path):
    write_run(tmp_path, make_report(num_rounds=2))
    page = (tmp_path / REPORT_HTML).read_bytes()
    write_run(tmp_path, make_report(num_rounds=3), render_html=False)
    assert (tmp_path / REPORT_HTML).read_bytes() == page
    assert len(load_report(tmp_path).rounds) == 3
    assert len(read_csv(tmp_path / ROUNDS_CSV)) == 3


def test_a_changed_round_is_written_again_to_the_csvs(tmp_path):
    # CSV lines are cached by the round's bytes: a change must never serve the old lines.
    report = make_report(num_rounds=2)
    write_run(tmp_path, report, render_html=False)
    report.rounds[0].clients[0].reason = "changed"
    report.rounds[0].train_loss = 9.5
    write_run(tmp_path, report, render_html=False)
    assert read_csv(tmp_path / CLIENTS_CSV)[0]["reason"] == "changed"
    assert read_csv(tmp_path / ROUNDS_CSV)[0]["train_loss"] == "9.5"


def test_html_is_rewritten_at_most_every_few_seconds_while_running_and_always_at_the_end(
    tmp_path, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(report_writer.time, "monotonic", lambda: clock[0])
    write_run(tmp_path, make_report(num_rounds=1, num_clients=1, status="running"))
    first_page = (tmp_path / REPORT_HTML).read_bytes()
    clock[0] += report_writer.HTML_MIN_SECONDS / 2
    write_run(tmp_path, make_report(num_rounds=2, num_clients=1, status="running"))
    assert (tmp_path / REPORT_HTML).read_bytes() == first_page  # too soon: not re-rendered
    assert len(load_report(tmp_path).rounds) == 2  # the data files are, every round
    assert len(read_csv(tmp_path / ROUNDS_CSV)) == 2
    clock[0] += report_writer.HTML_MIN_SECONDS / 2
    write_run(tmp_path, make_report(num_rounds=3, num_clients=1, status="running"))
    third_page = (tmp_path / REPORT_HTML).read_bytes()
    assert third_page != first_page
    clock[0] += 0.1
    write_run(tmp_path, make_report(num_rounds=4, num_clients=1, status="completed"))
    assert (tmp_path / REPORT_HTML).read_bytes() != third_page  # the end is always rendered


def test_a_slow_html_render_is_repeated_only_after_a_proportionally_longer_wait(
    tmp_path, monkeypatch
):
    # A render that takes 1 s (1000 clients) must not run every 5 s: rendering stays within
    # HTML_MAX_TIME_SHARE of the run's time.
    clock = [1000.0]
    monkeypatch.setattr(report_writer.time, "monotonic", lambda: clock[0])
    real_render = report_writer.render_report_html

    def slow_render(report):
        clock[0] += 1.0  # the render "takes" one second of the clock
        return real_render(report)

    # write_run calls the name its module imported, so it calls the patched one.
    monkeypatch.setattr(report_writer, "render_report_html", slow_render)
    write_run(tmp_path, make_report(num_rounds=1, num_clients=1, status="running"))
    first_page = (tmp_path / REPORT_HTML).read_bytes()
    wait = 1.0 / report_writer.HTML_MAX_TIME_SHARE
    assert wait > report_writer.HTML_MIN_SECONDS
    clock[0] += wait - 0.5
    write_run(tmp_path, make_report(num_rounds=2, num_clients=1, status="running"))
    assert (tmp_path / REPORT_HTML).read_bytes() == first_page  # within the share: skipped
    clock[0] += 0.5
    write_run(tmp_path, make_report(num_rounds=3, num_clients=1, status="running"))
    assert (tmp_path / REPORT_HTML).read_bytes() != first_page


def test_the_first_page_with_plots_waits_as_long_as_its_cost_allows(tmp_path, monkeypatch):
    # The page before round 1 has placeholders only and renders in milliseconds; the first page
    # with plots costs ~1.5 s (matplotlib's import and six figures), so it is kept to the same
    # time share as every later one instead of landing in round 2's time.
    clock = [1000.0]
    monkeypatch.setattr(report_writer.time, "monotonic", lambda: clock[0])
    write_run(tmp_path, make_report(num_rounds=0, num_clients=1, status="running"))
    placeholders = (tmp_path / REPORT_HTML).read_bytes()
    wait = report_writer.HTML_FIRST_PLOTS_SECONDS / report_writer.HTML_MAX_TIME_SHARE
    assert wait > report_writer.HTML_MIN_SECONDS
    clock[0] += wait - 0.5
    write_run(tmp_path, make_report(num_rounds=1, num_clients=1, status="running"))
    assert (tmp_path / REPORT_HTML).read_bytes() == placeholders  # too soon for plots
    assert len(load_report(tmp_path).rounds) == 1  # the data files are written every round
    clock[0] += 0.5
    write_run(tmp_path, make_report(num_rounds=2, num_clients=1, status="running"))
    assert (tmp_path / REPORT_HTML).read_bytes() != placeholders
    assert b"No finished rounds yet." in placeholders
    assert b"No finished rounds yet." not in (tmp_path / REPORT_HTML).read_bytes()
