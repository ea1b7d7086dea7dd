"""coordinator/aggregation.py: delta, weighted average, server step, norms, model hash."""

import math

import numpy as np
import pytest

from coordinator.aggregation import (
    AggregationInputError,
    ArrayLayoutError,
    CosineTo,
    apply_server_step,
    cosine_similarity,
    delta,
    l2_norm,
    model_sha256,
    weighted_average,
    weighted_mean,
)

SHAPES = {"layer0.weight": (5, 3), "layer0.bias": (3,), "scale": ()}


def random_arrays(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        name: (scale * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in SHAPES.items()
    }


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_delta_is_local_minus_global_in_float32(rng):
    local, global_weights = random_arrays(rng), random_arrays(rng)
    result = delta(local, global_weights)
    for name in SHAPES:
        assert result[name].dtype == np.float32
        np.testing.assert_array_equal(result[name], local[name] - global_weights[name])


def test_delta_refuses_different_layouts(rng):
    local, global_weights = random_arrays(rng), random_arrays(rng)
    local["layer0.bias"] = np.zeros(4, np.float32)
    with pytest.raises(ArrayLayoutError, match="layer0.bias"):
        delta(local, global_weights)
    del local["scale"]
    with pytest.raises(ArrayLayoutError, match="missing arrays \\['scale'\\]"):
        delta(local, global_weights)


def test_weighted_average_matches_numpy_average(rng):
    deltas = [random_arrays(rng) for _ in range(5)]
    weights = [10, 3, 7, 1, 30]
    result = weighted_average(deltas, weights)
    for name in SHAPES:
        expected = np.average(np.stack([d[name] for d in deltas]), axis=0, weights=weights)
        np.testing.assert_allclose(result[name], expected, rtol=1e-6, atol=1e-7)
        assert result[name].shape == SHAPES[name]  # 0-d stays 0-d


def test_fedavg_over_deltas_equals_fedavg_over_weights(rng):
    global_weights = random_arrays(rng, scale=3.0)
    local_models = [random_arrays(rng) for _ in range(4)]
    num_examples = [50, 120, 7, 300]
    deltas = [delta(local, global_weights) for local in local_models]
    via_deltas = apply_server_step(global_weights, weighted_average(deltas, num_examples), 1.0)
    via_weights = weighted_average(local_models, num_examples)
    for name in SHAPES:
        np.testing.assert_allclose(via_deltas[name], via_weights[name], atol=1e-6)


def test_client_order_changes_nothing(rng):
    deltas = [random_arrays(rng) for _ in range(6)]
    weights = [1, 2, 3, 4, 5, 6]
    forward = weighted_average(deltas, weights)
    permutation = rng.permutation(6)
    shuffled = weighted_average([deltas[i] for i in permutation], [weights[i] for i in permutation])
    for name in SHAPES:
        np.testing.assert_allclose(forward[name], shuffled[name], rtol=1e-6, atol=1e-7)


def test_identical_deltas_give_that_delta_back(rng):
    one = random_arrays(rng)
    result = weighted_average([one, one, one], [5, 1, 9])
    for name in SHAPES:
        np.testing.assert_allclose(result[name], one[name], rtol=1e-6)


def test_a_single_client_is_its_own_average(rng):
    one = random_arrays(rng)
    result = weighted_average([one], [17])
    for name in SHAPES:
        np.testing.assert_array_equal(result[name], one[name])


def test_zero_dimensional_arrays():
    deltas = [{"s": np.float32(1.0) * np.ones((), np.float32)}, {"s": np.full((), 3.0, np.float32)}]
    result = weighted_average(deltas, [1, 3])
    assert result["s"].shape == () and float(result["s"]) == pytest.approx(2.5)
    stepped = apply_server_step({"s": np.zeros((), np.float32)}, result, 0.5)
    assert stepped["s"].shape == () and float(stepped["s"]) == pytest.approx(1.25)


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1, 2], "2 weights"),
        ([0, 0, 0], "sum to 0"),
        ([1, -1, 1], ">= 0"),
        ([1, math.nan, 1], "finite"),
    ],
)
def test_weighted_average_refuses_bad_weights(rng, weights, match):
    with pytest.raises(AggregationInputError, match=match):
        weighted_average([random_arrays(rng) for _ in range(3)], weights)


def test_weighted_average_refuses_no_deltas_and_mixed_layouts(rng):
    with pytest.raises(AggregationInputError, match="no deltas"):
        weighted_average([], [])
    other = random_arrays(rng)
    other["extra"] = np.zeros(1, np.float32)
    with pytest.raises(AggregationInputError, match="deltas\\[1\\]"):
        weighted_average([random_arrays(rng), other], [1, 1])


def test_apply_server_step_scales_the_aggregate(rng):
    global_weights, aggregate = random_arrays(rng), random_arrays(rng)
    result = apply_server_step(global_weights, aggregate, 0.25)
    for name in SHAPES:
        assert result[name].dtype == np.float32
        np.testing.assert_allclose(
            result[name], global_weights[name] + 0.25 * aggregate[name], rtol=1e-6, atol=1e-7
        )


