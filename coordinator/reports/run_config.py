"""The run config a report holds, with its integers kept as integers.

The report stores the resolved run config as a ``google.protobuf.Struct`` (``RunReport.config``)
so that report.json shows it as a plain JSON object. A Struct has one number type, a double:
``num-rounds = 5`` would come back as ``5.0``. The report therefore also names the keys whose
values are integers (``RunReport.config_integer_keys``), and :func:`run_config` gives those
back as ``int``. An integer beyond 2**53 is not exact as a double, so it is stored as its
decimal text instead and still comes back as the same ``int``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from protos.report_pb2 import RunReport

# Integers of larger magnitude lose digits as a double (53-bit significand).
LARGEST_EXACT_INTEGER = 2**53


def set_run_config(report: RunReport, config: Mapping[str, Any]) -> None:
    """Record the flat run ``config`` in ``report`` (replacing any config it held).

    Parameters
    ----------
    report : RunReport
        The report to fill (``config`` and ``config_integer_keys``).
    config : Mapping[str, Any]
        Flat run config: key -> str, bool, int or float.

    Notes
    -----
    JSON has no inf or nan (``json_format`` refuses them in a Struct), so such a float (e.g.
    ``max-delta-norm = inf``) is recorded as its text, as it always was.
    """
    values: dict[str, Any] = {}
    integer_keys: list[str] = []
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool):
            integer_keys.append(key)
            value = int(value) if abs(value) <= LARGEST_EXACT_INTEGER else str(int(value))
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        values[key] = value
    struct = Struct()
    struct.update(values)
    report.config.CopyFrom(struct)
    del report.config_integer_keys[:]
    report.config_integer_keys.extend(sorted(integer_keys))


def copy_run_config(source: RunReport, target: RunReport) -> None:
    """Give ``target`` the run config of ``source`` (the values and which are integers)."""
    target.config.CopyFrom(source.config)
    del target.config_integer_keys[:]
    target.config_integer_keys.extend(source.config_integer_keys)


def run_config(report: RunReport) -> dict[str, Any]:
    """Return the run config ``report`` holds, integers as ``int``; {} when it has none.

    A report written before ``config_integer_keys`` existed gives every number as a float.
    """
    if not report.HasField("config"):
        return {}
    config = json_format.MessageToDict(report.config)
    for key in report.config_integer_keys:
        if key in config:
            config[key] = int(config[key])
    return config


def config_json_object(report: RunReport) -> dict[str, Any]:
    """Return the run config as report.json holds it.

    The whole numbers of the integer keys are JSON integers; an integer beyond 2**53 stays
    its text (a JSON reader would round the number, and so would reading report.json back
    into the Struct).
    """
    config = json_format.MessageToDict(report.config) if report.HasField("config") else {}
    for key in report.config_integer_keys:
        if isinstance(config.get(key), float):
            config[key] = int(config[key])
    return config
