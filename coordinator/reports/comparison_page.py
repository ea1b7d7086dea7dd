"""compare.html: several runs side by side (final figures, curves, config differences)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from protos.report_pb2 import RunReport

from .atomic import atomic_write_text
from .formatting import format_bytes, format_fixed, format_seconds
from .html_parts import cell, config_value, html_table, page, plots_section, section, status_badge
from .plots import comparison_plots
from .queries import flat_run_config, latest_finite, rounds_to_reach

COMPARE_HTML = "compare.html"


def render_comparison(
    reports: Sequence[tuple[str, RunReport]], out_dir: Path, target_accuracy: float = 0.9
) -> Path:
    """Write ``out_dir``/compare.html comparing several runs; return its path.

    Parameters
    ----------
    reports : (label, report) pairs, in the order they are shown.
    out_dir : the folder to write into (created when missing).
    target_accuracy : the central accuracy for the "rounds to reach" column.
    """
    if not reports:
        raise ValueError("render_comparison: expected at least one (label, report), got none")
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy: expected a value in [0, 1], got {target_accuracy}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / COMPARE_HTML
    atomic_write_text(path, comparison_html(reports, target_accuracy))
    return path


def comparison_html(reports: Sequence[tuple[str, RunReport]], target_accuracy: float) -> str:
    """Render the compare.html page (self-contained HTML text)."""
    header = (
        f"<header><h1>Comparison of {len(reports)} runs</h1>"
        f'<p class="subtitle">Central evaluation on the coordinator\'s held-out data; '
        f"target accuracy {target_accuracy:g}.</p></header>"
    )
    rows = []
    for label, report in reports:
        reached = rounds_to_reach(report, target_accuracy)
        latest = latest_finite(report, "central_accuracy")
        final = latest[1] if latest else math.nan
        rows.append(
            [
                cell(label, "text"),
                cell(report.scenario, "text"),
                f'<td class="text">{status_badge(report.status)}</td>',
                cell(f"{len(report.rounds)} / {report.num_rounds}"),
                cell(format_fixed(final, 4)),
                cell(str(reached) if reached is not None else "not reached"),
                cell(
                    format_bytes(report.total_bytes_uploaded + report.total_bytes_downloaded),
                    title=f"{report.total_bytes_uploaded + report.total_bytes_downloaded} B",
                ),
                cell(
                    format_bytes(report.total_bytes_uploaded),
                    title=f"{report.total_bytes_uploaded} B",
                ),
                cell(
                    format_bytes(report.total_bytes_downloaded),
                    title=f"{report.total_bytes_downloaded} B",
                ),
                cell(format_seconds(sum(r.wall_seconds for r in report.rounds))),
            ]
        )
    table = html_table(
        [
            ("run", "text"),
            ("scenario", "text"),
            ("status", "text"),
            ("rounds", ""),
            ("last central accuracy", ""),
            (f"rounds to reach {target_accuracy:g}", ""),
            ("total bytes", ""),
            ("uploaded", ""),
            ("downloaded", ""),
            ("wall time (rounds)", ""),
        ],
        rows,
        table_id="compare-table",
    )
    body = [
        header,
        section("Final figures", table),
        section("Curves", plots_section(comparison_plots(reports, target_accuracy))),
        section("Config differences", _config_differences(reports)),
    ]
    return page(f"Sandflower comparison of {len(reports)} runs", body)


def config_differences(
    reports: Sequence[tuple[str, RunReport]],
) -> dict[str, list[object | None]]:
    """Run config keys whose values differ between the runs: key -> value per run (None: unset).

    Keys that only name where a run writes its files (``out-dir``) are left out.
    """
    flat = [flat_run_config(report) for _, report in reports]
    keys = sorted(set().union(*flat) - {"out-dir"})
    values = {key: [config.get(key) for config in flat] for key in keys}
    return {key: row for key, row in values.items() if any(value != row[0] for value in row[1:])}


def _config_differences(reports: Sequence[tuple[str, RunReport]]) -> str:
    differences = config_differences(reports)
    if not differences:
        return '<p class="note" id="config-differences">The runs share one run config.</p>'
    columns = [("key", "text")] + [(label, "text") for label, _ in reports]
    rows = [
        [cell(key, "text mono")]
        + [cell("—" if value is None else config_value(value), "text mono") for value in row]
        for key, row in differences.items()
    ]
    return html_table(columns, rows, table_id="config-differences")
