"""client/sandbox/module.py: modules refused before anything of them runs (inline WAT)."""

import time

import pytest

from client.sandbox import (
    KernelModule,
    ModuleRefused,
)
from tests.client.sandbox.wat import ALLOC, GOOD, TEST_EXPORTS, load


# -- refusals -------------------------------------------------------------------------------
def test_module_importing_anything_is_refused(cache_dir):
    text = '(module (import "env" "clock" (func (result i64))) (memory (export "memory") 1))'
    with pytest.raises(ModuleRefused, match=r"hostile.wat: imports \['env.clock'\]"):
        load(text, cache_dir=cache_dir, required_exports=(), abi_version=None)


def test_invalid_wasm_and_wat_are_refused(cache_dir):
    with pytest.raises(ModuleRefused, match="not a valid wasm module"):
        KernelModule.from_bytes(
            b"\x00asm\x01\x00\x00\x00garbage", name="junk.wasm", cache_dir=cache_dir
        )
    with pytest.raises(ModuleRefused, match="not valid WAT"):
        load("(module (func (export", cache_dir=cache_dir)


@pytest.mark.parametrize(
    "memory", ['(memory (export "memory") 1 1 shared)', '(memory (export "memory") i64 1)']
)
def test_proposals_a_kernel_does_not_need_are_refused(cache_dir, memory):
    with pytest.raises(ModuleRefused, match="not a valid wasm module"):
        load(f"(module {memory})", cache_dir=cache_dir, required_exports=(), abi_version=None)


def test_missing_export_is_refused(cache_dir):
    text = f"""(module (memory (export "memory") 1) {ALLOC}
      (func (export "sf_abi_version") (result i32) (i32.const 1)))"""
    with pytest.raises(ModuleRefused, match=r"lacks required exports \['sf_train'\]"):
        load(text, cache_dir=cache_dir, required_exports=(*TEST_EXPORTS, "sf_train"))
    # the real kernel interface: every ABI export is required by default
    with pytest.raises(ModuleRefused, match="lacks required exports") as info:
        KernelModule.from_bytes(text, name="partial.wat", cache_dir=cache_dir)
    missing = str(info.value).split("(it exports")[0]
    assert "'sf_evaluate'" in missing and "'sf_alloc'" not in missing


def test_wrong_signature_is_refused(cache_dir):
    text = """(module (memory (export "memory") 1)
      (func (export "sf_alloc") (param f64) (result i32) (i32.const 0)))"""
    with pytest.raises(
        ModuleRefused,
        match=r"sf_alloc has signature \(f64\) -> \(i32\), expected \(i32\) -> \(i32\)",
    ):
        load(text, cache_dir=cache_dir, abi_version=None)
    wide = text.replace("f64", "v128")
    with pytest.raises(ModuleRefused, match="signature"):
        load(wide, cache_dir=cache_dir, abi_version=None)


def test_other_abi_version_is_refused(cache_dir):
    text = GOOD.replace("(result i32) (i32.const 1))", "(result i32) (i32.const 2))", 1)
    with pytest.raises(ModuleRefused, match=r"sf_abi_version\(\) returned 2, expected 1"):
        load(text, cache_dir=cache_dir)


def test_abi_probe_cannot_hang_the_loader(cache_dir):
    looping_version = """(module (memory (export "memory") 1)
      (func (export "sf_abi_version") (result i32) (loop $l (br $l)) (i32.const 1)))"""
    looping_start = """(module (memory (export "memory") 1) (func $s (loop $l (br $l))) (start $s)
      (func (export "sf_abi_version") (result i32) (i32.const 1)))"""
    # A start function is refused before compiling (issue 9): it would run at instantiation.
    for text, reason in (
        (looping_version, "trapped while reporting its ABI version"),
        (looping_start, "a kernel module must have none"),
    ):
        started = time.perf_counter()
        with pytest.raises(ModuleRefused, match=reason):
            load(text, cache_dir=cache_dir, required_exports=())
        assert time.perf_counter() - started < 5
