"""The flat run config of a federation, parsed once into a frozen, validated dataclass.

The run config arrives as a flat mapping (``[tool.flwr.app.config]``, or a scenario's
``to_run_config()`` passed to the ServerApp). Nothing downstream of :class:`FederationConfig`
reads the raw mapping: every key is checked here, and a bad value raises
:class:`RunConfigError` naming the key, the value given and what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kernels.spec import ModelSpec, ModelSpecError

from .clock import DeviceConfigError, DeviceSimulation
from .flower_strategies import STRATEGY_NAMES, StrategyParamsError, check_strategy_params

# Data keys of the run config: the coordinator records them and does not interpret them; it does
# not forward them either (clients read them from context.run_config, which every engine and a
# deployment give each ClientApp). simulations.partitions.DATA_KEYS is this list plus "seed".
DATA_KEYS: tuple[str, ...] = (
    "dataset",
    "dataset-path",
    "synthetic-alpha",
    "synthetic-beta",
    "partitioning",
    "dirichlet-alpha",
    "shards-per-client",
    "num-partitions",
    "test-fraction",
)

# Fault-injection keys of a simulation scenario's [faults] section (simulations.faults reads
# them). The coordinator forwards them to the clients like the data keys and does not interpret
# them; they are listed here because coordinator/ must not import simulations/.
FAULT_KEYS: tuple[str, ...] = (
    "faults-dropout",
    "faults-crash",
    "faults-slow",
    "faults-slow-fuel",
    "faults-byzantine",
    "faults-attack",
    "faults-attack-scale",
    "faults-noise-std",
)

# Keys that may be left out, and the value they then take. Each default is the value that
# switches the feature off, so leaving a key out never changes what the federation computes
# in a surprising way.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "strategy-params": "{}",  # the Flower strategy's own defaults
        "server-lr": 1.0,  # W_next = W + aggregate(deltas)
        "proximal-mu": 0.0,  # no proximal term
        "kernel-sha256": "",  # no kernel pin
        "clip-delta-norm": math.inf,  # no server-side clipping of deltas
        "max-num-examples": 0,  # no absolute bound on a client's num-examples claim
        # A num-examples claim above this many times the round's median claim is clipped to
        # it (0: off). A safety default, not an off switch: one client claiming 10**12
        # examples must not take over a weighted mean (validation.clip_num_examples).
        "max-examples-ratio": 10.0,
        "resume-from": "",  # a fresh run (else: the run folder whose checkpoint to continue)
        "devices": "",  # no device simulation (coordinator.clock): no clock, no deadline
    }
)

REQUIRED_KEYS: tuple[str, ...] = (
    "scenario",
    "seed",
    "num-rounds",
    "fraction-train",
    "fraction-evaluate",
    "local-epochs",
    "batch-size",
    "lr",
    "strategy",
    "model",
    "max-delta-norm",
    "out-dir",
)

KNOWN_KEYS: frozenset[str] = (
    frozenset(REQUIRED_KEYS) | frozenset(DEFAULTS) | frozenset(DATA_KEYS) | frozenset(FAULT_KEYS)
)

ConfigScalar = str | int | float | bool


class RunConfigError(ValueError):
    """A run config key is missing, unknown, or has a value of the wrong type or range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"run config {key!r}: {problem}")
        self.key = key


