"""Questions the report pages and the command line ask of a RunReport.

The figures come straight from the message; nothing here formats or renders.
"""

from __future__ import annotations

import math

from protos.report_pb2 import RunReport

from .run_config import run_config


def latest_finite(report: RunReport, round_field: str) -> tuple[int, float] | None:
    """Find the last round where ``round_field`` (e.g. "central_accuracy") is finite.

    Returns that round and the value, or None.

    NaN is how the coordinator records a figure that was not measured (no evaluation that
    round, or a round that produced no model).
    """
    for round_report in reversed(report.rounds):
        value = getattr(round_report, round_field)
        if math.isfinite(value):
            return round_report.round, value
    return None


def rounds_to_reach(report: RunReport, target_accuracy: float) -> int | None:
    """Find the first round whose central accuracy is at least ``target_accuracy``, or None."""
    for round_report in report.rounds:
        if round_report.central_accuracy >= target_accuracy:
            return round_report.round
    return None


def simulates_devices(report: RunReport) -> bool:
    """Whether the run has a simulated device clock (its rounds carry simulated seconds)."""
    return any(r.sim_elapsed_seconds > 0 for r in report.rounds)


def flat_run_config(report: RunReport) -> dict[str, object]:
    """Return the report's run config with nested objects flattened to dotted keys ("a.b")."""
    return _flatten(run_config(report))


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}
