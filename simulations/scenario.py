"""Scenarios: a TOML file -> frozen sections of the one schema -> the flat run config.

The schema (``key = default  -> run-config key``; "required" keys have no default):

    [scenario]
    name = required            -> scenario, and out-dir = "runs/<name>"
    seed = 0                   -> seed (data generation, splits, init, client streams)
    description = ""
    [data]
    dataset = required         -> dataset: "digits" | "synthetic" | "folder"
    path = ""                  -> dataset-path (folder of per-client .npz/.csv files)
    synthetic_alpha = 1.0      -> synthetic-alpha
    synthetic_beta = 1.0       -> synthetic-beta
    partitioning = "iid"       -> partitioning: "iid" | "dirichlet" | "shards" | "natural"
    dirichlet_alpha = 0.5      -> dirichlet-alpha
    shards_per_client = 2      -> shards-per-client
    test_fraction = 0.2        -> test-fraction (local held-out share and central test share)
    [federation]
    clients = 10               -> num-partitions
    rounds = 10                -> num-rounds
    fraction_train = 1.0       -> fraction-train
    fraction_evaluate = 0.0    -> fraction-evaluate
    strategy = "fedavg"        -> strategy (see STRATEGIES)
    server_lr = 1.0            -> server-lr
    max_delta_norm = 100.0     -> max-delta-norm (inf: no bound)
    clip_delta_norm = inf      -> clip-delta-norm (OK deltas scaled down to this L2 norm)
    max_num_examples = 0       -> max-num-examples (0: no absolute bound on a claim)
    max_examples_ratio = 10.0  -> max-examples-ratio (claims clipped to ratio x round median)
    [federation.strategy_params]   -> strategy-params (JSON); names per STRATEGY_PARAMS
    [training]
    local_epochs = 1           -> local-epochs
    batch_size = 32            -> batch-size
    lr = 0.1                   -> lr
    proximal_mu = 0.0          -> proximal-mu
    [model]
    kind = required            -> model: "logreg:IN-CLASSES" | "mlp:IN-H1-...-CLASSES"
    hidden = []                -> the widths H1...; IN and CLASSES come from the data set
    [faults]
    dropout = 0.0              -> faults-dropout (per round and client: no reply)
    crash = 0.0                -> faults-crash (per round and client: error reply)
    slow = 0.0                 -> faults-slow (per round and client: fuel runs out)
    slow_fuel = 1000           -> faults-slow-fuel
    byzantine = 0.0            -> faults-byzantine (share of clients, fixed per run)
    attack = "signflip"        -> faults-attack: signflip scaling noise nan labelflip replacement
    attack_scale = 10.0        -> faults-attack-scale (scaling's k, replacement's boost)
    noise_std = 1.0            -> faults-noise-std

The [faults] keys (simulations.faults) reach the run config only when a fault is switched
on, and clip_delta_norm, max_num_examples, max_examples_ratio only when they differ from their
defaults (the coordinator has the same defaults), so a scenario without them gives the run
config it always gave.

The sections are declared once, with each key's flat name, type, range and doc string, in
coordinator/schema.py (the coordinator's keys) and simulations/scenario_sections.py (the
simulation's). An unknown table or key, a value of the wrong type or out of range is a
:class:`ScenarioError` that names the file, the table and the key, and suggests
("[data] dirichlet_alpha: expected a float > 0, given -1", "[federation] rouns: unknown key,
did you mean rounds?"). Nothing downstream reads the TOML: it reads
:meth:`Scenario.to_run_config`, the flat dict of str/int/float that Flower passes around.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.dataclasses import dataclass

from coordinator import rules, schema
from coordinator.flower_strategies import build_flower_strategy
from coordinator.sampling import sample_count
from coordinator.schema import ScenarioSection, TrainingSection
from kernels.spec import ModelSpec, ModelSpecError
from protos.untrusted_file import read_regular_file
from simulations import datasets
from simulations.faults import FaultConfig, FaultConfigError
from simulations.federated_data import (
    DataConfig,
    DataConfigError,
    build_federated_data,
    data_shape,
    is_lazy,
)
from simulations.scenario_sections import (
    DEVICE_POLICIES,
    MODEL_KINDS,
    DataSection,
    DevicesSection,
    FaultsSection,
    ModelSection,
    SimulatedFederationSection,
)

FederationSection = SimulatedFederationSection

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "digits-mlp-dirichlet"
# A scenario file is a page of TOML: refused past this size (not read whole from a device).
MAX_SCENARIO_BYTES = 1 << 20

STRATEGIES = schema.STRATEGIES
# Strategy parameters a scenario may set under [federation.strategy_params]: one table, shared
# with the coordinator (coordinator/schema.py), strategy -> its pydantic parameter model.
STRATEGY_PARAMS = {name: dict(model.model_fields) for name, model in schema.STRATEGY_PARAMS.items()}


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names the file, the table and the key.

    ``key`` is the dotted key (``"federation.rounds"``); the message writes it as in the file:
    ``path: [federation] rounds: expected an integer >= 1, given 0``.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        table, _, name = key.rpartition(".")
        if not key:
            where = source
        elif table:
            where = f"{source}: [{table}] {name}"
        else:
            where = f"{source}: [{name}]"
        super().__init__(f"{where}: {problem}")


_SECTIONS: dict[str, type] = {
    "scenario": ScenarioSection,
    "data": DataSection,
    "federation": SimulatedFederationSection,
    "training": TrainingSection,
    "model": ModelSection,
    "faults": FaultsSection,
    "devices": DevicesSection,
}

# Where each flat data key lives in a scenario file (for error messages): from the schema.
_DATA_KEY_TO_TOML = {
    setting.flat: f"{table}.{setting.name}"
    for table, section in _SECTIONS.items()
    for setting in schema.flat_settings((section,)).values()
}


# -- the scenario ---------------------------------------------------------------------------
# Not strict itself (its tables arrive as dicts), its sections are.
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Scenario:
    """A validated scenario. Build one with :func:`load_scenario` or :meth:`from_dict`."""

    scenario: ScenarioSection
    data: DataSection
    federation: FederationSection
    training: TrainingSection
    model: ModelSection
    faults: FaultsSection = field(default_factory=FaultsSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    source: str = "<scenario>"

    @property
    def name(self) -> str:
        """The scenario's name (``[scenario] name``)."""
        return self.scenario.name

    @property
    def seed(self) -> int:
        """The run seed (``[scenario] seed``)."""
        return self.scenario.seed

    @property
    def strategy_params(self) -> dict[str, int | float]:
        """The strategy's own parameters (``[federation.strategy_params]``), a fresh dict."""
        return dict(self.federation.strategy_params)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
        """Validate a parsed scenario (nested tables as in the TOML file).

        Raises
        ------
        ScenarioError
            Naming ``source`` and the dotted key of the first problem.
        """
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise ScenarioError(
                source, unknown[0], schema.unknown_key_problem(unknown[0], list(_SECTIONS), "table")
            )
        # A table left out takes its defaults; its required keys are then named one by one.
        # Each table is validated on its own (the sections are strict; the file's tables
        # arrive as dicts), so an error's path starts with the table's name.
        sections = {}
        for table_name, section_class in _SECTIONS.items():
            table = raw.get(table_name, {})
            if not isinstance(table, Mapping):
                raise ScenarioError(source, table_name, f"expected a table, given {table!r}")
            try:
                sections[table_name] = section_class(**table)
            except ValidationError as error:
                problem = schema.describe_error(error.errors()[0], section_class)
                raise ScenarioError(
                    source, ".".join((table_name, *problem.path)), problem.problem
                ) from None
        scenario = cls(**sections, source=source)
        scenario._check_across_keys()
        return scenario

    def data_config(self) -> DataConfig:
        """Return the data keys as a validated :class:`~simulations.federated_data.DataConfig`."""
        try:
            return DataConfig(
                dataset=self.data.dataset,
                partitioning=self.data.partitioning,
                num_partitions=self.federation.clients,
                seed=self.seed,
                dataset_path=self.data.path,
                synthetic_alpha=self.data.synthetic_alpha,
                synthetic_beta=self.data.synthetic_beta,
                dirichlet_alpha=self.data.dirichlet_alpha,
                shards_per_client=self.data.shards_per_client,
                test_fraction=self.data.test_fraction,
            )
        except DataConfigError as error:
            raise self._data_error(error) from error

    def model_spec(self) -> ModelSpec:
        """Return the model: kind and widths from the scenario, input and classes from the data."""
        try:
            num_features, num_classes = data_shape(self.data_config())
        except DataConfigError as error:
            raise self._data_error(error) from error
        try:
            if self.model.kind == "logreg":
                return ModelSpec.logreg(num_features, num_classes)
            return ModelSpec.mlp(num_features, self.model.hidden, num_classes)
        except ModelSpecError as error:
            raise ScenarioError(self.source, "model", str(error)) from error

    def to_run_config(self) -> dict[str, str | int | float]:
        """Return the flat run config (README, "Run config"): what coordinator and clients read."""
        # Every section key that has a flat name (the schema's `flat`), then the keys a
        # scenario derives: the strategy's parameters as JSON, the model spec (its input and
        # classes come from the data set) and the run folder.
        run_config: dict[str, str | int | float] = {}
        for section in (self.scenario, self.federation, self.training):
            run_config.update(schema.flat_values(section))
        run_config["strategy-params"] = json.dumps(self.strategy_params, sort_keys=True)
        run_config["model"] = str(self.model_spec())
        run_config["out-dir"] = str(Path("runs") / self.name)
        run_config.update(self.data_config().to_mapping())
        run_config.update(self.fault_config().to_run_config())
        if self.devices.policy != "none":
            run_config["devices"] = self.device_simulation(run_config).to_json()
        return run_config

    def device_simulation(self, run_config: Mapping[str, Any]):
        """Return the scenario's devices as a ``coordinator.clock.DeviceSimulation``.

        The deadline is calibrated when ``straggler_share`` >= 0 (this runs every client's job
        once, metered).
        """
        from simulations import devices

        section = self.devices
        clients = self.federation.clients
        try:
            if section.profiles:
                path = Path(section.profiles)
                if not path.is_absolute() and self.source not in ("<scenario>", ""):
                    path = Path(self.source).parent / path
                profiles = devices.read_profiles(path, clients)
            else:
                distribution = devices.DeviceDistribution(
                    speed=section.speed,
                    speed_sigma=section.speed_sigma,
                    memory_mb=section.memory_mb,
                    uplink=section.uplink,
                    downlink=section.downlink,
                    bandwidth_sigma=section.bandwidth_sigma,
                    availability=section.availability,
                )
                profiles = devices.draw_profiles(distribution, clients, self.seed)
            deadline = section.deadline_seconds
            if section.straggler_share >= 0:
                fuel = devices.job_fuel(run_config, clients)
                payload = self.model_spec().num_params() * 4
                times = devices.nominal_times(profiles, fuel, payload)
                deadline = devices.calibrate_deadline(times, section.straggler_share)
        except devices.DevicesError as error:
            raise ScenarioError(self.source, "devices", str(error)) from error
        from coordinator.clock import DeviceSimulation

        return DeviceSimulation(
            profiles=tuple(profiles),
            deadline_seconds=deadline,
            policy="drop" if section.policy == "drop" else "partial",
            speed_jitter=section.speed_jitter,
        )

    def fault_config(self) -> FaultConfig:
        """Return the ``[faults]`` section as a :class:`~simulations.faults.FaultConfig`."""
        section = self.faults
        return FaultConfig(**{f.name: getattr(section, f.name) for f in fields(section)})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the scenario as nested tables, in the TOML file's shape (lists for arrays)."""
        raw: dict[str, dict[str, Any]] = {}
        for section_name in _SECTIONS:
            section = getattr(self, section_name)
            table: dict[str, Any] = {}
            for section_field in fields(section):
                value = getattr(section, section_field.name)
                if section_field.name == "strategy_params":
                    value = dict(value)
                elif isinstance(value, tuple):
                    value = list(value)
                table[section_field.name] = value
            raw[section_name] = table
        return raw

    def with_overrides(
        self,
        *,
        rounds: int | None = None,
        clients: int | None = None,
        seed: int | None = None,
        sets: Mapping[str, str] | None = None,
    ) -> Scenario:
        """Return a copy with some keys replaced, validated like the file.

        Parameters
        ----------
        rounds, clients, seed : shortcuts for federation.rounds, federation.clients,
            scenario.seed (None: keep).
        sets : dotted keys of the TOML file -> values as text, e.g.
            ``{"training.lr": "0.05", "model.hidden": "[64, 32]",
            "federation.strategy_params.beta": "0.2",
            "federation.strategy_params": "{tau = 0.01}"}``. A value is read as a TOML value
            (so ``0.05`` is a float, ``[64, 32]`` a list, ``{...}`` a table that replaces the
            whole table); string keys take the text as is.

        Raises
        ------
        ScenarioError
            An unknown key (named), or a value of the wrong type or range.
        """
        raw = self.to_dict()
        source = f"{self.source} (with overrides)"
        for key, value in (
            ("federation.rounds", rounds),
            ("federation.clients", clients),
            ("scenario.seed", seed),
        ):
            if value is not None:
                section_name, field_name = key.split(".")
                raw[section_name][field_name] = value
        for key, text in (sets or {}).items():
            _apply_set(raw, key, text, source)
        return Scenario.from_dict(raw, source)

    # -- checks that involve more than one key ------------------------------------------------
    def _check_across_keys(self) -> None:
        source = self.source
        if self.model.kind == "logreg" and self.model.hidden:
            raise ScenarioError(
                source,
                "model.hidden",
                f"logreg has no hidden layers: expected [], given {list(self.model.hidden)}",
            )
        if self.model.kind == "mlp" and not self.model.hidden:
            raise ScenarioError(
                source,
                "model.hidden",
                "an mlp needs at least one hidden layer, e.g. hidden = [32]",
            )
        try:
            self.fault_config()
        except FaultConfigError as error:
            key = "faults." + error.key.removeprefix("faults-").replace("-", "_")
            raise ScenarioError(source, key, str(error).split(": ", 1)[1]) from error
        strategy = self.federation.strategy
        problem = schema.check_strategy_params(strategy, self.strategy_params)
        if problem is not None:
            key = ".".join(("federation", "strategy_params", *problem.path))
            raise ScenarioError(source, key, problem.problem)
        self._check_rule_minimum()
        # The data keys are validated together by DataConfig (errors name the TOML keys);
        # the model spec needs the data set's shape, which for a folder reads its files.
        data_config = self.data_config()
        self.model_spec()
        self._check_partitions(data_config)
        if data_config.dataset == "folder" and data_config.partitioning == "natural":
            num_files = len(datasets.folder_files(data_config.dataset_path))
            if num_files != data_config.num_partitions:
                raise ScenarioError(
                    source,
                    "federation.clients",
                    f"natural partitioning gives one client per file: {data_config.dataset_path} "
                    f"has {num_files} files, given {data_config.num_partitions} clients",
                )

    def _check_rule_minimum(self) -> None:
        """Refuse a rule that needs more replies a round than the scenario samples.

        Such a rule would make no aggregate in any round (the run would go on from an
        unchanged model: coordinator/strategy.py); a round with fewer usable replies than
        sampled (failures, rejections, offline devices) still can, and keeps the model.
        """
        federation = self.federation
        rule = build_flower_strategy(
            federation.strategy,
            self.strategy_params,
            fraction_train=federation.fraction_train,
            fraction_evaluate=federation.fraction_evaluate,
            server_lr=federation.server_lr,
            proximal_mu=self.training.proximal_mu,
            lr=self.training.lr,
        )
        needed = rules.min_replies(rule)
        sampled = sample_count(
            federation.clients,
            fraction=federation.fraction_train,
            min_nodes=int(getattr(rule, "min_train_nodes", 1)),
        )
        if sampled < needed:
            raise ScenarioError(
                self.source,
                "federation.strategy_params.num_malicious_nodes",
                f"{federation.strategy} needs at least {needed} replies a round to make an "
                f"aggregate, but {federation.clients} clients at fraction_train "
                f"{federation.fraction_train} sample {sampled}",
            )

    def _check_partitions(self, data_config: DataConfig) -> None:
        """Partition the pooled data once, so that a split that cannot be made is refused here.

        Too many clients for the pool, or a Dirichlet alpha no draw satisfies, was found only
        when the run loaded its data, after its engine started: a DataConfigError traceback
        instead of an error naming the key. The partitions are cached per process
        (``build_federated_data``), so the run that follows does not partition again. Lazy
        data (synthetic, natural) has one device per client by construction; a folder's
        natural split is checked above.
        """
        if is_lazy(data_config) or (
            data_config.dataset == "folder" and data_config.partitioning == "natural"
        ):
            return
        try:
            build_federated_data(data_config)
        except DataConfigError as error:
            raise self._data_error(error) from error

    def _data_error(self, error: DataConfigError) -> ScenarioError:
        return ScenarioError(
            self.source, _DATA_KEY_TO_TOML.get(error.key, error.key), error.problem
        )


