"""How the report pages write numbers: fixed and significant digits, durations, bytes, times.

NaN is how the coordinator records a figure that was not measured, so every formatter here
shows it as a dash; infinities are shown as such (they are findings, not gaps).
"""

from __future__ import annotations

import datetime as dt
import math

from google.protobuf.timestamp_pb2 import Timestamp

from protos.report_pb2 import ResumeEvent

NOT_MEASURED = "—"


def format_fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals; NaN (not measured) as a dash, inf as such."""
    return f"{value:.{digits}f}" if math.isfinite(value) else _non_finite(value)


def format_significant(value: float) -> str:
    """``value`` to 4 significant digits; NaN (not measured) as a dash, inf as such."""
    return f"{value:.4g}" if math.isfinite(value) else _non_finite(value)


def format_norm(value: float) -> str:
    """Format a delta norm; a NaN norm is a finding (why a delta was rejected): "NaN"."""
    return "NaN" if math.isnan(value) else format_significant(value)


def _non_finite(value: float) -> str:
    return NOT_MEASURED if math.isnan(value) else str(value)


def format_seconds(value: float) -> str:
    """Format a duration in ms, s or min, whichever reads best."""
    if not math.isfinite(value):
        return str(value)
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def byte_unit(largest: float) -> tuple[float, str]:
    """Pick the scale and unit (B, KB, MB, GB; powers of 1000) that suit ``largest`` bytes."""
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if largest >= scale:
            return scale, unit
    return 1.0, "B"


def format_bytes(count: int | float) -> str:
    """``count`` bytes in B, KB, MB or GB (powers of 1000)."""
    scale, unit = byte_unit(float(count))
    return f"{count:.0f} B" if unit == "B" else f"{count / scale:.2f} {unit}"


def has_time(timestamp: Timestamp) -> bool:
    """Whether ``timestamp`` was set (an unset Timestamp is the epoch, 0 s and 0 ns)."""
    return timestamp.seconds != 0 or timestamp.nanos != 0


def format_timestamp(timestamp: Timestamp) -> str:
    """``timestamp`` as "YYYY-MM-DD HH:MM:SS UTC", or a dash when it was never set."""
    if not has_time(timestamp):
        return NOT_MEASURED
    moment = timestamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def resume_text(event: ResumeEvent) -> str:
    """One line on a resume: when, from which round, and any checkpoint refused on the way."""
    text = (
        f"{format_timestamp(event.resumed_at)} after round {event.from_round} "
        f"(was {event.previous_status or '?'}, {event.previous_num_rounds} rounds planned; "
        f"{event.engine or '?'} engine)"
    )
    if event.refused_checkpoints:
        text += f"; refused {len(event.refused_checkpoints)} newer checkpoint(s): " + "; ".join(
            event.refused_checkpoints
        )
    return text
