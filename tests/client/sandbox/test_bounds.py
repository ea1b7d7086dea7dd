"""client/sandbox/bounds.py: the section reader that bounds a module before it is compiled."""

from __future__ import annotations

import time

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from client.runner import default_kernel_path
from client.sandbox import KernelModule, Limits
from client.sandbox.bounds import ModuleBounds, ModuleBoundsError, check_module_bounds
from tests.client.sandbox.hostile_modules import many_exports, version_module


@pytest.mark.parametrize("relaxed_simd", [True, False])
def test_the_bundled_kernels_fit_the_default_bounds_with_room(relaxed_simd):
    wasm = default_kernel_path(relaxed_simd).read_bytes()
    counts = check_module_bounds(wasm)
    bounds = ModuleBounds()
    assert counts.imports == [] and not counts.start
    # 16: issue 13 added sf_train_budget beside sf_train.
    assert counts.exports == 16 and {"sf_train", "sf_train_budget"} <= set(counts.export_names)
    assert counts.module_bytes * 8 < bounds.max_module_bytes
    assert counts.max_body_bytes * 4 < bounds.max_function_body_bytes
    assert counts.max_locals * 4 < bounds.max_locals_per_function
    assert counts.functions * 8 < bounds.max_functions
    assert counts.memories == [(25, None)] and counts.tables == [(1, 1)]


def test_counts_of_a_small_module():
    wasm = bytes(
        wasmtime.wat2wasm(
            """(module (memory (export "memory") 2 10) (table 3 5 funcref)
              (global (mut i32) (i32.const 0)) (data (i32.const 0) "abc")
              (func (export "f") (local i32 i64) (nop)) (func))"""
        )
    )
    counts = check_module_bounds(wasm)
    assert (counts.functions, counts.exports, counts.globals) == (2, 2, 1)
    assert counts.memories == [(2, 10)] and counts.tables == [(3, 5)]
    assert (counts.data_segments, counts.data_bytes, counts.max_locals) == (1, 3, 2)


def test_each_bound_is_configurable_and_named_in_the_refusal():
    wasm = many_exports(10)
    check_module_bounds(wasm)
    with pytest.raises(ModuleBoundsError, match=r"10 exports, at most 9 .*max_exports"):
        check_module_bounds(wasm, ModuleBounds(max_exports=9))
    with pytest.raises(ValueError, match="max_exports"):
        ModuleBounds(max_exports=-1)


def test_a_module_loaded_with_tighter_bounds_is_refused(tmp_path):
    from client.sandbox import ModuleRefused

    with pytest.raises(ModuleRefused, match="max_module_bytes"):
        KernelModule.from_file(default_kernel_path(), bounds=ModuleBounds(max_module_bytes=1000))


def test_a_job_never_wraps_every_export(tmp_path, monkeypatch):
    # Per-job set-up must not grow with the export count: exports are looked up by name.
    module = KernelModule.from_bytes(
        many_exports(127), name="wide", cache_dir=tmp_path, required_exports=("sf_abi_version",)
    )

    def forbidden(*args, **kwargs):
        raise AssertionError("Instance.exports() wraps every export")

    monkeypatch.setattr(wasmtime.Instance, "exports", forbidden)
    started = time.perf_counter()
    for _ in range(50):
        with module.job("narrow", Limits(fuel=10**6, deadline_seconds=5)) as job:
            assert job.call("sf_abi_version") == 1
    assert time.perf_counter() - started < 5


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_counts_or_a_bounds_error(data):
    try:
        check_module_bounds(b"\x00asm\x01\x00\x00\x00" + data)
    except ModuleBoundsError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_any_single_byte_change_to_a_valid_module_gives_counts_or_a_bounds_error(index, byte):
    wasm = bytearray(version_module())
    wasm[index % len(wasm)] = byte
    try:
        check_module_bounds(bytes(wasm))
    except ModuleBoundsError:
        pass