@dataclass(frozen=True)
class FederationConfig:
    """The resolved, validated run config. Build with :meth:`from_run_config`."""

    scenario: str
    seed: int
    num_rounds: int
    fraction_train: float
    fraction_evaluate: float
    local_epochs: int
    batch_size: int
    lr: float
    proximal_mu: float
    strategy: str
    strategy_params_json: str  # canonical JSON (sorted keys); see :attr:`strategy_params`
    server_lr: float
    model: ModelSpec
    max_delta_norm: float
    out_dir: Path
    kernel_sha256: str
    data: tuple[tuple[str, ConfigScalar], ...]  # the data keys present, in DATA_KEYS order
    clip_delta_norm: float = math.inf  # OK deltas above this L2 norm are scaled down to it
    max_num_examples: int = 0  # 0: no absolute bound on num-examples claims
    max_examples_ratio: float = 10.0  # 0: no bound relative to the round's median claim
    faults: tuple[tuple[str, ConfigScalar], ...] = ()  # FAULT_KEYS present, forwarded as is
    resume_from: str = ""  # a run folder whose latest checkpoint this run continues
    devices: DeviceSimulation | None = None  # simulated device clock and deadline

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationConfig:
        """Parse and validate a flat run config.

        Parameters
        ----------
        run_config : the flat mapping of run config keys (``context.run_config``).

        Returns
        -------
        FederationConfig

        Raises
        ------
        RunConfigError
            For an unknown key, a missing required key, or a value of the wrong type or out of
            range; the error names the key.
        """
        if not isinstance(run_config, Mapping):
            raise RunConfigError("<run config>", f"expected a mapping, given {type(run_config)}")
        unknown = sorted(set(run_config) - KNOWN_KEYS)
        if unknown:
            raise RunConfigError(
                unknown[0], f"unknown key(s) {unknown}; known keys are {sorted(KNOWN_KEYS)}"
            )
        missing = [key for key in REQUIRED_KEYS if key not in run_config]
        if missing:
            raise RunConfigError(missing[0], f"required key(s) {missing} missing")
        values = dict(DEFAULTS) | dict(run_config)

        strategy = _string(values, "strategy").strip().lower()
        if strategy not in STRATEGY_NAMES:
            raise RunConfigError(
                "strategy", f"expected one of {list(STRATEGY_NAMES)}, given {strategy!r}"
            )
        strategy_params = _json_object(values, "strategy-params")
        try:
            check_strategy_params(strategy, strategy_params)
        except StrategyParamsError as error:
            raise RunConfigError("strategy-params", str(error)) from error
        try:
            model = ModelSpec.parse(_string(values, "model"))
        except ModelSpecError as error:
            raise RunConfigError("model", str(error)) from error
        kernel_sha256 = _string(values, "kernel-sha256").strip().lower()
        if kernel_sha256 and not _is_sha256(kernel_sha256):
            raise RunConfigError(
                "kernel-sha256", f"expected 64 hex digits or '', given {kernel_sha256!r}"
            )
        data = tuple((key, _scalar(values, key)) for key in DATA_KEYS if key in values)
        faults = tuple((key, _scalar(values, key)) for key in FAULT_KEYS if key in values)
        devices_text = _string(values, "devices").strip()
        try:
            devices = DeviceSimulation.from_json(devices_text) if devices_text else None
        except DeviceConfigError as error:
            raise RunConfigError("devices", str(error)) from error

        return cls(
            scenario=_string(values, "scenario"),
            seed=_integer(values, "seed", minimum=0),
            num_rounds=_integer(values, "num-rounds", minimum=1),
            fraction_train=_fraction(values, "fraction-train", allow_zero=False),
            fraction_evaluate=_fraction(values, "fraction-evaluate", allow_zero=True),
            local_epochs=_integer(values, "local-epochs", minimum=1),
            batch_size=_integer(values, "batch-size", minimum=1),
            lr=_positive(values, "lr"),
            proximal_mu=_non_negative(values, "proximal-mu"),
            strategy=strategy,
            strategy_params_json=json.dumps(strategy_params, sort_keys=True),
            server_lr=_positive(values, "server-lr"),
            model=model,
            max_delta_norm=_positive(values, "max-delta-norm", allow_inf=True),
            out_dir=Path(_string(values, "out-dir", allow_empty=False)),
            kernel_sha256=kernel_sha256,
            data=data,
            clip_delta_norm=_positive(values, "clip-delta-norm", allow_inf=True),
            max_num_examples=_integer(values, "max-num-examples", minimum=0),
            max_examples_ratio=_ratio(values, "max-examples-ratio"),
            faults=faults,
            resume_from=_string(values, "resume-from").strip(),
            devices=devices,
        )

    # -- derived views --------------------------------------------------------------------------
    @property
    def strategy_params(self) -> dict[str, Any]:
        """The Flower strategy's own constructor parameters (a fresh dict)."""
        return json.loads(self.strategy_params_json)

    def to_run_config(self) -> dict[str, ConfigScalar]:
        """Return the full resolved run config (defaults filled in), flat, as reported."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "num-rounds": self.num_rounds,
            "fraction-train": self.fraction_train,
            "fraction-evaluate": self.fraction_evaluate,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "lr": self.lr,
            "proximal-mu": self.proximal_mu,
            "strategy": self.strategy,
            "strategy-params": self.strategy_params_json,
            "server-lr": self.server_lr,
            "model": str(self.model),
            "max-delta-norm": self.max_delta_norm,
            "out-dir": str(self.out_dir),
            "kernel-sha256": self.kernel_sha256,
            "clip-delta-norm": self.clip_delta_norm,
            "max-num-examples": self.max_num_examples,
            "max-examples-ratio": self.max_examples_ratio,
            **dict(self.data),
            **dict(self.faults),
            "resume-from": self.resume_from,
            **({"devices": self.devices.to_json()} if self.devices is not None else {}),
        }

    def client_config(self, server_round: int) -> dict[str, ConfigScalar]:
        """Return what every train/evaluate message carries in its ConfigRecord (messages.md)."""
        return {
            "server-round": int(server_round),
            "lr": self.lr,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "proximal-mu": self.proximal_mu,
            "seed": self.seed,
            "model": str(self.model),
            "kernel-sha256": self.kernel_sha256,
            **dict(self.faults),
        }


# -- typed readers ----------------------------------------------------------------------------
def _string(values: Mapping[str, Any], key: str, *, allow_empty: bool = True) -> str:
    value = values[key]
    if not isinstance(value, str):
        raise RunConfigError(key, f"expected a string, given {value!r} ({type(value).__name__})")
    if not allow_empty and not value.strip():
        raise RunConfigError(key, "expected a non-empty string")
    return value


def _integer(values: Mapping[str, Any], key: str, *, minimum: int) -> int:
    value = values[key]
    # bool is an int subclass; `true` for a count is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunConfigError(key, f"expected an integer, given {value!r} ({type(value).__name__})")
    if value < minimum:
        raise RunConfigError(key, f"expected an integer >= {minimum}, given {value}")
    return int(value)


def _number(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunConfigError(key, f"expected a number, given {value!r} ({type(value).__name__})")
    number = float(value)
    if math.isnan(number):
        raise RunConfigError(key, "expected a number, given nan")
    return number


def _positive(values: Mapping[str, Any], key: str, *, allow_inf: bool = False) -> float:
    number = _number(values, key)
    if not number > 0 or (math.isinf(number) and not allow_inf):
        expected = "a number > 0" + (" (inf allowed)" if allow_inf else ", finite")
        raise RunConfigError(key, f"expected {expected}, given {number}")
    return number


def _non_negative(values: Mapping[str, Any], key: str) -> float:
    number = _number(values, key)
    if not 0 <= number < math.inf:
        raise RunConfigError(key, f"expected a finite number >= 0, given {number}")
    return number


def _ratio(values: Mapping[str, Any], key: str) -> float:
    number = _number(values, key)
    if not (number == 0 or 1 <= number < math.inf):
        raise RunConfigError(key, f"expected 0 (off) or a finite number >= 1, given {number}")
    return number


def _fraction(values: Mapping[str, Any], key: str, *, allow_zero: bool) -> float:
    number = _number(values, key)
    low_ok = number >= 0 if allow_zero else number > 0
    if not (low_ok and number <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise RunConfigError(key, f"expected a fraction in {interval}, given {number}")
    return number


def _scalar(values: Mapping[str, Any], key: str) -> ConfigScalar:
    value = values[key]
    if not isinstance(value, str | int | float | bool):
        raise RunConfigError(
            key, f"expected a string, number or boolean, given {value!r} ({type(value).__name__})"
        )
    return value


def _json_object(values: Mapping[str, Any], key: str) -> dict[str, Any]:
    text = _string(values, key)
    try:
        parsed = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise RunConfigError(
            key, f"not valid JSON ({error.msg} at column {error.colno})"
        ) from error
    if not isinstance(parsed, dict):
        raise RunConfigError(key, f"expected a JSON object, given {text!r}")
    return parsed


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)
