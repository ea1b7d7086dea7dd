"""client/sandbox/jobs.py against hostile and broken modules written as inline WAT.

Every failure test then runs a healthy job in the same process and checks its result: a
failing job must leave nothing behind.
"""

import threading
import time

import numpy as np
import pytest
import wasmtime

from client.runner.kernel_runner import KernelRunner
from client.sandbox import (
    DeadlineExceeded,
    KernelError,
    KernelModule,
    KernelStatusError,
    KernelTrapped,
    Limits,
    MemoryLimitReached,
    OutOfBounds,
    OutOfFuel,
)
from client.sandbox.jobs import Job
from tests.client.sandbox.wat import check_healthy


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


# -- put_all: every input buffer in one sf_alloc -----------------------------------------------
def _count_allocs(monkeypatch):
    calls = []
    real_call = Job.call

    def counting_call(self, entry, *args):
        if entry == "sf_alloc":
            calls.append(args)
        return real_call(self, entry, *args)

    monkeypatch.setattr(Job, "call", counting_call)
    return calls


def test_put_all_gives_the_pointers_of_one_alloc_per_buffer(monkeypatch):
    # The bundled kernels' bump allocator is the ABI's reference: one region carved into
    # 16-byte slots must put every buffer where a put/alloc per buffer would.
    module = KernelRunner().module
    rng = np.random.default_rng(0)
    arrays = [
        np.arange(7, dtype=np.int32),  # 28 bytes: a slot of 32
        rng.standard_normal((3, 5)).astype(np.float32),
        np.zeros(0, np.float32),  # empty: a 16-byte slot, like put's alloc(1)
        np.array([1.5], np.float64),
    ]
    with module.job("one by one") as job:
        expected = [job.put(arrays[0]), job.alloc(4), job.put(arrays[1]), job.put(arrays[2])]
        expected += [job.alloc(0 + 1), job.put(arrays[3])]
    calls = _count_allocs(monkeypatch)
    with module.job("together") as job:
        pointers = job.put_all([arrays[0], 4, arrays[1], arrays[2], 1, arrays[3]])
        assert pointers == expected
        assert len(calls) == 1
        for pointer, array in zip(
            [pointers[0], pointers[2], pointers[5]], [arrays[0], arrays[1], arrays[3]], strict=True
        ):
            np.testing.assert_array_equal(job.read(pointer, array.shape, array.dtype), array)
        # scratch buffers are zeroed, as sf_alloc's memory is
        assert job.read(pointers[1], (1,), np.int32)[0] == 0


@pytest.mark.parametrize(
    "item, message",
    [
        (-1, "byte count >= 0"),
        (True, "an array or a byte count"),
        (np.array([object()]), "numeric array"),
        (np.array(["text"]), "numeric array"),
    ],
)
def test_put_all_refuses_what_is_neither_an_array_nor_a_byte_count(good, item, message):
    with good.job("bad item") as job:
        with pytest.raises(ValueError, match=message):
            job.put_all([np.zeros(2, np.float32), item])
    check_healthy(good)


def test_put_all_past_the_cap_is_memory_limit_reached(good):
    with good.job("greedy", Limits(memory_bytes=2**20)) as job:
        with pytest.raises(MemoryLimitReached, match="sf_alloc"):
            job.put_all([np.zeros(2**18, np.float32), np.zeros(2**17, np.float32)])
        assert job.put_all([np.ones(4, np.float32)])[0] > 0
    check_healthy(good)


def test_a_process_forked_while_the_epoch_ticker_is_locked_still_runs_deadline_jobs(good):
    # A fork copies a lock held by another thread (the ticker ticks every 10 ms; the
    # coordinator runs kernels on more than one thread), and no thread of the child would
    # ever release it: client/sandbox/engine.py starts the child's tickers over.
    import multiprocessing

    from client.sandbox.engine import _engine, _EngineFlags

    with good.job("warm", Limits(deadline_seconds=5.0)) as job:
        assert job.call("divide", 6, 3) == 2
    ticker = _engine(_EngineFlags(fuel=False, epoch=True)).ticker
    assert ticker is not None
    parent_job = good.job("open across the fork", Limits(deadline_seconds=5.0))
    context = multiprocessing.get_context("fork")
    result = context.Queue()

    def child() -> None:
        with good.job("in the child", Limits(deadline_seconds=0.3)) as job:
            try:
                job.call("spin")
            except DeadlineExceeded:
                result.put("stopped by its deadline")
        del parent_job_copy[:]  # the parent's job, released in the child: must not count
        result.put(ticker._users)

    parent_job_copy = [parent_job]
    with ticker._lock:  # held by this thread while the child forks
        process = context.Process(target=child)
        process.start()
    try:
        assert result.get(timeout=30) == "stopped by its deadline"
        assert result.get(timeout=30) == 0
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        parent_job.close()
    assert process.exitcode == 0
