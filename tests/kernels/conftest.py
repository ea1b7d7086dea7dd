"""Fixtures for the kernel tests: both committed builds, loaded through client.sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.sandbox import KernelModule

WASM_DIR = Path(__file__).resolve().parents[2] / "kernels" / "wasm"
BUILDS = ("sandflower-relaxed.wasm", "sandflower-simd128.wasm")


@pytest.fixture(scope="session")
def module_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture(scope="session", params=BUILDS)
def kernel_module(request: pytest.FixtureRequest, module_cache_dir: Path) -> KernelModule:
    """Each committed build in turn, validated and compiled by the sandbox."""
    return KernelModule.from_file(WASM_DIR / request.param, cache_dir=module_cache_dir)
