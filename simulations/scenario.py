"""Scenarios: a TOML file -> frozen, validated dataclasses -> the flat run config.

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

An unknown table or key, a value of the wrong type or out of range is a :class:`ScenarioError`
that names the file and the dotted key ("data.dirichlet_alpha: expected a float > 0, given
-1"). Nothing downstream reads the TOML: it reads :meth:`Scenario.to_run_config`, the flat
dict of str/int/float that Flower passes around.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from kernels.spec import ModelSpec, ModelSpecError
from simulations import datasets
from simulations.faults import ATTACKS, FaultConfig, FaultConfigError
from simulations.partitions import DataConfig, DataConfigError, data_shape

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "digits-mlp-dirichlet"

STRATEGIES = (
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
)
MODEL_KINDS = ("logreg", "mlp")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message names the file and the dotted key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


# -- field rules ----------------------------------------------------------------------------
# A field's metadata says its TOML type ("str", "int", "float", "ints") and the rule its
# value must satisfy, worded for the error message ("a float > 0").
def _rule(
    kind: str, expected: str, check: Callable[[Any], bool] = lambda value: True, default=MISSING
):
    return field(default=default, metadata={"kind": kind, "expected": expected, "check": check})


def _positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)


_DATA_DEFAULTS = {f.name: f.default for f in fields(DataConfig)}


@dataclass(frozen=True)
class ScenarioSection:
    """The ``[scenario]`` table: name, seed, description."""

    name: str = _rule("str", "a name of letters, digits, '.', '_', '-'", _NAME_PATTERN.fullmatch)
    seed: int = _rule("int", "an int >= 0", lambda value: value >= 0, default=0)
    description: str = _rule("str", "a string", default="")


@dataclass(frozen=True)
class DataSection:
    """The ``[data]`` table: the data set and how it is partitioned."""

    dataset: str = _rule("str", "one of digits, synthetic, folder")
    path: str = _rule("str", "a folder path", default=_DATA_DEFAULTS["dataset_path"])
    synthetic_alpha: float = _rule(
        "float", "a float >= 0", lambda v: v >= 0, _DATA_DEFAULTS["synthetic_alpha"]
    )
    synthetic_beta: float = _rule(
        "float", "a float >= 0", lambda v: v >= 0, _DATA_DEFAULTS["synthetic_beta"]
    )
    partitioning: str = _rule("str", "one of iid, dirichlet, shards, natural", default="iid")
    dirichlet_alpha: float = _rule(
        "float", "a float > 0", _positive, _DATA_DEFAULTS["dirichlet_alpha"]
    )
    shards_per_client: int = _rule(
        "int", "an int >= 1", lambda v: v >= 1, _DATA_DEFAULTS["shards_per_client"]
    )
    test_fraction: float = _rule(
        "float", "a float in (0, 1)", lambda v: 0 < v < 1, _DATA_DEFAULTS["test_fraction"]
    )


@dataclass(frozen=True)
class FederationSection:
    """The ``[federation]`` table: clients, rounds, sampling, the strategy and the reply bounds."""

    clients: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=10)
    rounds: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=10)
    fraction_train: float = _rule("float", "a float in (0, 1]", lambda v: 0 < v <= 1, default=1.0)
    fraction_evaluate: float = _rule(
        "float", "a float in [0, 1]", lambda v: 0 <= v <= 1, default=0.0
    )
    strategy: str = _rule("str", f"one of {', '.join(STRATEGIES)}", default="fedavg")
    # The server's step on the aggregated delta (FedOpt's eta, FedAvgM's server lr).
    server_lr: float = _rule("float", "a float > 0", _positive, default=1.0)
    # Deltas with a larger L2 norm are rejected (inf: no bound).
    max_delta_norm: float = _rule("float", "a float > 0", lambda v: v > 0, default=100.0)
    # OK deltas with a larger L2 norm are scaled down to it before aggregation (inf: off).
    clip_delta_norm: float = _rule("float", "a float > 0", lambda v: v > 0, default=math.inf)
    # Bounds on a client's num-examples claim (its aggregation weight); 0: off.
    max_num_examples: int = _rule("int", "an int >= 0", lambda v: v >= 0, default=0)
    max_examples_ratio: float = _rule(
        "float", "0 or a float >= 1", lambda v: v == 0 or 1 <= v < math.inf, default=10.0
    )
    strategy_params: tuple[tuple[str, int | float], ...] = _rule(
        "table", "a table of the strategy's parameters", default=()
    )


@dataclass(frozen=True)
class TrainingSection:
    """The ``[training]`` table: the clients' local training."""

    local_epochs: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=1)
    batch_size: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=32)
    lr: float = _rule("float", "a float > 0", _positive, default=0.1)
    proximal_mu: float = _rule(
        "float", "a float >= 0", lambda v: v >= 0 and math.isfinite(v), default=0.0
    )


