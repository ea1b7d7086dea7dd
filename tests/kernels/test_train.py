"""The fused sf_train against the reference training loop: same shuffle, same steps, float32."""

from __future__ import annotations

import numpy as np
import pytest

from client.sandbox import KernelModule
from kernels import reference as ref
from kernels.spec import ModelSpec

# After up to a few hundred float32 SGD steps the two runs drift apart by rounding only; the
# observed gap is ~1e-7, parameters are O(0.1..1).
PARAM_ATOL = 2e-5
LOSS_RTOL = 2e-5


def make_data(spec: ModelSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, n])
    x = rng.standard_normal((n, spec.input_dim)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, n).astype(np.int32)
    return x, labels


def run_sf_train(
    module: KernelModule,
    spec: ModelSpec,
    params: np.ndarray,
    global_params: np.ndarray | None,
    x: np.ndarray,
    labels: np.ndarray,
    **options,
) -> tuple[np.ndarray, float]:
    with module.job("train") as job:
        params_ptr = job.put(params)
        global_ptr = job.put(global_params) if global_params is not None else 0
        loss = job.put(np.zeros(1, np.float32))
        job.call_status(
            "sf_train", job.put(spec.encode()), params_ptr, global_ptr, job.put(x),
            job.put(labels), len(labels), options["epochs"], options["batch_size"],
            options["lr"], options["mu"], options["seed"], loss,
        )  # fmt: skip
        trained = job.read(params_ptr, params.shape, np.float32)
        return trained, float(job.read(loss, 1, np.float32)[0])


TRAIN_CASES = [
    ("logreg:6-3", 10, {"epochs": 1, "batch_size": 4, "lr": 0.1, "mu": 0.0, "seed": 0}),
    ("mlp:64-32-10", 100, {"epochs": 3, "batch_size": 16, "lr": 0.05, "mu": 0.1, "seed": 12345}),
    ("mlp:64-32-10", 64, {"epochs": 2, "batch_size": 32, "lr": 0.05, "mu": 0.0, "seed": 7}),
    ("mlp:13-7-5-3", 37, {"epochs": 4, "batch_size": 5, "lr": 0.2, "mu": 0.5, "seed": 2**63 + 5}),
    ("mlp:5-9-2", 11, {"epochs": 2, "batch_size": 50, "lr": 0.1, "mu": 0.0, "seed": 3}),
    ("mlp:3-4-4-4-3", 1, {"epochs": 5, "batch_size": 1, "lr": 0.1, "mu": 0.01, "seed": 1}),
    ("mlp:784-128-10", 40, {"epochs": 1, "batch_size": 32, "lr": 0.01, "mu": 0.01, "seed": 9}),
]


@pytest.mark.parametrize(("model", "n", "options"), TRAIN_CASES)
def test_sf_train_equals_the_reference_loop(kernel_module, model, n, options):
    spec = ModelSpec.parse(model)
    params = spec.flatten(spec.init_params(seed=n))
    x, labels = make_data(spec, n, seed=1)
    global_params = params.copy() if options["mu"] else None
    trained, loss = run_sf_train(kernel_module, spec, params, global_params, x, labels, **options)
    expected, expected_loss = ref.train(spec, params, global_params, x, labels, **options)
    assert not np.allclose(trained, params), "training changed nothing: the check would be empty"
    np.testing.assert_allclose(trained, expected, rtol=0, atol=PARAM_ATOL, err_msg=model)
    np.testing.assert_allclose(loss, expected_loss, rtol=LOSS_RTOL, err_msg=model)


def test_proximal_term_pulls_towards_global_params_that_differ(kernel_module):
    spec = ModelSpec.parse("mlp:8-6-3")
    params = spec.flatten(spec.init_params(seed=1))
    global_params = spec.flatten(spec.init_params(seed=2))
    x, labels = make_data(spec, 30, seed=4)
    options = {"epochs": 2, "batch_size": 7, "lr": 0.1, "mu": 1.0, "seed": 5}
    trained, loss = run_sf_train(kernel_module, spec, params, global_params, x, labels, **options)
    expected, expected_loss = ref.train(spec, params, global_params, x, labels, **options)
    np.testing.assert_allclose(trained, expected, rtol=0, atol=PARAM_ATOL)
    np.testing.assert_allclose(loss, expected_loss, rtol=LOSS_RTOL)
    without_prox, _ = ref.train(spec, params, None, x, labels, **{**options, "mu": 0.0})
    assert np.linalg.norm(trained - global_params) < np.linalg.norm(without_prox - global_params)


def test_the_seed_decides_the_shuffle(kernel_module):
    spec = ModelSpec.parse("logreg:4-3")
    params = spec.flatten(spec.init_params(seed=1))
    x, labels = make_data(spec, 20, seed=2)
    options = {"epochs": 1, "batch_size": 3, "lr": 0.5, "mu": 0.0}
    first, _ = run_sf_train(kernel_module, spec, params, None, x, labels, seed=1, **options)
    again, _ = run_sf_train(kernel_module, spec, params, None, x, labels, seed=1, **options)
    other, _ = run_sf_train(kernel_module, spec, params, None, x, labels, seed=2, **options)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_zero_epochs_leave_params_unchanged_with_zero_loss(kernel_module):
    spec = ModelSpec.parse("mlp:4-5-2")
    params = spec.flatten(spec.init_params(seed=1))
    x, labels = make_data(spec, 6, seed=2)
    options = {"epochs": 0, "batch_size": 2, "lr": 0.5, "mu": 0.0, "seed": 0}
    trained, loss = run_sf_train(kernel_module, spec, params, None, x, labels, **options)
    assert np.array_equal(trained, params) and loss == 0.0


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_non_finite_data_poisons_training_exactly_as_in_the_reference(kernel_module, special):
    spec = ModelSpec.parse("mlp:6-5-3")
    params = spec.flatten(spec.init_params(seed=1))
    x, labels = make_data(spec, 12, seed=3)
    x[5, 2] = special
    options = {"epochs": 2, "batch_size": 4, "lr": 0.1, "mu": 0.0, "seed": 11}
    trained, loss = run_sf_train(kernel_module, spec, params, None, x, labels, **options)
    with np.errstate(all="ignore"):
        expected, expected_loss = ref.train(spec, params, None, x, labels, **options)
    assert np.isnan(expected).any(), "the planted value must reach the parameters"
    np.testing.assert_array_equal(np.isnan(trained), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(trained), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(trained[finite], expected[finite], rtol=0, atol=PARAM_ATOL)
    assert np.isnan(loss) == np.isnan(expected_loss)


def test_huge_learning_rate_overflows_to_the_same_non_finite_pattern(kernel_module):
    spec = ModelSpec.parse("logreg:5-3")
    params = spec.flatten(spec.init_params(seed=1))
    x, labels = make_data(spec, 16, seed=5)
    x *= 1e18
    options = {"epochs": 3, "batch_size": 4, "lr": 1e20, "mu": 0.0, "seed": 2}
    trained, loss = run_sf_train(kernel_module, spec, params, None, x, labels, **options)
    with np.errstate(all="ignore"):
        expected, expected_loss = ref.train(spec, params, None, x, labels, **options)
    assert not np.isfinite(expected).all()
    np.testing.assert_array_equal(np.isnan(trained), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(trained), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(trained), np.isneginf(expected))
    assert np.isfinite(loss) == np.isfinite(expected_loss)
