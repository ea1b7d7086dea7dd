"""Write a run folder: report.json, rounds.csv, clients.csv and report.html.

The coordinator calls :func:`write_run` after every round, so a run that crashes after round k
leaves a valid report of k rounds. Every file is replaced atomically (a temporary file in the
same folder, then ``os.replace``), and all four are rendered in memory before the first one is
replaced: a failure while rendering leaves the previous files as they were.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from protos.report_pb2 import ClientResult, RoundReport, RunReport

from .report_io import REPORT_FILE_NAME, report_to_json

ROUNDS_CSV = "rounds.csv"
CLIENTS_CSV = "clients.csv"
REPORT_HTML = "report.html"

# The per-client list has its own file; the node ids are joined so one round stays one row.
ROUND_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in RoundReport.DESCRIPTOR.fields if field.name != "clients"
)
CLIENT_COLUMNS: tuple[str, ...] = ("round",) + tuple(
    field.name for field in ClientResult.DESCRIPTOR.fields
)
NODE_ID_SEPARATOR = ";"
# report.html re-plots the whole run (~0.3 s for a few rounds, more for long runs). Up to this
# many rounds it is rewritten after every round, then every HTML_EVERY_ROUNDS rounds, and
# always once the run has ended; `sandflower report RUN_DIR` re-renders it at any time.
HTML_EVERY_ROUND_UP_TO = 50
HTML_EVERY_ROUNDS = 10
# And while the run is running, at most once per this many seconds per run folder: a local
# engine round (~30 ms) is far shorter than one render, which would otherwise set the pace.
HTML_MIN_SECONDS = 5.0
# And never more than this share of the run's wall time: a render costs more as the run grows
# (~1 s for a few rounds of 1000 clients), so the interval grows with the last render's time.
HTML_MAX_TIME_SHARE = 0.05
# run folder -> (time.monotonic() at the end of the last render, how long it took)
_html_rendered_at: dict[str, tuple[float, float]] = {}


def write_run(out_dir: Path, report: RunReport, *, render_html: bool | None = None) -> None:
    """Write (or rewrite) the run folder ``out_dir`` from ``report``.

    Parameters
    ----------
    out_dir : the run folder; created when missing.
    report : the run so far; its ``rounds`` are the finished rounds.
    render_html : rewrite report.html too; by default (None) after every round of the first
        ``HTML_EVERY_ROUND_UP_TO``, then every ``HTML_EVERY_ROUNDS``-th round, but while the
        run is running at most once per ``HTML_MIN_SECONDS`` for this folder (and no more
        often than keeps rendering within ``HTML_MAX_TIME_SHARE`` of the time); and always
        when ``report.status`` is not "running".

    Notes
    -----
    Every file written is complete: each is replaced atomically, and all of them are rendered
    before the first is replaced, so an error while rendering leaves the previous files.
    report.json, rounds.csv and clients.csv are written every time.
    """
    from .report_html import render_report_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if render_html is None:
        render_html = html_due(report) and (
            report.status != "running" or _html_interval_passed(out_dir)
        )
    # Render everything first so that an error here changes no file.
    contents = {
        REPORT_FILE_NAME: report_to_json(report),
        ROUNDS_CSV: rounds_csv(report),
        CLIENTS_CSV: clients_csv(report),
    }
    if render_html:
        render_started = time.monotonic()
        contents[REPORT_HTML] = render_report_html(report)
        render_seconds = time.monotonic() - render_started
    for name, text in contents.items():
        atomic_write_text(out_dir / name, text)
    if render_html:
        _html_rendered_at[str(out_dir.resolve())] = (time.monotonic(), render_seconds)


def _html_interval_passed(out_dir: Path) -> bool:
    last = _html_rendered_at.get(str(out_dir.resolve()))
    if last is None:
        return True
    ended_at, render_seconds = last
    interval = max(HTML_MIN_SECONDS, render_seconds / HTML_MAX_TIME_SHARE)
    return time.monotonic() - ended_at >= interval


def html_due(report: RunReport) -> bool:
    """Whether :func:`write_run` rewrites report.html for ``report`` by default."""
    finished = len(report.rounds)
    return (
        report.status != "running"
        or finished <= HTML_EVERY_ROUND_UP_TO
        or finished % HTML_EVERY_ROUNDS == 0
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one.

    The temporary file sits in the same folder (``os.replace`` is atomic only within one file
    system) and is removed when writing fails. No fsync: the crash guarded against is the
    process dying, not the machine losing power, and an fsync per file per round is slow on
    some disks.
    """
    path = Path(path)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide, like any new file (mkstemp would give
    # 0600); O_EXCL never reuses a file that is already there.
    handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as temp_file:
            temp_file.write(text)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def rounds_csv(report: RunReport) -> str:
    """rounds.csv: one row per round, the round's fields except the per-client list."""
    lines = [_round_csv_lines(_round_bytes(r))[0] for r in report.rounds]
    return _csv_text([ROUND_COLUMNS]) + "".join(lines)


def clients_csv(report: RunReport) -> str:
    """clients.csv: one row per client per round; statuses by name (OK, FAILED, ...)."""
    lines = [_round_csv_lines(_round_bytes(r))[1] for r in report.rounds]
    return _csv_text([CLIENT_COLUMNS]) + "".join(lines)


def _round_bytes(round_report: RoundReport) -> bytes:
    return round_report.SerializeToString(deterministic=True)


# Finished rounds never change: their CSV lines are kept, keyed by the round's bytes, so the
# rewrite after each round formats only the new one (as report_io does for the JSON).
@functools.lru_cache(maxsize=512)
def _round_csv_lines(serialized_round: bytes) -> tuple[str, str]:
    round_report = RoundReport.FromString(serialized_round)
    round_line = _csv_text([_round_row(round_report)])
    client_lines = _csv_text(
        [round_report.round, *_client_row(client)] for client in round_report.clients
    )
    return round_line, client_lines


def _round_row(round_report: RoundReport) -> list[object]:
    return [
        _cell(field, getattr(round_report, field.name))
        for field in RoundReport.DESCRIPTOR.fields
        if field.name != "clients"
    ]


def _client_row(client: ClientResult) -> list[object]:
    return [_cell(field, getattr(client, field.name)) for field in ClientResult.DESCRIPTOR.fields]


def _cell(field: FieldDescriptor, value: object) -> object:
    if field.is_repeated:
        return NODE_ID_SEPARATOR.join(str(item) for item in value)  # type: ignore[union-attr]
    if field.enum_type is not None:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact form; nan and inf stay readable by float()
    return value


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
