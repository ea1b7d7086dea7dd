"""client/sandbox/cache.py: modules compiled once, kept in this process and on disk."""

from client import sandbox
from client.sandbox import (
    Limits,
    cache,
)
from tests.client.sandbox.wat import GOOD, check_healthy, load


# -- compile cache --------------------------------------------------------------------------
def cache_files(cache_dir):
    return sorted(path for path in cache_dir.glob("*.cwasm"))


# Loading compiles once, for the probe's engine (fuel + epoch, the ClientApp's default limits);
# each other engine configuration compiles on its first job (issue 9 changed loading from two
# compilations, plain + fuel, to one).
PROBE_TAG = "fuel1-epoch1"


def test_second_load_hits_the_disk_cache(cache_dir, compile_counter):
    first = load(GOOD, cache_dir=cache_dir)
    assert len(compile_counter) == 1
    files = cache_files(cache_dir)
    assert len(files) == 1 and first.sha256 in files[0].name and PROBE_TAG in files[0].name
    check_healthy(first)  # the plain engine: compiled now, cached too
    assert len(compile_counter) == 2
    files = cache_files(cache_dir)
    assert len(files) == 2 and all(first.sha256 in path.name for path in files)
    assert all(sandbox.WASMTIME_VERSION in path.name for path in files)
    assert not list(cache_dir.glob("*.tmp"))

    sandbox.clear_compiled_cache()
    second = load(GOOD, cache_dir=cache_dir)
    check_healthy(second)
    assert len(compile_counter) == 2  # deserialized, not compiled

    # in the same process the compiled module is reused without touching the disk
    for path in files:
        path.unlink()
    check_healthy(load(GOOD, cache_dir=cache_dir))
    assert len(compile_counter) == 2 and cache_files(cache_dir) == []


def test_each_engine_configuration_has_its_own_cache_entry(cache_dir, compile_counter):
    module = load(GOOD, cache_dir=cache_dir)
    check_healthy(module)
    check_healthy(module, Limits(fuel=10**7))
    check_healthy(module, Limits(deadline_seconds=10))
    check_healthy(module, Limits(fuel=10**7, deadline_seconds=10))
    names = [path.name for path in cache_files(cache_dir)]
    assert len(names) == 4 and len(compile_counter) == 4
    assert {name.split("-fuel")[1][:8] for name in names} == {
        "0-epoch0",
        "1-epoch0",
        "0-epoch1",
        "1-epoch1",
    }


def test_corrupt_cache_entry_is_recompiled(cache_dir, compile_counter):
    check_healthy(load(GOOD, cache_dir=cache_dir))
    files = cache_files(cache_dir)
    assert len(files) == 2 and len(compile_counter) == 2
    files[0].write_bytes(b"garbage" * 100)
    # a valid header with a flipped payload byte must not reach Module.deserialize either
    blob = bytearray(files[1].read_bytes())
    blob[-100] ^= 0xFF
    files[1].write_bytes(bytes(blob))

    sandbox.clear_compiled_cache()
    module = load(GOOD, cache_dir=cache_dir)
    check_healthy(module)
    check_healthy(module, Limits(fuel=10**7, deadline_seconds=10))
    assert len(compile_counter) == 4

    # the entries were rewritten: the next process deserializes them again
    sandbox.clear_compiled_cache()
    check_healthy(load(GOOD, cache_dir=cache_dir))
    assert len(compile_counter) == 4


def test_unwritable_cache_dir_does_not_stop_loading(tmp_path, compile_counter, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    module = load(GOOD, cache_dir=blocker / "cache")
    check_healthy(module)
    assert "cannot write module cache" in caplog.text


def test_jobs_reuse_the_module_compiled_in_this_process(cache_dir, compile_counter, monkeypatch):
    module = load(GOOD, cache_dir=cache_dir)
    check_healthy(module)
    check_healthy(module, Limits(fuel=10**7))
    assert len(compile_counter) == 3
    cache_reads = []
    real_read_cache = cache._read_cache
    monkeypatch.setattr(
        cache, "_read_cache", lambda *args: cache_reads.append(args) or real_read_cache(*args)
    )
    for _ in range(3):
        check_healthy(module)
        check_healthy(module, Limits(fuel=10**7))
        check_healthy(module, Limits(fuel=10**7, deadline_seconds=10))
    assert cache_reads == [] and len(compile_counter) == 3


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SANDFLOWER_CACHE_DIR", str(tmp_path / "env-cache"))
    assert sandbox.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("SANDFLOWER_CACHE_DIR")
    assert sandbox.default_cache_dir().parts[-2:] == (".cache", "sandflower")


def test_a_cache_entry_others_may_write_is_not_deserialized(cache_dir, compile_counter, caplog):
    load(GOOD, cache_dir=cache_dir)
    (entry,) = cache_files(cache_dir)
    entry.chmod(0o666)  # anyone could have put native code here
    sandbox.clear_compiled_cache()
    check_healthy(load(GOOD, cache_dir=cache_dir), Limits(fuel=10**7, deadline_seconds=10))
    assert len(compile_counter) == 2
    assert "writable by others" in caplog.text


def test_a_cache_entry_that_is_a_fifo_is_recompiled_not_waited_on(
    cache_dir, compile_counter, caplog
):
    import os
    import threading

    load(GOOD, cache_dir=cache_dir)
    (entry,) = cache_files(cache_dir)
    entry.unlink()
    os.mkfifo(entry, 0o600)  # opening it for reading waited for a writer, forever
    sandbox.clear_compiled_cache()
    loaded = []
    worker = threading.Thread(target=lambda: loaded.append(load(GOOD, cache_dir=cache_dir)))
    worker.daemon = True
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        with open(entry, "wb"):  # a writer at the fifo ends the blocked open
            pass
        raise AssertionError("loading waited on a fifo in the module cache")
    check_healthy(loaded[0], Limits(fuel=10**7, deadline_seconds=10))
    assert len(compile_counter) == 2
    assert "not a regular file (a fifo)" in caplog.text
