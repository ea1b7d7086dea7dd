"""Faults and attacks for simulations: a ClientApp wrapper that makes some clients misbehave.

A scenario's ``[faults]`` section becomes flat run-config keys (``FAULT_KEYS``). The coordinator
forwards them, uninterpreted, in every train/evaluate message config, like the data keys; the
wrapper reads them from the message (not from the node config: a simulation engine gives every
node the same node config, and the message is what each engine already carries to each worker).
Everything is drawn from the run seed, so the same scenario and seed fault the same clients in
the same rounds on any engine:

- Byzantine clients: ``round(byzantine * num-partitions)`` partitions, drawn once per run from
  ``(seed, STREAM, 0)``; they train and then attack (:data:`ATTACKS`) in every round.
- Per-round faults, for every sampled client, from ``(seed, STREAM, round, partition)``:
  dropout (an error reply with code :data:`ERROR_DROPOUT`; Flower's engines wait for every
  reply until the round timeout, so a silent client is simulated by this reply, and the
  coordinator counts it FAILED like a missing reply), crash (error reply :data:`ERROR_CRASH`),
  slow (the job runs with a fuel budget of ``faults-slow-fuel``, the real kernel runs out of
  fuel and the client's own error reply says so).

Faults apply to training jobs of rounds >= 1 only; evaluation is left honest, so the federated
evaluation figures stay comparable. :func:`fault_labels` tells the coordinator's report which
client was given which fault (ground truth known to the simulation, never read from replies).

``app`` is the Sandflower ClientApp wrapped (importable as ``simulations.faults:app`` by any
engine's worker process); :func:`with_faults` wraps any other ClientApp.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp

from coordinator import schema
from protos.contract import CONFIG_SEED, CONFIG_SERVER_ROUND, RECORD_ARRAYS, RECORD_CONFIG
from simulations.scenario_sections import ATTACKS, FaultsSection

# The flat run-config keys are the schema's (FaultsSection's `flat` names); coordinator.config
# lists them as FAULT_KEYS to forward them (a test keeps the two equal). The attacks (ATTACKS)
# are the schema's Literal too, so that a scenario file and this module know the same ones.
# Set by the wrapper in a label-flipping client's run config (the data keys' home, which its
# data source reads); read by simulations.federated_data.
LABEL_FLIP_KEY = "faults-label-flip"

FAULTS: tuple[str, ...] = ("dropout", "crash", "slow")

# Error codes of simulated faults (Flower's are 0..8, a client's own are
# protos.contract.ClientErrorCode, 1001..1006; 1900..1999 are left to simulated faults).
ERROR_DROPOUT = 1901
ERROR_CRASH = 1902

# A stream id of its own, so fault draws never coincide with data or init draws of the seed.
STREAM = 0xFA017


class FaultConfigError(ValueError):
    """A fault key has a value of the wrong type or range (the message names the key)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


# Flat key -> FaultsSection field name (the schema's `flat` metadata, one source).
_FIELD_OF_KEY: Mapping[str, str] = MappingProxyType(
    {key: place.name for key, place in schema.flat_settings((FaultsSection,)).items()}
)
_KEY_OF_FIELD: Mapping[str, str] = MappingProxyType({v: k for k, v in _FIELD_OF_KEY.items()})
FAULT_KEYS: tuple[str, ...] = tuple(_FIELD_OF_KEY)