@dataclass(frozen=True)
class ModelSection:
    """The ``[model]`` table: the model kind and its hidden widths."""

    kind: str = _rule("str", "one of logreg, mlp")
    hidden: tuple[int, ...] = _rule(
        "ints", "a list of ints >= 1", lambda v: all(w >= 1 for w in v), default=()
    )


_FRACTION = ("float", "a float in [0, 1]", lambda v: 0 <= v <= 1)


@dataclass(frozen=True)
class FaultsSection:
    dropout: float = _rule(*_FRACTION, default=0.0)
    crash: float = _rule(*_FRACTION, default=0.0)
    slow: float = _rule(*_FRACTION, default=0.0)
    slow_fuel: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=1000)
    byzantine: float = _rule(*_FRACTION, default=0.0)
    attack: str = _rule("str", f"one of {', '.join(ATTACKS)}", lambda v: v in ATTACKS, "signflip")
    attack_scale: float = _rule("float", "a float > 0", _positive, default=10.0)
    noise_std: float = _rule(
        "float", "a float >= 0", lambda v: v >= 0 and math.isfinite(v), default=1.0
    )

    def fault_config(self) -> FaultConfig:
        return FaultConfig(**{f.name: getattr(self, f.name) for f in fields(self)})


DEVICE_POLICIES = ("none", "drop", "partial")


@dataclass(frozen=True)
class DevicesSection:
    """Simulated devices (coordinator/clock.py, simulations/devices.py); policy "none": off."""

    policy: str = _rule(
        "str", f"one of {', '.join(DEVICE_POLICIES)}", DEVICE_POLICIES.__contains__, "none"
    )
    profiles: str = _rule("str", "a CSV file path, or '' to draw from the seed", default="")
    speed: float = _rule("float", "a float > 0 (fuel per simulated second)", _positive, 1e8)
    speed_sigma: float = _rule("float", "a float >= 0", lambda v: 0 <= v < math.inf, 0.0)
    speed_jitter: float = _rule("float", "a float >= 0", lambda v: 0 <= v < math.inf, 0.0)
    memory_mb: int = _rule("int", "an int >= 1", lambda v: v >= 1, default=512)
    uplink: float = _rule("float", "a float > 0 (bytes per simulated second)", _positive, 1e6)
    downlink: float = _rule("float", "a float > 0 (bytes per simulated second)", _positive, 1e7)
    bandwidth_sigma: float = _rule("float", "a float >= 0", lambda v: 0 <= v < math.inf, 0.0)
    availability: float = _rule("float", "a float in [0, 1]", lambda v: 0 <= v <= 1, 1.0)
    deadline_seconds: float = _rule("float", "a float > 0 (inf: none)", lambda v: v > 0, math.inf)
    # >= 0: calibrate the deadline so that this share of the clients straggles (nominal speeds).
    straggler_share: float = _rule(
        "float", "-1 or a float in [0, 1)", lambda v: v == -1 or 0 <= v < 1, -1.0
    )


_SECTIONS: dict[str, type] = {
    "scenario": ScenarioSection,
    "data": DataSection,
    "federation": FederationSection,
    "training": TrainingSection,
    "model": ModelSection,
    "faults": FaultsSection,
    "devices": DevicesSection,
}