# -- the schema of a scenario file -----------------------------------------------------------------
def scenario_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a scenario file (``sandflower scenario schema``).

    Built from the same sections that validate a file, so editors that read JSON Schema for
    TOML (Even Better TOML / taplo) complete keys, enums and show each key's doc string.
    Infinite defaults (``inf`` in TOML) are written as the string ``"inf"``: JSON has no inf.
    """
    required = {"scenario", "data", "model"}
    tables: dict[str, Any] = {
        name: (section, ...) if name in required else (section, None)
        for name, section in _SECTIONS.items()
    }
    file_model = create_model(
        "ScenarioFile", __config__=ConfigDict(extra="forbid", title="Sandflower scenario"), **tables
    )
    json_schema = file_model.model_json_schema()
    json_schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    json_schema["description"] = (
        "A Sandflower scenario file (TOML). Each key's `flat` names its key in Flower's flat "
        "run config."
    )
    for table in json_schema.get("properties", {}).values():
        table.pop("default", None)  # null: a table left out takes its keys' defaults
        if "anyOf" in table:
            table.update(next(item for item in table.pop("anyOf") if "$ref" in item))
    # [federation.strategy_params] takes the named strategy's parameters (one model per
    # strategy, coordinator.schema.STRATEGY_PARAMS): if strategy = X then X's parameters. With
    # no strategy key every condition holds, which leaves fedavg's (the default) common ones.
    federation = json_schema["$defs"][SimulatedFederationSection.__name__]
    federation["allOf"] = [
        {
            "if": {"properties": {"strategy": {"const": name}}},
            "then": {"properties": {"strategy_params": _params_schema(model)}},
        }
        for name, model in schema.STRATEGY_PARAMS.items()
    ]
    return _without_infinities(json_schema)


def _params_schema(model: type[BaseModel]) -> dict[str, Any]:
    params = model.model_json_schema()
    params.pop("title", None)
    for prop in params.get("properties", {}).values():
        prop.pop("default", None)  # None: Flower's own default
        if "anyOf" in prop:  # Optional[...]: a key left out takes Flower's default
            prop.update(next(item for item in prop.pop("anyOf") if item.get("type") != "null"))
        # pydantic leaves the constraints of an Optional's branch in its own words
        for own, standard in _JSON_SCHEMA_BOUNDS.items():
            if own in prop:
                prop[standard] = prop.pop(own)
    return params


_JSON_SCHEMA_BOUNDS = {
    "gt": "exclusiveMinimum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "le": "maximum",
}


def _without_infinities(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {key: _without_infinities(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_infinities(item) for item in value]
    return value


def describe_bundled() -> dict[str, str]:
    """Bundled scenario name -> its one-line ``[scenario] description`` (not validated)."""
    described = {}
    for name in bundled_scenarios():
        raw = tomllib.loads((SCENARIO_DIR / f"{name}.toml").read_text(encoding="utf-8"))
        described[name] = str(raw.get("scenario", {}).get("description", ""))
    return described


# -- loading ----------------------------------------------------------------------------------
def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises
    ------
    ScenarioError
        The file is missing or unreadable, is not TOML, or has a bad key or value.
    """
    file_path = Path(path)
    try:
        text = read_regular_file(file_path, MAX_SCENARIO_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(file_path), "", "no such scenario file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(file_path), "", f"cannot read: {error}") from error
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as error:
        # RecursionError: arrays or inline tables nested deeper than tomllib's recursion.
        raise ScenarioError(
            str(file_path), "", f"not valid TOML: {type(error).__name__}: {error}"
        ) from error
    return Scenario.from_dict(raw, str(file_path))


def default_scenario_path() -> Path:
    """Return the path of the bundled default scenario, digits-mlp-dirichlet.toml."""
    return SCENARIO_DIR / f"{DEFAULT_SCENARIO}.toml"


def bundled_scenarios() -> list[str]:
    """Names of the scenarios that ship with Sandflower."""
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def find_scenario(name_or_path: str | Path) -> Path:
    """Find a scenario file: an existing path, or a bundled scenario's name (.toml optional).

    Raises
    ------
    ScenarioError
        Neither a file nor a bundled scenario (the message lists the bundled ones).
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    text = str(name_or_path)
    if "/" not in text and "\\" not in text:
        stem = text[: -len(".toml")] if text.endswith(".toml") else text
        bundled = SCENARIO_DIR / f"{stem}.toml"
        if bundled.is_file():
            return bundled
    raise ScenarioError(
        text,
        "",
        "no such scenario file, and no bundled scenario of that name "
        f"(bundled: {', '.join(bundled_scenarios())})",
    )


# -- --set --------------------------------------------------------------------------------
def _apply_set(raw: dict[str, dict[str, Any]], key: str, text: str, source: str) -> None:
    parts = key.split(".")
    section_name = parts[0]
    if section_name not in _SECTIONS or len(parts) < 2:
        raise ScenarioError(
            source,
            key,
            "unknown key; expected TABLE.KEY with TABLE one of " + ", ".join(_SECTIONS),
        )
    known = schema.known_keys(_SECTIONS[section_name])
    if len(parts) == 3 and section_name == "federation" and parts[1] == "strategy_params":
        raw["federation"]["strategy_params"][parts[2]] = _parse_text(text, is_string=False)
        return
    if len(parts) != 2 or parts[1] not in known:
        raise ScenarioError(source, key, schema.unknown_key_problem(parts[-1], known))
    # A whole table is replaced by an inline TOML table: strategy_params={beta = 0.2}, or {}
    # to go back to the strategy's defaults.
    info = schema.field_info(_SECTIONS[section_name], parts[1])
    assert info is not None  # parts[1] is one of the section's known keys (checked above)
    raw[section_name][parts[1]] = _parse_text(text, is_string=_takes_text(info.annotation))


def _takes_text(annotation: Any) -> bool:
    """Return True when a field holds text: ``str``, a Literal of strings, or an Optional of those.

    Such a field's --set value is taken as written: ``faults.attack=nan`` names the attack, it
    is not the float NaN that TOML would read.
    """
    if annotation is str:
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in args)
    if origin in (Union, UnionType):
        kept = [arg for arg in args if arg is not type(None)]
        return bool(kept) and all(_takes_text(arg) for arg in kept)
    return False


def _parse_text(text: str, *, is_string: bool) -> Any:
    """Parse a --set value: strings as written (quotes optional), else a TOML value.

    This parses text, it does not coerce: the schema then checks the value like the file's.
    """
    text = text.strip()
    if is_string:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text  # the type check then names the key and shows the text


__all__ = [
    "describe_bundled",
    "scenario_json_schema",
    "DEVICE_POLICIES",
    "DevicesSection",
    "FaultsSection",
    "DEFAULT_SCENARIO",
    "MODEL_KINDS",
    "SCENARIO_DIR",
    "STRATEGIES",
    "STRATEGY_PARAMS",
    "DataSection",
    "FederationSection",
    "ModelSection",
    "Scenario",
    "ScenarioError",
    "ScenarioSection",
    "TrainingSection",
    "bundled_scenarios",
    "default_scenario_path",
    "find_scenario",
    "load_scenario",
]
