"""`sandflower report`: re-render a run's report, or compare several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulations.cli_output import EXIT_BAD_INPUT, EXIT_FAILED, fail, literal, stdout_console

# Exit codes: 2 for bad input (like a usage error), 1 when writing the output failed.
EXIT_WRITE_FAILED = EXIT_FAILED
__all__ = ["EXIT_BAD_INPUT", "EXIT_WRITE_FAILED", "report"]


def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (or their report.json files). One: re-render its report.html "
            "and CSV files from report.json. Several: write a comparison page (needs --out).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder. One run: write the re-rendered files there instead of the "
            "run folder. Several runs: where compare.html goes (required).",
        ),
    ] = None,
    target_accuracy: Annotated[
        float,
        typer.Option(
            "--target-accuracy",
            min=0.0,
            max=1.0,
            help="Central accuracy for the comparison's 'rounds to reach' column.",
        ),
    ] = 0.9,
) -> None:
    """Render the metric report of a run folder, or compare several runs.

    One RUN_DIR (a run folder or its report.json): re-render report.html, rounds.csv and
    clients.csv from report.json. Several: write compare.html into --out.
    """
    from coordinator.reports.comparison_page import render_comparison
    from coordinator.reports.report_json import ReportError, load_report
    from coordinator.reports.writer import REPORT_HTML, write_run

    # soft_wrap: paths and messages stay on one line whatever the terminal width (copyable).
    console = stdout_console(soft_wrap=True)
    if len(run_dirs) > 1 and out is None:
        fail(f"comparing {len(run_dirs)} runs needs --out FOLDER (where compare.html is written)")
    try:
        reports = [(path, load_report(path)) for path in run_dirs]
    except ReportError as error:
        fail(error)

    try:
        if len(reports) == 1:
            path, run_report = reports[0]
            target = out if out is not None else _run_folder(path)
            write_run(target, run_report, render_html=True)
            console.print(
                f"{run_report.scenario or 'run'}: {len(run_report.rounds)} rounds, "
                f"status {run_report.status or 'unknown'}",
                markup=False,
            )
            console.print(f"report: {target / REPORT_HTML}", markup=False)
            return
        assert out is not None  # several runs without --out failed above
        labels = _labels([path for path, _ in reports])
        page = render_comparison(
            [(label, run_report) for label, (_, run_report) in zip(labels, reports, strict=True)],
            out,
            target_accuracy=target_accuracy,
        )
    except OSError as error:
        fail(f"cannot write the report: {error}", EXIT_WRITE_FAILED)
    console.print(f"comparison of {len(reports)} runs: {literal(page)}")


def _run_folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _labels(paths: list[Path]) -> list[str]:
    """Short names for the runs: folder names, or whole paths when two folders share a name."""
    names = [_run_folder(path).resolve().name for path in paths]
    if len(set(names)) == len(names):
        return names
    return [str(_run_folder(path)) for path in paths]
