"""The summary `sandflower simulate` prints after a run: one screen, built from its RunReport."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coordinator.reports.formatting import (
    format_bytes,
    format_fixed,
    format_seconds,
    format_significant,
    resume_text,
)
from coordinator.reports.queries import latest_finite
from protos.report_pb2 import RoundReport, RunReport

# A long run shows its first and last rounds; the whole run is in rounds.csv and report.html.
MAX_ROWS = 20
HEAD_ROWS = 5

_STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "running": "yellow",
    "interrupted": "magenta",
}


def summary_table(report: RunReport) -> Table:
    """Return a rich table of the run: a row per round (first and last ones if long), finals.

    Parameters
    ----------
    report : the run (finished or not).

    Returns
    -------
    rich.table.Table
    """
    status_style = _STATUS_STYLES.get(report.status, "white")
    table = Table(
        title=(
            f"[bold]{escape(report.scenario or 'run')}[/] · "
            f"[{status_style}]{escape(report.status or 'unknown')}"
            f"[/] · {len(report.rounds)} of {report.num_rounds} rounds · seed {report.seed}"
        ),
        show_footer=True,
        header_style="bold",
        footer_style="bold",
    )
    rounds = list(report.rounds)
    totals = _Totals(rounds)
    columns = [
        ("round", "final" if report.status == "completed" else "latest"),
        ("central acc", format_fixed(_final(report, "central_accuracy"), 4)),
        ("central loss", format_significant(_final(report, "central_loss"))),
        ("fed. acc", format_fixed(_final(report, "federated_eval_accuracy"), 4)),
        ("train loss", ""),
        ("ok", str(totals.succeeded)),
        ("failed", str(totals.failed)),
        ("rejected", str(totals.rejected)),
        ("bytes", format_bytes(report.total_bytes_uploaded + report.total_bytes_downloaded)),
        ("time", format_seconds(totals.wall_seconds)),
    ]
    for index, (header, footer) in enumerate(columns):
        table.add_column(header, footer=footer, justify="left" if index == 0 else "right")
    if len(rounds) > MAX_ROWS:
        tail = MAX_ROWS - HEAD_ROWS - 1
        for round_report in rounds[:HEAD_ROWS]:
            table.add_row(*_round_cells(round_report))
        table.add_row(f"… {len(rounds) - HEAD_ROWS - tail} more", *[""] * (len(columns) - 1))
        for round_report in rounds[-tail:]:
            table.add_row(*_round_cells(round_report))
    else:
        for round_report in rounds:
            table.add_row(*_round_cells(round_report))
    return table


def print_summary(report: RunReport, console: Console, run_dir: Path) -> None:
    """Print the summary table, the run's error if it failed, and where the report files are.

    Parameters
    ----------
    report : RunReport
        The run (finished or not).
    console : rich.console.Console
        Where the summary goes.
    run_dir : Path
        The run folder, for the paths of the report files.
    """
    console.print(summary_table(report))
    if report.error:
        console.print(f"[red]error:[/] {escape(report.error)}")
    for event in report.resumes:
        console.print(f"resumed: {resume_text(event)}", markup=False)
    run_dir = Path(run_dir)
    console.print(f"report: [bold]{escape(str(run_dir / 'report.html'))}[/]")
    console.print(
        f"data:   {run_dir / 'report.json'}, {run_dir / 'rounds.csv'}, {run_dir / 'clients.csv'}",
        markup=False,
    )


def _final(report: RunReport, round_field: str) -> float:
    """Return the final figure; before completion (or after a failure), the latest one."""
    final = getattr(report, f"final_{round_field}")
    if report.status == "completed" and math.isfinite(final):
        return final
    latest = latest_finite(report, round_field)
    return latest[1] if latest else math.nan


class _Totals:
    def __init__(self, rounds: list[RoundReport]) -> None:
        self.succeeded = sum(r.clients_succeeded for r in rounds)
        self.failed = sum(r.clients_failed for r in rounds)
        self.rejected = sum(r.clients_rejected for r in rounds)
        self.wall_seconds = sum(r.wall_seconds for r in rounds)


def _round_cells(r: RoundReport) -> list[str]:
    return [
        str(r.round),
        format_fixed(r.central_accuracy, 4),
        format_significant(r.central_loss),
        format_fixed(r.federated_eval_accuracy, 4),
        format_significant(r.train_loss),
        str(r.clients_succeeded),
        f"[red]{r.clients_failed}[/]" if r.clients_failed else "0",
        f"[magenta]{r.clients_rejected}[/]" if r.clients_rejected else "0",
        format_bytes(r.bytes_uploaded + r.bytes_downloaded),
        format_seconds(r.wall_seconds),
    ]
