"""The simulation's sections of the one config schema: [data], [model], [faults], [devices].

These sections, and the ``clients`` key of ``[federation]``, exist only in a simulation: the
coordinator never reads them (coordinator/schema.py holds its own sections, which
:class:`~simulations.scenario.Scenario` composes with these). Every field is declared once with
:func:`coordinator.schema.setting`: its TOML name, flat run-config key, type, default, range
and doc string.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic.dataclasses import dataclass

from coordinator.schema import (
    SECTION_CONFIG,
    FederationSection,
    Float,
    Int,
    Int64,
    setting,
)
from simulations.datasets import DATASETS, Dataset
from simulations.splitting import PARTITIONINGS, Partitioning

# The attacks simulations.faults implements (it imports them from here: it checks its keys with
# FaultsSection). Each choice list is spelled once, as the Literal type (a JSON Schema enum, and a
# type mypy checks), and its tuple derived from it.
Attack = Literal["signflip", "scaling", "noise", "nan", "labelflip", "replacement"]
ATTACKS: tuple[str, ...] = get_args(Attack)
ModelKind = Literal["logreg", "mlp"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
DevicePolicy = Literal["none", "drop", "partial"]
DEVICE_POLICIES: tuple[str, ...] = get_args(DevicePolicy)


def _one_of(choices: tuple[str, ...]) -> dict[str, Any]:
    # The field's type is a Literal of the choices (a JSON Schema enum editors complete).
    return {"expected": f"one of {', '.join(choices)}"}


def _list_to_tuple(value: Any) -> Any:
    # TOML arrays arrive as lists; the frozen config keeps tuples (hashable, immutable).
    return tuple(value) if isinstance(value, list) else value


def _table_to_pairs(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return value


# The strategy's own parameters, kept as sorted (name, value) pairs with their values as
# written (so the flat run config's JSON is what it always was); each strategy's parameter
# model (coordinator.schema.STRATEGY_PARAMS) checks them once the strategy is known.
StrategyParams = Annotated[
    tuple[tuple[str, Any], ...],
    BeforeValidator(_table_to_pairs),
    WithJsonSchema(
        {"type": "object", "additionalProperties": {"type": "number"}},
    ),
]


@dataclass(frozen=True, config=SECTION_CONFIG)
class DataSection:
    """``[data]``: the data set and how it is split into clients."""

    dataset: Dataset = setting(
        doc="The data set: digits (bundled), synthetic (FedProx's), folder (your files).",
        flat="dataset",
        **_one_of(DATASETS),
    )
    path: str = setting(
        "", expected="a folder path", doc="Folder of per-client .npz/.csv files.",
        flat="dataset-path",
    )  # fmt: skip
    synthetic_alpha: Float = setting(
        1.0, expected="a float >= 0", doc="Synthetic(alpha, beta): model heterogeneity.",
        flat="synthetic-alpha", ge=0,
    )  # fmt: skip
    synthetic_beta: Float = setting(
        1.0, expected="a float >= 0", doc="Synthetic(alpha, beta): data heterogeneity.",
        flat="synthetic-beta", ge=0,
    )  # fmt: skip
    partitioning: Partitioning = setting(
        "iid",
        doc="How the pool is split: iid, dirichlet (label skew), shards, natural (per device).",
        flat="partitioning",
        **_one_of(PARTITIONINGS),
    )
    dirichlet_alpha: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        0.5, expected="a float > 0", doc="Dirichlet concentration (smaller: more skew).",
        flat="dirichlet-alpha", gt=0,
    )  # fmt: skip
    shards_per_client: Int = setting(
        2, expected="an integer >= 1", doc="Label shards per client.",
        flat="shards-per-client", ge=1,
    )  # fmt: skip
    test_fraction: Float = setting(
        0.2,
        expected="a float in (0, 1)",
        doc="Local held-out share, and the central test share.",
        flat="test-fraction",
        gt=0,
        lt=1,
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class SimulatedFederationSection(FederationSection):
    """``[federation]``: the coordinator's keys plus the simulation's clients and parameters."""

    clients: Int = setting(
        10, expected="an integer >= 1", doc="Simulated clients (= data partitions).",
        flat="num-partitions", ge=1,
    )  # fmt: skip
    strategy_params: StrategyParams = setting(
        (),
        expected="a table of the strategy's parameters",
        doc="The strategy's own parameters (coordinator.schema.STRATEGY_PARAMS).",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class ModelSection:
    """``[model]``: the model's kind and hidden widths (input and classes: from the data)."""

    kind: ModelKind = setting(doc="logreg or mlp.", **_one_of(MODEL_KINDS))
    hidden: Annotated[tuple[Annotated[int, Field(ge=1)], ...], BeforeValidator(_list_to_tuple)] = (
        setting((), expected="a list of integers >= 1", doc="Hidden layer widths (mlp).")
    )


