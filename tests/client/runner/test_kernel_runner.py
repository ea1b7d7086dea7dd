"""client/runner/ (KernelRunner): the kernels in the sandbox agree with kernels/reference.py.

Both builds of the kernel (relaxed-SIMD FMA and plain SIMD128) run every case. The wasm
sums in another order than numpy (SIMD lanes, FMA), so float32 results agree to a tolerance,
not bit for bit; the minibatch order (splitmix64 shuffle) must be identical, which the train
comparison checks over several epochs.
"""

import numpy as np
import pytest

from client.runner import EvalResult, KernelRunner, TrainResult, default_kernel_path
from client.sandbox import KernelModule, Limits, MemoryLimitReached, OutOfFuel
from kernels import reference
from kernels.spec import ModelSpec

SPECS = [ModelSpec.parse("logreg:12-3"), ModelSpec.parse("mlp:20-16-8-5")]
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module", params=[True, False], ids=["relaxed", "simd128"])
def runner(request):
    return KernelRunner(KernelModule.from_file(default_kernel_path(relaxed_simd=request.param)))


def make_data(spec, num_examples, seed):
    rng = np.random.default_rng([seed, num_examples])
    x = rng.normal(size=(num_examples, spec.input_dim)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=num_examples)
    return x, y


def reference_params(spec, params):
    return spec.flatten(params)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("num_examples", [1, 7, 33])
