"""client/kernel_source.py: a received kernel is bounded, hashed, checked, then compiled."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from client import client_app, kernel_source, sandbox
from kernels import build
from protos.contract import ClientErrorCode

RELAXED = build.WASM_DIR / "sandflower-relaxed.wasm"
SIMD128 = build.WASM_DIR / "sandflower-simd128.wasm"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle(tmp_path, monkeypatch) -> Path:
    """A copy of kernels/wasm's shipped files, as an app bundle would carry them (no .wasm)."""
    directory = tmp_path / "wasm"
    directory.mkdir()
    for name in build.BUILDS:
        shutil.copy(build.shipped_path(name), directory)
    monkeypatch.setattr(kernel_source, "shipped_dir", lambda: directory)
    return directory


def _rewrite(path: Path, **changes) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def _tampered_wasm() -> bytes:
    # A custom section appended: still a valid module, other bytes, another sha256.
    name, payload = b"tampered", b"\x00" * 16
    section = bytes([0, 1 + len(name) + len(payload), len(name)]) + name + payload
    return RELAXED.read_bytes() + section


def test_each_shipped_file_decodes_to_the_committed_wasm():
    for name in build.BUILDS:
        shipped = kernel_source.read_shipped(build.shipped_path(name))
        assert shipped.wasm == (build.WASM_DIR / name).read_bytes(), name
        assert shipped.sha256 == _sha(build.WASM_DIR / name)
        assert shipped.flavour == build.flavour_of(name)


def test_an_empty_pin_takes_the_relaxed_build_and_a_pin_finds_its_build(bundle):
    assert kernel_source.pinned_kernel("").sha256 == _sha(RELAXED)
    found = kernel_source.pinned_kernel(_sha(SIMD128).upper())  # case does not matter
    assert (found.sha256, found.flavour) == (_sha(SIMD128), "simd128")
    assert found.wasm == SIMD128.read_bytes()


def test_altered_bytes_under_the_declared_hash_are_refused_before_compiling(bundle, monkeypatch):
    compiled = []
    monkeypatch.setattr(sandbox.cache, "_compile", lambda *args: compiled.append(args))
    shipped = bundle / "sandflower-relaxed.wasm.json"
    _rewrite(shipped, wasm_base64=base64.b64encode(_tampered_wasm()).decode())
    with pytest.raises(kernel_source.KernelMismatch) as raised:
        kernel_source.pinned_kernel(_sha(RELAXED))
    message = str(raised.value)
    assert str(shipped) in message and _sha(RELAXED) in message
    assert hashlib.sha256(_tampered_wasm()).hexdigest() in message
    assert compiled == []


def test_a_consistently_rehashed_kernel_is_not_the_pinned_one(bundle):
    tampered = _tampered_wasm()
    _rewrite(
        bundle / "sandflower-relaxed.wasm.json",
        wasm_base64=base64.b64encode(tampered).decode(),
        sha256=hashlib.sha256(tampered).hexdigest(),
        bytes=len(tampered),
    )
    with pytest.raises(kernel_source.KernelMismatch, match="no kernel shipped in .* declares it"):
        kernel_source.pinned_kernel(_sha(RELAXED))
    # With no pin the device cannot tell, which is why the coordinator always pins one.
    assert kernel_source.pinned_kernel("").wasm == tampered


def test_a_device_kernel_path_is_checked_against_the_pin(tmp_path):
    own = tmp_path / "own.wasm"
    own.write_bytes(_tampered_wasm())
    with pytest.raises(kernel_source.KernelMismatch, match=r"own\.wasm has sha256 .* pinned"):
        kernel_source.pinned_kernel(_sha(RELAXED), str(own))
    assert kernel_source.pinned_kernel("", str(own)).wasm == _tampered_wasm()


def test_oversized_files_are_refused_by_size_before_they_are_read(bundle, tmp_path):
    huge = bundle / "sandflower-relaxed.wasm.json"
    with huge.open("r+b") as handle:  # sparse: the size is what is checked
        handle.truncate(kernel_source.MAX_SHIPPED_BYTES + 1)
    with pytest.raises(kernel_source.KernelSourceError, match="expected at most"):
        kernel_source.pinned_kernel("")
    own = tmp_path / "huge.wasm"
    with own.open("wb") as handle:
        handle.truncate(kernel_source.MAX_KERNEL_BYTES + 1)
    with pytest.raises(kernel_source.KernelSourceError, match="expected at most"):
        kernel_source.read_wasm_file(own)


def test_the_encoded_size_is_bounded_before_decoding(bundle, monkeypatch):
    monkeypatch.setattr(kernel_source, "MAX_KERNEL_BYTES", 1000)
    with pytest.raises(kernel_source.KernelSourceError, match="expected at most 1000"):
        kernel_source.read_shipped(bundle / "sandflower-relaxed.wasm.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"format": "other"}', "expected a shipped kernel"),
        (json.dumps({"format": build.SHIPPED_FORMAT, "wasm_base64": 7}).encode(), "must be a str"),
        (
            json.dumps({"format": build.SHIPPED_FORMAT, "wasm_base64": "@@@@"}).encode(),
            "not base64",
        ),
    ],
)
def test_malformed_shipped_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.wasm.json"
    path.write_bytes(content)
    with pytest.raises(kernel_source.KernelSourceError, match=message):
        kernel_source.read_shipped(path)


