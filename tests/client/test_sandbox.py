"""client/sandbox.py against hostile and broken modules written as inline WAT.

Every failure test then runs a healthy job in the same process and checks its result: a
failing job must leave nothing behind.
"""

import threading
import time

import numpy as np
import pytest
import wasmtime

from client import sandbox
from client.sandbox import (
    DeadlineExceeded,
    KernelError,
    KernelModule,
    KernelStatusError,
    KernelTrapped,
    Limits,
    MemoryLimitReached,
    ModuleRefused,
    OutOfBounds,
    OutOfFuel,
)

# A bump allocator shaped like the kernels' sf_alloc (grows memory, 0 when it cannot), an ABI
# version, and a few entries to misbehave with.
ALLOC = """
  (global $top (mut i32) (i32.const 16))
  (func $alloc (export "sf_alloc") (param $n i32) (result i32) (local $p i32) (local $end i32)
    (local.set $p (global.get $top))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 15))
                             (i32.const -16)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
                          (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
                        (i32.const -1))
              (then (return (i32.const 0))))))
    (global.set $top (local.get $end))
    (local.get $p))
"""

GOOD = f"""(module
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "sf_abi_version") (result i32) (i32.const 1))
  ;; sum of n float32 at p
  (func (export "sum") (param $p i32) (param $n i32) (result f32) (local $acc f32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $acc (f32.add (local.get $acc) (f32.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $acc))
  ;; y[i] = 2 * x[i] for n float32
  (func (export "double") (param $x i32) (param $y i32) (param $n i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (f32.store (local.get $y) (f32.mul (f32.load (local.get $x)) (f32.const 2)))
      (local.set $x (i32.add (local.get $x) (i32.const 4)))
      (local.set $y (i32.add (local.get $y) (i32.const 4)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next))))
  (func (export "spin") (loop $forever (br $forever)))
  (func (export "oob_store") (i32.store (i32.const 0x7ffffff0) (i32.const 1)))
  (func (export "status") (param $s i32) (result i32) (local.get $s))
  (func (export "top") (result i32) (global.get $top))
  ;; memory bomb: grow 16 pages at a time until memory.grow says no, then report it
  (func (export "bomb_status") (result i32)
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.const 2))
  ;; a bomb growing page by page and aborting the C way when growth is refused
  (func (export "bomb_abort")
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (unreachable))
  (func (export "divide") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "wide") (param i32 v128) (result i32) (local.get 0))
  (func $recurse (export "recurse") (result i32) (i32.add (call $recurse) (i32.const 1)))
)"""

TEST_EXPORTS = ("memory", "sf_alloc")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def good(cache_dir):
    return KernelModule.from_bytes(
        GOOD, name="good.wat", cache_dir=cache_dir, required_exports=TEST_EXPORTS
    )


def check_healthy(module, limits=None):
    """The next job in this process works: copy in, compute, copy out."""
    limits = limits or Limits()
    values = np.arange(1, 101, dtype=np.float32)
    with module.job("healthy", limits) as job:
        x = job.put(values)
        y = job.alloc(values.nbytes)
        job.call("double", x, y, values.size)
        np.testing.assert_array_equal(job.read(y, values.shape, np.float32), 2 * values)
        assert job.call("sum", x, values.size) == pytest.approx(5050.0)


# -- fuel and deadline ----------------------------------------------------------------------
def test_infinite_loop_is_stopped_by_fuel(good):
    started = time.perf_counter()
    with good.job("spinner", Limits(fuel=5_000_000)) as job:
        with pytest.raises(OutOfFuel) as info:
            job.call("spin")
    assert time.perf_counter() - started < 5
    assert info.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
    assert (info.value.entry, info.value.job) == ("spin", "spinner")
    assert "spin" in str(info.value) and "spinner" in str(info.value)
    assert job.fuel_used == 5_000_000
    check_healthy(good, Limits(fuel=5_000_000))
    check_healthy(good)


def test_infinite_loop_is_stopped_by_the_deadline(good):
    started = time.perf_counter()
    with good.job("spinner", Limits(deadline_seconds=0.2)) as job:
        with pytest.raises(DeadlineExceeded) as info:
            job.call("spin")
    elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 3
    assert info.value.trap_code == wasmtime.TrapCode.INTERRUPT
    assert "spinner" in str(info.value) and "deadline" in str(info.value)
    check_healthy(good, Limits(deadline_seconds=5))