# Strategy parameters a scenario may set under [federation.strategy_params], by strategy: the
# flwr.serverapp.strategy constructor arguments that no other key already sets (fractions,
# server_lr, proximal_mu come from their own keys). Every strategy takes the min_* node counts.
_INT_AT_LEAST_1 = ("int", "an int >= 1", lambda v: v >= 1)
_INT_AT_LEAST_0 = ("int", "an int >= 0", lambda v: v >= 0)
_UNIT_INTERVAL = ("float", "a float in [0, 1)", lambda v: 0 <= v < 1)
_POSITIVE = ("float", "a float > 0", _positive)
_COMMON_PARAMS = {
    "min_train_nodes": _INT_AT_LEAST_1,
    "min_evaluate_nodes": _INT_AT_LEAST_0,
    "min_available_nodes": _INT_AT_LEAST_1,
}
_ADAPTIVE_PARAMS = {"beta_1": _UNIT_INTERVAL, "beta_2": _UNIT_INTERVAL, "tau": _POSITIVE}
STRATEGY_PARAMS: dict[str, dict[str, tuple[str, str, Callable[[Any], bool]]]] = {
    "fedavg": {},
    "fedprox": {},
    "fedavgm": {"server_momentum": _UNIT_INTERVAL},
    "fedadam": dict(_ADAPTIVE_PARAMS),
    "fedyogi": dict(_ADAPTIVE_PARAMS),
    "fedadagrad": {"tau": _POSITIVE},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": ("float", "a float in (0, 0.5)", lambda v: 0 < v < 0.5)},
    "krum": {"num_malicious_nodes": _INT_AT_LEAST_0},
    "multikrum": {"num_malicious_nodes": _INT_AT_LEAST_0, "num_nodes_to_select": _INT_AT_LEAST_1},
    "bulyan": {"num_malicious_nodes": _INT_AT_LEAST_0},
}
for _params in STRATEGY_PARAMS.values():
    _params.update(_COMMON_PARAMS)

# Where each flat data key lives in a scenario file (for error messages).
_DATA_KEY_TO_TOML = {
    "dataset": "data.dataset",
    "dataset-path": "data.path",
    "synthetic-alpha": "data.synthetic_alpha",
    "synthetic-beta": "data.synthetic_beta",
    "partitioning": "data.partitioning",
    "dirichlet-alpha": "data.dirichlet_alpha",
    "shards-per-client": "data.shards_per_client",
    "test-fraction": "data.test_fraction",
    "num-partitions": "federation.clients",
    "seed": "scenario.seed",
}


