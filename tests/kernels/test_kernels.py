"""Every wasm export against kernels/reference.py, through client.sandbox, in both builds.

A registry (KERNELS) says for each kernel how to make inputs, run the export and run the
reference; ``check_kernel`` does the rest, so each case below is one line. Sizes sit around the
register tile (4 rows, 8 columns, k unrolled by 4; the 6-row relaxed-FMA tile is covered too) and
the cache blocks (k 256, rows 64, columns 512), where packing edges live. Failures name the
kernel, the case, the seed, the worst index and the input values there.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from client.sandbox import Job, KernelModule, KernelStatusError, Limits, MemoryLimitReached
from kernels import reference as ref
from kernels.spec import ModelSpec

EPS32 = float(np.finfo(np.float32).eps)
Arrays = dict[str, np.ndarray]


def gemm_tolerance(depth: int, magnitude: np.ndarray) -> np.ndarray:
    """Forward error bound of a float32 dot product of length ``depth``, for the kernel and the
    reference each: ``depth * eps * sum|a_i b_i|`` (Higham's gamma_n), twice."""
    return 2.0 * (depth + 2) * EPS32 * magnitude + 1e-30


def elementwise_tolerance(value: np.ndarray) -> np.ndarray:
    return 4.0 * EPS32 * np.abs(np.nan_to_num(value)) + 1e-30


# -- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    """How to test one export: inputs, the wasm run, the reference, the tolerance per output."""

    make: Callable[[np.random.Generator, dict[str, Any]], Arrays]
    run: Callable[[Job, Arrays, dict[str, Any]], Arrays]
    expect: Callable[[Arrays, dict[str, Any]], Arrays]
    tolerance: Callable[[Arrays, Arrays, dict[str, Any]], Arrays]
    special_input: str  # where check_kernel plants NaN/Inf for the parity cases


def normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _sgemm_make(rng, case):
    m, n, k = case["m"], case["n"], case["k"]
    return {
        "a": normal(rng, *((k, m) if case["trans_a"] else (m, k))),
        "b": normal(rng, *((n, k) if case["trans_b"] else (k, n))),
        "c": normal(rng, m, n),
    }


def _sgemm_run(job, inputs, case):
    a, b, c = (job.put(inputs[name]) for name in ("a", "b", "c"))
    flags = (case["trans_a"], case["trans_b"])
    job.call("sf_sgemm", *flags, case["m"], case["n"], case["k"], a, b, c, case["accumulate"])
    return {"c": job.read(c, (case["m"], case["n"]), np.float32)}


def _sgemm_expect(inputs, case):
    flags = {"trans_a": bool(case["trans_a"]), "trans_b": bool(case["trans_b"])}
    c = ref.sgemm(
        inputs["a"], inputs["b"], inputs["c"], accumulate=bool(case["accumulate"]), **flags
    )
    return {"c": c}


def _sgemm_tolerance(inputs, expected, case):
    flags = {"trans_a": bool(case["trans_a"]), "trans_b": bool(case["trans_b"])}
    magnitude = ref.sgemm(np.abs(inputs["a"]), np.abs(inputs["b"]), **flags)
    if case["accumulate"]:
        magnitude = magnitude + np.abs(inputs["c"])
    return {"c": gemm_tolerance(case["k"], magnitude)}


def _dense_make(rng, case):
    batch, in_dim, out_dim = case["batch"], case["in_dim"], case["out_dim"]
    return {
        "x": normal(rng, batch, in_dim),
        "w": normal(rng, in_dim, out_dim),
        "b": normal(rng, out_dim),
        "dy": normal(rng, batch, out_dim),
    }


def _dense_forward_run(job, inputs, case):
    x, w, b = (job.put(inputs[name]) for name in ("x", "w", "b"))
    y = job.put(np.zeros((case["batch"], case["out_dim"]), np.float32))
    job.call("sf_dense_forward", x, w, b, y, case["batch"], case["in_dim"], case["out_dim"])
    return {"y": job.read(y, (case["batch"], case["out_dim"]), np.float32)}


def _dense_forward_tolerance(inputs, expected, case):
    magnitude = np.abs(inputs["x"]) @ np.abs(inputs["w"]) + np.abs(inputs["b"])
    return {"y": gemm_tolerance(case["in_dim"], magnitude)}


def _dense_backward_run(job, inputs, case):
    batch, in_dim, out_dim = case["batch"], case["in_dim"], case["out_dim"]
    x, w, dy = (job.put(inputs[name]) for name in ("x", "w", "dy"))
    # NaN-filled outputs: the kernel must overwrite every element, not add to it.
    dx = job.put(np.full((batch, in_dim), np.nan, np.float32)) if case["need_dx"] else 0
    dw = job.put(np.full((in_dim, out_dim), np.nan, np.float32))
    db = job.put(np.full(out_dim, np.nan, np.float32))
    job.call("sf_dense_backward", x, w, dy, dx, dw, db, batch, in_dim, out_dim)
    out = {
        "dw": job.read(dw, (in_dim, out_dim), np.float32),
        "db": job.read(db, (out_dim,), np.float32),
    }
    if case["need_dx"]:
        out["dx"] = job.read(dx, (batch, in_dim), np.float32)
    return out


def _dense_backward_expect(inputs, case):
    dx, dw, db = ref.dense_backward(inputs["x"], inputs["w"], inputs["dy"], need_dx=case["need_dx"])
    return {"dw": dw, "db": db} | ({"dx": dx} if case["need_dx"] else {})


def _dense_backward_tolerance(inputs, expected, case):
    x, w, dy = (np.abs(inputs[name]) for name in ("x", "w", "dy"))
    return {
        "dw": gemm_tolerance(case["batch"], x.T @ dy),
        "db": gemm_tolerance(case["batch"], dy.sum(axis=0)),
        "dx": gemm_tolerance(case["out_dim"], dy @ w.T),
    }


def _relu_make(rng, case):
    return {"x": normal(rng, case["n"]), "dy": normal(rng, case["n"])}


def _relu_run(job, inputs, case):
    x, y = job.put(inputs["x"]), job.put(np.zeros(case["n"], np.float32))
    job.call("sf_relu", x, y, case["n"])
    dx = job.put(np.zeros(case["n"], np.float32))
    job.call("sf_relu_backward", y, job.put(inputs["dy"]), dx, case["n"])
    return {"y": job.read(y, case["n"], np.float32), "dx": job.read(dx, case["n"], np.float32)}


def _relu_expect(inputs, case):
    y = ref.relu(inputs["x"])
    return {"y": y, "dx": ref.relu_backward(y, inputs["dy"])}


def _softmax_make(rng, case):
    logits = normal(rng, case["batch"], case["classes"]) * 4
    return {
        "logits": logits,
        "labels": rng.integers(0, case["classes"], case["batch"]).astype(np.int32),
    }


def _softmax_run(job, inputs, case):
    batch, classes = case["batch"], case["classes"]
    logits, labels = job.put(inputs["logits"]), job.put(inputs["labels"])
    dlogits = job.put(np.zeros((batch, classes), np.float32)) if case["need_grad"] else 0
    loss = job.call("sf_softmax_xent", logits, labels, batch, classes, dlogits)
    out = {"loss": np.float32(loss)}
    if case["need_grad"]:
        out["dlogits"] = job.read(dlogits, (batch, classes), np.float32)
    return out


def _softmax_expect(inputs, case):
    loss, dlogits = ref.softmax_xent(
        inputs["logits"], inputs["labels"], need_grad=case["need_grad"]
    )
    return {"loss": np.float32(loss)} | ({"dlogits": dlogits} if case["need_grad"] else {})


def _softmax_tolerance(inputs, expected, case):
    # exp/log are within an ulp of the correctly rounded value in both; sums of `classes` terms.
    depth = case["classes"] + 8
    return {
        "loss": gemm_tolerance(depth, np.float32(1.0) + np.abs(np.nan_to_num(expected["loss"]))),
        "dlogits": gemm_tolerance(depth, np.full(inputs["logits"].shape, 1.0 / case["batch"])),
    }


def _sgd_make(rng, case):
    return {name: normal(rng, case["n"]) for name in ("w", "grad", "w_global")}


def _sgd_run(job, inputs, case):
    w, grad = job.put(inputs["w"]), job.put(inputs["grad"])
    w_global = job.put(inputs["w_global"]) if case["mu"] else 0
    job.call("sf_sgd_update", w, grad, w_global, case["n"], case["lr"], case["mu"])
    return {"w": job.read(w, case["n"], np.float32)}


def _sgd_expect(inputs, case):
    w_global = inputs["w_global"] if case["mu"] else None
    return {"w": ref.sgd_update(inputs["w"], inputs["grad"], w_global, case["lr"], case["mu"])}


def _model_make(rng, case):
    spec = ModelSpec.parse(case["model"])
    params = spec.flatten(spec.init_params(seed=int(rng.integers(2**31))))
    params += rng.uniform(-0.05, 0.05, params.shape).astype(np.float32)  # non-zero biases
    return {
        "spec": spec.encode(),
        "params": params,
        "x": normal(rng, case["n"], spec.input_dim),
        "labels": rng.integers(0, spec.num_classes, case["n"]).astype(np.int32),
    }


def _model_run(job, inputs, case):
    spec = ModelSpec.parse(case["model"])
    n, classes = case["n"], spec.num_classes
    pointers = [job.put(inputs[name]) for name in ("spec", "params", "x")]
    labels = job.put(inputs["labels"])
    logits = job.put(np.zeros((n, classes), np.float32))
    job.call_status("sf_model_forward", *pointers, n, logits)
    grads = job.put(np.full(spec.num_params(), np.nan, np.float32))
    loss = job.put(np.zeros(1, np.float32))
    job.call_status("sf_model_loss_grad", *pointers, labels, n, grads, loss)
    evaluation = job.put(np.zeros(2, np.float32))
    job.call_status("sf_evaluate", *pointers, labels, n, evaluation)
    loss_and_accuracy = job.read(evaluation, 2, np.float32)
    return {
        "logits": job.read(logits, (n, classes), np.float32),
        "loss": job.read(loss, 1, np.float32),
        "grads": job.read(grads, spec.num_params(), np.float32),
        "eval_loss": loss_and_accuracy[:1],
        "accuracy": loss_and_accuracy[1:],
    }


def _model_expect(inputs, case):
    spec, params, x, labels = (inputs[name] for name in ("spec", "params", "x", "labels"))
    loss, grads = ref.model_loss_grad(spec, params, x, labels)
    eval_loss, accuracy = ref.evaluate(spec, params, x, labels)
    return {
        "logits": ref.model_forward(spec, params, x),
        "loss": np.float32([loss]),
        "grads": grads,
        "eval_loss": np.float32([eval_loss]),
        "accuracy": np.float32([accuracy]),
    }


def _model_tolerance(inputs, expected, case):
    # Several float32 GEMMs in a row: the bound of the widest one, on the scale of each output.
    spec = ModelSpec.parse(case["model"])
    depth = max(max(spec.dims()), case["n"]) * len(spec.layers)
    tolerance = {}
    for name, value in expected.items():
        scale = np.max(np.abs(np.nan_to_num(value)), initial=0.0) + np.abs(np.nan_to_num(value))
        tolerance[name] = gemm_tolerance(depth, scale)
    tolerance["accuracy"] = np.zeros(1)  # argmax: exact
    return tolerance


KERNELS: dict[str, Kernel] = {
    "sgemm": Kernel(_sgemm_make, _sgemm_run, _sgemm_expect, _sgemm_tolerance, "a"),
    "dense_forward": Kernel(
        _dense_make,
        _dense_forward_run,
        lambda inputs, case: {"y": ref.dense_forward(inputs["x"], inputs["w"], inputs["b"])},
        _dense_forward_tolerance,
        "x",
    ),
    "dense_backward": Kernel(
        _dense_make, _dense_backward_run, _dense_backward_expect, _dense_backward_tolerance, "dy"
    ),
    "relu": Kernel(
        _relu_make,
        _relu_run,
        _relu_expect,
        lambda inputs, expected, case: {k: np.zeros(case["n"]) for k in ("y", "dx")},  # exact
        "x",
    ),
    "softmax_xent": Kernel(
        _softmax_make, _softmax_run, _softmax_expect, _softmax_tolerance, "logits"
    ),
    "sgd_update": Kernel(
        _sgd_make,
        _sgd_run,
        _sgd_expect,
        lambda inputs, expected, case: {"w": elementwise_tolerance(expected["w"])},
        "grad",
    ),
    "model": Kernel(_model_make, _model_run, _model_expect, _model_tolerance, "x"),
}


def plant_special(array: np.ndarray, special: str, rng: np.random.Generator) -> None:
    """Put NaN, +inf or -inf at a few seeded positions (the first element always)."""
    values = {"nan": [np.nan], "inf": [np.inf, -np.inf]}[special]
    flat = array.reshape(-1)
    positions = {0, *rng.integers(0, flat.size, 2).tolist()}
    for index, position in enumerate(sorted(positions)):
        flat[position] = values[index % len(values)]


def check_kernel(
    module: KernelModule, name: str, *, seed: int = 0, special: str | None = None, **case: Any
) -> None:
    """Run kernel ``name`` on a seeded random case in wasm and in the reference; compare.

    ``special`` ("nan" or "inf") plants non-finite values in the kernel's special input: the
    NaN/Inf pattern of every output must then match the reference's exactly.
    """
    kernel = KERNELS[name]
    # crc32, not hash(): str hashes change from process to process, and a failing case must
    # replay with the same inputs.
    rng = np.random.default_rng([seed, zlib.crc32(repr(sorted(case.items())).encode())])
    inputs = kernel.make(rng, case)
    if special:
        plant_special(inputs[kernel.special_input], special, rng)
    with module.job(f"check-{name}") as job:
        got = kernel.run(job, inputs, case)
    with np.errstate(all="ignore"):
        expected = kernel.expect(inputs, case)
        tolerance = kernel.tolerance(inputs, expected, case)
    label = f"{name} {case} seed={seed} special={special} build={module.name.rsplit('/', 1)[-1]}"
    assert set(got) == set(expected), f"{label}: outputs {sorted(got)} != {sorted(expected)}"
    if special:
        # The planted values must reach an output, or the parity check would be empty.
        assert any(not np.isfinite(want).all() for want in expected.values()), label
    for output, want in expected.items():
        have = np.asarray(got[output], dtype=np.float32)
        want = np.asarray(want, dtype=np.float32)
        assert have.shape == want.shape, f"{label}: {output} shape {have.shape} != {want.shape}"
        nonfinite_differ = (
            (np.isnan(have) != np.isnan(want))
            | (np.isinf(have) & np.isinf(want) & (have != want))
            | (np.isinf(have) != np.isinf(want))
        )
        finite = np.isfinite(have) & np.isfinite(want)
        with np.errstate(all="ignore"):
            excess = np.where(
                finite, np.abs(have.astype(np.float64) - want) - tolerance[output], 0.0
            )
        bad = nonfinite_differ | (excess > 0)
        if bad.any():
            where = np.unravel_index(np.argmax(bad), have.shape)
            shown = {k: v.reshape(-1)[:6] for k, v in inputs.items()}
            pytest.fail(
                f"{label}: {output} differs at {bad.sum()} of {bad.size} elements; first at "
                f"{tuple(int(i) for i in where)}: wasm {have[where]!r}, reference {want[where]!r}"
                f", tolerance {np.broadcast_to(tolerance[output], have.shape)[where]:.3g}; "
                f"inputs start {shown}"
            )


# -- the cases: one line each -----------------------------------------------------------------
# (m, n, k): 1, tile-1, tile, tile+1 for rows (4, and 6 of the 6x8 relaxed-FMA tile that spilled),
# columns (8) and the k unroll (4); odd shapes; and sizes that cross the k block (256), the row
# block (64), the column block (512).
GEMM_SIZES = [
    (1, 1, 1),
    (3, 7, 3),
    (4, 8, 4),
    (5, 9, 5),
    (6, 8, 8),
    (7, 16, 7),
    (13, 23, 17),
    (31, 10, 64),
    (33, 127, 255),
    (12, 8, 256),
    (7, 9, 257),
    (65, 24, 33),
    (97, 17, 11),
    (9, 513, 6),
]
GEMM_FLAGS = [(ta, tb, acc) for ta in (0, 1) for tb in (0, 1) for acc in (0, 1)]

CASES = [
    ("dense_forward", {"batch": 1, "in_dim": 1, "out_dim": 1}),
    ("dense_forward", {"batch": 32, "in_dim": 64, "out_dim": 32}),
    ("dense_forward", {"batch": 7, "in_dim": 13, "out_dim": 10}),
    ("dense_forward", {"batch": 97, "in_dim": 300, "out_dim": 9}),
    ("dense_forward", {"batch": 3, "in_dim": 0, "out_dim": 5}),
    ("dense_backward", {"batch": 1, "in_dim": 1, "out_dim": 1, "need_dx": True}),
    ("dense_backward", {"batch": 32, "in_dim": 64, "out_dim": 32, "need_dx": True}),
    ("dense_backward", {"batch": 5, "in_dim": 7, "out_dim": 10, "need_dx": False}),
    ("dense_backward", {"batch": 259, "in_dim": 9, "out_dim": 6, "need_dx": True}),
    ("dense_backward", {"batch": 3, "in_dim": 5, "out_dim": 19, "need_dx": True}),
    ("dense_backward", {"batch": 0, "in_dim": 5, "out_dim": 6, "need_dx": True}),
    ("relu", {"n": 1}),
    ("relu", {"n": 3}),
    ("relu", {"n": 4}),
    ("relu", {"n": 5}),
    ("relu", {"n": 16}),
    ("relu", {"n": 17}),
    ("relu", {"n": 1001}),
    ("softmax_xent", {"batch": 1, "classes": 2, "need_grad": True}),
    ("softmax_xent", {"batch": 32, "classes": 10, "need_grad": True}),
    ("softmax_xent", {"batch": 7, "classes": 3, "need_grad": False}),
    ("softmax_xent", {"batch": 5, "classes": 101, "need_grad": True}),
    ("sgd_update", {"n": 1, "lr": 0.1, "mu": 0.0}),
    ("sgd_update", {"n": 7, "lr": 0.05, "mu": 0.01}),
    ("sgd_update", {"n": 8, "lr": 1.0, "mu": 0.5}),
    ("sgd_update", {"n": 1001, "lr": 0.01, "mu": 0.0}),
    ("sgd_update", {"n": 35, "lr": 0.01, "mu": 0.1}),
    ("model", {"model": "logreg:1-2", "n": 1}),
    ("model", {"model": "logreg:60-10", "n": 33}),
    ("model", {"model": "mlp:64-32-10", "n": 32}),
    ("model", {"model": "mlp:13-7-5-3", "n": 17}),
    ("model", {"model": "mlp:5-9-9-9-4", "n": 300}),
    ("model", {"model": "mlp:784-128-10", "n": 9}),
]


@pytest.mark.parametrize(("m", "n", "k"), GEMM_SIZES)
@pytest.mark.parametrize(("trans_a", "trans_b", "accumulate"), GEMM_FLAGS)
def test_sgemm_matches_reference(kernel_module, m, n, k, trans_a, trans_b, accumulate):
    check_kernel(
        kernel_module, "sgemm", m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b,
        accumulate=accumulate,
    )  # fmt: skip


@pytest.mark.parametrize(("name", "case"), CASES)
def test_kernel_matches_reference(kernel_module, name, case):
    check_kernel(kernel_module, name, **case)


NONFINITE_CASES = [
    ("sgemm", {"m": 7, "n": 9, "k": 5, "trans_a": 0, "trans_b": 0, "accumulate": 1}),
    ("sgemm", {"m": 6, "n": 17, "k": 12, "trans_a": 1, "trans_b": 1, "accumulate": 0}),
    ("dense_forward", {"batch": 9, "in_dim": 6, "out_dim": 10}),
    ("dense_backward", {"batch": 9, "in_dim": 6, "out_dim": 10, "need_dx": True}),
    ("relu", {"n": 13}),
    ("softmax_xent", {"batch": 9, "classes": 10, "need_grad": True}),
    ("sgd_update", {"n": 13, "lr": 0.1, "mu": 0.2}),
    ("model", {"model": "mlp:8-6-3", "n": 10}),
]


@pytest.mark.parametrize("special", ["nan", "inf"])
@pytest.mark.parametrize(("name", "case"), NONFINITE_CASES)
def test_nan_and_inf_propagate_as_in_the_reference(kernel_module, name, case, special):
    check_kernel(kernel_module, name, special=special, **case)


# -- memory, status codes ---------------------------------------------------------------------
def test_abi_version_and_aligned_zeroed_allocations(kernel_module):
    with kernel_module.job("alloc") as job:
        assert job.call("sf_abi_version") == 1
        first = job.put(np.full(5, 7, np.int32))
        second = job.alloc(3)
        assert first % 16 == 0 and second % 16 == 0 and second >= first + 20
        job.call("sf_heap_reset")
        # After a reset the same bytes are handed out again, zero-filled.
        again = job.alloc(20)
        assert again == first
        assert not job.read(again, 5, np.int32).any()
        assert job.call("sf_alloc", -1) == 0


def test_alloc_returns_zero_at_the_hosts_memory_cap(kernel_module):
    with kernel_module.job("cap", Limits(memory_bytes=4 * 2**20)) as job:
        assert job.call("sf_alloc", 8 * 2**20) == 0
        assert job.alloc(2**16) > 0  # a refused request leaves the heap usable


def test_alloc_never_passes_the_modules_own_heap_cap(kernel_module):
    with kernel_module.job("heap-cap", Limits(memory_bytes=2**32)) as job:
        assert job.call("sf_alloc", 2**31 - 1) == 0
        assert job.memory_size() < 2**30


def _model_pointers(job: Job, words: np.ndarray, n: int = 4, input_dim: int = 3):
    rng = np.random.default_rng(0)
    params = job.put(normal(rng, 64))
    x = job.put(normal(rng, n, input_dim))
    labels = job.put(np.zeros(n, np.int32))
    return job.put(np.asarray(words, np.int64).astype(np.uint32).view(np.int32)), params, x, labels


BAD_SPECS = [
    [0x12345678, 3, 1, 1, 1, 2],  # magic
    [ref.SPEC_MAGIC, 0, 1, 1, 1, 2],  # input_dim <= 0
    [ref.SPEC_MAGIC, 3, 0, 1, 1, 2],  # no layers
    [ref.SPEC_MAGIC, 3, 65, 1, 1, 2],  # too many layers
    [ref.SPEC_MAGIC, 3, 1, 9, 0, 0],  # unknown kind
    [ref.SPEC_MAGIC, 3, 1, 1, 1, 0],  # out_dim <= 0
    [ref.SPEC_MAGIC, 3, 1, 1, 2, 2, 2],  # dense with two words
    [ref.SPEC_MAGIC, 3, 1, 1, 1, 2**30],  # weights past the heap cap
]


@pytest.mark.parametrize("words", BAD_SPECS)
def test_every_model_entry_refuses_a_bad_spec(kernel_module, words):
    with pytest.raises(ref.ReferenceStatusError):
        ref.decode_spec(np.asarray(words, np.int64).astype(np.uint32).view(np.int32))
    with kernel_module.job("bad-spec") as job:
        spec, params, x, labels = _model_pointers(job, words)
        out = job.alloc(64)
        calls = {
            "sf_model_forward": (spec, params, x, 4, out),
            "sf_model_loss_grad": (spec, params, x, labels, 4, job.alloc(256), out),
            "sf_evaluate": (spec, params, x, labels, 4, out),
            "sf_train": (spec, params, 0, x, labels, 4, 1, 2, 0.1, 0.0, 0, out),
        }
        for entry, args in calls.items():
            with pytest.raises(KernelStatusError) as info:
                job.call_status(entry, *args)
            assert info.value.status == ref.SF_BAD_SPEC and info.value.entry == entry


@pytest.mark.parametrize(
    ("entry", "change"),
    [
        ("sf_model_forward", {"n": 0}),
        ("sf_model_loss_grad", {"n": -1}),
        ("sf_model_loss_grad", {"label": 2}),
        ("sf_evaluate", {"label": -1}),
        ("sf_train", {"label": 5}),
        ("sf_train", {"epochs": -1}),
        ("sf_train", {"batch_size": 0}),
        ("sf_train", {"mu": 0.5}),  # proximal term without global params
    ],
)
def test_model_entries_refuse_bad_arguments(kernel_module, entry, change):
    spec_words = ModelSpec.parse("logreg:3-2").encode()
    with kernel_module.job("bad-argument") as job:
        spec, params, x, labels = _model_pointers(job, spec_words)
        job.write(labels, np.array([0, 1, change.get("label", 0), 1], np.int32))
        n, out = change.get("n", 4), job.alloc(64)
        calls = {
            "sf_model_forward": (spec, params, x, n, out),
            "sf_model_loss_grad": (spec, params, x, labels, n, job.alloc(64), out),
            "sf_evaluate": (spec, params, x, labels, n, out),
            "sf_train": (
                spec, params, 0, x, labels, n, change.get("epochs", 1),
                change.get("batch_size", 2), 0.1, change.get("mu", 0.0), 0, out,
            ),
        }  # fmt: skip
        with pytest.raises(KernelStatusError) as info:
            job.call_status(entry, *calls[entry])
        assert info.value.status == ref.SF_BAD_ARGUMENT


def test_scratch_that_does_not_fit_is_status_no_memory_and_is_released(kernel_module):
    spec = ModelSpec.parse("mlp:4-4096-2")
    n = 1024  # activations alone: 2 x 1024 x 4096 floats = 32 MiB
    with kernel_module.job("no-memory", Limits(memory_bytes=16 * 2**20)) as job:
        pointers = [job.put(a) for a in (spec.encode(), spec.flatten(spec.init_params(1)))]
        x, labels = job.put(np.zeros((n, 4), np.float32)), job.put(np.zeros(n, np.int32))
        grads, loss = job.alloc(4 * spec.num_params()), job.alloc(4)
        heap_before = job.alloc(16)
        with pytest.raises(MemoryLimitReached):
            job.call_status("sf_model_loss_grad", *pointers, x, labels, n, grads, loss)
        # The failed entry gave back what it had taken: the next allocation follows on.
        assert job.alloc(16) == heap_before + 16
        # Forward-only entries work in chunks, so they still fit.
        out = job.alloc(8)
        job.call_status("sf_evaluate", *pointers, x, labels, n, out)


def test_sgemm_without_accumulate_overwrites_nan_in_c(kernel_module):
    with kernel_module.job("overwrite") as job:
        a, b = job.put(np.ones((5, 3), np.float32)), job.put(np.ones((3, 9), np.float32))
        c = job.put(np.full((5, 9), np.nan, np.float32))
        job.call("sf_sgemm", 0, 0, 5, 9, 3, a, b, c, 0)
        assert np.array_equal(job.read(c, (5, 9), np.float32), np.full((5, 9), 3.0))
        job.write(c, np.full((5, 9), np.nan, np.float32))
        job.call("sf_sgemm", 0, 0, 5, 9, 0, a, b, c, 0)  # k = 0: an empty sum
        assert not job.read(c, (5, 9), np.float32).any()


def test_elementwise_kernels_work_in_place(kernel_module):
    rng = np.random.default_rng(5)
    x, dy = normal(rng, 37), normal(rng, 37)
    with kernel_module.job("in-place") as job:
        x_ptr, dy_ptr = job.put(x), job.put(dy)
        job.call("sf_relu", x_ptr, x_ptr, 37)
        y = job.read(x_ptr, 37, np.float32)
        job.call("sf_relu_backward", x_ptr, dy_ptr, dy_ptr, 37)
        np.testing.assert_array_equal(y, ref.relu(x))
        np.testing.assert_array_equal(job.read(dy_ptr, 37, np.float32), ref.relu_backward(y, dy))


# A leading ReLU, two ReLUs in a row and a ReLU last: layer walks the MLPs never take.
ODD_SPEC = np.array(
    [ref.SPEC_MAGIC, 5, 7, 2, 0, 1, 1, 6, 2, 0, 2, 0, 1, 1, 4, 1, 1, 3, 2, 0], dtype=np.uint32
).view(np.int32)


def test_model_entries_on_unusual_layer_sequences(kernel_module):
    model = ref.decode_spec(ODD_SPEC)
    rng = np.random.default_rng(8)
    params = normal(rng, model.num_params)
    x, labels = normal(rng, 11, 5), rng.integers(0, 3, 11).astype(np.int32)
    with kernel_module.job("odd-spec") as job:
        spec_ptr, params_ptr, x_ptr = job.put(ODD_SPEC), job.put(params), job.put(x)
        labels_ptr, out = job.put(labels), job.alloc(4 * 64)
        grads = job.alloc(4 * model.num_params)
        job.call_status("sf_model_forward", spec_ptr, params_ptr, x_ptr, 11, out)
        logits = job.read(out, (11, 3), np.float32)
        job.call_status(
            "sf_model_loss_grad", spec_ptr, params_ptr, x_ptr, labels_ptr, 11, grads, out
        )
        loss = job.read(out, 1, np.float32)[0]
        grad_values = job.read(grads, model.num_params, np.float32)
        job.call_status(
            "sf_train", spec_ptr, params_ptr, 0, x_ptr, labels_ptr, 11, 2, 4, 0.1, 0.0, 7, out
        )
        trained = job.read(params_ptr, model.num_params, np.float32)
    expected_loss, expected_grads = ref.model_loss_grad(ODD_SPEC, params, x, labels)
    expected_trained, _ = ref.train(
        ODD_SPEC, params, None, x, labels, epochs=2, batch_size=4, lr=0.1, mu=0.0, seed=7
    )
    np.testing.assert_allclose(logits, ref.model_forward(ODD_SPEC, params, x), atol=1e-5)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_values, expected_grads, atol=1e-5)
    np.testing.assert_allclose(trained, expected_trained, atol=1e-5)
