"""report.json: the text form of a RunReport, written and read back.

report.json is ``json_format`` of the RunReport message with proto field names kept and every
field printed, zeros included (README, "Reports"): a reader never has to guess a default.
A figure that was never measured (an ``optional`` field left unset) is printed as ``null``,
which ``json_format.Parse`` reads back as unset. NaN and infinities are the strings "NaN",
"Infinity" and "-Infinity" (proto3 JSON). The run config keeps its integers as integers
(:mod:`coordinator.reports.run_config`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import json_format

from protos.report_pb2 import RoundReport, RunReport
from protos.untrusted_file import read_regular_file

from .json_fields import message_json
from .run_config import config_json_object

REPORT_FILE_NAME = "report.json"
# A report.json read back (resume, `sandflower report`) is refused past this size: far above
# any run's report (per-client rows live in clients.csv), far below a device read forever.
MAX_REPORT_BYTES = 2 << 30


class ReportError(ValueError):
    """A report file is missing, unreadable or not a RunReport (the message names the file)."""


# Finished rounds never change, and the coordinator rewrites report.json after every round:
# each round's JSON is kept (keyed by its bytes), so a rewrite converts only the new round.
ROUND_JSON_CACHE_SIZE = 512


def report_to_json(report: RunReport, serialized_rounds: Sequence[bytes] | None = None) -> str:
    """Serialize ``report`` the way report.json holds it.

    The values are ``json_format.MessageToJson``'s with proto field names kept and every field
    printed, zeros included; ``json_format.Parse`` reads the text back. The layout is one field
    per line, and one line per round: readable, diffable round by round, and fast to rewrite
    (only the newest round is converted; json's C encoder handles lines without indentation).
    """
    header = RunReport()
    header.CopyFrom(report)
    del header.rounds[:]
    fields = _to_dict(header)
    if "config" in fields:
        fields["config"] = config_json_object(report)
    if serialized_rounds is None:
        serialized_rounds = [r.SerializeToString(deterministic=True) for r in report.rounds]
    rounds = [f"  {_round_json(serialized)}" for serialized in serialized_rounds]
    rounds_text = ' "rounds": [\n' + ",\n".join(rounds) + "\n ]" if rounds else ' "rounds": []'
    # sort_keys: the config is a map, whose order would otherwise vary between runs. Fields
    # added after `rounds` (field numbers > 18) come after it, in .proto order.
    lines = [
        rounds_text if name == "rounds" else f" {json.dumps(name)}: {_field_json(name, value)}"
        for name, value in fields.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _field_json(name: str, value: object) -> str:
    return json.dumps(value, allow_nan=False, sort_keys=name == "config")


@functools.lru_cache(maxsize=ROUND_JSON_CACHE_SIZE)
def _round_json(serialized_round: bytes) -> str:
    round_report = RoundReport.FromString(serialized_round)
    # The per-type plan (json_fields) is ~8x faster than json_format and gives the same dict.
    fields = message_json(round_report)
    return json.dumps(fields if fields is not None else _to_dict(round_report), allow_nan=False)


def _to_dict(message) -> dict:
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _in_field_order(as_dict, message.DESCRIPTOR)


def _in_field_order(as_dict: dict, descriptor) -> dict:
    # MessageToDict puts the fields left at their defaults last; the .proto order reads better.
    ordered: dict[str, object] = {}
    for field in descriptor.fields:
        if field.name not in as_dict:
            if field.message_type is None and field.has_presence:
                # An optional scalar left unset: printed as null (not measured) so that
                # every field is still there to read.
                ordered[field.name] = None
            continue
        value = as_dict[field.name]
        nested = field.message_type
        if nested is not None and nested.full_name.startswith("sandflower."):
            if field.is_repeated:
                value = [_in_field_order(item, nested) for item in value]
            else:
                value = _in_field_order(value, nested)
        ordered[field.name] = value
    return ordered


def report_path(path_or_run_dir: Path | str) -> Path:
    """Return the report.json of a run folder, or ``path_or_run_dir`` itself for a file."""
    path = Path(path_or_run_dir)
    return path / REPORT_FILE_NAME if path.is_dir() else path


def load_report(path_or_run_dir: Path | str) -> RunReport:
    """Load a RunReport from a run folder or from a report.json file.

    Parameters
    ----------
    path_or_run_dir : a run folder (its ``report.json`` is read) or the path of a report file.

    Returns
    -------
    RunReport

    Raises
    ------
    ReportError
        When the file is missing, cannot be read, is not JSON, or is JSON that is not a
        RunReport; the message names the file and the problem.
    """
    path = report_path(path_or_run_dir)
    if not path.exists():
        where = Path(path_or_run_dir)
        if where != path:
            raise ReportError(f"{where}: no {REPORT_FILE_NAME} in this run folder")
        raise ReportError(f"{path}: no such file (expected a run folder or a {REPORT_FILE_NAME})")
    try:
        text = read_regular_file(path, MAX_REPORT_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: cannot read the report: {error}") from error
    return parse_report(text, source=str(path))


def parse_report(text: str, *, source: str = "<report>") -> RunReport:
    """Parse report.json text into a RunReport; ``source`` names it in errors.

    Raises
    ------
    ReportError
        When ``text`` is not JSON or not a RunReport.
    """
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(
            f"{source}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from error
    except (ValueError, RecursionError) as error:  # an integer of > 4300 digits; deep nesting
        raise ReportError(f"{source}: not valid JSON ({type(error).__name__}: {error})") from error
    report = RunReport()
    try:
        json_format.Parse(text, report)
    except (json_format.ParseError, ValueError, RecursionError) as error:
        raise ReportError(f"{source}: not a RunReport: {error}") from error
    return report
