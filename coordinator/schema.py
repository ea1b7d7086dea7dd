"""The coordinator's part of the one config schema: every key it reads, declared once.

Each key is a field of a pydantic dataclass, one per TOML section of a scenario file
(``[scenario]``, ``[federation]``, ``[training]``) plus :class:`RunSection` for the keys that
only the flat run config has (the model spec, the out-dir, the kernel pin, ...). A field's
metadata (:func:`setting`) carries everything the views need: its TOML name is the field name,
``flat`` its key in Flower's flat run config, ``expected`` the words an error uses, the
description its doc string, and the pydantic constraints its type and range. The views:

- a scenario file (``simulations/scenario.py`` composes these sections with the simulation's
  own ``[data]``, ``[model]``, ``[faults]``, ``[devices]``);
- ``--set section.key=value`` (the same validation as the file);
- the flat run config (:mod:`coordinator.config` reads it through :func:`flat_settings`);
- the JSON Schema editors complete scenario files with (``sandflower scenario schema``).

Strategy parameters have one table, :data:`STRATEGY_PARAMS`: a pydantic model per strategy.
Errors from pydantic are reworded by :func:`describe_error` so that they name the key the
user wrote and say what was expected, with the value given.

Layering: this module imports nothing of ``simulations/`` or ``client/``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass as std_dataclass
from dataclasses import fields
from typing import Annotated, Any, Literal, TypeGuard, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

# Every section refuses unknown keys; strict scalars: in a config, `true` is never a count and
# "2" never a number (ints are still accepted where a float is expected).
SECTION_CONFIG = ConfigDict(extra="forbid", strict=True)

# The strategies a run may name: spelled once, as the Literal type the [federation] strategy
# field has (a JSON Schema enum, and a type mypy checks); the tuple is derived from it.
Strategy = Literal[
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def setting(
    default: Any = ...,
    *,
    expected: str,
    doc: str,
    flat: str | None = None,
    flat_required: bool = False,
    **constraints: Any,
) -> Any:
    """Declare a schema field: default, constraints and the metadata every view reads.

    Parameters
    ----------
    default : the value when the key is left out (``...``: required in a scenario file).
    expected : what a valid value is, in words (``"an integer >= 1"``); errors quote it.
    doc : one line for the JSON Schema and ``sandflower scenario schema``.
    flat : the key in Flower's flat run config (None: the key has no flat form of its own).
    flat_required : the flat run config must carry the key (no default there).
    **constraints : pydantic ``Field`` constraints (``ge``, ``gt``, ``le``, ``pattern``, ...).
    """
    return Field(
        default,
        description=doc,
        json_schema_extra={"expected": expected, "flat": flat, "flat_required": flat_required},
        **constraints,
    )


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _zero_or_at_least_one(value: float) -> float:
    if not (value == 0 or 1 <= value < math.inf):
        raise ValueError("not 0 and not a finite float >= 1")
    return value


def _strategy_name(value: Any) -> Any:
    # The flat run config always accepted "FedAvg" for "fedavg"; so does a scenario file now.
    return value.strip().lower() if isinstance(value, str) else value


def _is_sha256(value: str) -> str:
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("not 64 hex digits")
    return value


# The numeric types: int is accepted for a float (and becomes a float), bool never is.
Float = Annotated[float, BeforeValidator(lambda v: _no_bool(v, float))]
FiniteFloat = Annotated[Float, AfterValidator(_finite)]
# Every integer setting fits what it ends in: the report's counts and rounds are int32 proto
# fields and the kernel's job arguments int32 (client/runner/inputs.py), the seed an int64.
# Unbounded, a seed of 10**20 passed the schema and failed the run after its engine started
# ("Value out of range", naming no key); local_epochs = 10**20 failed every client's job.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Int = Annotated[int, Field(le=INT32_MAX)]
Int64 = Annotated[int, Field(le=INT64_MAX)]


def _no_bool(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    return value


# -- the sections ------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class ScenarioSection:
    """``[scenario]``: the run's name and seed."""

    name: str = setting(
        expected="a name of letters, digits, '.', '_', '-'",
        doc="The scenario's name; the run goes to runs/<name>.",
        flat="scenario",
        flat_required=True,
        pattern=f"^{NAME_PATTERN}$",
    )
    seed: Int64 = setting(
        0,
        expected="an integer >= 0",
        doc="Seeds data generation, splits, the initial model and every client stream.",
        flat="seed",
        flat_required=True,
        ge=0,
    )
    description: str = setting("", expected="a string", doc="One line: what the scenario is.")