def test_l2_norm_and_cosine(rng):
    arrays = random_arrays(rng)
    flat = np.concatenate([np.ravel(a) for a in arrays.values()]).astype(np.float64)
    assert l2_norm(arrays) == pytest.approx(np.linalg.norm(flat), rel=1e-12)
    assert cosine_similarity(arrays, arrays) == pytest.approx(1.0)
    negated = {name: -array for name, array in arrays.items()}
    assert cosine_similarity(arrays, negated) == pytest.approx(-1.0)
    other = random_arrays(rng)
    other_flat = np.concatenate([np.ravel(a) for a in other.values()]).astype(np.float64)
    expected = flat @ other_flat / (np.linalg.norm(flat) * np.linalg.norm(other_flat))
    assert cosine_similarity(arrays, other) == pytest.approx(expected, rel=1e-9)


def test_norm_and_cosine_of_degenerate_updates(rng):
    arrays = random_arrays(rng)
    zeros = {name: np.zeros_like(array) for name, array in arrays.items()}
    assert l2_norm(zeros) == 0.0
    assert math.isnan(cosine_similarity(arrays, zeros))
    poisoned = dict(arrays, scale=np.array(np.inf, np.float32))
    assert l2_norm(poisoned) == math.inf
    assert math.isnan(cosine_similarity(arrays, poisoned))
    assert math.isnan(l2_norm(dict(arrays, scale=np.array(np.nan, np.float32))))


def test_model_sha256_depends_on_names_shapes_and_values_not_order(rng):
    arrays = random_arrays(rng)
    digest = model_sha256(arrays)
    assert len(digest) == 64
    assert model_sha256(dict(reversed(list(arrays.items())))) == digest
    # float64 input hashes as its float32 values
    assert model_sha256({k: v.astype(np.float64) for k, v in arrays.items()}) == digest
    changed = dict(arrays)
    changed["layer0.bias"] = arrays["layer0.bias"].copy()
    changed["layer0.bias"][0] = np.nextafter(changed["layer0.bias"][0], np.float32(np.inf))
    assert model_sha256(changed) != digest
    reshaped = dict(arrays, **{"layer0.weight": arrays["layer0.weight"].reshape(3, 5)})
    assert model_sha256(reshaped) != digest
    renamed = {("x" + k if k == "scale" else k): v for k, v in arrays.items()}
    assert model_sha256(renamed) != digest


def test_model_sha256_fixed_value():
    # Pins the byte layout: name, NUL, shape, NUL, little-endian float32.
    import hashlib

    arrays = {"b": np.array([1.0, 2.0], np.float32), "a": np.zeros((), np.float32)}
    expected = hashlib.sha256(
        b"a\0\0"
        + np.zeros((), "<f4").tobytes()
        + b"b\0"
        + b"2\0"
        + np.array([1, 2], "<f4").tobytes()
    ).hexdigest()
    assert model_sha256(arrays) == expected


def test_weighted_mean_of_scalars():
    assert weighted_mean([1.0, 3.0], [1, 3]) == pytest.approx(2.5)
    assert math.isnan(weighted_mean([], []))


def _straight_cosine(first, second) -> float:
    # The oracle: one float64 dot product and two norms per array, summed in name order.
    flat = {n: np.asarray(first[n], np.float64).ravel() for n in first}
    dot = sum(float(np.dot(flat[n], np.asarray(second[n], np.float64).ravel())) for n in first)
    norms = l2_norm(first) * l2_norm(second)
    if not (math.isfinite(dot) and math.isfinite(norms)) or norms == 0.0:
        return math.nan
    return max(-1.0, min(1.0, dot / norms))


def test_cosine_to_a_reference_has_the_bits_of_the_straight_sum(rng):
    shapes = {"b": (7,), "a": (3, 5), "scalar": ()}
    reference = {
        name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()
    }
    updates = [
        {
            name: (scale * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in shapes.items()
        }
        for scale in (1e-6, 0.1, 1.0, 1e30)
    ]
    updates.append({name: -reference[name] for name in shapes})  # exactly opposite
    updates.append({name: np.zeros(shape, np.float32) for name, shape in shapes.items()})
    poisoned = {name: array.copy() for name, array in updates[1].items()}
    poisoned["a"][1, 2] = np.nan
    updates.append(poisoned)
    infinite = {name: array.copy() for name, array in updates[1].items()}
    infinite["b"][0] = np.inf
    updates.append(infinite)
    reordered = {name: updates[2][name] for name in ("scalar", "a", "b")}  # another name order
    updates.append(reordered)
    cosine_to = CosineTo(reference)
    for update in updates:
        expected, given = _straight_cosine(update, reference), cosine_to(update)
        assert (math.isnan(expected) and math.isnan(given)) or given == expected
        same = cosine_similarity(update, reference)
        assert (math.isnan(expected) and math.isnan(same)) or same == expected
    with pytest.raises(AggregationInputError):
        cosine_to({"a": np.zeros((5, 3), np.float32), "b": np.zeros(7), "scalar": np.zeros(())})
    assert math.isnan(CosineTo({name: np.zeros(s) for name, s in shapes.items()})(updates[2]))