def test_forward_matches_the_reference(runner, spec, num_examples):
    params = spec.init_params(seed=1)
    x, _ = make_data(spec, num_examples, seed=2)
    logits = runner.forward(spec, params, x)
    expected = reference.model_forward(spec, spec.flatten(params), x)
    assert logits.shape == (num_examples, spec.num_classes) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_loss_and_gradient_match_the_reference(runner, spec):
    params = spec.init_params(seed=3)
    x, y = make_data(spec, 19, seed=4)
    loss, grads = runner.loss_and_gradient(spec, params, x, y)
    expected_loss, expected_grads = reference.model_loss_grad(spec, spec.flatten(params), x, y)
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert set(grads) == set(spec.array_shapes())
    for name, grad in spec.unflatten(expected_grads).items():
        assert grads[name].shape == grad.shape, name
        np.testing.assert_allclose(grads[name], grad, rtol=1e-4, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize(("epochs", "batch_size", "mu"), [(1, 8, 0.0), (3, 5, 0.0), (2, 64, 0.1)])
def test_train_matches_the_reference(runner, spec, epochs, batch_size, mu):
    params = spec.init_params(seed=5)
    global_params = spec.init_params(seed=6)
    x, y = make_data(spec, 37, seed=7)
    before = {name: array.copy() for name, array in params.items()}
    result = runner.train(
        spec,
        params,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=0.05,
        mu=mu,
        seed=2**63 + 11,  # above int64: the seed is read as uint64
        global_params=global_params,
    )
    expected_flat, expected_loss = reference.train(
        spec,
        spec.flatten(params),
        spec.flatten(global_params),
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=0.05,
        mu=mu,
        seed=2**63 + 11,
    )
    assert isinstance(result, TrainResult)
    assert result.num_examples == 37 and result.seconds > 0 and result.fuel_used is None
    assert result.loss == pytest.approx(expected_loss, rel=1e-4)
    for name, expected in spec.unflatten(expected_flat).items():
        np.testing.assert_allclose(
            result.params[name], expected, rtol=1e-4, atol=1e-5, err_msg=name
        )
    for name, array in before.items():  # the caller's params are not touched
        np.testing.assert_array_equal(params[name], array)


def test_train_shuffles_by_seed(runner):
    spec = SPECS[1]
    params = spec.init_params(seed=8)
    x, y = make_data(spec, 40, seed=9)

    def train(seed):
        return runner.train(spec, params, x, y, epochs=2, batch_size=4, lr=0.1, seed=seed)

    first, again, other = train(1), train(1), train(2)
    for name in params:
        np.testing.assert_array_equal(first.params[name], again.params[name])
    assert first.loss == again.loss
    assert any(not np.array_equal(first.params[n], other.params[n]) for n in params)
    # a negative seed is its uint64 bits
    negative = train(-1)
    wrapped = train(2**64 - 1)
    for name in params:
        np.testing.assert_array_equal(negative.params[name], wrapped.params[name])


def test_mu_pulls_towards_global_params(runner):
    spec = SPECS[0]
    params = spec.init_params(seed=10)
    global_params = {name: np.zeros_like(array) for name, array in params.items()}
    x, y = make_data(spec, 30, seed=11)

    def distance(result):
        return sum(float(np.sum(result.params[n] ** 2)) for n in params)

    common = dict(epochs=3, batch_size=10, lr=0.1, seed=3, global_params=global_params)
    free = runner.train(spec, params, x, y, mu=0.0, **common)
    pulled = runner.train(spec, params, x, y, mu=1.0, **common)
    assert distance(pulled) < distance(free)


def test_global_params_default_to_params(runner):
    spec = SPECS[1]
    params = spec.init_params(seed=25)
    x, y = make_data(spec, 21, seed=26)
    result = runner.train(spec, params, x, y, epochs=2, batch_size=4, lr=0.1, mu=0.5, seed=4)
    flat = spec.flatten(params)
    expected_flat, _ = reference.train(
        spec, flat, flat, x, y, epochs=2, batch_size=4, lr=0.1, mu=0.5, seed=4
    )
    np.testing.assert_allclose(spec.flatten(result.params), expected_flat, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_evaluate_matches_the_reference(runner, spec):
    params = spec.init_params(seed=12)
    x, y = make_data(spec, 50, seed=13)
    result = runner.evaluate(spec, params, x, y)
    expected_loss, expected_accuracy = reference.evaluate(spec, spec.flatten(params), x, y)
    assert isinstance(result, EvalResult) and result.num_examples == 50
    assert result.loss == pytest.approx(expected_loss, rel=RTOL)
    assert result.accuracy == pytest.approx(expected_accuracy, abs=1e-6)


def test_training_lowers_the_loss_on_learnable_data(runner):
    spec = ModelSpec.parse("mlp:8-16-3")
    rng = np.random.default_rng(14)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)
    params = spec.init_params(seed=15)
    before = runner.evaluate(spec, params, x, y)
    trained = runner.train(spec, params, x, y, epochs=20, batch_size=16, lr=0.2, seed=16)
    after = runner.evaluate(spec, trained.params, x, y)
    assert after.loss < 0.5 * before.loss and after.accuracy > 0.9


# -- limits ---------------------------------------------------------------------------------
def test_fuel_is_reported_and_deterministic(runner):
    spec = SPECS[1]
    metered = KernelRunner(runner.module, Limits(fuel=10**9))
    params = spec.init_params(seed=17)
    x, y = make_data(spec, 25, seed=18)
    results = [
        metered.train(spec, params, x, y, epochs=2, batch_size=8, lr=0.1, seed=19) for _ in "ab"
    ]
    assert results[0].fuel_used == results[1].fuel_used > 0
    unmetered = runner.train(spec, params, x, y, epochs=2, batch_size=8, lr=0.1, seed=19)
    for name in params:
        np.testing.assert_array_equal(results[0].params[name], unmetered.params[name])


def test_fuel_budget_and_memory_cap_stop_training(runner):
    spec = SPECS[1]
    params = spec.init_params(seed=20)
    x, y = make_data(spec, 200, seed=21)
    starved = KernelRunner(runner.module, Limits(fuel=10_000))
    with pytest.raises(OutOfFuel) as info:
        starved.train(
            spec, params, x, y, epochs=5, batch_size=8, lr=0.1, seed=1, job_name="round 3"
        )
    assert "round 3" in str(info.value)
    big_x, big_y = make_data(spec, 200_000, seed=22)  # 16 MB of features
    cramped = KernelRunner(runner.module, Limits(memory_bytes=8 * 2**20))
    with pytest.raises(MemoryLimitReached, match="sf_alloc"):
        cramped.train(spec, params, big_x, big_y, epochs=1, batch_size=8, lr=0.1, seed=1)
    # the data fits, the scratch space of one 50000-sample minibatch does not: SF_NO_MEMORY
    fits_x, fits_y = big_x[:50_000], big_y[:50_000]
    with pytest.raises(MemoryLimitReached, match="SF_NO_MEMORY"):
        cramped.train(spec, params, fits_x, fits_y, epochs=1, batch_size=50_000, lr=0.1, seed=1)
    # the runner still works afterwards
    assert runner.evaluate(spec, params, x, y).num_examples == 200


# -- validation -----------------------------------------------------------------------------
def train_args(spec):
    x, y = make_data(spec, 10, seed=23)
    return dict(
        spec=spec,
        params=spec.init_params(seed=24),
        x=x,
        y=y,
        epochs=1,
        batch_size=4,
        lr=0.1,
        seed=1,
    )


BAD_INPUTS = [
    ("x", lambda a: np.zeros((10, a["spec"].input_dim + 1), np.float32), "x: expected shape"),
    ("x", lambda a: np.zeros((0, a["spec"].input_dim), np.float32), "x: expected shape"),
    ("x", lambda a: np.full_like(a["x"], np.nan), "x: expected finite"),
    ("x", lambda a: np.array([["a"] * a["spec"].input_dim] * 10), "x: expected float32"),
    ("y", lambda a: a["y"].astype(np.float32), "y: expected integer"),
    ("y", lambda a: a["y"][:-1], "y: expected shape"),
    ("y", lambda a: a["y"] + a["spec"].num_classes, "y: expected labels in"),
    ("y", lambda a: a["y"] - 10, "y: expected labels in"),
    ("params", lambda a: {k: v for k, v in a["params"].items() if "bias" not in k}, "params"),
    ("params", lambda a: {k: v.T for k, v in a["params"].items()}, "params"),
    (
        "params",
        lambda a: {k: v + np.inf for k, v in a["params"].items()},
        "params: expected finite",
    ),
    ("epochs", lambda a: 0, "epochs"),
    ("batch_size", lambda a: -1, "batch_size"),
    ("batch_size", lambda a: 2.5, "batch_size"),
    ("lr", lambda a: float("nan"), "lr"),
    ("lr", lambda a: 1e39, "lr"),
    ("seed", lambda a: 2**64, "seed"),
    ("seed", lambda a: "7", "seed"),
]


@pytest.mark.parametrize(("name", "make_bad", "message"), BAD_INPUTS)
def test_bad_inputs_are_refused_before_running(runner, name, make_bad, message):
    args = train_args(SPECS[1])
    args[name] = make_bad(args)
    with pytest.raises(ValueError, match=message):
        runner.train(**args)


def test_the_bundled_kernels():
    relaxed, simd128 = default_kernel_path(True), default_kernel_path(False)
    assert relaxed.name == "sandflower-relaxed.wasm" and relaxed.is_file()
    assert simd128.name == "sandflower-simd128.wasm" and simd128.is_file()
    default = KernelRunner()
    assert default.module.sha256 == KernelModule.from_file(relaxed).sha256
    assert KernelRunner().module is default.module  # compiled once per process