_FRACTION: dict[str, Any] = {"expected": "a number in [0, 1]", "ge": 0, "le": 1}


@dataclass(frozen=True, config=SECTION_CONFIG)
class FaultsSection:
    """``[faults]``: injected faults (simulations.faults); all off by default."""

    dropout: Float = setting(
        0.0, doc="Per round and client: no reply.", flat="faults-dropout", **_FRACTION
    )
    crash: Float = setting(
        0.0, doc="Per round and client: an error reply.", flat="faults-crash", **_FRACTION
    )
    slow: Float = setting(
        0.0, doc="Per round and client: fuel runs out.", flat="faults-slow", **_FRACTION
    )
    slow_fuel: Int64 = setting(  # fuel is a u64 budget: 2**31 units is ~0.2 s of work
        1000, expected="an integer >= 1", doc="Fuel of a slow client.", flat="faults-slow-fuel",
        ge=1,
    )  # fmt: skip
    byzantine: Float = setting(
        0.0, doc="Share of Byzantine clients, fixed per run.", flat="faults-byzantine",
        **_FRACTION,
    )  # fmt: skip
    attack: Attack = setting(
        "signflip", doc="The Byzantine clients' attack.", flat="faults-attack", **_one_of(ATTACKS)
    )
    attack_scale: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        10.0,
        expected="a finite float > 0",
        doc="scaling's k, replacement's boost.",
        flat="faults-attack-scale",
        gt=0,
    )
    noise_std: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        1.0,
        expected="a finite float >= 0",
        doc="The noise attack's standard deviation.",
        flat="faults-noise-std",
        ge=0,
    )


def _minus_one_or_share(value: float) -> float:
    if not (value == -1 or 0 <= value < 1):
        raise ValueError("not -1 and not in [0, 1)")
    return value


@dataclass(frozen=True, config=SECTION_CONFIG)
class DevicesSection:
    """``[devices]``: simulated devices (coordinator/clock.py, simulations/devices.py)."""

    policy: DevicePolicy = setting(
        "none", doc="What a deadline does: none (off), drop, partial.", **_one_of(DEVICE_POLICIES)
    )
    profiles: str = setting(
        "", expected="a CSV file path, or '' to draw from the seed", doc="Device profiles CSV."
    )
    speed: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        1e8, expected="a float > 0 (fuel per simulated second)", doc="Median speed.", gt=0
    )
    speed_sigma: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        0.0, expected="a float >= 0", doc="Log-normal spread of speeds.", ge=0
    )
    speed_jitter: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        0.0, expected="a float >= 0", doc="Per-round speed jitter.", ge=0
    )
    memory_mb: Int = setting(512, expected="an integer >= 1", doc="Device memory (MB).", ge=1)
    uplink: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        1e6, expected="a float > 0 (bytes per simulated second)", doc="Uplink bandwidth.", gt=0
    )
    downlink: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        1e7, expected="a float > 0 (bytes per simulated second)", doc="Downlink bandwidth.", gt=0
    )
    bandwidth_sigma: Annotated[Float, Field(allow_inf_nan=False)] = setting(
        0.0, expected="a float >= 0", doc="Log-normal spread of bandwidths.", ge=0
    )
    availability: Float = setting(
        1.0, expected="a float in [0, 1]", doc="Chance a device is up in a round.", ge=0, le=1
    )
    deadline_seconds: Float = setting(
        math.inf, expected="a float > 0 (inf: none)", doc="Round deadline.", gt=0
    )
    # >= 0: calibrate the deadline so that this share of the clients straggles (nominal speeds).
    straggler_share: Annotated[Float, AfterValidator(_minus_one_or_share)] = setting(
        -1.0,
        expected="-1 or a float in [0, 1)",
        doc="Calibrate the deadline so this share straggles (-1: off).",
    )