# -- the scenario ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Build one with :func:`load_scenario` or :meth:`from_dict`."""

    scenario: ScenarioSection
    data: DataSection
    federation: FederationSection
    training: TrainingSection
    model: ModelSection
    faults: FaultsSection = field(default_factory=FaultsSection)
    devices: DevicesSection = DevicesSection()
    source: str = "<scenario>"

    @property
    def name(self) -> str:
        """Return the scenario's name (``[scenario] name``)."""
        return self.scenario.name

    @property
    def seed(self) -> int:
        """Return the run seed (``[scenario] seed``)."""
        return self.scenario.seed

    @property
    def strategy_params(self) -> dict[str, int | float]:
        """Return the strategy's parameters (``[federation.strategy_params]``) as a dict."""
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
                source, unknown[0], f"unknown table; known tables: {', '.join(_SECTIONS)}"
            )
        sections = {}
        for section_name, section_class in _SECTIONS.items():
            table = raw.get(section_name, {})
            if not isinstance(table, Mapping):
                raise ScenarioError(source, section_name, f"expected a table, given {table!r}")
            sections[section_name] = _parse_section(section_name, section_class, table, source)
        scenario = cls(**sections, source=source)
        scenario._check_across_keys()
        return scenario

    def data_config(self) -> DataConfig:
        """Return the data keys as a validated :class:`~simulations.partitions.DataConfig`."""
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
        """Return the model: hidden widths from the scenario, input and classes from the data."""
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
        """Return the flat run config (README, "Run config") the coordinator and clients read."""
        run_config: dict[str, str | int | float] = {
            "scenario": self.name,
            "seed": self.seed,
            "num-rounds": self.federation.rounds,
            "fraction-train": self.federation.fraction_train,
            "fraction-evaluate": self.federation.fraction_evaluate,
            "local-epochs": self.training.local_epochs,
            "batch-size": self.training.batch_size,
            "lr": self.training.lr,
            "proximal-mu": self.training.proximal_mu,
            "strategy": self.federation.strategy,
            "strategy-params": json.dumps(self.strategy_params, sort_keys=True),
            "server-lr": self.federation.server_lr,
            "model": str(self.model_spec()),
            "max-delta-norm": self.federation.max_delta_norm,
            "out-dir": str(Path("runs") / self.name),
        }
        # Always present, defaults included: the Flower App declares them (pyproject.toml), so
        # `flwr run --run-config` (and a resumed deployment) may pass them.
        for name in ("clip_delta_norm", "max_num_examples", "max_examples_ratio"):
            run_config[name.replace("_", "-")] = getattr(self.federation, name)
        run_config.update(self.data_config().to_mapping())
        run_config.update(self.faults.fault_config().to_run_config())
        if self.devices.policy != "none":
            run_config["devices"] = self.device_simulation(run_config).to_json()
        return run_config

    def device_simulation(self, run_config: Mapping[str, Any]):
        """Return the scenario's devices as a ``coordinator.clock.DeviceSimulation``.

        The deadline is calibrated when ``straggler_share`` >= 0: this runs every client's job
        once, metered.
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

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the scenario as nested tables, in the TOML file's shape (lists for arrays)."""
        raw: dict[str, dict[str, Any]] = {}
        for section_name in _SECTIONS:
            section = getattr(self, section_name)
            table: dict[str, Any] = {}
            for section_field in fields(section):
                value = getattr(section, section_field.name)
                kind = section_field.metadata["kind"]
                if kind == "table":
                    value = dict(value)
                elif kind == "ints":
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
        if self.model.kind not in MODEL_KINDS:
            raise ScenarioError(
                source, "model.kind", f"expected one of logreg, mlp, given {self.model.kind!r}"
            )
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
            self.faults.fault_config()
        except FaultConfigError as error:
            key = "faults." + error.key.removeprefix("faults-").replace("-", "_")
            raise ScenarioError(source, key, str(error).split(": ", 1)[1]) from error
        strategy = self.federation.strategy
        if strategy not in STRATEGIES:
            raise ScenarioError(
                source,
                "federation.strategy",
                f"expected one of {', '.join(STRATEGIES)}, given {strategy!r}",
            )
        allowed = STRATEGY_PARAMS[strategy]
        for name, value in self.federation.strategy_params:
            key = f"federation.strategy_params.{name}"
            if name not in allowed:
                raise ScenarioError(
                    source,
                    key,
                    f"not a parameter of {strategy}; it takes {', '.join(sorted(allowed))}",
                )
            kind, expected, check = allowed[name]
            coerced = _coerce(key, value, kind, expected, source)
            _check_value(key, coerced, value, expected, check, source)
        # The data keys are validated together by DataConfig (errors name the TOML keys);
        # the model spec needs the data set's shape, which for a folder reads its files.
        data_config = self.data_config()
        self.model_spec()
        if data_config.dataset == "folder" and data_config.partitioning == "natural":
            num_files = len(datasets.folder_files(data_config.dataset_path))
            if num_files != data_config.num_partitions:
                raise ScenarioError(
                    source,
                    "federation.clients",
                    f"natural partitioning gives one client per file: {data_config.dataset_path} "
                    f"has {num_files} files, given {data_config.num_partitions} clients",
                )

    def _data_error(self, error: DataConfigError) -> ScenarioError:
        return ScenarioError(
            self.source, _DATA_KEY_TO_TOML.get(error.key, error.key), error.problem
        )


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
        text = file_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(file_path), "", "no such scenario file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(file_path), "", f"cannot read: {error}") from error
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(str(file_path), "", f"not valid TOML: {error}") from error
    return Scenario.from_dict(raw, str(file_path))