@dataclass(frozen=True)
class FaultConfig:
    """The [faults] section, validated. All zero: no faults.

    Each value is checked by the one schema's rule for its key
    (:class:`simulations.scenario_sections.FaultsSection`); this class adds the rule across
    keys (dropout, crash and slow share one draw) and what the faults do.
    """

    dropout: float = 0.0
    crash: float = 0.0
    slow: float = 0.0
    slow_fuel: int = 1000
    byzantine: float = 0.0
    attack: str = "signflip"
    attack_scale: float = 10.0
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        """Check every value against the schema's [faults] rules, then the shares' sum."""
        for config_field in fields(self):
            name = config_field.name
            value, problem = schema.validate_value(FaultsSection, name, getattr(self, name))
            if problem is not None:
                raise FaultConfigError(_KEY_OF_FIELD[name], problem)
            # The validated value (an int given for a float becomes the float), set the way
            # a frozen dataclass sets its fields itself.
            object.__setattr__(self, name, value)
        if self.dropout + self.crash + self.slow > 1.0:
            raise FaultConfigError(
                "faults-dropout",
                "dropout + crash + slow are shares of one draw: expected a sum <= 1, given "
                f"{self.dropout + self.crash + self.slow}",
            )

    @property
    def active(self) -> bool:
        """Return True when any fault is switched on."""
        return self.dropout > 0 or self.crash > 0 or self.slow > 0 or self.byzantine > 0

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> FaultConfig:
        """Read the ``faults-*`` keys of a flat (run or message) config; absent keys: defaults.

        Raises
        ------
        FaultConfigError
            Naming the first key whose value the schema refuses (type or range).
        """
        # Every message of a run carries the same fault keys: the validated config is cached
        # by what was given (value types included: 1, 1.0 and True hash alike, but only some
        # are valid for a key), so the schema's checks run once per run, not once per message.
        given = tuple(
            (key, type(config[key]), config[key]) for key in _FIELD_OF_KEY if key in config
        )
        if all(isinstance(value, _SCALARS) for _, _, value in given):
            return _from_given(given)
        return _from_given.__wrapped__(given)  # an unhashable value: refused, not cached

    def to_run_config(self) -> dict[str, str | int | float]:
        """Return the flat keys; none when no fault is on (the run config stays as it was)."""
        if not self.active:
            return {}
        return {key: getattr(self, name) for key, name in _FIELD_OF_KEY.items()}

    # -- who does what ------------------------------------------------------------------------
    def byzantine_partitions(self, seed: int, num_partitions: int) -> frozenset[int]:
        """Return the partitions that attack in every round of this run (fixed by the seed)."""
        count = int(round(self.byzantine * num_partitions))
        if count == 0:
            return frozenset()
        rng = np.random.default_rng([seed, STREAM, 0])
        return frozenset(int(p) for p in rng.choice(num_partitions, size=count, replace=False))

    def round_fault(self, seed: int, server_round: int, partition_id: int) -> str:
        """Return "dropout", "crash", "slow" or "" for this client in this round."""
        if server_round < 1 or not (self.dropout or self.crash or self.slow):
            return ""
        draw = np.random.default_rng([seed, STREAM, server_round, partition_id + 1]).random()
        if draw < self.dropout:
            return "dropout"
        if draw < self.dropout + self.crash:
            return "crash"
        if draw < self.dropout + self.crash + self.slow:
            return "slow"
        return ""


_SCALARS = (str, int, float, bool)


@functools.lru_cache(maxsize=64)
def _from_given(given: tuple[tuple[str, type, Any], ...]) -> FaultConfig:
    return FaultConfig(**{_FIELD_OF_KEY[key]: value for key, _, value in given})


def fault_labels(run_config: Mapping[str, Any]) -> Callable[[int, int], tuple[str, str]] | None:
    """``(partition_id, server_round) -> (fault, attack)`` for the report; None without faults.

    The coordinator takes this as ground truth from the layer that injected the faults.
    """
    faults = FaultConfig.from_mapping(run_config)
    if not faults.active:
        return None
    seed = int(run_config["seed"])
    attackers = faults.byzantine_partitions(seed, int(run_config["num-partitions"]))

    def labels(partition_id: int, server_round: int) -> tuple[str, str]:
        if partition_id < 0:
            return "", ""
        attack = faults.attack if partition_id in attackers else ""
        return faults.round_fault(seed, server_round, partition_id), attack

    return labels


# -- the wrapper ------------------------------------------------------------------------------
def with_faults(inner: ClientApp) -> ClientApp:
    """Return a ClientApp that runs ``inner`` and injects the faults the message config asks for."""
    wrapped = ClientApp()

    @wrapped.train()
    def train(message: Message, context: Context) -> Message:
        return _faulty_train(inner, message, context)

    @wrapped.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return inner(message, context)

    return wrapped