@dataclass(frozen=True, config=SECTION_CONFIG)
class FederationSection:
    """``[federation]``, the coordinator's keys: rounds, sampling, strategy, weight policy."""

    rounds: Int = setting(
        10, expected="an integer >= 1", doc="Federated rounds.", flat="num-rounds",
        flat_required=True, ge=1,
    )  # fmt: skip
    fraction_train: Float = setting(
        1.0,
        expected="a float in (0, 1]",
        doc="Share of the clients sampled to train each round.",
        flat="fraction-train",
        flat_required=True,
        gt=0,
        le=1,
    )
    fraction_evaluate: Float = setting(
        0.0,
        expected="a float in [0, 1]",
        doc="Share of the clients sampled to evaluate each round (0: no client evaluation).",
        flat="fraction-evaluate",
        flat_required=True,
        ge=0,
        le=1,
    )
    strategy: Annotated[Strategy, BeforeValidator(_strategy_name)] = setting(
        "fedavg",
        expected=f"one of {', '.join(STRATEGIES)}",
        doc="The Flower strategy that aggregates the deltas.",
        flat="strategy",
        flat_required=True,
    )
    # The server's step on the aggregated delta (FedOpt's eta, FedAvgM's server lr).
    server_lr: FiniteFloat = setting(
        1.0,
        expected="a finite float > 0",
        doc="The server's step on the aggregated delta (FedOpt's eta, FedAvgM's server lr).",
        flat="server-lr",
        gt=0,
    )
    max_delta_norm: Float = setting(
        100.0,
        expected="a float > 0 (inf: no bound)",
        doc="Deltas with a larger L2 norm are rejected (inf: no bound).",
        flat="max-delta-norm",
        flat_required=True,
        gt=0,
    )
    clip_delta_norm: Float = setting(
        math.inf,
        expected="a float > 0 (inf: off)",
        doc="Accepted deltas with a larger L2 norm are scaled down to it (inf: off).",
        flat="clip-delta-norm",
        gt=0,
    )
    max_num_examples: Int64 = setting(
        0,
        expected="an integer >= 0",
        doc="Absolute bound on a client's num-examples claim (0: off).",
        flat="max-num-examples",
        ge=0,
    )
    # A safety default, not an off switch: one client claiming 10**12 examples must not take
    # over a weighted mean (coordinator.validation.clip_num_examples).
    max_examples_ratio: Annotated[Float, AfterValidator(_zero_or_at_least_one)] = setting(
        10.0,
        expected="0 (off) or a finite float >= 1",
        doc="A claim above this many times the round's median claim is clipped to it (0: off).",
        flat="max-examples-ratio",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class TrainingSection:
    """``[training]``: what every client does with the global model each round."""

    local_epochs: Int = setting(
        1, expected="an integer >= 1", doc="Local epochs per round.", flat="local-epochs",
        flat_required=True, ge=1,
    )  # fmt: skip
    batch_size: Int = setting(
        32, expected="an integer >= 1", doc="Local mini-batch size.", flat="batch-size",
        flat_required=True, ge=1,
    )  # fmt: skip
    lr: FiniteFloat = setting(
        0.1, expected="a finite float > 0", doc="Local SGD learning rate.", flat="lr",
        flat_required=True, gt=0,
    )  # fmt: skip
    proximal_mu: FiniteFloat = setting(
        0.0,
        expected="a finite float >= 0",
        doc="FedProx's proximal term (0: none).",
        flat="proximal-mu",
        ge=0,
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class RunSection:
    """The coordinator's keys that only the flat run config has (derived from a scenario)."""

    model: str = setting(
        expected="a model spec string such as 'mlp:64-32-10'",
        doc="The model: 'logreg:IN-CLASSES' or 'mlp:IN-H1-...-CLASSES'.",
        flat="model",
        flat_required=True,
    )
    out_dir: str = setting(
        expected="a non-empty string",
        doc="The run folder (report, checkpoints).",
        flat="out-dir",
        flat_required=True,
        pattern=r"\S",
    )
    strategy_params: str = setting(
        "{}",
        expected="a JSON object of the strategy's parameters",
        doc="The strategy's own parameters as JSON ([federation.strategy_params]).",
        flat="strategy-params",
    )
    kernel_sha256: Annotated[
        str, BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
        AfterValidator(_is_sha256),
    ] = setting(
        "",
        expected="64 hex digits or ''",
        doc="The kernel every client must run ('' pins the shipped build).",
        flat="kernel-sha256",
    )  # fmt: skip
    resume_from: Annotated[
        str, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)
    ] = setting(
        "",
        expected="a run folder path, or ''",
        doc="A run folder whose latest checkpoint this run continues ('' = a fresh run).",
        flat="resume-from",
    )
    devices: Annotated[str, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)] = (
        setting(
            "",
            expected="a device simulation as JSON, or ''",
            doc="Simulated device clock and deadline (coordinator.clock), as JSON.",
            flat="devices",
        )
    )


