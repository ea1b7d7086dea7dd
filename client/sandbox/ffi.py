"""The only module of the sandbox that calls wasmtime's raw C API (through wasmtime-py's ctypes).

Three things wasmtime-py's safe surface does badly: naming a value type (it aborts the process
on a v128 or reference type) and looking one export up by name (it wraps every export of the
instance), both for hostile modules; and calling a function, for every job: ``Func.__call__``
rebuilds the function's type and wraps every argument on each call (~110 us a call measured
with ``sf_alloc``, against ~11 us for the C call below), and a job makes several calls.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
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
    pointer, length = _export_name(name)
    item = wasmtime_ffi.wasmtime_extern_t()
    found = wasmtime_ffi.wasmtime_instance_export_get(
        store._context(), ctypes.byref(instance._instance), pointer, length, ctypes.byref(item)
    )
    return wrap_extern(item) if found else None


@functools.lru_cache(maxsize=64)
def _export_name(name: str) -> tuple[Any, int]:
    # Every job looks the same few names up (sf_alloc, its entry, memory): the name's C buffer
    # is made once (~5 us a lookup). wasmtime only reads it; the cast pointer keeps the buffer
    # alive (ctypes keeps the source object in the pointer's _objects).
    raw = name.encode("utf-8")
    buffer = ctypes.create_string_buffer(raw, len(raw))
    return ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)), len(raw)


# -- calling a numeric export -----------------------------------------------------------------
# The union member and kind of each value type a kernel call may pass or return (numbers only:
# the caller refuses an export whose signature holds anything else before calling).
_VALUE_KINDS = {
    "i32": wasmtime_ffi.WASMTIME_I32.value,
    "i64": wasmtime_ffi.WASMTIME_I64.value,
    "f32": wasmtime_ffi.WASMTIME_F32.value,
    "f64": wasmtime_ffi.WASMTIME_F64.value,
}


def call_numeric(
    store: wasmtime.Store,
    func: wasmtime.Func,
    params: Sequence[str],
    results: Sequence[str],
    args: Sequence[int | float],
) -> Any:
    """Call ``func`` with numeric ``args`` of the types ``params``; return as Func.__call__ does.

    ``params`` and ``results`` must be the function's own signature (``_signature``) and every
    argument already in its type's range (i32/i64 as signed ints): wasmtime checks the types
    again and reports a mismatch as a WasmtimeError, never as undefined behaviour. Returns None
    for no result, the value for one, a list for several; a trap raises ``wasmtime.Trap`` and
    an error ``wasmtime.WasmtimeError``, as ``Func.__call__`` would. Numbers need no unrooting
    (only reference values do), and a kernel imports no host function, so no Python exception
    can be pending from inside the call.
    """
    arguments = (wasmtime_ffi.wasmtime_val_t * len(params))()
    for slot, type_name, value in zip(arguments, params, args, strict=True):
        slot.kind = _VALUE_KINDS[type_name]
        setattr(slot.of, type_name, value)
    returned = (wasmtime_ffi.wasmtime_val_t * len(results))()
    trap = ctypes.POINTER(wasmtime_ffi.wasm_trap_t)()
    error = wasmtime_ffi.wasmtime_func_call(
        store._context(),
        ctypes.byref(func._func),
        arguments,
        len(params),
        returned,
        len(results),
        ctypes.byref(trap),
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)
    values = [getattr(slot.of, kind) for slot, kind in zip(returned, results, strict=True)]
    if not values:
        return None
    return values[0] if len(values) == 1 else values
