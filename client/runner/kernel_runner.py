"""KernelRunner: one sandbox job per call of a model-level kernel entry."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from client.runner.fuel import _PROBE_CACHE_SIZE, _PROBED_FUEL, _UNCAPPED_FUEL, steps_within_fuel
from client.runner.inputs import (
    _features,
    _finite_at_least,
    _flat_params,
    _fuel,
    _int_at_least,
    _labels,
    _seed,
)
from client.runner.kernel_path import _bundled_module, default_kernel_path
from client.runner.results import EvalResult, TrainResult
from client.sandbox import KernelModule, Limits
from kernels.spec import ModelSpec

_DEFAULT_LIMITS = Limits()


class KernelRunner:
    """Runs model-level kernel entries, one sandbox job per method call.

    Parameters
    ----------
    module
        The kernel module; None loads the bundled relaxed-SIMD kernel (once per process).
    limits
        Memory cap, fuel budget and deadline applied to every job.
    """

    def __init__(
        self, module: KernelModule | None = None, limits: Limits = _DEFAULT_LIMITS
    ) -> None:
        if not isinstance(limits, Limits):
            raise TypeError(f"limits: expected a client.sandbox.Limits, given {type(limits)}")
        self.module = module if module is not None else _bundled_module(str(default_kernel_path()))
        self.limits = limits

    def forward(
        self, spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray
    ) -> np.ndarray:
        """Logits ``[n, classes]`` of the model on features ``x [n, input_dim]``."""
        flat = _flat_params(spec, params, "params")
        features = _features(spec, x)
        num_examples = features.shape[0]
        with self.module.job("forward", self.limits) as job:
            spec_ptr, params_ptr, x_ptr, logits_ptr = job.put_all(
                [spec.encode(), flat, features, num_examples * spec.num_classes * 4]
            )
            job.call_status(
                "sf_model_forward", spec_ptr, params_ptr, x_ptr, num_examples, logits_ptr
            )
            return job.read(logits_ptr, (num_examples, spec.num_classes), np.float32)

    def loss_and_gradient(
        self,
        spec: ModelSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean softmax cross-entropy over the samples and its gradient by parameter name."""
        flat = _flat_params(spec, params, "params")
        features = _features(spec, x)
        labels = _labels(spec, y, features.shape[0])
        num_examples = features.shape[0]
        with self.module.job("loss_and_gradient", self.limits) as job:
            spec_ptr, params_ptr, x_ptr, labels_ptr, grads_ptr, loss_ptr = job.put_all(
                [spec.encode(), flat, features, labels, flat.nbytes, 4]
            )
            job.call_status(
                "sf_model_loss_grad",
                spec_ptr,
                params_ptr,
                x_ptr,
                labels_ptr,
                num_examples,
                grads_ptr,
                loss_ptr,
            )
            grads = job.read(grads_ptr, flat.shape, np.float32)
            loss = float(job.read(loss_ptr, (1,), np.float32)[0])
        return loss, spec.unflatten(grads)

    def train(
        self,
        spec: ModelSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        mu: float = 0.0,
        seed: int,
        global_params: Mapping[str, np.ndarray] | None = None,
        job_name: str = "train",
        max_steps: int | None = None,
        fuel_budget: int | None = None,
        meter: bool = False,
    ) -> TrainResult:
        """Run all local epochs of minibatch SGD (FedProx when ``mu`` > 0) in one kernel call.

        Minibatches follow a splitmix64 shuffle of ``seed`` (kernels/ABI.md, "Shuffling");
        the proximal term pulls towards ``global_params`` (default: ``params``).

        ``max_steps`` stops the job after that many minibatch steps; ``fuel_budget`` stops it
        after the steps that fit in that much fuel (see :func:`steps_within_fuel`), always at
        a minibatch boundary, never with a trap. Either budget, or ``meter``, meters the job
        so that ``fuel_used`` is known.
        """
        flat = _flat_params(spec, params, "params")
        # The ClientApp trains from the global model itself (global_params is params): the
        # same mapping, already flattened and checked, is not flattened and checked twice.
        if global_params is None or global_params is params:
            global_flat = flat
        else:
            global_flat = _flat_params(spec, global_params, "global_params")
        features = _features(spec, x)
        num_examples = features.shape[0]
        labels = _labels(spec, y, num_examples)
        epochs = _int_at_least(epochs, 1, "epochs")
        batch_size = _int_at_least(batch_size, 1, "batch_size")
        lr = _finite_at_least(lr, 0.0, "lr")
        mu = _finite_at_least(mu, 0.0, "mu")
        seed = _seed(seed)
        steps_planned = epochs * math.ceil(num_examples / batch_size)
        if max_steps is not None:
            max_steps = _int_at_least(max_steps, 0, "max_steps")
        if fuel_budget is not None:
            fuel_budget = _fuel(fuel_budget, "fuel_budget")
        if max_steps is None and fuel_budget is None and not meter:
            return self._train_unbudgeted(
                spec, flat, global_flat, features, labels, epochs, batch_size, lr, mu, seed,
                job_name, steps_planned,
            )  # fmt: skip
        limits = self.limits
        if limits.fuel is None:
            # Metered with no cap of its own: the budget is enforced by the step count.
            limits = dataclasses.replace(limits, fuel=_UNCAPPED_FUEL)
        fuel_planning = 0
        with self.module.job(job_name, limits) as job:
            # The ABI lets global_params be 0 when mu == 0: no copy of weights that go unread.
            spec_ptr, *global_at, x_ptr, labels_ptr, loss_ptr, steps_ptr, params_ptr = job.put_all(
                [spec.encode(), *([global_flat] if mu > 0 else []), features, labels, 4, 4,
                 flat.nbytes]
            )  # fmt: skip
            global_ptr = global_at[0] if global_at else 0

            def run(steps: int) -> int:
                """sf_train_budget from the initial parameters; returns the call's fuel."""
                # The same buffer every time, so every call finds the heap in the same place.
                job.write(params_ptr, flat)
                before = job.fuel_used or 0
                job.call_status(
                    "sf_train_budget", spec_ptr, params_ptr, global_ptr, x_ptr, labels_ptr,
                    num_examples, epochs, batch_size, lr, mu, seed, steps, loss_ptr, steps_ptr,
                )  # fmt: skip
                return (job.fuel_used or 0) - before

            if fuel_budget is not None:
                shape_key = (
                    self.module.sha256,
                    str(spec),
                    num_examples,
                    epochs,
                    batch_size,
                    mu > 0,
                )
                # The set-up's fuel depends on the heap's history: the first call's scratch is
                # fresh memory, later calls zero the scratch the previous one dirtied (and pay
                # for it). A warm-up call first, so that the probes and the real run all start
                # from the same dirtied heap and pay the same set-up, cached probes or not:
                # the fuel a job reports never depends on what this process ran before.
                fuel_planning = run(0)
                probed = _PROBED_FUEL.get(shape_key)
                if probed is None:
                    probed = (run(0), run(1))
                    fuel_planning += sum(probed)
                    if len(_PROBED_FUEL) >= _PROBE_CACHE_SIZE:
                        _PROBED_FUEL.clear()
                    _PROBED_FUEL[shape_key] = probed
                fuel_no_step, fuel_one_step = probed
                fitting = steps_within_fuel(fuel_budget, fuel_no_step, fuel_one_step)
                max_steps = fitting if max_steps is None else min(max_steps, fitting)
            budget = steps_planned if max_steps is None else min(max_steps, steps_planned)
            if budget == 0:
                # Nothing fits: the device does no work (and spends no fuel on it).
                new_flat, loss, steps_done, fuel_used = flat.copy(), 0.0, 0, 0
            else:
                fuel_used = run(budget)
                new_flat = job.read(params_ptr, flat.shape, np.float32)
                loss = float(job.read(loss_ptr, (1,), np.float32)[0])
                steps_done = int(job.read(steps_ptr, (1,), np.int32)[0])
        return TrainResult(
            params=spec.unflatten(new_flat),
            loss=loss,
            seconds=job.kernel_seconds,
            fuel_used=fuel_used,
            num_examples=num_examples,
            steps_done=steps_done,
            steps_planned=steps_planned,
            fuel_planning=fuel_planning,
        )

    def _train_unbudgeted(
        self, spec, flat, global_flat, features, labels, epochs, batch_size, lr, mu, seed,
        job_name, steps_planned,
    ) -> TrainResult:  # fmt: skip
        """Run the plain ``sf_train`` path (no budget): what hosts without budgets always ran."""
        num_examples = features.shape[0]
        with self.module.job(job_name, self.limits) as job:
            # The ABI lets global_params be 0 when mu == 0: no copy of weights that go unread.
            spec_ptr, params_ptr, *global_at, x_ptr, labels_ptr, loss_ptr = job.put_all(
                [spec.encode(), flat, *([global_flat] if mu > 0 else []), features, labels, 4]
            )
            global_ptr = global_at[0] if global_at else 0
            job.call_status(
                "sf_train",
                spec_ptr,
                params_ptr,
                global_ptr,
                x_ptr,
                labels_ptr,
                num_examples,
                epochs,
                batch_size,
                lr,
                mu,
                seed,
                loss_ptr,
            )
            new_flat = job.read(params_ptr, flat.shape, np.float32)
            loss = float(job.read(loss_ptr, (1,), np.float32)[0])
        return TrainResult(
            params=spec.unflatten(new_flat),
            loss=loss,
            seconds=job.kernel_seconds,
            fuel_used=job.fuel_used,
            num_examples=num_examples,
            steps_done=steps_planned,
            steps_planned=steps_planned,
        )

    def evaluate(
        self,
        spec: ModelSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        job_name: str = "evaluate",
    ) -> EvalResult:
        """Mean loss and accuracy of the model on ``x``, ``y``."""
        flat = _flat_params(spec, params, "params")
        features = _features(spec, x)
        num_examples = features.shape[0]
        labels = _labels(spec, y, num_examples)
        with self.module.job(job_name, self.limits) as job:
            spec_ptr, params_ptr, x_ptr, labels_ptr, out_ptr = job.put_all(
                [spec.encode(), flat, features, labels, 8]
            )
            job.call_status(
                "sf_evaluate", spec_ptr, params_ptr, x_ptr, labels_ptr, num_examples, out_ptr
            )
            loss, accuracy = job.read(out_ptr, (2,), np.float32)
        return EvalResult(loss=float(loss), accuracy=float(accuracy), num_examples=num_examples)