def test_a_finished_jobs_deadline_does_not_cut_a_later_job_short(good):
    # A per-job timer firing increment_epoch() at 0.15 s would interrupt the second job.
    with good.job("short", Limits(deadline_seconds=0.15)) as job:
        check_healthy(good)
        job.call("sum", 16, 1)
    started = time.perf_counter()
    with good.job("later", Limits(deadline_seconds=0.5)) as job:
        with pytest.raises(DeadlineExceeded):
            job.call("spin")
    assert time.perf_counter() - started >= 0.5


def test_concurrent_jobs_keep_their_own_deadlines(good):
    # Jobs in two threads share one engine and one epoch ticker; wasmtime releases the GIL, so
    # both spin at once, and each is stopped by its own deadline.
    elapsed = {}

    def spin(name, seconds):
        started = time.perf_counter()
        with good.job(name, Limits(deadline_seconds=seconds)) as job:
            with pytest.raises(DeadlineExceeded):
                job.call("spin")
        elapsed[name] = time.perf_counter() - started

    threads = [threading.Thread(target=spin, args=(n, s)) for n, s in (("a", 0.1), ("b", 0.5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0.1 <= elapsed["a"] < 0.45
    assert elapsed["b"] >= 0.5


def test_fuel_used_is_reported_and_deterministic(good):
    values = np.ones(1000, dtype=np.float32)

    def run():
        with good.job("metered", Limits(fuel=10_000_000)) as job:
            ptr = job.put(values)
            assert job.call("sum", ptr, values.size) == 1000.0
            during = job.fuel_used
        assert job.fuel_used == during  # still readable after close
        return during

    first, second = run(), run()
    assert first == second
    # about one unit per instruction: a 1000-iteration loop of ~10 instructions
    assert 5_000 < first < 100_000
    with good.job("unmetered") as job:
        assert job.fuel_used is None


# -- memory ---------------------------------------------------------------------------------
def test_memory_bomb_stops_at_the_cap_and_reports_it(good):
    cap = 4 * 2**20
    with good.job("bomb", Limits(memory_bytes=cap)) as job:
        with pytest.raises(MemoryLimitReached) as info:
            job.call_status("bomb_status")
        assert job.memory_size() <= cap
    assert "bomb_status" in str(info.value) and "bomb" in str(info.value)
    check_healthy(good, Limits(memory_bytes=cap))


def test_memory_bomb_that_aborts_at_the_cap_is_memory_limit_reached(good):
    # The host never sees memory.grow fail (it returns -1 inside wasm); an `unreachable` trap
    # with memory too full for one more page is the signal it does see.
    cap = 4 * 2**20
    with good.job("bomb", Limits(memory_bytes=cap)) as job:
        with pytest.raises(MemoryLimitReached, match="memory.grow was refused"):
            job.call("bomb_abort")
        assert job.memory_size() <= cap
    check_healthy(good)


def test_alloc_past_the_cap_is_memory_limit_reached(good):
    with good.job("greedy", Limits(memory_bytes=2**20)) as job:
        with pytest.raises(MemoryLimitReached, match="sf_alloc"):
            job.alloc(2 * 2**20)
        # the allocator said no without trapping: the job goes on
        assert job.alloc(1024) > 0


def test_initial_memory_above_the_cap_is_memory_limit_reached(cache_dir):
    big = KernelModule.from_bytes(
        '(module (memory (export "memory") 100))',
        name="big.wat",
        cache_dir=cache_dir,
        required_exports=(),
        abi_version=None,
    )
    with pytest.raises(MemoryLimitReached, match="instantiate"):
        big.job("too big", Limits(memory_bytes=2**20))
    with big.job("fits", Limits(memory_bytes=200 * 2**16)) as job:
        assert job.memory_size() == 100 * 2**16


def test_out_of_bounds_store_is_out_of_bounds(good):
    with good.job("wild", Limits()) as job:
        with pytest.raises(OutOfBounds) as info:
            job.call("oob_store")
        assert info.value.trap_code == wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS
        assert "out of bounds" in str(info.value) and "oob_store" in str(info.value)
        # the instance's state is not trusted after a trap
        with pytest.raises(KernelError, match="already failed"):
            job.call("sum", 16, 1)
    check_healthy(good)


def test_other_traps_are_kernel_trapped_with_their_code(good):
    with good.job("arith") as job:
        assert job.call("divide", 7, 2) == 3
        with pytest.raises(KernelTrapped) as info:
            job.call("divide", 1, 0)
    assert info.value.trap_code == wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO
    assert type(info.value) is KernelTrapped
    check_healthy(good)


def test_runaway_recursion_is_a_stack_overflow_trap(good):
    with good.job("deep") as job:
        with pytest.raises(KernelTrapped) as info:
            job.call("recurse")
    assert info.value.trap_code == wasmtime.TrapCode.STACK_OVERFLOW
    check_healthy(good)


def test_status_codes(good):
    with good.job("statuses") as job:
        job.call_status("status", 0)
        with pytest.raises(MemoryLimitReached, match="SF_NO_MEMORY"):
            job.call_status("status", 2)
        with pytest.raises(KernelStatusError) as info:
            job.call_status("status", 3)
        assert info.value.status == 3 and "SF_BAD_ARGUMENT" in str(info.value)


# -- copies ---------------------------------------------------------------------------------
def test_copies_are_bounds_checked(good):
    with good.job("copies") as job:
        size = job.memory_size()
        with pytest.raises(OutOfBounds, match="outside linear memory"):
            job.read(size - 8, (4,), np.float32)
        with pytest.raises(OutOfBounds, match="outside linear memory"):
            job.write(size - 2, np.zeros(1, dtype=np.float32))
        with pytest.raises(OutOfBounds):
            job.read(-4, (1,), np.float32)
        # the last bytes are reachable, one past is not
        job.write(size - 4, np.array([7], dtype=np.int32))
        assert job.read(size - 4, (1,), np.int32)[0] == 7
        with pytest.raises(ValueError, match="numeric"):
            job.put(np.array(["text"], dtype=object))


def test_read_is_a_copy_and_survives_memory_growth(good):
    values = np.arange(256, dtype=np.float32)
    with good.job("growth") as job:
        ptr = job.put(values)
        before = job.read(ptr, values.shape, np.float32)
        job.write(ptr, np.zeros_like(values))
        np.testing.assert_array_equal(before, values)
        job.write(ptr, values)
        pages = job.memory_size()
        # force several memory.grow calls (the memory may move)
        big = job.put(np.ones(3 * 2**20 // 4, dtype=np.float32))
        assert job.memory_size() > pages
        np.testing.assert_array_equal(job.read(ptr, values.shape, np.float32), values)
        assert job.call("sum", big, 3 * 2**20 // 4) == 3 * 2**20 // 4


def test_non_contiguous_and_big_endian_arrays_are_written_as_c_order_little_endian(good):
    matrix = np.arange(12, dtype=">f4").reshape(3, 4).T  # transposed, big-endian
    with good.job("layout") as job:
        ptr = job.put(matrix)
        np.testing.assert_array_equal(job.read(ptr, (4, 3), np.float32), matrix.astype(np.float32))


def test_jobs_do_not_share_state(good):
    with good.job("first") as job:
        job.alloc(4096)
        first_top = job.call("top")
        job.write(16, np.array([42], dtype=np.int32))
    with good.job("second") as job:
        assert job.call("top") == 16 < first_top
        assert job.read(16, (1,), np.int32)[0] == 0


# -- calls ----------------------------------------------------------------------------------
def test_call_checks_arguments_and_entries(good):
    with good.job("args") as job:
        with pytest.raises(ValueError, match="expected 2 arguments"):
            job.call("sum", 16)
        with pytest.raises(ValueError, match="i32"):
            job.call("sum", 2**32, 1)
        with pytest.raises(ValueError, match="int"):
            job.call("sum", 16.5, 1)
        with pytest.raises(KernelError, match="no function export 'nope'"):
            job.call("nope")
        # a v128 parameter would abort the process inside wasmtime-py: refused instead
        with pytest.raises(KernelError, match="non-numeric"):
            job.call("wide", 1, 0)
        assert job.call("sum", 16, 0) == 0.0
    with pytest.raises(KernelError, match="closed"):
        job.call("sum", 16, 0)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=2**33)
    with pytest.raises(ValueError, match="fuel"):
        Limits(fuel=0)
    with pytest.raises(ValueError, match="deadline_seconds"):
        Limits(deadline_seconds=float("nan"))


# -- refusals -------------------------------------------------------------------------------
def load(text, **kwargs):
    kwargs.setdefault("required_exports", TEST_EXPORTS)
    return KernelModule.from_bytes(text, name="hostile.wat", **kwargs)


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


# -- compile cache --------------------------------------------------------------------------
@pytest.fixture
def compile_counter(monkeypatch):
    sandbox.clear_compiled_cache()
    calls = []
    real_compile = sandbox._compile

    def counting_compile(engine, wasm):
        calls.append(len(wasm))
        return real_compile(engine, wasm)

    monkeypatch.setattr(sandbox, "_compile", counting_compile)
    yield calls
    sandbox.clear_compiled_cache()


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
    real_read_cache = sandbox._read_cache
    monkeypatch.setattr(
        sandbox, "_read_cache", lambda *args: cache_reads.append(args) or real_read_cache(*args)
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
