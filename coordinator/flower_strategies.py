"""Which Flower strategies a run may name, and how their constructor parameters are checked.

The run config names a strategy (``strategy``) and passes that Flower strategy's own
constructor parameters as a JSON object (``strategy-params``). Parameters that the run config
already sets through one of its own keys are reserved here, so that one setting never has two
sources: the sampling fractions, the proximal term, the server learning rate (FedOpt's ``eta``,
FedAvgM's ``server_learning_rate``) and the record keys of the message contract.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from . import schema

STRATEGIES: Mapping[str, type[Strategy]] = MappingProxyType(
    {
        "fedavg": FedAvg,
        "fedprox": FedProx,
        "fedavgm": FedAvgM,
        "fedadam": FedAdam,
        "fedyogi": FedYogi,
        "fedadagrad": FedAdagrad,
        "fedmedian": FedMedian,
        "fedtrimmedavg": FedTrimmedAvg,
        "krum": Krum,
        "multikrum": MultiKrum,
        "bulyan": Bulyan,
    }
)
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)

# Constructor parameters a run may not set in strategy-params, and where their value comes from.
RESERVED_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "fraction_train": "set by the run config key 'fraction-train'",
        "fraction_evaluate": "set by the run config key 'fraction-evaluate'",
        "proximal_mu": "set by the run config key 'proximal-mu'",
        "eta": "set by the run config key 'server-lr'",
        "server_learning_rate": "set by the run config key 'server-lr'",
        "eta_l": "set by the run config key 'lr'",
        "weighted_by_key": "fixed by the message contract ('num-examples')",
        "arrayrecord_key": "fixed by the message contract ('arrays')",
        "configrecord_key": "fixed by the message contract ('config')",
        "train_metrics_aggr_fn": "not settable from a run config",
        "evaluate_metrics_aggr_fn": "not settable from a run config",
        "selection_rule": "not settable from a run config",
    }
)

# Flower waits for min_available_nodes (default 2) before sampling, which never ends in a
# one-client federation; here a fraction > 0 samples at least one node unless the run asks
# for more.
DEFAULT_MIN_NODES: Mapping[str, int] = MappingProxyType(
    {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}
)


class StrategyParamsError(ValueError):
    """strategy-params names a parameter the strategy lacks, a reserved one, or a bad value."""


def settable_params(name: str) -> dict[str, Any]:
    """Return strategy ``name``'s constructor parameters a run may set, with Flower's defaults."""
    signature = inspect.signature(STRATEGIES[name].__init__)
    return {
        param.name: param.default
        for param in signature.parameters.values()
        if param.name != "self" and param.name not in RESERVED_PARAMS
    }


def check_strategy_params(name: str, params: Mapping[str, Any]) -> None:
    """Check ``params`` for strategy ``name``; raise naming the bad ones.

    The names a run may not set are refused here (:data:`RESERVED_PARAMS` says where their
    value comes from); every other rule (which names a strategy takes, their types and ranges)
    is the one schema's table, :data:`coordinator.schema.STRATEGY_PARAMS`.

    Raises
    ------
    StrategyParamsError
        An unknown strategy, reserved or unknown parameter names, or a value that the
        strategy's parameter model refuses (the message says what was expected).
    """
    if name not in STRATEGIES:
        raise StrategyParamsError(f"unknown strategy {name!r}; expected one of {STRATEGY_NAMES}")
    reserved = sorted(key for key in params if key in RESERVED_PARAMS)
    if reserved:
        reasons = "; ".join(f"{key}: {RESERVED_PARAMS[key]}" for key in reserved)
        raise StrategyParamsError(f"{name} parameter(s) {reserved} not allowed here ({reasons})")
    allowed = sorted(schema.STRATEGY_PARAMS[name].model_fields)
    unknown = sorted(key for key in params if key not in allowed)
    if unknown:
        raise StrategyParamsError(f"{name} has no parameter(s) {unknown}; it takes {allowed}")
    problem = schema.check_strategy_params(name, params)
    if problem is not None:
        raise StrategyParamsError(f"{name} parameter {problem.path[0]}: {problem.problem}")


def build_flower_strategy(
    name: str,
    params: Mapping[str, Any],
    *,
    fraction_train: float,
    fraction_evaluate: float,
    server_lr: float,
    proximal_mu: float,
    lr: float,
) -> Strategy:
    """Construct Flower's strategy ``name`` with ``params`` and the run config's settings.

    Raises
    ------
    StrategyParamsError
        When ``params`` fails :func:`check_strategy_params` or the constructor refuses a value.
    """
    check_strategy_params(name, params)
    cls = STRATEGIES[name]
    allowed = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {
        "fraction_train": fraction_train,
        "fraction_evaluate": fraction_evaluate,
    }
    kwargs |= {key: value for key, value in DEFAULT_MIN_NODES.items() if key in allowed}
    if "proximal_mu" in allowed:
        kwargs["proximal_mu"] = proximal_mu
    if "eta" in allowed:
        kwargs["eta"] = server_lr
    if "eta_l" in allowed:
        kwargs["eta_l"] = lr
    if "server_learning_rate" in allowed:
        kwargs["server_learning_rate"] = server_lr
    kwargs |= dict(params)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise StrategyParamsError(f"{name}({params}): {error}") from error
