"""Inline WAT modules and helpers shared by the tests of client/sandbox/.

Every failure test then runs a healthy job in the same process and checks its result: a
failing job must leave nothing behind (``check_healthy``).
"""

import numpy as np
import pytest

from client.sandbox import KernelModule, Limits

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

# sum of n float32 at p (also the hostile harness's normal job)
SUM = """
  (func (export "sum") (param $p i32) (param $n i32) (result f32) (local $acc f32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $acc (f32.add (local.get $acc) (f32.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $acc))
"""

GOOD = f"""(module
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "sf_abi_version") (result i32) (i32.const 1))
  {SUM}
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


def load(text, **kwargs):
    """Load WAT text as a module that needs only the test exports (unless told otherwise)."""
    kwargs.setdefault("required_exports", TEST_EXPORTS)
    return KernelModule.from_bytes(text, name="hostile.wat", **kwargs)
