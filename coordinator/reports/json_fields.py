"""A report message as report.json holds it, converted field by field from a plan per type.

``json_format.MessageToDict`` inspects every field's descriptor for every value it converts:
a round of 1000 clients (34 fields each) took ~140 ms, after every round. This module builds,
once per message type, the list of (field name, how to read it, how to convert it) and applies
it. The result is exactly ``MessageToDict(message, preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)`` with the fields in .proto order and an unset
``optional`` scalar as None (report_json's layout); tests compare the two on hostile values.

Only messages made of scalars, enums, strings, repeated scalars and nested messages of the
same kind have a plan; anything else (maps, well-known types, bytes, closed enums) returns
None and the caller uses ``json_format``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# How a field is read: always (no presence), only when set (optional scalar: None otherwise),
# as a list (repeated), or left out when unset (a singular message).
PLAIN, OPTIONAL, REPEATED, MESSAGE = range(4)
OWN_PACKAGE = "sandflower."
Step = tuple[str, int, Callable[[Any], Any]]

_INT64_TYPES = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_INT32_TYPES = frozenset({FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32})


def message_json(message) -> dict[str, Any] | None:
    """Return ``message`` as report.json's dict, or None when its type has no plan."""
    steps = plan(message.DESCRIPTOR)
    return None if steps is None else _convert(message, steps)


@functools.cache
def plan(descriptor: Descriptor) -> tuple[Step, ...] | None:
    """Return how to convert each field of ``descriptor``'s messages, or None if unsupported."""
    steps: list[Step] = []
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return None
        convert = _converter(field)
        if convert is None:
            return None
        if field.is_repeated:
            kind = REPEATED
        elif field.message_type is not None:
            kind = MESSAGE
        elif field.has_presence:
            kind = OPTIONAL
        else:
            kind = PLAIN
        steps.append((field.name, kind, convert))
    return tuple(steps)


def _convert(message, steps: tuple[Step, ...]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for name, kind, convert in steps:
        if kind == PLAIN:
            converted[name] = convert(getattr(message, name))
        elif kind == OPTIONAL:
            converted[name] = convert(getattr(message, name)) if message.HasField(name) else None
        elif kind == REPEATED:
            converted[name] = [convert(item) for item in getattr(message, name)]
        elif message.HasField(name):
            converted[name] = convert(getattr(message, name))
    return converted


def _converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    """Return what makes one value of ``field`` what ``json_format`` prints (None: not here)."""
    cpp_type = field.cpp_type
    if cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        # Only the project's own messages: report_json orders those by field (well-known
        # types such as Timestamp have their own JSON forms).
        if not field.message_type.full_name.startswith(OWN_PACKAGE):
            return None
        nested = plan(field.message_type)
        if nested is None:
            return None
        return lambda value: _convert(value, nested)
    if cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        if field.enum_type.is_closed or field.enum_type.full_name == "google.protobuf.NullValue":
            return None
        names = {number: value.name for number, value in field.enum_type.values_by_number.items()}
        # An unknown number stays a number, as json_format prints it for an open enum.
        return lambda value: names.get(value, value)
    if cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return None if field.type == FieldDescriptor.TYPE_BYTES else str
    if cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if cpp_type in _INT64_TYPES:
        return str  # proto3 JSON: 64-bit integers are strings
    if cpp_type in _INT32_TYPES:
        return _same
    if cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    return None  # float32 (json_format rounds it to the shortest float32 repr): not used here


def _same(value: Any) -> Any:
    return value


def _double(value: float) -> float | str:
    if math.isinf(value):
        return "-Infinity" if value < 0.0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return value


__all__ = ["message_json", "plan"]
