"""The only module of the sandbox that calls wasmtime's raw C API (through wasmtime-py's ctypes).

Two things wasmtime-py's safe surface does badly for hostile modules: naming a value type (it
aborts the process on a v128 or reference type) and looking one export up by name (it wraps
every export of the instance).
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as wasmtime_ffi
from wasmtime._extern import wrap_extern

# -- value types, read without wasmtime's ValType.__str__/__eq__ --------------------------------
# wasmtime-py aborts the whole process when it asks a v128 (or reference) type for its kind, so
# a hostile module exporting `(func (param v128))` must never reach ValType.__eq__, __str__ or
# Func.__call__. wasmtime_wasm_valtype_equal compares without asking for the kind.
_NUMBER_TYPES = {
    "i32": wasmtime.ValType.i32(),
    "i64": wasmtime.ValType.i64(),
    "f32": wasmtime.ValType.f32(),
    "f64": wasmtime.ValType.f64(),
}


def _type_name(value_type: wasmtime.ValType) -> str:
    for type_name, known in _NUMBER_TYPES.items():
        if wasmtime_ffi.wasmtime_wasm_valtype_equal(value_type.ptr(), known.ptr()):
            return type_name
    return "other"


def _signature(func_type: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(_type_name(t) for t in func_type.params),
        tuple(_type_name(t) for t in func_type.results),
    )


def _instance_export(
    store: wasmtime.Store, instance: wasmtime.Instance, name: str
) -> wasmtime.Func | wasmtime.Memory | Any | None:
    # Instance.exports() wraps every export of the instance (its cost grows with the export
    # count, ~25 s for 40,000); this asks wasmtime for one export by name.
    raw = name.encode("utf-8")
    buffer = ctypes.create_string_buffer(raw, len(raw))
    item = wasmtime_ffi.wasmtime_extern_t()
    found = wasmtime_ffi.wasmtime_instance_export_get(
        store._context(),
        ctypes.byref(instance._instance),
        ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)),
        len(raw),
        ctypes.byref(item),
    )
    return wrap_extern(item) if found else None
