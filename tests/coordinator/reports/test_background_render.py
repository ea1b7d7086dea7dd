"""write_run with a BackgroundWrites: rendered off the round loop, from a snapshot."""

import threading

import pytest

import coordinator.reports.writer as report_writer
from coordinator.file_writes import BackgroundWrites
from coordinator.reports.report_json import load_report
from coordinator.reports.writer import REPORT_HTML, report_header, write_run
from protos.report_pb2 import RunReport
from tests.coordinator.report_factory import make_report
from tests.coordinator.reports.test_writer import RUN_FILES


def run_files(folder):
    return {name: (folder / name).read_bytes() for name in RUN_FILES}


def test_the_header_and_the_rounds_rebuild_the_report():
    report = make_report(num_rounds=3)
    report.resumes.add()
    rebuilt = RunReport()
    rebuilt.CopyFrom(report_header(report))
    assert not rebuilt.rounds
    for round_report in report.rounds:
        rebuilt.rounds.add().CopyFrom(round_report)
    assert rebuilt.SerializeToString(deterministic=True) == report.SerializeToString(
        deterministic=True
    )


def test_background_rendering_writes_the_same_files_from_the_report_as_it_was(
    tmp_path, monkeypatch
):
    report = make_report(num_rounds=3)
    write_run(tmp_path / "in-line", report, render_html=True)
    threads = []
    real_render = report_writer.report_to_json

    def recording_render(*args):
        threads.append(threading.current_thread())
        return real_render(*args)

    monkeypatch.setattr(report_writer, "report_to_json", recording_render)
    files = BackgroundWrites()
    release = threading.Event()
    files.submit(lambda: release.wait(10))  # holds the thread: nothing is rendered yet
    write_run(tmp_path / "background", report, render_html=True, background=files)
    # The round loop goes on: the report changes before the snapshot is rendered.
    report.status = "failed"
    report.rounds.add().round = 4
    del report.rounds[0].clients[:]
    assert threads == []
    release.set()
    files.flush()
    files.close()
    assert threads and threading.main_thread() not in threads
    assert run_files(tmp_path / "background") == run_files(tmp_path / "in-line")
    assert len(load_report(tmp_path / "background").rounds) == 3


def test_a_background_render_error_leaves_the_previous_files_and_is_raised(tmp_path, monkeypatch):
    files = BackgroundWrites()
    write_run(tmp_path, make_report(num_rounds=2), render_html=True, background=files)
    files.flush()
    before = run_files(tmp_path)

    def broken_render(report):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_writer, "render_report_html", broken_render)
    write_run(tmp_path, make_report(num_rounds=3), render_html=True, background=files)
    with pytest.raises(RuntimeError, match="plotting failed"):
        files.flush()
    files.close()
    assert run_files(tmp_path) == before
    assert {p.name for p in tmp_path.iterdir()} == RUN_FILES


def test_one_render_per_folder_is_queued_at_a_time(tmp_path):
    files = BackgroundWrites()
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(10)

    write_run(tmp_path, make_report(num_rounds=1), render_html=False, background=files)
    pending = report_writer._pending_renders[str(tmp_path.resolve())]
    pending.result(10)
    files.submit(slow)
    started.wait(10)
    write_run(tmp_path, make_report(num_rounds=2), render_html=False, background=files)
    second = report_writer._pending_renders[str(tmp_path.resolve())]
    waiter = threading.Thread(
        target=write_run,
        args=(tmp_path, make_report(num_rounds=3)),
        kwargs={"render_html": False, "background": files},
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not second.done()  # the third waits for the second
    release.set()
    waiter.join(10)
    files.flush()
    files.close()
    assert len(load_report(tmp_path).rounds) == 3
    assert not (tmp_path / REPORT_HTML).exists()
