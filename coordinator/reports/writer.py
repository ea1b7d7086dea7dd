"""Write a run folder: report.json, rounds.csv, clients.csv and report.html.

The coordinator calls :func:`write_run` after every round, so a run that crashes after round k
leaves a valid report of k rounds. Every file is replaced atomically (a temporary file in the
same folder, then ``os.replace``), and all four are rendered in memory before the first one is
replaced: a failure while rendering leaves the previous files as they were. Given the run's
:class:`coordinator.file_writes.BackgroundWrites`, the rendering too happens on its thread, from
a snapshot of the report taken when :func:`write_run` is called.
"""

from __future__ import annotations

import functools
import time
from concurrent import futures
from pathlib import Path

from protos.report_pb2 import RunReport

from ..file_writes import BackgroundWrites
from .atomic import atomic_write_text
from .csv_tables import CLIENTS_CSV, ROUNDS_CSV, clients_csv, round_bytes, rounds_csv
from .report_json import REPORT_FILE_NAME, report_to_json
from .run_page import render_report_html

REPORT_HTML = "report.html"

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
# The page written before round 1 has no plots (placeholders, no matplotlib: milliseconds), so
# its time says nothing of the first page with plots: that one imports matplotlib and draws six
# figures, ~1.6 s of CPU measured at 1000 clients (0.8 s import, 0.8 s render; ~1.5 s at 20).
# Counted as that page's cost, it keeps the first plotted page to the same share: without it,
# a 1000-client run spent ~1.6 s of its ~22 s on a page after round 1, in the next round's time.
HTML_FIRST_PLOTS_SECONDS = 1.5
# run folder -> (time.monotonic() at the end of the last render, how long it took)
_html_rendered_at: dict[str, tuple[float, float]] = {}
# run folder -> its render queued on a BackgroundWrites (see write_run)
_pending_renders: dict[str, futures.Future] = {}


def write_run(
    out_dir: Path,
    report: RunReport,
    *,
    render_html: bool | None = None,
    background: BackgroundWrites | None = None,
) -> None:
    """Write (or rewrite) the run folder ``out_dir`` from ``report``.

    Parameters
    ----------
    out_dir : the run folder; created when missing.
    report : the run so far; its ``rounds`` are the finished rounds.
    render_html : rewrite report.html too; by default (None) after every round of the first
        ``HTML_EVERY_ROUND_UP_TO``, then every ``HTML_EVERY_ROUNDS``-th round, but while the
        run is running at most once per ``HTML_MIN_SECONDS`` for this folder (and no more
        often than keeps rendering within ``HTML_MAX_TIME_SHARE`` of the time, the page
        before round 1 counting as ``HTML_FIRST_PLOTS_SECONDS``); and always when
        ``report.status`` is not "running".
    background : where the files are rendered and written (in order, after this returns,
        from a snapshot of ``report``); None: rendered and written before this returns.

    Notes
    -----
    Every file written is complete: each is replaced atomically, and all of them are rendered
    before the first is replaced, so an error while rendering leaves the previous files (with
    ``background``, that error is raised by a later write or flush of ``background``).
    report.json, rounds.csv and clients.csv are written every time.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if background is not None:
        # One render at a time per folder: the cadence below reads the previous render's
        # time, and a renderer slower than the rounds sets their pace instead of piling up
        # snapshots.
        previous = _pending_renders.pop(str(out_dir.resolve()), None)
        if previous is not None:
            futures.wait([previous])
    if render_html is None:
        render_html = html_due(report) and (
            report.status != "running" or _html_interval_passed(out_dir)
        )
    serialized_rounds = round_bytes(report)  # once for the files; immutable, so a snapshot
    if background is None:
        _render_and_write(out_dir, report, serialized_rounds, render_html)
        return
    # Rendered on the background thread from a snapshot (the report changes as the next round
    # runs): the files of a 1000-client round cost ~0.09 s to render, report.html ~1 s, time
    # in which the workers would wait for the next round's messages.
    header = report_header(report)
    render = functools.partial(_render_snapshot, out_dir, header, serialized_rounds, render_html)
    _pending_renders[str(out_dir.resolve())] = background.submit(render)


def report_header(report: RunReport) -> RunReport:
    """Return a copy of ``report`` without its rounds (copying them costs ~1 ms per MB)."""
    header = RunReport()
    for field, value in report.ListFields():
        if field.name == "rounds":
            continue
        if field.is_repeated:
            getattr(header, field.name).extend(value)
        elif field.message_type is not None:
            getattr(header, field.name).CopyFrom(value)
        else:
            setattr(header, field.name, value)
    return header


def _render_snapshot(
    out_dir: Path, header: RunReport, serialized_rounds: list[bytes], render_html: bool
) -> None:
    report = header
    if render_html:  # the page plots from the rounds themselves
        report = RunReport()
        report.CopyFrom(header)
        for serialized in serialized_rounds:
            report.rounds.add().ParseFromString(serialized)
    _render_and_write(out_dir, report, serialized_rounds, render_html)


def _render_and_write(
    out_dir: Path, report: RunReport, serialized_rounds: list[bytes], render_html: bool
) -> None:
    """Render every file of ``report`` (its rounds as ``serialized_rounds``), then write them.

    ``report`` may lack its rounds unless ``render_html``.
    """
    # Render everything first so that an error here changes no file.
    contents = {
        REPORT_FILE_NAME: report_to_json(report, serialized_rounds),
        ROUNDS_CSV: rounds_csv(report, serialized_rounds),
        CLIENTS_CSV: clients_csv(report, serialized_rounds),
    }
    if render_html:
        render_started = time.monotonic()
        contents[REPORT_HTML] = render_report_html(report)
        render_seconds = time.monotonic() - render_started
    for name, text in contents.items():
        atomic_write_text(out_dir / name, text)
    if render_html:
        cost = render_seconds if report.rounds else max(render_seconds, HTML_FIRST_PLOTS_SECONDS)
        _html_rendered_at[str(out_dir.resolve())] = (time.monotonic(), cost)


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
