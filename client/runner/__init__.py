"""The public Python API of the kernels: forward, gradient, local training, evaluation.

Each method validates its inputs, opens one sandbox job (a fresh Store and Instance, see
client/sandbox/), copies the model spec, parameters and data into linear memory, makes ONE
model-level kernel call (kernels/ABI.md, "Model entries") and copies the results out.
Results agree with kernels/reference.py (the numpy reference, same semantics and shuffle)
to float32 rounding.

The package: ``kernel_runner`` (:class:`KernelRunner`), ``results`` (:class:`TrainResult`,
:class:`EvalResult`), ``inputs`` (the checks on every argument), ``fuel`` (fuel budgets as
step budgets: :func:`steps_within_fuel`) and ``kernel_path`` (where the bundled kernel is:
:func:`default_kernel_path`). Import the public names from here.
"""

from __future__ import annotations

from client.runner.fuel import _PROBED_FUEL as _PROBED_FUEL  # the fuel-budget tests read it
from client.runner.fuel import steps_within_fuel
from client.runner.kernel_path import RELAXED_KERNEL, SIMD128_KERNEL, default_kernel_path
from client.runner.kernel_runner import KernelRunner
from client.runner.results import EvalResult, TrainResult

__all__ = [
    "RELAXED_KERNEL",
    "SIMD128_KERNEL",
    "EvalResult",
    "KernelRunner",
    "TrainResult",
    "default_kernel_path",
    "steps_within_fuel",
]
