"""The public Python API of the kernels: forward, gradient, local training, evaluation.

Each method validates its inputs, opens one sandbox job (a fresh Store and Instance, see
client/sandbox.py), copies the model spec, parameters and data into linear memory, makes ONE
model-level kernel call (kernels/ABI.md, "Model entries") and copies the results out.
Results agree with kernels/reference.py (the numpy reference, same semantics and shuffle)
to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import kernels
from client.sandbox import KernelModule, Limits
from kernels.spec import ModelSpec

RELAXED_KERNEL = "sandflower-relaxed.wasm"
SIMD128_KERNEL = "sandflower-simd128.wasm"

_UINT64_END = 2**64
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_DEFAULT_LIMITS = Limits()
# The fuel a metered job gets when its Limits set none: far more than any job can use (a
# 2^62-instruction job would run for decades), so metering only counts.
_UNCAPPED_FUEL = 2**62
# Fuel depends on the job's shapes, not its values (kernels/ABI.md, "Step budgets"): the probes
# of a fuel budget are measured once per shape and module. A device runs the same shapes every
# round, and three extra kernel calls cost as much as a small job.
_PROBED_FUEL: dict[tuple, tuple[int, int]] = {}
_PROBE_CACHE_SIZE = 4096


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one local training job.

    Attributes
    ----------
    params
        The NEW local parameters, by name (``ModelSpec.array_shapes()``).
    loss
        Mean per-sample training loss over all minibatches of all epochs.
    seconds
        Wall time spent inside kernel calls.
    fuel_used
        Fuel the job consumed, None when it ran unmetered. With a budget or ``meter``: the
        fuel of the training call alone (what the simulated clock charges).
    num_examples
        Training samples (per epoch).
    steps_done
        Minibatch steps run (fewer than ``steps_planned`` when a budget stopped the job).
    steps_planned
        Minibatch steps of the whole job (``epochs * ceil(n / batch_size)``).
    fuel_planning
        Fuel of the metered probes (a warm-up, 0 steps, 1 step) that turned a fuel budget into
        a step budget (not part of ``fuel_used``); 0 without a fuel budget; the warm-up only
        when this process already probed a job of the same shapes.
    """

    params: dict[str, np.ndarray]
    loss: float
    seconds: float
    fuel_used: int | None
    num_examples: int
    steps_done: int = 0
    steps_planned: int = 0
    fuel_planning: int = 0

    @property
    def partial(self) -> bool:
        """True when a budget stopped the job before all its planned steps."""
        return self.steps_done < self.steps_planned


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and accuracy (argmax, first max wins) over ``num_examples`` samples."""

    loss: float
    accuracy: float
    num_examples: int


def default_kernel_path(relaxed_simd: bool = True) -> Path:
    """Return the bundled kernel: the relaxed-SIMD build, or the plain SIMD128 one.

    Looked for next to the running code first (a source tree, a regular install), then in the
    installed ``sandflower`` distribution. The second place matters on a SuperNode: Flower 1.42
    runs the ClientApp from the app bundle (FAB), and a FAB carries only .py/.toml/.md/.json
    files (its built-in include patterns win over ``fab-include``), so the .wasm comes from the
    sandflower that is installed on the device, and the coordinator's sha256 pin checks it.
    """
    name = RELAXED_KERNEL if relaxed_simd else SIMD128_KERNEL
    beside_code = Path(kernels.__file__).resolve().parent / "wasm" / name
    if beside_code.is_file():
        return beside_code
    installed = _installed_kernel_dir()
    if installed is not None and (installed / name).is_file():
        return installed / name
    return beside_code  # missing: loading it raises an error that names this path


def _installed_kernel_dir() -> Path | None:
    """kernels/wasm of the installed sandflower distribution (regular or editable install)."""
    try:
        distribution = importlib.metadata.distribution("sandflower")
    except importlib.metadata.PackageNotFoundError:
        return None
    candidates = [Path(str(distribution.locate_file("kernels/wasm")))]
    direct_url = distribution.read_text("direct_url.json")
    if direct_url:  # an editable install points at its source tree
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            source_tree = Path(urllib.parse.unquote(url.removeprefix("file://")))
            candidates.append(source_tree / "kernels" / "wasm")
    return next((path for path in candidates if path.is_dir()), None)


@functools.lru_cache(maxsize=2)
def _bundled_module(path: str) -> KernelModule:
    return KernelModule.from_file(path)


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
            spec_ptr = job.put(spec.encode())
            params_ptr = job.put(flat)
            x_ptr = job.put(features)
            logits_ptr = job.alloc(num_examples * spec.num_classes * 4)
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
            spec_ptr = job.put(spec.encode())
            params_ptr = job.put(flat)
            x_ptr = job.put(features)
            labels_ptr = job.put(labels)
            grads_ptr = job.alloc(flat.nbytes)
            loss_ptr = job.alloc(4)
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
        global_flat = (
            flat if global_params is None else _flat_params(spec, global_params, "global_params")
        )
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
            spec_ptr = job.put(spec.encode())
            # The ABI lets global_params be 0 when mu == 0: no copy of weights that go unread.
            global_ptr = job.put(global_flat) if mu > 0 else 0
            x_ptr = job.put(features)
            labels_ptr = job.put(labels)
            loss_ptr = job.alloc(4)
            steps_ptr = job.alloc(4)
            params_ptr = job.alloc(flat.nbytes)

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
        """Run the plain ``sf_train`` path (no budget), as hosts without budgets always did."""
        num_examples = features.shape[0]
        with self.module.job(job_name, self.limits) as job:
            spec_ptr = job.put(spec.encode())
            params_ptr = job.put(flat)
            # The ABI lets global_params be 0 when mu == 0: no copy of weights that go unread.
            global_ptr = job.put(global_flat) if mu > 0 else 0
            x_ptr = job.put(features)
            labels_ptr = job.put(labels)
            loss_ptr = job.alloc(4)
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
            spec_ptr = job.put(spec.encode())
            params_ptr = job.put(flat)
            x_ptr = job.put(features)
            labels_ptr = job.put(labels)
            out_ptr = job.alloc(8)
            job.call_status(
                "sf_evaluate", spec_ptr, params_ptr, x_ptr, labels_ptr, num_examples, out_ptr
            )
            loss, accuracy = job.read(out_ptr, (2,), np.float32)
        return EvalResult(loss=float(loss), accuracy=float(accuracy), num_examples=num_examples)


def steps_within_fuel(fuel_budget: int, fuel_no_step: int, fuel_one_step: int) -> int:
    """How many minibatch steps of a job surely fit in ``fuel_budget``.

    ``fuel_no_step`` and ``fuel_one_step`` are the measured fuel of the same job stopped after
    0 and 1 steps. Fuel is deterministic and the kernels' instruction counts depend on shapes
    only, not on values; a step costs at most the first one (a full minibatch plus an epoch's
    shuffle; a later step has at most that, kernels/ABI.md "Step budgets"), so k steps cost at
    most ``fuel_no_step + k * (fuel_one_step - fuel_no_step)``.
    """
    per_step = fuel_one_step - fuel_no_step
    if per_step <= 0:
        raise ValueError(
            f"fuel_one_step: expected more than fuel_no_step = {fuel_no_step}, "
            f"given {fuel_one_step}"
        )
    if fuel_budget < fuel_no_step:
        return 0
    return (fuel_budget - fuel_no_step) // per_step


# -- input validation -----------------------------------------------------------------------
def _fuel(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{what}: expected an int >= 0, given {value!r}")
    if value >= _UNCAPPED_FUEL:
        raise ValueError(f"{what}: expected an int < 2**62, given {value}")
    return int(value)


def _flat_params(spec: ModelSpec, params: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    if not isinstance(params, Mapping):
        raise ValueError(f"{what}: expected a mapping of name -> array, given {type(params)}")
    try:
        flat = spec.flatten(params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: {error}") from error
    if not np.isfinite(flat).all():
        bad = [
            name
            for name, array in params.items()
            if not np.isfinite(np.asarray(array, np.float32)).all()
        ]
        raise ValueError(f"{what}: expected finite values, {bad} have NaN or inf")
    return flat


def _features(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    try:
        features = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"x: expected float32-convertible features, given {error}") from error
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] != spec.input_dim:
        raise ValueError(
            f"x: expected shape [n >= 1, {spec.input_dim}] for model {spec}, "
            f"given {list(np.shape(x))}"
        )
    if not np.isfinite(features).all():
        raise ValueError("x: expected finite features, given NaN or inf (after float32 conversion)")
    return np.ascontiguousarray(features)


def _labels(spec: ModelSpec, y: np.ndarray, num_examples: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y: expected integer class labels, given dtype {labels.dtype}")
    if labels.shape != (num_examples,):
        raise ValueError(
            f"y: expected shape [{num_examples}] (one label per row of x), "
            f"given {list(labels.shape)}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= spec.num_classes:
        raise ValueError(
            f"y: expected labels in [0, {spec.num_classes}) for model {spec}, "
            f"given values in [{low}, {high}]"
        )
    return labels.astype(np.int32)


def _int_at_least(value: int, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, given {value!r}")
    if value >= 2**31:
        raise ValueError(f"{what}: expected an int < 2**31, given {value}")
    return int(value)


def _finite_at_least(value: float, minimum: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what}: expected a number, given {value!r}")
    value = float(value)
    # The kernels take float32: a value that overflows float32 is not finite for them.
    if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX and value >= minimum):
        raise ValueError(f"{what}: expected a finite number >= {minimum}, given {value!r}")
    return value


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed: expected an int, given {seed!r}")
    seed = int(seed)
    if not -(2**63) <= seed < _UINT64_END:
        raise ValueError(f"seed: expected an int in [-2**63, 2**64), given {seed}")
    # The ABI reads the seed as uint64; the sandbox passes the i64 bits unchanged.
    return seed % _UINT64_END


__all__ = [
    "EvalResult",
    "KernelRunner",
    "TrainResult",
    "default_kernel_path",
    "steps_within_fuel",
]
