"""The per-type plans of report.json (json_fields) and the CSV tables give the reference's bytes.

The references: ``json_format.MessageToDict`` put in .proto order with unset optional scalars
as None (what report_json wrote before the plans), and the per-cell descriptor look-up the CSV
tables did before (kept below). Rounds are drawn with hostile values: NaN, infinities, the
extremes of every integer type, enum numbers that have no name, unset and zero optionals,
non-ASCII text.
"""

from __future__ import annotations

import json
import math

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.reports import csv_tables, report_json
from coordinator.reports.json_fields import message_json, plan
from protos.report_pb2 import ClientResult, RoundReport, RunReport

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]),
)
INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _value(field: FieldDescriptor):
    if field.cpp_type in INT_RANGES:
        low, high = INT_RANGES[field.cpp_type]
        return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0]))
    if field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        return doubles
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return st.integers(-3, 9)  # numbers with and without a name (open enums)
    return texts


@st.composite
def messages(draw, message_type):
    message = message_type()
    for field in message_type.DESCRIPTOR.fields:
        if field.message_type is not None:
            continue
        if field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_value(field), max_size=3)))
        elif draw(st.booleans()):  # set (an optional one then has presence) or left alone
            setattr(message, field.name, draw(_value(field)))
    return message


@st.composite
def rounds(draw):
    round_report = draw(messages(RoundReport))
    round_report.clients.extend(draw(st.lists(messages(ClientResult), max_size=4)))
    return round_report


def reference_dict(message) -> dict:
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return report_json._in_field_order(as_dict, message.DESCRIPTOR)


@SETTINGS
@given(round_report=rounds())
def test_a_round_converts_as_json_format_does(round_report):
    fast = message_json(round_report)
    expected = reference_dict(round_report)
    assert list(fast) == list(expected)
    assert json.dumps(fast) == json.dumps(expected)  # NaN/inf as "NaN"/"Infinity" strings


def test_only_plain_report_messages_have_a_plan():
    assert plan(RoundReport.DESCRIPTOR) is not None
    assert plan(ClientResult.DESCRIPTOR) is not None
    # started_at is a Timestamp and config a map: RunReport keeps json_format's own forms.
    assert plan(RunReport.DESCRIPTOR) is None


# -- CSV: the per-cell look-up the tables did before -------------------------------------------
def reference_cell(message, field):
    if field.has_presence and field.message_type is None and not message.HasField(field.name):
        return ""
    value = getattr(message, field.name)
    if field.is_repeated:
        return csv_tables.NODE_ID_SEPARATOR.join(str(item) for item in value)
    if field.enum_type is not None:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if isinstance(value, float) and not math.isnan(value):
        return repr(value)
    return value


def reference_lines(round_report: RoundReport) -> tuple[str, str]:
    round_row = [
        "" if isinstance(value, float) and math.isnan(value) else value
        for value in (
            reference_cell(round_report, field)
            for field in RoundReport.DESCRIPTOR.fields
            if field.name != "clients"
        )
    ]
    client_rows = [
        [round_report.round, *(reference_cell(client, f) for f in ClientResult.DESCRIPTOR.fields)]
        for client in round_report.clients
    ]
    return csv_tables._csv_text([round_row]), csv_tables._csv_text(client_rows)


@SETTINGS
@given(round_report=rounds())
def test_a_rounds_csv_lines_are_the_per_cell_references(round_report):
    serialized = round_report.SerializeToString(deterministic=True)
    assert csv_tables._round_csv_lines.__wrapped__(serialized) == reference_lines(round_report)
