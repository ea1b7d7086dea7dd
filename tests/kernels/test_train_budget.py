"""sf_train_budget against the reference: stops at a minibatch boundary, reports the steps done,
and its fuel obeys the bound that turns a fuel budget into a step budget (ABI.md, "Step
budgets")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client.runner import _PROBED_FUEL, KernelRunner, steps_within_fuel
from client.sandbox import KernelModule, Limits
from kernels import reference as ref
from kernels import registry
from kernels.spec import ModelSpec

from .test_train import LOSS_RTOL, PARAM_ATOL, make_data, run_sf_train

STATUS_BAD_ARGUMENT = registry.STATUS_CODES["SF_BAD_ARGUMENT"]


def run_budget(
    module: KernelModule,
    spec: ModelSpec,
    params: np.ndarray,
    global_params: np.ndarray | None,
    x: np.ndarray,
    labels: np.ndarray,
    max_steps: int,
    **options,
) -> tuple[np.ndarray, float, int, int]:
    """(trained params, loss, steps done, fuel of the call) of one metered sf_train_budget."""
    with module.job("train budget", Limits(fuel=10**12)) as job:
        params_ptr = job.put(params)
        global_ptr = job.put(global_params) if global_params is not None else 0
        loss = job.put(np.zeros(1, np.float32))
        steps = job.put(np.full(1, -7, np.int32))
        spec_ptr, x_ptr, labels_ptr = job.put(spec.encode()), job.put(x), job.put(labels)
        before = job.fuel_used
        job.call_status(
            "sf_train_budget", spec_ptr, params_ptr, global_ptr, x_ptr, labels_ptr,
            len(labels), options["epochs"], options["batch_size"], options["lr"],
            options["mu"], options["seed"], max_steps, loss, steps,
        )  # fmt: skip
        fuel = job.fuel_used - before
        return (
            job.read(params_ptr, params.shape, np.float32),
            float(job.read(loss, 1, np.float32)[0]),
            int(job.read(steps, 1, np.int32)[0]),
            fuel,
        )


# n = 37, batch 5: 8 steps per epoch (the last of 2 samples), 3 epochs = 24 steps.
SPEC = "mlp:13-7-5-3"
N = 37
OPTIONS = {"epochs": 3, "batch_size": 5, "lr": 0.2, "mu": 0.5, "seed": 2**63 + 5}
STEPS_PER_EPOCH = math.ceil(N / OPTIONS["batch_size"])
JOB_STEPS = OPTIONS["epochs"] * STEPS_PER_EPOCH


def _setup():
    spec = ModelSpec.parse(SPEC)
    params = spec.flatten(spec.init_params(seed=N))
    global_params = spec.flatten(spec.init_params(seed=N + 1))
    x, labels = make_data(spec, N, seed=1)
    return spec, params, global_params, x, labels


@pytest.mark.parametrize(
    "budget",
    [0, 1, 3, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 1, JOB_STEPS, 10**6],
    ids=["0", "1", "mid-epoch", "epoch-1", "one-epoch", "epoch+1", "whole-job", "more-than-job"],
)
def test_budget_equals_the_reference(kernel_module, budget):
    spec, params, global_params, x, labels = _setup()
    trained, loss, steps, _ = run_budget(
        kernel_module, spec, params, global_params, x, labels, budget, **OPTIONS
    )
    expected, expected_loss, expected_steps = ref.train_budget(
        spec, params, global_params, x, labels, max_steps=budget, **OPTIONS
    )
    assert steps == expected_steps == min(budget, JOB_STEPS)
    if budget == 0:
        assert np.array_equal(trained, params) and loss == 0.0 == expected_loss
        return
    assert not np.allclose(trained, params)
    np.testing.assert_allclose(trained, expected, rtol=0, atol=PARAM_ATOL)
    np.testing.assert_allclose(loss, expected_loss, rtol=LOSS_RTOL)


def test_budget_of_the_whole_job_gives_sf_train_bits(kernel_module):
    spec, params, global_params, x, labels = _setup()
    plain, plain_loss = run_sf_train(
        kernel_module, spec, params, global_params, x, labels, **OPTIONS
    )
    for budget in (JOB_STEPS, JOB_STEPS + 5):
        trained, loss, steps, _ = run_budget(
            kernel_module, spec, params, global_params, x, labels, budget, **OPTIONS
        )
        assert steps == JOB_STEPS
        assert np.array_equal(trained, plain) and np.float32(loss) == np.float32(plain_loss)


def test_a_stopped_job_is_the_prefix_of_the_whole_job(kernel_module):
    # Stopping after k steps gives exactly the parameters the full job had after k steps.
    spec, params, global_params, x, labels = _setup()
    by_steps = {
        budget: run_budget(kernel_module, spec, params, global_params, x, labels, budget, **OPTIONS)
        for budget in (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    }
    one_epoch = {**OPTIONS, "epochs": 1}
    two_epochs = {**OPTIONS, "epochs": 2}
    first, *_ = run_budget(kernel_module, spec, params, global_params, x, labels, 99, **one_epoch)
    second, *_ = run_budget(kernel_module, spec, params, global_params, x, labels, 99, **two_epochs)
    assert np.array_equal(by_steps[STEPS_PER_EPOCH][0], first)
    assert np.array_equal(by_steps[2 * STEPS_PER_EPOCH][0], second)


@pytest.mark.parametrize(
    ("model", "n", "options"),
    [
        (SPEC, N, OPTIONS),
        ("logreg:60-10", 53, {"epochs": 4, "batch_size": 10, "lr": 0.01, "mu": 1.0, "seed": 3}),
        ("mlp:64-32-10", 70, {"epochs": 2, "batch_size": 32, "lr": 0.05, "mu": 0.0, "seed": 7}),
        ("mlp:5-9-2", 4, {"epochs": 3, "batch_size": 50, "lr": 0.1, "mu": 0.0, "seed": 1}),
    ],
)
def test_fuel_is_shape_determined_and_obeys_the_planning_bound(kernel_module, model, n, options):
    spec = ModelSpec.parse(model)
    params = spec.flatten(spec.init_params(seed=1))
    x, labels = make_data(spec, n, seed=2)
    other_x, other_labels = make_data(spec, n, seed=99)
    global_params = params.copy() if options["mu"] else None
    steps_per_epoch = math.ceil(n / min(options["batch_size"], n))
    job_steps = options["epochs"] * steps_per_epoch
    fuel = [
        run_budget(kernel_module, spec, params, global_params, x, labels, k, **options)[3]
        for k in range(job_steps + 1)
    ]
    # Other data, same shapes: the same fuel, step by step (values do not steer the kernels).
    other = [
        run_budget(kernel_module, spec, params, global_params, other_x, other_labels, k, **options)[
            3
        ]
        for k in (0, 1, job_steps)
    ]
    assert other == [fuel[0], fuel[1], fuel[job_steps]]
    assert all(later > earlier for earlier, later in zip(fuel, fuel[1:], strict=False))
    per_step = fuel[1] - fuel[0]
    for k, used in enumerate(fuel):
        assert used <= fuel[0] + k * per_step, f"{model}: {k} steps used {used}"
        # ... and the planner picks the largest k that the bound allows for exactly that budget.
        assert steps_within_fuel(fuel[0] + k * per_step, fuel[0], fuel[1]) == k
    assert steps_within_fuel(fuel[0] - 1, fuel[0], fuel[1]) == 0


@pytest.mark.parametrize("bad", [{"max_steps": -1}, {"out_steps": 0}])
def test_bad_budget_arguments_are_refused(kernel_module, bad):
    spec, params, _, x, labels = _setup()
    with kernel_module.job("bad budget") as job:
        steps = job.alloc(4) if "out_steps" not in bad else 0
        status = job.call(
            "sf_train_budget", job.put(spec.encode()), job.put(params), 0, job.put(x),
            job.put(labels), N, 1, 5, 0.1, 0.0, 0, bad.get("max_steps", 1), job.alloc(4), steps,
        )  # fmt: skip
    assert status == STATUS_BAD_ARGUMENT


def test_reference_refuses_a_negative_budget():
    spec, params, _, x, labels = _setup()
    with pytest.raises(ref.ReferenceStatusError):
        ref.train_budget(spec, params, None, x, labels, max_steps=-1, **{**OPTIONS, "mu": 0.0})


def test_runner_fuel_budget_stops_within_the_budget_at_a_step_boundary(kernel_module):
    spec, params, global_params, x, labels = _setup()
    named, global_named = spec.unflatten(params), spec.unflatten(global_params)
    runner = KernelRunner(kernel_module)
    options = {**OPTIONS, "global_params": global_named}
    whole = runner.train(spec, named, x, labels, meter=True, **options)
    assert whole.steps_done == whole.steps_planned == JOB_STEPS and not whole.partial
    _PROBED_FUEL.clear()
    for index, fraction in enumerate((0.0, 0.3, 0.5, 0.99, 1.5)):
        budget = int(whole.fuel_used * fraction)
        result = runner.train(spec, named, x, labels, fuel_budget=budget, **options)
        assert result.fuel_used <= budget
        assert result.steps_planned == JOB_STEPS
        assert (result.steps_done < JOB_STEPS) == result.partial == (fraction < 1)
        expected, expected_loss, steps = ref.train_budget(
            spec, params, global_params, x, labels, max_steps=result.steps_done, **OPTIONS
        )
        np.testing.assert_allclose(spec.flatten(result.params), expected, atol=PARAM_ATOL)
        assert steps == result.steps_done
        # Probed on the first budget only: later jobs of the same shapes reuse the probes
        # (and pay for the warm-up call alone).
        if index == 0:
            first_planning = result.fuel_planning
        assert 0 < result.fuel_planning < first_planning or index == 0
    half = runner.train(spec, named, x, labels, fuel_budget=whole.fuel_used // 2, **options)
    # The bound is tight to within a shuffle per step: half the fuel gives nearly half the steps.
    assert JOB_STEPS // 2 - 3 <= half.steps_done <= JOB_STEPS // 2
    # The probes are cached per shape: the same budget again gives the same steps, within it.
    again = runner.train(spec, named, x, labels, fuel_budget=whole.fuel_used // 2, **options)
    assert again.steps_done == half.steps_done and again.fuel_used == half.fuel_used
    np.testing.assert_array_equal(spec.flatten(again.params), spec.flatten(half.params))
    # ... and a fresh cache gives the same fuel: what a job reports does not depend on it.
    _PROBED_FUEL.clear()
    fresh = runner.train(spec, named, x, labels, fuel_budget=whole.fuel_used // 2, **options)
    assert fresh.fuel_used == half.fuel_used and fresh.fuel_planning > again.fuel_planning


@pytest.mark.parametrize("n", [7, 37, 108, 301])
def test_cached_probes_keep_every_job_within_its_budget(kernel_module, n):
    # The first budgeted job probes; later jobs of the same shapes reuse the probes: their
    # fuel must stay within every budget.
    spec = ModelSpec.parse("logreg:60-10")
    params = spec.init_params(seed=n)
    x, labels = make_data(spec, n, seed=n)
    options = {"epochs": 3, "batch_size": 10, "lr": 0.01, "mu": 1.0, "seed": 4}
    runner = KernelRunner(kernel_module)
    whole = runner.train(spec, params, x, labels, meter=True, **options)
    for fraction in (0.9, 0.5, 0.1, 0.02):
        budget = int(whole.fuel_used * fraction)
        result = runner.train(spec, params, x, labels, fuel_budget=budget, **options)
        assert result.fuel_used <= budget, (n, fraction)


def test_runner_refuses_bad_budgets(kernel_module):
    spec, params, _, x, labels = _setup()
    runner = KernelRunner(kernel_module)
    for bad in ({"fuel_budget": -1}, {"fuel_budget": 2**62}, {"max_steps": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            runner.train(spec, spec.unflatten(params), x, labels, **{**OPTIONS, "mu": 0.0}, **bad)
