"""kernels/registry.py: the one table of the ABI, and everything that must agree with it.

The four places that know the ABI are checked against the table: the build (the generated C
header, the compiled modules' actual exports and signatures), the sandbox (its signature,
status and version checks), the JS host (the generated registry.mjs, and what it refuses) and
the reference and documentation (kernels/reference.py, kernels/spec.py, kernels/ABI.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import wasmtime

import client.sandbox as sandbox
from client.sandbox import KernelModule, ModuleRefused
from kernels import build, reference, registry, spec
from tests.kernels.conftest import BUILDS, WASM_DIR

JS_DIR = registry.KERNEL_DIR / "js"


def _wasmtime_exports(wasm: bytes) -> tuple[dict, list[str]]:
    # wasmtime's own reading of the module, independent of kernels/build.py's reader.
    module = wasmtime.Module(wasmtime.Engine(_engine_config()), wasm)
    functions, others = {}, []
    for export in module.exports:
        if isinstance(export.type, wasmtime.FuncType):
            functions[export.name] = (
                tuple(str(t) for t in export.type.params),
                tuple(str(t) for t in export.type.results),
            )
        else:
            others.append(export.name)
    return functions, others


def _engine_config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.wasm_simd = True
    config.wasm_relaxed_simd = True
    return config


def _module_wat(signatures: dict) -> str:
    # A module exporting ``signatures`` (each returning zeros) and a memory.
    functions = []
    for name, (params, results) in signatures.items():
        param_text = " ".join(f"(param {t})" for t in params)
        result_text = " ".join(f"(result {t})" for t in results)
        body = "(i32.const 1)" if name == "sf_abi_version" else ""
        body = body or " ".join(f"({t}.const 0)" for t in results)
        functions.append(f'(func (export "{name}") {param_text} {result_text} {body})')
    return '(module (memory (export "memory") 1)\n' + "\n".join(functions) + ")"


# -- the table itself -----------------------------------------------------------------------
def test_the_table_has_every_export_once_with_wasm32_types():
    names = [export.name for export in registry.EXPORTS]
    assert len(names) == len(set(names)) == 15
    assert registry.export_names() == (*names, "memory")
    assert "sf_train_budget" in names
    signatures = registry.wasm_signatures()
    assert signatures["sf_alloc"] == (("i32",), ("i32",))
    assert signatures["sf_train"] == (("i32",) * 8 + ("f32", "f32", "i64", "i32"), ("i32",))
    assert signatures["sf_softmax_xent"][1] == ("f32",)
    for export in registry.EXPORTS:
        # status entries are exactly the int32_t-returning model entries
        assert export.status == (
            export.result == "int32_t"
            and export.name.startswith(("sf_model", "sf_train", "sf_evaluate"))
        ), export.name


def test_a_c_type_without_a_wasm_type_is_refused():
    with pytest.raises(ValueError, match="double"):
        _ = registry.Param("double", "x").wasm_type


# -- the build --------------------------------------------------------------------------------
def test_the_generated_files_are_what_the_registry_gives():
    # Regenerating changes nothing: the committed header and JS module are the table's.
    assert registry.stale_generated() == []
    for path, text in registry.generated_files().items():
        assert path.read_text() == text, path


def test_a_stale_generated_file_is_reported(tmp_path, monkeypatch):
    stale = tmp_path / "sandflower_abi.h"
    stale.write_text(
        registry.c_header().replace("#define SF_NO_MEMORY 2", "#define SF_NO_MEMORY 9")
    )
    monkeypatch.setattr(registry, "C_HEADER_PATH", stale)
    problems = registry.stale_generated()
    assert len(problems) == 1 and "sandflower_abi.h" in problems[0]


def test_kernels_verify_reports_a_stale_generated_header(tmp_path, monkeypatch):
    pytest.importorskip("ziglang")
    stale = tmp_path / "sandflower_abi.h"
    stale.write_text(registry.c_header().replace("SF_ABI_VERSION 1", "SF_ABI_VERSION 2"))
    monkeypatch.setattr(registry, "C_HEADER_PATH", stale)
    problems = build.check()
    assert [p for p in problems if "sandflower_abi.h" in p], problems
    assert stale.read_text() != registry.c_header()  # reported, not rewritten


def test_the_sources_name_no_export_the_registry_does_not_declare():
    # Export names live only in the generated header: a source with its own would drift.
    for source in registry.KERNEL_DIR.glob("*.c"):
        assert "export_name" not in source.read_text() and "SF_EXPORT" not in source.read_text()
    header = registry.C_HEADER_PATH.read_text()
    for export in registry.EXPORTS:
        assert "\n".join(export.c_prototype_lines()) + "\n" in header
        assert " ".join(export.c_prototype_lines()).split() == export.c_prototype().split()


@pytest.mark.parametrize("name", BUILDS)
def test_each_build_exports_exactly_the_registry(name):
    wasm = (WASM_DIR / name).read_bytes()
    functions, others = _wasmtime_exports(wasm)
    assert functions == registry.wasm_signatures()
    assert others == [registry.MEMORY_EXPORT]
    # kernels/build.py's reader (used by the build) reads the same
    assert build.module_exports(wasm) == (functions, others)
    assert build.export_mismatches(wasm) == []


def test_the_build_check_names_a_missing_a_wrong_and_an_extra_export():
    signatures = dict(registry.wasm_signatures())
    del signatures["sf_train_budget"]
    signatures["sf_relu"] = (("i32", "i32"), ())
    signatures["sf_extra"] = ((), ())
    problems = build.export_mismatches(bytes(wasmtime.wat2wasm(_module_wat(signatures))))
    assert any("missing export sf_train_budget" in p for p in problems), problems
    assert any("export sf_relu has signature" in p for p in problems), problems
    assert any("unexpected export sf_extra" in p for p in problems), problems


def test_the_build_reader_refuses_what_is_not_a_kernel_module():
    with pytest.raises(build.KernelBuildError, match="not a wasm module"):
        build.module_exports(b"\x7fELF" + bytes(16))
    importing = '(module (import "env" "clock" (func (result i64))) (memory (export "memory") 1))'
    with pytest.raises(build.KernelBuildError, match="imports"):
        build.module_exports(bytes(wasmtime.wat2wasm(importing)))


def test_the_compiler_refuses_a_definition_that_differs_from_the_registry(tmp_path):
    pytest.importorskip("ziglang")
    source = tmp_path / "wrong.c"
    # sf_relu with an int32_t n where the registry says float pointers first
    source.write_text('#include "sandflower.h"\nvoid sf_relu(int32_t n) { (void)n; }\n')
    command = build.compile_command("sandflower-simd128.wasm", tmp_path / "wrong.wasm")
    command = command[: command.index("-o")] + ["-I", str(registry.KERNEL_DIR), "-c", "-o"]
    result = subprocess.run(
        [*command, str(tmp_path / "wrong.o"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "sf_relu" in result.stderr and "conflicting types" in result.stderr


# -- the sandbox ------------------------------------------------------------------------------
def test_the_sandbox_checks_against_the_registry():
    assert sandbox.KERNEL_SIGNATURES == registry.wasm_signatures()
    assert sandbox.KERNEL_EXPORTS == registry.export_names()
    assert sandbox.ABI_VERSION == registry.ABI_VERSION
    assert sandbox.STATUS_NAMES == registry.STATUS_NAMES
    assert sandbox.STATUS_OK == registry.STATUS_CODES["SF_OK"]
    assert sandbox.STATUS_NO_MEMORY == registry.STATUS_CODES["SF_NO_MEMORY"]


def test_the_sandbox_accepts_the_registrys_module_and_refuses_a_drifted_one(tmp_path):
    signatures = registry.wasm_signatures()
    KernelModule.from_bytes(_module_wat(signatures), name="table.wat", cache_dir=tmp_path)
    drifted = dict(signatures)
    params, results = drifted["sf_train_budget"]
    drifted["sf_train_budget"] = (params[:-1], results)  # one parameter short
    with pytest.raises(ModuleRefused, match="sf_train_budget has signature"):
        KernelModule.from_bytes(_module_wat(drifted), name="drifted.wat", cache_dir=tmp_path)


# -- the JS host ------------------------------------------------------------------------------
def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    return node


def _run_node(script: str) -> str:
    completed = subprocess.run(
        [_node(), "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=JS_DIR,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_the_js_host_reads_the_same_table():
    out = _run_node(
        'import * as r from "./registry.mjs"; import * as host from "./sandflower.mjs";'
        "console.log(JSON.stringify({...r, HOST_ABI: host.ABI_VERSION}));"
    )
    table = json.loads(out)
    assert table["ABI_VERSION"] == table["HOST_ABI"] == registry.ABI_VERSION
    assert table["STATUS_CODES"] == registry.STATUS_CODES
    assert table["MEMORY_EXPORT"] == registry.MEMORY_EXPORT
    assert {
        name: (tuple(entry["params"]), tuple(entry["results"]))
        for name, entry in table["EXPORTS"].items()
    } == registry.wasm_signatures()


def test_the_js_host_loads_the_build_and_refuses_a_drifted_module(tmp_path):
    drifted = dict(registry.wasm_signatures())
    del drifted["sf_evaluate"]
    params, results = drifted["sf_train"]
    drifted["sf_train"] = (params + ("i32",), results)
    (tmp_path / "drifted.wasm").write_bytes(bytes(wasmtime.wat2wasm(_module_wat(drifted))))
    good = WASM_DIR / "sandflower-simd128.wasm"
    out = _run_node(
        'import { readFileSync } from "node:fs";'
        'import { loadKernel, exportMismatches } from "./sandflower.mjs";'
        f"await loadKernel(readFileSync({json.dumps(str(good))}));"
        "let message = 'accepted';"
        f"try {{ await loadKernel(readFileSync({json.dumps(str(tmp_path / 'drifted.wasm'))})); }}"
        "catch (error) { message = String(error.message); }"
        "console.log(message);"
    )
    assert "missing export sf_evaluate" in out
    assert "export sf_train takes 13 arguments, expected 12" in out


# -- the reference, the spec encoder and the documentation ------------------------------------
def test_the_reference_and_the_spec_encoder_use_the_table():
    for name, code in registry.STATUS_CODES.items():
        assert getattr(reference, name) == code
    assert spec.SPEC_MAGIC == registry.SPEC_MAGIC
    assert spec.MAX_LAYERS == registry.MAX_LAYERS
    assert (spec.KIND_DENSE, spec.KIND_RELU) == (
        registry.LAYER_KINDS["SF_KIND_DENSE"],
        registry.LAYER_KINDS["SF_KIND_RELU"],
    )
    # every exported entry has its numpy reference
    for export in registry.EXPORTS:
        if export.name not in ("sf_abi_version", "sf_alloc", "sf_heap_reset"):
            assert hasattr(reference, export.name.removeprefix("sf_")), export.name


def test_abi_md_documents_the_tables_exports_parameters_and_status_codes():
    text = (registry.KERNEL_DIR / "ABI.md").read_text()
    assert f"# Kernel ABI (version {registry.ABI_VERSION})" in text
    documented = {
        name: [item.split()[0] for item in params.split(",") if item.strip()]
        for name, params in re.findall(r"^\| `(sf_\w+)` \| `\(([^)]*)\)", text, re.MULTILINE)
    }
    assert documented == {
        export.name: [param.name for param in export.params] for export in registry.EXPORTS
    }
    statuses = dict(re.findall(r"^\| (\d+) \| (SF_\w+) \|", text, re.MULTILINE))
    assert {name: int(code) for code, name in statuses.items()} == registry.STATUS_CODES
