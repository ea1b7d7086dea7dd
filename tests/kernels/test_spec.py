"""kernels/spec.py: parsing, encoding (kernels/ABI.md), names, flatten/unflatten, init."""

import re

import numpy as np
import pytest

from kernels.spec import KIND_DENSE, KIND_RELU, SPEC_MAGIC, Dense, ModelSpec, ModelSpecError, ReLU


def test_parse_mlp_and_logreg():
    mlp = ModelSpec.parse("mlp:64-32-10")
    assert mlp.layers == (Dense(32), ReLU(), Dense(10))
    assert (mlp.input_dim, mlp.num_classes, str(mlp)) == (64, 10, "mlp:64-32-10")
    logreg = ModelSpec.parse("logreg:60-10")
    assert logreg.layers == (Dense(10),) and str(logreg) == "logreg:60-10"
    deep = ModelSpec.parse("mlp:784-128-64-10")
    assert deep.dims() == [784, 128, 128, 64, 64, 10]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mlp:64-10", "mlp needs at least one hidden layer"),
        ("logreg:60-32-10", "logreg takes exactly IN-CLASSES"),
        ("cnn:1-2", "expected 'logreg:IN-CLASSES'"),
        ("mlp:64--10", "expected 'logreg:IN-CLASSES'"),
        ("", "expected 'logreg:IN-CLASSES'"),
        ("mlp:64-0-10", "layer 0: out_dim must be > 0"),
        ("logreg:5-1", "needs >= 2 classes"),
    ],
)
def test_parse_rejects_bad_models_naming_the_problem(text, problem):
    with pytest.raises(ModelSpecError, match=re.escape(problem)):
        ModelSpec.parse(text)


def test_encode_matches_the_abi():
    words = ModelSpec.parse("mlp:64-32-10").encode()
    assert words.dtype == np.int32
    assert words.view(np.uint32)[0] == SPEC_MAGIC
    assert list(words[1:]) == [64, 3, KIND_DENSE, 1, 32, KIND_RELU, 0, KIND_DENSE, 1, 10]


def test_array_shapes_follow_the_flat_layout():
    spec = ModelSpec.parse("mlp:4-3-2")
    assert spec.array_shapes() == {
        "layer0.weight": (4, 3),
        "layer0.bias": (3,),
        "layer2.weight": (3, 2),
        "layer2.bias": (2,),
    }
    assert spec.num_params() == 4 * 3 + 3 + 3 * 2 + 2


def test_flatten_unflatten_round_trip():
    spec = ModelSpec.parse("mlp:5-4-3")
    params = spec.init_params(seed=7)
    flat = spec.flatten(params)
    assert flat.dtype == np.float32 and flat.size == spec.num_params()
    back = spec.unflatten(flat)
    for name in params:
        np.testing.assert_array_equal(back[name], params[name])
    # order in the flat buffer: weight then bias of each Dense layer
    np.testing.assert_array_equal(flat[:20], params["layer0.weight"].ravel())


def test_flatten_names_missing_extra_and_bad_shapes():
    spec = ModelSpec.parse("logreg:3-2")
    with pytest.raises(ModelSpecError, match=r"missing \['layer0.bias'\]"):
        spec.flatten({"layer0.weight": np.zeros((3, 2))})
    with pytest.raises(ModelSpecError, match=r"layer0.weight: expected shape \(3, 2\)"):
        spec.flatten({"layer0.weight": np.zeros((2, 3)), "layer0.bias": np.zeros(2)})
    with pytest.raises(ModelSpecError, match="expected 8 values, given 7"):
        spec.unflatten(np.zeros(7))


def test_init_is_seeded_and_scaled():
    spec = ModelSpec.parse("mlp:64-32-10")
    a, b, c = spec.init_params(1), spec.init_params(1), spec.init_params(2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.float32
    assert not np.array_equal(a["layer0.weight"], c["layer0.weight"])
    assert np.all(a["layer0.bias"] == 0)
    assert np.abs(a["layer0.weight"]).max() <= np.sqrt(6 / 64) + 1e-6
