"""client/sandbox/ffi.py: the raw call gives what wasmtime-py's Func.__call__ gives, traps alike."""

import math

import numpy as np
import pytest
import wasmtime

from client.sandbox.ffi import _instance_export, _signature, call_numeric

from .wat import check_healthy

NUMBERS = """(module
  (func (export "i32") (param i32) (result i32) (local.get 0))
  (func (export "i64") (param i64) (result i64) (local.get 0))
  (func (export "f32") (param f32) (result f32) (local.get 0))
  (func (export "f64") (param f64) (result f64) (local.get 0))
  (func (export "mixed") (param i32 i64 f32 f64) (result f64)
    (f64.add (f64.add (f64.convert_i32_s (local.get 0)) (f64.convert_i64_s (local.get 1)))
             (f64.add (f64.promote_f32 (local.get 2)) (local.get 3))))
  (func (export "pair") (param i32 f32) (result f32 i32) (local.get 1) (local.get 0))
  (func (export "nothing"))
  (func (export "divide") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "unreachable") (unreachable))
)"""

EDGES = {
    "i32": [0, 1, -1, 2**31 - 1, -(2**31)],
    "i64": [0, -1, 2**63 - 1, -(2**63)],
    "f32": [0.0, -0.0, 0.1, 1e-45, 3.4e38, math.inf, -math.inf, 1 / 3],
    "f64": [0.0, 0.1, 5e-324, 1.7e308, -math.inf, 1 / 3],
}


@pytest.fixture(scope="module")
def instance():
    store = wasmtime.Store()
    module = wasmtime.Module(store.engine, wasmtime.wat2wasm(NUMBERS))
    instance = wasmtime.Instance(store, module, [])
    signatures = {export.name: _signature(export.type) for export in module.exports}
    return store, instance, signatures


def _both(instance, name, *args):
    store, found, signatures = instance
    func = _instance_export(store, found, name)
    params, results = signatures[name]
    return call_numeric(store, func, params, results, args), func(store, *args)


@pytest.mark.parametrize("type_name", sorted(EDGES))
def test_each_number_type_round_trips_as_func_call_does(instance, type_name):
    for value in EDGES[type_name]:
        raw, wrapped = _both(instance, type_name, value)
        assert type(raw) is type(wrapped)
        # Same bits: f32 rounding and signed zero included.
        assert np.array([raw]).tobytes() == np.array([wrapped]).tobytes(), value


def test_nan_crosses_as_nan(instance):
    raw, wrapped = _both(instance, "f32", math.nan)
    assert math.isnan(raw) and math.isnan(wrapped)


def test_mixed_parameters_several_results_and_none(instance):
    assert _both(instance, "mixed", -3, 2**40, 0.5, 0.25) == (2**40 - 2.25, 2**40 - 2.25)
    raw, wrapped = _both(instance, "pair", 7, 1.5)
    assert raw == wrapped == [1.5, 7]
    assert _both(instance, "nothing") == (None, None)


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [
        ("divide", (1, 0), wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO),
        ("divide", (-(2**31), -1), wasmtime.TrapCode.INTEGER_OVERFLOW),
        ("unreachable", (), wasmtime.TrapCode.UNREACHABLE),
    ],
)
def test_a_trap_is_raised_as_wasmtime_trap_with_its_code(instance, name, args, code):
    store, found, signatures = instance
    func = _instance_export(store, found, name)
    with pytest.raises(wasmtime.Trap) as raw:
        call_numeric(store, func, *signatures[name], args)
    with pytest.raises(wasmtime.Trap) as wrapped:
        func(store, *args)
    assert raw.value.trap_code == wrapped.value.trap_code == code
    assert raw.value.message == wrapped.value.message


def test_a_signature_that_is_not_the_functions_is_refused_by_wasmtime(instance):
    store, found, _ = instance
    func = _instance_export(store, found, "i32")
    with pytest.raises(wasmtime.WasmtimeError, match="type mismatch"):
        call_numeric(store, func, ("f64",), ("i32",), (1.0,))
    with pytest.raises(wasmtime.WasmtimeError):
        call_numeric(store, func, ("i32", "i32"), ("i32",), (1, 2))


def test_jobs_call_without_func_call(good, monkeypatch):
    # Every job's call goes through call_numeric: wasmtime-py's per-call wrapper is not used.
    def refuse(*_):
        raise AssertionError("Func.__call__ was used")

    monkeypatch.setattr(wasmtime.Func, "__call__", refuse)
    check_healthy(good)