def _faulty_train(inner: ClientApp, message: Message, context: Context) -> Message:
    config = _message_config(message)
    partition = context.node_config.get("partition-id")
    if config is None or partition is None:
        return inner(message, context)
    faults = FaultConfig.from_mapping(config)
    if not faults.active:
        return inner(message, context)
    seed = _as_int(config[CONFIG_SEED])
    server_round = _as_int(config.get(CONFIG_SERVER_ROUND, 0))
    partition_id = _as_int(partition)
    fault = faults.round_fault(seed, server_round, partition_id)
    if fault == "dropout":
        return Message(
            Error(ERROR_DROPOUT, "simulated dropout: no reply this round"), reply_to=message
        )
    if fault == "crash":
        return Message(Error(ERROR_CRASH, "simulated crash of the client"), reply_to=message)
    if fault == "slow":
        node_config = dict(context.node_config) | {"fuel": int(faults.slow_fuel)}
        context = Context(
            context.run_id, context.node_id, node_config, context.state, context.run_config
        )
    # The scenario's partition count, from the run config as fault_labels reads it (the
    # coordinator does not forward the data keys).
    num_partitions = _as_int(context.run_config.get("num-partitions", 0))
    if server_round < 1 or partition_id not in faults.byzantine_partitions(seed, num_partitions):
        return inner(message, context)
    if faults.attack == "labelflip":
        run_config = dict(context.run_config) | {LABEL_FLIP_KEY: True}
        context = Context(
            context.run_id, context.node_id, context.node_config, context.state, run_config
        )
        return inner(message, context)
    reply = inner(message, context)
    if reply.has_error() or RECORD_ARRAYS not in reply.content.array_records:
        return reply
    arrays = reply.content.array_records[RECORD_ARRAYS]
    delta = {name: array.numpy() for name, array in arrays.items()}
    global_weights = {
        name: array.numpy() for name, array in message.content.array_records[RECORD_ARRAYS].items()
    }
    rng = np.random.default_rng([seed, STREAM, server_round, partition_id + 1, 1])
    attacked = attack_delta(faults, delta, global_weights, rng)
    content = RecordDict(dict(reply.content.items()))
    content.array_records[RECORD_ARRAYS] = ArrayRecord(
        {name: Array(np.ascontiguousarray(array, np.float32)) for name, array in attacked.items()}
    )
    return Message(content, reply_to=message)


def attack_delta(
    faults: FaultConfig,
    delta: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Return the delta a Byzantine client sends instead of its honest ``delta``.

    signflip: ``-k * delta`` (k = 1: the plain sign flip); scaling: ``k * delta``; noise:
    ``delta + N(0, std)``; nan: all NaN; replacement: ``k * (target - global)`` for a random
    target model (an attempt to replace the global model, with a norm far above an honest
    delta's); ``k`` is ``attack-scale``.
    """
    attack = faults.attack
    out: dict[str, np.ndarray] = {}
    for name in sorted(delta):
        values = np.asarray(delta[name], np.float32)
        if attack == "signflip":
            out[name] = values * np.float32(-faults.attack_scale)
        elif attack == "scaling":
            out[name] = values * np.float32(faults.attack_scale)
        elif attack == "noise":
            noise = rng.normal(0.0, faults.noise_std, values.shape).astype(np.float32)
            out[name] = values + noise
        elif attack == "nan":
            out[name] = np.full_like(values, np.nan)
        elif attack == "replacement":
            target = rng.normal(0.0, 1.0, values.shape).astype(np.float32)
            out[name] = np.float32(faults.attack_scale) * (target - global_weights[name])
        else:  # labelflip acts on the data, not on the delta
            out[name] = values
    return out


def _as_int(value: object) -> int:
    """Return a config or node config number as an int (TypeError for anything else)."""
    if not isinstance(value, int | float | str | bytes):
        raise TypeError(f"expected a number, given {type(value).__name__}")
    return int(value)


def _message_config(message: Message) -> ConfigRecord | None:
    if not message.has_content():
        return None
    return message.content.config_records.get(RECORD_CONFIG)


_APP: ClientApp | None = None


def __getattr__(name: str) -> ClientApp:
    # ``app`` (the Sandflower ClientApp with faults) is built on first access, so reading a
    # scenario's [faults] section does not import the sandbox (wasmtime).
    global _APP
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _APP is None:
        from simulations.client_app import app as sandflower_app

        _APP = with_faults(sandflower_app)
    return _APP


__all__ = [
    "ATTACKS",
    "ERROR_CRASH",
    "ERROR_DROPOUT",
    "FAULTS",
    "FAULT_KEYS",
    "LABEL_FLIP_KEY",
    "FaultConfig",
    "FaultConfigError",
    "attack_delta",
    "fault_labels",
    "with_faults",
]
