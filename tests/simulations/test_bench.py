"""`sandflower kernels bench --quick --json`: a smoke test of the benchmark (not a timing test)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from simulations import bench, cli_kernels


def _positive_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [number for item in value.values() for number in _positive_numbers(item)]
    return [float(value)]


def test_quick_bench_writes_every_figure_as_a_positive_number(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli_kernels.app, ["bench", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    missing = [key for key in bench.NUMERIC_KEYS if key not in figures]
    assert not missing, f"bench JSON lacks {missing}"
    for key in bench.NUMERIC_KEYS:
        numbers = _positive_numbers(figures[key])
        assert numbers and all(np.isfinite(n) and n > 0 for n in numbers), (key, figures[key])
    assert set(figures["sgemm_gflops"]) == {"64", "128", "256", "512"}
    assert set(figures["numpy_train_step_us"]) == {
        "64-32-10/b32", "64-32-10/b256", "784-128-10/b32", "784-128-10/b256",
    }  # fmt: skip
    assert figures["blas"]["internal_api"]  # which BLAS numpy ran is recorded
    assert "sgemm n=256" in result.output and "target" in result.output


def test_numpy_baseline_trains_like_the_reference():
    # The baseline must be a real training loop, not a stand-in: one full-batch step of
    # NumpyMLP equals one gradient step of kernels.reference.
    from kernels import reference
    from kernels.spec import ModelSpec

    spec = ModelSpec.parse("mlp:6-5-3")
    params = spec.init_params(seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    mlp = bench.NumpyMLP(spec, params, batch=8)
    loss = mlp.step(x, labels, lr=0.1)
    expected_loss, grads = reference.model_loss_grad(spec, spec.flatten(params), x, labels)
    stepped = {}
    for index, (weight, bias, _) in zip((0, 2), mlp.layers, strict=True):
        stepped[f"layer{index}.weight"], stepped[f"layer{index}.bias"] = weight, bias
    expected = spec.flatten(params) - np.float32(0.1) * grads
    np.testing.assert_allclose(spec.flatten(stepped), expected, atol=1e-6)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)


def test_kernels_verify_passes_on_the_committed_wasm():
    result = CliRunner().invoke(cli_kernels.app, ["verify"])
    assert result.exit_code == 0, result.output
