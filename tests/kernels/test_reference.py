"""kernels/reference.py on its own: gradients against central finite differences in float64,
the splitmix64 shuffle against published values, and the training loop's bookkeeping."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kernels import reference as ref
from kernels.spec import ModelSpec

FD_STEP = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def finite_difference(func: Callable[[np.ndarray], float], point: np.ndarray) -> np.ndarray:
    """Central differences of a scalar function, float64, one coordinate at a time."""
    grad = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        shifted = point.copy()
        shifted[index] += FD_STEP
        upper = func(shifted)
        shifted[index] -= 2 * FD_STEP
        lower = func(shifted)
        grad[index] = (upper - lower) / (2 * FD_STEP)
    return grad


def assert_gradient(name: str, analytic: np.ndarray, numeric: np.ndarray) -> None:
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=name)


@pytest.mark.parametrize(("batch", "in_dim", "out_dim"), [(1, 1, 1), (3, 5, 4), (7, 2, 9)])
def test_dense_backward_matches_finite_differences(batch, in_dim, out_dim):
    rng = np.random.default_rng([1, batch, in_dim, out_dim])
    x = rng.standard_normal((batch, in_dim))
    w = rng.standard_normal((in_dim, out_dim))
    b = rng.standard_normal(out_dim)
    upstream = rng.standard_normal((batch, out_dim))  # dloss/dy of loss = sum(upstream * y)
    dx, dw, db = ref.dense_backward(x, w, upstream)

    def loss(xv=x, wv=w, bv=b):
        return float(np.sum(upstream * ref.dense_forward(xv, wv, bv)))

    assert_gradient("dx", dx, finite_difference(lambda v: loss(xv=v), x))
    assert_gradient("dw", dw, finite_difference(lambda v: loss(wv=v), w))
    assert_gradient("db", db, finite_difference(lambda v: loss(bv=v), b))
    assert ref.dense_backward(x, w, upstream, need_dx=False)[0] is None


def test_relu_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep every point away from the kink at 0
    upstream = rng.standard_normal(x.shape)
    analytic = ref.relu_backward(ref.relu(x), upstream)
    numeric = finite_difference(lambda v: float(np.sum(upstream * ref.relu(v))), x)
    assert_gradient("relu", analytic, numeric)


@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (5, 3), (8, 10)])
def test_softmax_xent_gradient_matches_finite_differences(batch, classes):
    rng = np.random.default_rng([3, batch, classes])
    logits = rng.standard_normal((batch, classes)) * 3
    labels = rng.integers(0, classes, batch)
    loss, dlogits = ref.softmax_xent(logits, labels)
    numeric = finite_difference(lambda v: ref.softmax_xent(v, labels, need_grad=False)[0], logits)
    assert_gradient("dlogits", dlogits, numeric)
    # The loss itself, written out the textbook way.
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss, -np.mean(np.log(probs[np.arange(batch), labels])))


def test_softmax_xent_is_stable_for_huge_logits_and_marks_bad_labels():
    logits = np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    losses, dlogits = ref.softmax_xent_per_sample(logits, np.array([0, 7]), grad_scale=1.0)
    assert losses[0] == 0.0 and np.isnan(losses[1])
    assert np.all(np.isfinite(dlogits[0])) and np.all(np.isnan(dlogits[1]))


@pytest.mark.parametrize("model", ["logreg:5-3", "mlp:4-6-3", "mlp:3-5-4-2", "mlp:6-1-2"])
def test_model_loss_grad_matches_finite_differences(model):
    spec = ModelSpec.parse(model)
    rng = np.random.default_rng(4)
    params = spec.flatten(spec.init_params(seed=5)).astype(np.float64)
    # Biases off zero so a ReLU unit is not sitting exactly at its kink.
    params += rng.uniform(-0.1, 0.1, params.shape)
    x = rng.standard_normal((7, spec.input_dim))
    labels = rng.integers(0, spec.num_classes, 7)
    loss, grads = ref.model_loss_grad(spec, params, x, labels)
    numeric = finite_difference(lambda p: ref.model_loss_grad(spec, p, x, labels)[0], params)
    assert grads.dtype == np.float64 and loss > 0
    assert_gradient(model, grads, numeric)


def test_model_with_a_relu_first_and_relu_last_still_has_exact_gradients():
    # Specs the kernels accept beyond ModelSpec's MLPs: a leading ReLU, two ReLUs in a row.
    words = np.array(
        [ref.SPEC_MAGIC, 3, 5, 2, 0, 1, 1, 4, 2, 0, 2, 0, 1, 1, 3], dtype=np.uint32
    ).view(np.int32)
    model = ref.decode_spec(words)
    assert [layer.kind for layer in model.layers] == [2, 1, 2, 2, 1]
    rng = np.random.default_rng(6)
    params = rng.standard_normal(model.num_params)
    x = rng.standard_normal((5, 3))
    labels = rng.integers(0, 3, 5)
    _, grads = ref.model_loss_grad(words, params, x, labels)
    numeric = finite_difference(lambda p: ref.model_loss_grad(words, p, x, labels)[0], params)
    assert_gradient("relu-first spec", grads, numeric)


def test_proximal_term_is_the_gradient_of_half_mu_squared_distance():
    rng = np.random.default_rng(7)
    w, w_global, grad = rng.standard_normal((3, 10))
    lr, mu = 0.1, 0.3
    prox = finite_difference(lambda v: 0.5 * mu * float(np.sum((v - w_global) ** 2)), w)
    np.testing.assert_allclose(ref.sgd_update(w, grad, w_global, lr, mu), w - lr * (grad + prox))
    np.testing.assert_allclose(ref.sgd_update(w, grad, None, lr, 0.0), w - lr * grad)


def test_splitmix64_gives_the_published_sequence():
    # The reference sequence of splitmix64.c (Vigna) for seed 1234567.
    rng = ref.SplitMix64(1234567)
    assert [rng.next() for _ in range(5)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


def test_epoch_permutations_are_seeded_permutations_that_change_every_epoch():
    perms = list(ref.epoch_permutations(50, 3, seed=9))
    assert all(sorted(perm) == list(range(50)) for perm in perms)
    assert not np.array_equal(perms[0], perms[1])
    again = list(ref.epoch_permutations(50, 3, seed=9))
    assert all(np.array_equal(a, b) for a, b in zip(perms, again, strict=True))
    other = next(ref.epoch_permutations(50, 1, seed=10))
    assert not np.array_equal(perms[0], other)
    # A negative seed is read as its uint64 bit pattern, as the kernel's i64 parameter is.
    assert np.array_equal(
        next(ref.epoch_permutations(20, 1, seed=-1)), next(ref.epoch_permutations(20, 1, 2**64 - 1))
    )


def test_one_full_batch_epoch_is_one_gradient_step():
    spec = ModelSpec.parse("mlp:4-5-3")
    rng = np.random.default_rng(11)
    params = spec.flatten(spec.init_params(seed=1)).astype(np.float64)
    x = rng.standard_normal((9, 4))
    labels = rng.integers(0, 3, 9)
    loss, grads = ref.model_loss_grad(spec, params, x, labels)
    trained, train_loss = ref.train(
        spec, params, None, x, labels, epochs=1, batch_size=9, lr=0.5, mu=0.0, seed=3
    )
    # The shuffle only reorders the one batch: the mean gradient is the same.
    np.testing.assert_allclose(trained, params - 0.5 * grads, rtol=1e-12)
    np.testing.assert_allclose(train_loss, loss, rtol=1e-12)


def test_train_without_epochs_changes_nothing_and_reports_zero_loss():
    spec = ModelSpec.parse("logreg:3-2")
    params = spec.flatten(spec.init_params(seed=1))
    x = np.ones((4, 3), dtype=np.float32)
    trained, loss = ref.train(
        spec, params, None, x, np.zeros(4), epochs=0, batch_size=2, lr=0.1, mu=0.0, seed=0
    )
    assert np.array_equal(trained, params) and loss == 0.0


def test_train_fits_a_separable_problem():
    spec = ModelSpec.parse("mlp:2-8-2")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    params = spec.flatten(spec.init_params(seed=2))
    trained, _ = ref.train(
        spec, params, params, x, labels, epochs=30, batch_size=8, lr=0.2, mu=0.01, seed=1
    )
    assert trained.dtype == np.float32
    _, accuracy = ref.evaluate(spec, trained, x, labels)
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    ("words", "status"),
    [
        ([0x12345678, 3, 1, 1, 1, 2], ref.SF_BAD_SPEC),  # magic
        ([ref.SPEC_MAGIC, 0, 1, 1, 1, 2], ref.SF_BAD_SPEC),  # input_dim
        ([ref.SPEC_MAGIC, 3, 0], ref.SF_BAD_SPEC),  # no layers
        ([ref.SPEC_MAGIC, 3, 65], ref.SF_BAD_SPEC),  # too many layers
        ([ref.SPEC_MAGIC, 3, 1, 9, 0], ref.SF_BAD_SPEC),  # unknown kind
        ([ref.SPEC_MAGIC, 3, 1, 1, 1, -2], ref.SF_BAD_SPEC),  # out_dim <= 0
        ([ref.SPEC_MAGIC, 3, 1, 1, 2, 2, 2], ref.SF_BAD_SPEC),  # dense with 2 words
        ([ref.SPEC_MAGIC, 3, 1, 2, 1, 0], ref.SF_BAD_SPEC),  # relu with a word
    ],
)
def test_decode_spec_refuses_malformed_specs(words, status):
    with pytest.raises(ref.ReferenceStatusError) as info:
        ref.decode_spec(np.array(words, dtype=np.int64).astype(np.uint32).view(np.int32))
    assert info.value.status == status


def test_model_entries_refuse_bad_arguments_with_the_kernel_status():
    spec = ModelSpec.parse("logreg:3-2")
    params = spec.flatten(spec.init_params(seed=1))
    x = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ref.ReferenceStatusError) as info:
        ref.evaluate(spec, params, x, np.array([0, 2]))
    assert info.value.status == ref.SF_BAD_ARGUMENT
    for kwargs in ({"epochs": -1}, {"batch_size": 0}, {"mu": 0.1}):
        options = {"epochs": 1, "batch_size": 1, "lr": 0.1, "mu": 0.0, "seed": 0, **kwargs}
        with pytest.raises(ref.ReferenceStatusError) as info:
            ref.train(spec, params, None, x, np.array([0, 1]), **options)
        assert info.value.status == ref.SF_BAD_ARGUMENT, kwargs
