"""kernels/build.py: the committed .wasm is exactly what the sources build to."""

from __future__ import annotations

import json

import pytest

from kernels import build


def test_committed_wasm_matches_a_fresh_build(tmp_path):
    rebuilt = build.build(tmp_path)
    for name, kernel in rebuilt.items():
        committed = build.sha256_file(build.WASM_DIR / name)
        assert committed == kernel.sha256, (
            f"kernels/wasm/{name} (sha256 {committed}) is not what its sources build to "
            f"({kernel.sha256}): run `python -m kernels.build` and commit the result"
        )
    assert (tmp_path / build.MANIFEST_NAME).read_text() == (
        build.WASM_DIR / build.MANIFEST_NAME
    ).read_text()


def test_the_build_is_byte_reproducible(tmp_path):
    first = build.build(tmp_path / "first")
    second = build.build(tmp_path / "second")
    assert {n: k.sha256 for n, k in first.items()} == {n: k.sha256 for n, k in second.items()}


def test_manifest_names_compiler_command_and_hashes():
    manifest = json.loads((build.WASM_DIR / build.MANIFEST_NAME).read_text())
    assert manifest["compiler"] == f"ziglang {build.ZIGLANG_VERSION}"
    assert manifest["abi_version"] == 1
    assert "ziglang cc" in manifest["command"] and "-msimd128" in manifest["command"]
    assert set(manifest["builds"]) == set(build.BUILDS)
    for name, entry in manifest["builds"].items():
        assert entry["sha256"] == build.sha256_file(build.WASM_DIR / name)


def test_the_shipped_json_of_each_build_is_its_wasm_in_base64_with_its_sha256():
    import base64

    for name in build.BUILDS:
        shipped = json.loads(build.shipped_path(name).read_text())
        wasm = (build.WASM_DIR / name).read_bytes()
        assert base64.b64decode(shipped["wasm_base64"], validate=True) == wasm, name
        assert shipped["sha256"] == build.sha256_file(build.WASM_DIR / name)
        assert shipped["bytes"] == len(wasm)
        assert shipped["format"] == build.SHIPPED_FORMAT
        assert shipped["abi_version"] == build.ABI_VERSION
        assert build.FLAVOURS[shipped["flavour"]] == name
        assert shipped["features"] == list(build.FEATURES[name])
        assert build.shipped_path(name).read_text() == build.shipped_text(name, wasm)


def test_check_reports_a_tampered_wasm(tmp_path):
    for name in build.BUILDS:
        (tmp_path / name).write_bytes((build.WASM_DIR / name).read_bytes())
        build.shipped_path(name, tmp_path).write_text(build.shipped_path(name).read_text())
    (tmp_path / build.MANIFEST_NAME).write_text((build.WASM_DIR / build.MANIFEST_NAME).read_text())
    assert build.check(tmp_path) == []
    (tmp_path / "sandflower-simd128.wasm").write_bytes(b"\0asm\1\0\0\0")
    problems = build.check(tmp_path)
    assert len(problems) == 1 and "sandflower-simd128.wasm" in problems[0]


def test_unknown_build_name_is_refused():
    with pytest.raises(build.KernelBuildError, match="unknown build"):
        build.compile_command("sandflower-avx.wasm", "out.wasm")


def test_check_reports_a_tampered_shipped_kernel(tmp_path):
    for name in build.BUILDS:
        (tmp_path / name).write_bytes((build.WASM_DIR / name).read_bytes())
        build.shipped_path(name, tmp_path).write_text(build.shipped_path(name).read_text())
    (tmp_path / build.MANIFEST_NAME).write_text((build.WASM_DIR / build.MANIFEST_NAME).read_text())
    shipped = build.shipped_path("sandflower-relaxed.wasm", tmp_path)
    shipped.write_text(shipped.read_text().replace('"bytes": ', '"bytes": 1'))
    problems = build.check(tmp_path)
    assert len(problems) == 1 and "sandflower-relaxed.wasm.json" in problems[0]