# -- strategy parameters: one table ---------------------------------------------------------------
# The flwr.serverapp.strategy constructor arguments a run may set, by strategy: those that no
# other key already sets (fractions, server lr, proximal mu come from their own keys; see
# coordinator.flower_strategies.RESERVED_PARAMS). Every strategy takes the min_* node counts.
class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_train_nodes: Int | None = setting(
        None, expected="an integer >= 1", doc="Flower's own.", ge=1
    )
    min_evaluate_nodes: Int | None = setting(
        None, expected="an integer >= 0", doc="Flower's own.", ge=0
    )
    min_available_nodes: Int | None = setting(
        None, expected="an integer >= 1", doc="Flower's own.", ge=1
    )


def _unit(doc: str) -> Any:
    return setting(None, expected="a float in [0, 1)", doc=doc, ge=0, lt=1)


def _positive(doc: str) -> Any:
    return setting(None, expected="a finite float > 0", doc=doc, gt=0)


class FedAvgParams(_Params):
    """FedAvg: only the node counts."""


class FedAvgMParams(_Params):
    """FedAvgM: server momentum."""

    server_momentum: Float | None = _unit("Server-side momentum.")


class FedAdagradParams(_Params):
    """FedAdagrad: the adaptivity constant."""

    tau: FiniteFloat | None = _positive("Controls the algorithm's degree of adaptability.")


class FedAdamParams(FedAdagradParams):
    """FedAdam and FedYogi: the moment decays and tau."""

    beta_1: Float | None = _unit("First-moment decay.")
    beta_2: Float | None = _unit("Second-moment decay.")


class FedTrimmedAvgParams(_Params):
    """FedTrimmedAvg: the trimmed share on each side."""

    beta: Float | None = setting(
        None, expected="a float in (0, 0.5)", doc="Share cut from each tail.", gt=0, lt=0.5
    )


class KrumParams(_Params):
    """Krum and Bulyan: the assumed number of malicious clients."""

    num_malicious_nodes: Int | None = setting(
        None, expected="an integer >= 0", doc="Assumed malicious clients.", ge=0
    )


class MultiKrumParams(KrumParams):
    """MultiKrum: Krum plus how many clients to keep."""

    num_nodes_to_select: Int | None = setting(
        None, expected="an integer >= 1", doc="Clients kept.", ge=1
    )


STRATEGY_PARAMS: Mapping[str, type[_Params]] = {
    "fedavg": FedAvgParams,
    "fedprox": FedAvgParams,
    "fedavgm": FedAvgMParams,
    "fedadam": FedAdamParams,
    "fedyogi": FedAdamParams,
    "fedadagrad": FedAdagradParams,
    "fedmedian": FedAvgParams,
    "fedtrimmedavg": FedTrimmedAvgParams,
    "krum": KrumParams,
    "multikrum": MultiKrumParams,
    "bulyan": KrumParams,
}


@std_dataclass(frozen=True)
class Problem:
    """One invalid key: where it is (``path``: section names then the key) and what is wrong."""

    path: tuple[str, ...]
    problem: str


def check_strategy_params(strategy: str, params: Mapping[str, Any]) -> Problem | None:
    """Return the first problem of ``params`` for ``strategy`` (path: the parameter), or None."""
    model = STRATEGY_PARAMS[strategy]
    allowed = sorted(model.model_fields)
    for name in params:
        if name not in model.model_fields:
            return Problem((name,), f"not a parameter of {strategy}; it takes {', '.join(allowed)}")
    try:
        model.model_validate(dict(params))
    except ValidationError as error:
        return describe_error(error.errors()[0], model)
    return None


# -- errors -----------------------------------------------------------------------------------
def section_fields(owner: type) -> Mapping[str, FieldInfo]:
    """Return the pydantic fields of a section (pydantic dataclass) or parameter model, by name.

    Typed access to pydantic's ``__pydantic_fields__`` for a class known only as ``type``.
    """
    known = getattr(owner, "__pydantic_fields__", None) or getattr(owner, "model_fields", {})
    return known


def field_info(owner: type, name: str) -> FieldInfo | None:
    """Return the pydantic field ``name`` of a section or model (None: no such field)."""
    return section_fields(owner).get(name)


def expected_of(info: FieldInfo | None) -> str:
    """Return the ``expected`` words of a field (``"a table"`` for a section)."""
    extra = info.json_schema_extra if info is not None else None
    if isinstance(extra, dict) and extra.get("expected"):
        return str(extra["expected"])
    return "a table"


def known_keys(owner: type) -> list[str]:
    """Return the keys a section (or parameter model) takes, in declaration order."""
    return list(section_fields(owner))


