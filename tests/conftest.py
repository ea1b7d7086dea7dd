"""Shared test set-up: keep the compiled-module cache out of the user's home directory."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _module_cache_in_a_temp_dir(tmp_path_factory):
    # KernelModule reads SANDFLOWER_CACHE_DIR when a module is loaded without cache_dir.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDFLOWER_CACHE_DIR", str(tmp_path_factory.mktemp("module-cache")))
        yield