def test_features_come_from_the_bytes():
    relaxed = kernel_source.read_shipped(build.shipped_path("sandflower-relaxed.wasm"))
    simd128 = kernel_source.read_shipped(build.shipped_path("sandflower-simd128.wasm"))
    assert "relaxed-simd" in sandbox.features_needed(relaxed.sha256, relaxed.wasm)
    assert "simd" in sandbox.features_needed(relaxed.sha256, relaxed.wasm)
    assert "relaxed-simd" not in sandbox.features_needed(simd128.sha256, simd128.wasm)
    # What each build declares it needs (kernels/build.py FEATURES, written into its shipped
    # file) is exactly what its bytes need, and the runtime knows how to switch each one.
    for name in build.BUILDS:
        shipped = kernel_source.read_shipped(build.shipped_path(name))
        needed = set(sandbox.features_needed(shipped.sha256, shipped.wasm))
        assert needed == set(build.FEATURES[name]), name
        assert needed <= set(sandbox.KERNEL_FEATURES), name


def test_a_runtime_without_relaxed_simd_refuses_the_relaxed_build_and_names_it():
    relaxed = kernel_source.read_shipped(build.shipped_path("sandflower-relaxed.wasm"))
    simd128 = kernel_source.read_shipped(build.shipped_path("sandflower-simd128.wasm"))
    with pytest.raises(kernel_source.KernelUnsupported) as raised:
        kernel_source.check_runtime_supports(relaxed, frozenset({"relaxed-simd"}))
    assert raised.value.missing == ("relaxed-simd",)
    assert "relaxed-simd" in str(raised.value) and "kernel-flavour='simd128'" in str(raised.value)
    kernel_source.check_runtime_supports(simd128, frozenset({"relaxed-simd"}))  # runs fine
    with pytest.raises(kernel_source.KernelUnsupported, match="simd"):
        kernel_source.check_runtime_supports(simd128, frozenset({"simd"}))


def test_a_kernel_is_compiled_once_per_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv(sandbox.CACHE_DIR_ENV, str(tmp_path / "cache"))
    kernel_source._compiled_by_sha256.cache_clear()
    sandbox.clear_compiled_cache()
    real_compile = sandbox.cache._compile
    compiled = []

    def counting_compile(engine, wasm):
        compiled.append(hashlib.sha256(wasm).hexdigest())
        return real_compile(engine, wasm)

    monkeypatch.setattr(sandbox.cache, "_compile", counting_compile)
    first = kernel_source.compiled_module(kernel_source.pinned_kernel(_sha(SIMD128)))
    # one compilation per engine configuration the load uses (the ABI probe runs metered)
    assert compiled and set(compiled) == {_sha(SIMD128)}
    after_first = list(compiled)
    second = kernel_source.compiled_module(kernel_source.pinned_kernel(_sha(SIMD128)))
    assert first is second and first.sha256 == _sha(SIMD128)
    assert compiled == after_first  # the next round compiles nothing
    # A new process (no in-process caches) loads it from the disk cache, keyed by the sha256.
    kernel_source._compiled_by_sha256.cache_clear()
    sandbox.clear_compiled_cache()
    kernel_source.compiled_module(kernel_source.pinned_kernel(_sha(SIMD128)))
    assert compiled == after_first
    kernel_source._compiled_by_sha256.cache_clear()


# -- the ClientApp's use of it ----------------------------------------------------------------
LIMITS = sandbox.Limits(memory_bytes=64 << 20)


def _job_error(node_config: dict, config: dict) -> client_app.ClientJobError:
    with pytest.raises(client_app.ClientJobError) as raised:
        client_app._runner(node_config, config, LIMITS)
    return raised.value


def test_the_client_maps_each_kernel_problem_to_its_error_code(bundle, tmp_path):
    pin = {"kernel-sha256": _sha(RELAXED)}
    runner = client_app._runner({}, pin, LIMITS)
    assert runner.module.sha256 == _sha(RELAXED)

    no_relaxed = {client_app.NODE_DISABLED_FEATURES: "relaxed-simd"}
    error = _job_error(no_relaxed, pin)
    assert error.code == ClientErrorCode.KERNEL_UNSUPPORTED and "relaxed-simd" in str(error)
    simd128 = client_app._runner(no_relaxed, {"kernel-sha256": _sha(SIMD128)}, LIMITS)
    assert simd128.module.sha256 == _sha(SIMD128)

    error = _job_error({client_app.NODE_DISABLED_FEATURES: "threads"}, pin)
    assert error.code == ClientErrorCode.BAD_CONFIG and "threads" in str(error)

    _rewrite(
        bundle / "sandflower-relaxed.wasm.json",
        wasm_base64=base64.b64encode(_tampered_wasm()).decode(),
    )
    error = _job_error({}, pin)
    assert error.code == ClientErrorCode.KERNEL_MISMATCH and "altered" in str(error)

    (bundle / "sandflower-simd128.wasm.json").write_text("{}")
    error = _job_error({}, {"kernel-sha256": "ab" * 32})
    assert error.code == ClientErrorCode.KERNEL_FAILED
    assert "expected a shipped kernel" in str(error)
