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
from protos import contract

from . import schema
from .clock import DeviceConfigError, DeviceSimulation
from .flower_strategies import StrategyParamsError, check_strategy_params

# Data keys of the run config: the coordinator records them and does not interpret them; it does
# not forward them either (clients read them from context.run_config, which every engine and a
# deployment give each ClientApp). simulations.federated_data.DATA_KEYS is this list plus "seed".
# The simulation's schema declares them (simulations/scenario_sections.py, DataSection's flat
# keys and [federation] clients' num-partitions); coordinator/ must not import simulations/, so
# they are listed here and tests/simulations/test_scenario_sections.py keeps the two equal.
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
# them; they are listed here because coordinator/ must not import simulations/ (the schema's
# FaultsSection declares them; tests/simulations/test_scenario_sections.py keeps them equal).
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

# The coordinator's keys, from the one schema (coordinator/schema.py): those a run config
# must carry, and those that may be left out with the default they then take. Each default is
# the value that switches the feature off (max-examples-ratio's 10 is a safety default), so
# leaving a key out never changes what the federation computes in a surprising way.
_FLAT = schema.flat_settings()
REQUIRED_KEYS: tuple[str, ...] = tuple(key for key, place in _FLAT.items() if place.required)
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        key: schema.section_fields(place.section)[place.name].default
        for key, place in _FLAT.items()
        if not place.required
    }
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
                unknown[0], schema.unknown_key_problem(unknown[0], sorted(KNOWN_KEYS))
            )
        missing = [key for key in REQUIRED_KEYS if key not in run_config]
        if missing:
            raise RunConfigError(missing[0], f"required key(s) {missing} missing")
        # One schema (coordinator/schema.py) checks every key the coordinator reads; the
        # sections are the same a scenario file is validated with.
        sections = {
            section: schema.validate_flat(section, run_config, RunConfigError)
            for section in schema.COORDINATOR_SECTIONS
        }
        scenario = sections[schema.ScenarioSection]
        federation = sections[schema.FederationSection]
        training = sections[schema.TrainingSection]
        run = sections[schema.RunSection]

        strategy_params = _json_object("strategy-params", run.strategy_params)
        _check_strategy_params(federation.strategy, strategy_params)
        try:
            model = ModelSpec.parse(run.model)
        except ModelSpecError as error:
            raise RunConfigError("model", str(error)) from error
        data = tuple((key, _scalar(run_config, key)) for key in DATA_KEYS if key in run_config)
        faults = tuple((key, _scalar(run_config, key)) for key in FAULT_KEYS if key in run_config)
        try:
            devices = DeviceSimulation.from_json(run.devices) if run.devices else None
        except DeviceConfigError as error:
            raise RunConfigError("devices", str(error)) from error

        return cls(
            scenario=scenario.name,
            seed=scenario.seed,
            num_rounds=federation.rounds,
            fraction_train=federation.fraction_train,
            fraction_evaluate=federation.fraction_evaluate,
            local_epochs=training.local_epochs,
            batch_size=training.batch_size,
            lr=training.lr,
            proximal_mu=training.proximal_mu,
            strategy=federation.strategy,
            strategy_params_json=json.dumps(strategy_params, sort_keys=True),
            server_lr=federation.server_lr,
            model=model,
            max_delta_norm=federation.max_delta_norm,
            out_dir=Path(run.out_dir),
            kernel_sha256=run.kernel_sha256,
            data=data,
            clip_delta_norm=federation.clip_delta_norm,
            max_num_examples=federation.max_num_examples,
            max_examples_ratio=federation.max_examples_ratio,
            faults=faults,
            resume_from=run.resume_from,
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
        # The keys are the message contract's (protos/contract.py), which the client checks.
        return {
            contract.CONFIG_SERVER_ROUND: int(server_round),
            contract.CONFIG_LR: self.lr,
            contract.CONFIG_LOCAL_EPOCHS: self.local_epochs,
            contract.CONFIG_BATCH_SIZE: self.batch_size,
            contract.CONFIG_PROXIMAL_MU: self.proximal_mu,
            contract.CONFIG_SEED: self.seed,
            contract.CONFIG_MODEL: str(self.model),
            contract.CONFIG_KERNEL_SHA256: self.kernel_sha256,
            **dict(self.faults),
        }


# -- the two keys that are not plain scalars ------------------------------------------------------
def _scalar(values: Mapping[str, Any], key: str) -> ConfigScalar:
    # Data and fault keys are forwarded to the clients as they are (their rules live with the
    # simulation's schema, simulations/), but a run config value is always a scalar.
    value = values[key]
    if not isinstance(value, str | int | float | bool):
        raise RunConfigError(
            key, f"expected a string, number or boolean, given {value!r} ({type(value).__name__})"
        )
    return value


def _check_strategy_params(strategy: str, params: Mapping[str, Any]) -> None:
    # The one check (coordinator.flower_strategies, over the schema's parameter table), its
    # error re-raised under the run config key that carries the parameters.
    try:
        check_strategy_params(strategy, params)
    except StrategyParamsError as error:
        raise RunConfigError("strategy-params", str(error)) from error


def _json_object(key: str, text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise RunConfigError(
            key, f"not valid JSON ({error.msg} at column {error.colno})"
        ) from error
    except (ValueError, RecursionError) as error:  # an integer of > 4300 digits; deep nesting
        raise RunConfigError(key, f"not valid JSON ({type(error).__name__}: {error})") from error
    if not isinstance(parsed, dict):
        raise RunConfigError(key, f"expected a JSON object, given {text!r}")
    return parsed