def default_scenario_path() -> Path:
    """Return the bundled default scenario, digits-mlp-dirichlet.toml."""
    return SCENARIO_DIR / f"{DEFAULT_SCENARIO}.toml"


def bundled_scenarios() -> list[str]:
    """Names of the scenarios that ship with Sandflower."""
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def find_scenario(name_or_path: str | Path) -> Path:
    """Find a scenario file: an existing path, or the name of a bundled scenario (.toml optional).

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


# -- parsing helpers --------------------------------------------------------------------------
def _parse_section(section_name: str, section_class: type, table: Mapping[str, Any], source: str):
    known = {section_field.name: section_field for section_field in fields(section_class)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ScenarioError(
            source,
            f"{section_name}.{unknown[0]}",
            f"unknown key; [{section_name}] takes {', '.join(known)}",
        )
    values = {}
    for name, section_field in known.items():
        key = f"{section_name}.{name}"
        kind = section_field.metadata["kind"]
        expected = section_field.metadata["expected"]
        if name not in table:
            if section_field.default is MISSING:
                raise ScenarioError(source, key, f"required: expected {expected}")
            continue
        value = _coerce(key, table[name], kind, expected, source)
        if kind != "table":
            check = section_field.metadata["check"]
            _check_value(key, value, table[name], expected, check, source)
        values[name] = value
    return section_class(**values)


def _coerce(key: str, value: Any, kind: str, expected: str, source: str) -> Any:
    def wrong() -> ScenarioError:
        return ScenarioError(source, key, f"expected {expected}, given {value!r}")

    if kind == "str":
        if not isinstance(value, str):
            raise wrong()
        return value
    if kind == "int":
        # bool is an int in Python; in a scenario `true` is never a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if kind == "ints":
        if not isinstance(value, list | tuple) or any(
            isinstance(item, bool) or not isinstance(item, int) for item in value
        ):
            raise wrong()
        return tuple(value)
    if kind == "table":
        if not isinstance(value, Mapping):
            raise wrong()
        for name, item in value.items():
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ScenarioError(source, f"{key}.{name}", f"expected a number, given {item!r}")
        return tuple(sorted(value.items()))
    raise AssertionError(f"unknown field kind {kind!r}")


def _check_value(
    key: str,
    value: Any,
    given: Any,
    expected: str,
    check: Callable[[Any], bool],
    source: str,
) -> None:
    # ``given`` is the value as written (-1, not the -1.0 it was converted to).
    if not check(value):
        raise ScenarioError(source, key, f"expected {expected}, given {given!r}")


def _apply_set(raw: dict[str, dict[str, Any]], key: str, text: str, source: str) -> None:
    parts = key.split(".")
    section_name = parts[0]
    if section_name not in _SECTIONS or len(parts) < 2:
        raise ScenarioError(
            source,
            key,
            "unknown key; expected TABLE.KEY with TABLE one of " + ", ".join(_SECTIONS),
        )
    known = {section_field.name: section_field for section_field in fields(_SECTIONS[section_name])}
    if len(parts) == 3 and section_name == "federation" and parts[1] == "strategy_params":
        raw["federation"]["strategy_params"][parts[2]] = _parse_text(text, "float")
        return
    if len(parts) != 2 or parts[1] not in known:
        raise ScenarioError(source, key, f"unknown key; [{section_name}] takes {', '.join(known)}")
    # A whole table is replaced by an inline TOML table: strategy_params={beta = 0.2}, or {}
    # to go back to the strategy's defaults.
    raw[section_name][parts[1]] = _parse_text(text, known[parts[1]].metadata["kind"])


def _parse_text(text: str, kind: str) -> Any:
    """Parse a --set value: strings as written (quotes optional), anything else as a TOML value."""
    text = text.strip()
    if kind == "str":
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # the type check then names the key and shows the text


__all__ = [
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
