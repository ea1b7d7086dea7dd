"""Shared test set-up: keep caches and Flower's state out of the user's home directory."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_dirs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        # KernelModule reads SANDFLOWER_CACHE_DIR when a module is loaded without cache_dir.
        patch.setenv("SANDFLOWER_CACHE_DIR", str(tmp_path_factory.mktemp("module-cache")))
        # Flower writes ~/.flwr (e.g. its source marker) in any process without FLWR_HOME.
        patch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr-home")))
        yield