def unknown_key_problem(name: str, known: list[str], what: str = "key") -> str:
    """``unknown key, did you mean rounds?`` (or the list of known keys when nothing is close)."""
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown {what}, did you mean {close[0]}?"
    return f"unknown {what}; expected one of {', '.join(known)}"


def describe_error(error: Mapping[str, Any], root: type) -> Problem:
    """Reword one pydantic error (``ValidationError.errors()`` item) for the key it is about.

    The path is walked from ``root`` through nested sections; the message says what the
    field expects (its ``expected`` metadata) and the value as written.
    """
    path: list[str] = []
    owner: type | None = root
    info: FieldInfo | None = None
    for part in error["loc"]:
        if not isinstance(part, str):
            break  # an index into a list: the error is about the list's field
        if owner is None:
            break
        info = field_info(owner, part)
        path.append(part)
        if info is None:
            return Problem(tuple(path), unknown_key_problem(part, known_keys(owner)))
        owner = info.annotation if _is_section(info.annotation) else None
    kind = error["type"]
    if kind in ("missing", "missing_argument"):
        return Problem(tuple(path), f"required: expected {expected_of(info)}")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return Problem(tuple(path), unknown_key_problem(path[-1], []))
    given = error.get("input")
    expected = expected_of(info)
    bound = (error.get("ctx") or {}).get("le")
    if kind == "less_than_equal" and bound in (INT32_MAX, INT64_MAX):
        expected = f"{expected} and <= {bound}"  # an Int's width: its words do not say it
    return Problem(tuple(path), f"expected {expected}, given {_shown(given)}")


def _shown(value: Any) -> str:
    if isinstance(value, Mapping) and "ArgsKwargs" in type(value).__name__:
        return "a table"
    if type(value).__name__ == "ArgsKwargs":
        return repr(dict(value.kwargs or {}))
    return repr(value)


def _is_section(annotation: Any) -> TypeGuard[type]:
    return isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__")


# -- the flat view ------------------------------------------------------------------------------
@std_dataclass(frozen=True)
class FlatSetting:
    """One key of the flat run config: where it lives in the schema."""

    flat: str
    section: type
    name: str
    required: bool


COORDINATOR_SECTIONS: tuple[type, ...] = (
    ScenarioSection,
    FederationSection,
    TrainingSection,
    RunSection,
)


def flat_settings(sections: tuple[type, ...] = COORDINATOR_SECTIONS) -> dict[str, FlatSetting]:
    """Flat run-config key -> its place in the schema, for the fields that have a flat key."""
    table: dict[str, FlatSetting] = {}
    for section in sections:
        for name, info in section_fields(section).items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("flat"):
                flat = str(extra["flat"])
                table[flat] = FlatSetting(flat, section, name, bool(extra.get("flat_required")))
    return table


def flat_values(instance: Any) -> Iterator[tuple[str, Any]]:
    """``(flat key, value)`` of a section instance's fields that have a flat key."""
    for section_field in fields(instance):
        info = instance.__pydantic_fields__[section_field.name]
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("flat"):
            yield str(extra["flat"]), getattr(instance, section_field.name)


def validate_flat(
    section: type,
    values: Mapping[str, Any],
    on_error: Callable[[str, str], Exception],
) -> Any:
    """Build ``section`` from flat ``values`` (flat key -> value; missing keys take defaults).

    ``on_error(flat key, problem)`` makes the exception raised for the first invalid key.
    """
    by_name = {setting.name: flat for flat, setting in flat_settings((section,)).items()}
    arguments = {name: values[flat] for name, flat in by_name.items() if flat in values}
    try:
        return section(**arguments)
    except ValidationError as error:
        problem = describe_error(error.errors()[0], section)
        flat = by_name.get(problem.path[0], problem.path[0]) if problem.path else "<run config>"
        raise on_error(flat, problem.problem) from None


def validate_value(section: type, name: str, value: Any) -> tuple[Any, str | None]:
    """Check one value against field ``name`` of ``section``: ``(value, None)`` or ``(_, problem)``.

    For configs that hold a few keys of several sections (the data keys of a client's message).
    """
    info = section_fields(section)[name]
    adapter = _adapter(section, name)
    try:
        return adapter.validate_python(value), None
    except ValidationError as error:
        return value, f"expected {expected_of(info)}, given {_shown(error.errors()[0]['input'])}"


@functools.cache
def _adapter(section: type, name: str) -> TypeAdapter:
    info = section_fields(section)[name]
    # A type form built at run time (the field's type with its constraints), so typed Any.
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(info.annotation, *info.metadata)]
    return TypeAdapter(annotation, config=ConfigDict(strict=True))
