"""Fixtures of the client/sandbox/ tests: a cache directory, the healthy test module."""

import pytest

from client.sandbox import KernelModule, cache
from tests.client.sandbox.wat import GOOD, TEST_EXPORTS


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def good(cache_dir):
    return KernelModule.from_bytes(
        GOOD, name="good.wat", cache_dir=cache_dir, required_exports=TEST_EXPORTS
    )


@pytest.fixture
def compile_counter(monkeypatch):
    """Counts compilations (client/sandbox/cache.py's seam ``_compile``)."""
    cache.clear_compiled_cache()
    calls = []
    real_compile = cache._compile

    def counting_compile(engine, wasm):
        calls.append(len(wasm))
        return real_compile(engine, wasm)

    monkeypatch.setattr(cache, "_compile", counting_compile)
    yield calls
    cache.clear_compiled_cache()
