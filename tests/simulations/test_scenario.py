"""simulations/scenario.py: scenario TOML -> frozen, validated config -> the flat run config."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pytest

from kernels.spec import ModelSpec
from simulations.federated_data import DATA_KEYS
from simulations.scenario import (
    SCENARIO_DIR,
    Scenario,
    ScenarioError,
    bundled_scenarios,
    default_scenario_path,
    find_scenario,
    load_scenario,
)

# The flat run config every part of Sandflower reads (README, "Run config"), and the type of
# each value.
RUN_CONFIG_TYPES = {
    "scenario": str,
    "seed": int,
    "num-rounds": int,
    "fraction-train": float,
    "fraction-evaluate": float,
    "local-epochs": int,
    "batch-size": int,
    "lr": float,
    "proximal-mu": float,
    "strategy": str,
    "strategy-params": str,
    "server-lr": float,
    "model": str,
    "max-delta-norm": float,
    "clip-delta-norm": float,
    "max-num-examples": int,
    "max-examples-ratio": float,
    "out-dir": str,
    "dataset": str,
    "dataset-path": str,
    "synthetic-alpha": float,
    "synthetic-beta": float,
    "partitioning": str,
    "dirichlet-alpha": float,
    "shards-per-client": int,
    "num-partitions": int,
    "test-fraction": float,
}

MINIMAL = """
[scenario]
name = "tiny"
[data]
dataset = "digits"
[model]
kind = "logreg"
"""


def _write(tmp_path, text: str, name: str = "scenario.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- the bundled scenarios --------------------------------------------------------------------
def test_the_bundled_scenarios_are_there():
    # Issue 13 adds the FedProx heterogeneity grid: 3 data sets x 3 straggler shares x 2.
    stragglers = [
        f"synthetic-{data}-stragglers-{share}-{algorithm}"
        for data in ("0-0", "0.5-0.5", "1-1")
        for share in (0, 50, 90)
        for algorithm in ("fedavg", "fedprox")
    ]
    assert bundled_scenarios() == sorted(
        [
            "digits-mlp-byzantine-scaling",
            "digits-mlp-byzantine-signflip",
            "digits-mlp-dirichlet",
            "digits-mlp-dropout-crash",
            "digits-mlp-iid",
            "synthetic-1-1-fedavg",
            "synthetic-1-1-fedprox",
        ]
        + stragglers
    )
    assert default_scenario_path() == SCENARIO_DIR / "digits-mlp-dirichlet.toml"


@pytest.mark.parametrize("name", ["digits-mlp-dirichlet", "digits-mlp-iid",
                                  "synthetic-1-1-fedavg", "synthetic-1-1-fedprox"])  # fmt: skip
def test_every_bundled_scenario_gives_a_complete_typed_run_config(name):
    scenario = load_scenario(find_scenario(name))
    assert scenario.name == name
    run_config = scenario.to_run_config()
    assert set(run_config) == set(RUN_CONFIG_TYPES)
    assert set(DATA_KEYS) <= set(run_config)
    for key, value in run_config.items():
        assert type(value) is RUN_CONFIG_TYPES[key], (key, value)
    assert isinstance(json.loads(run_config["strategy-params"]), dict)
    ModelSpec.parse(run_config["model"])


def test_the_default_scenario_is_digits_mlp_with_dirichlet_label_skew():
    run_config = load_scenario(default_scenario_path()).to_run_config()
    assert run_config["model"] == "mlp:64-32-10"
    assert (run_config["dataset"], run_config["partitioning"]) == ("digits", "dirichlet")
    assert (run_config["num-partitions"], run_config["num-rounds"]) == (20, 30)
    assert run_config["dirichlet-alpha"] == 0.5


def test_the_synthetic_scenarios_follow_fedprox_and_differ_only_in_the_algorithm():
    fedprox = load_scenario(find_scenario("synthetic-1-1-fedprox")).to_run_config()
    fedavg = load_scenario(find_scenario("synthetic-1-1-fedavg")).to_run_config()
    assert fedprox["model"] == "logreg:60-10"
    assert fedprox["num-partitions"] == 30 and fedprox["partitioning"] == "natural"
    assert (fedprox["lr"], fedprox["batch-size"], fedprox["local-epochs"]) == (0.01, 10, 20)
    assert int(30 * fedprox["fraction-train"]) == 10  # Flower samples int(n * fraction)
    assert fedprox["test-fraction"] == 0.1
    assert (fedprox["strategy"], fedprox["proximal-mu"]) == ("fedprox", 1.0)
    assert (fedavg["strategy"], fedavg["proximal-mu"]) == ("fedavg", 0.0)
    differing = {key for key in fedprox if fedprox[key] != fedavg[key]}
    assert differing == {"scenario", "strategy", "proximal-mu", "out-dir"}


def test_find_scenario_takes_a_path_or_a_bundled_name(tmp_path):
    assert find_scenario("digits-mlp-iid") == SCENARIO_DIR / "digits-mlp-iid.toml"
    assert find_scenario("digits-mlp-iid.toml") == SCENARIO_DIR / "digits-mlp-iid.toml"
    own = _write(tmp_path, MINIMAL)
    assert find_scenario(str(own)) == own
    with pytest.raises(ScenarioError, match="no-such: no such scenario .*bundled: digits-mlp"):
        find_scenario("no-such")
    with pytest.raises(ScenarioError, match="no such scenario file"):
        find_scenario(str(tmp_path / "missing.toml"))


# -- defaults and the model -------------------------------------------------------------------
def test_a_minimal_scenario_takes_the_defaults(tmp_path):
    scenario = load_scenario(_write(tmp_path, MINIMAL))
    run_config = scenario.to_run_config()
    assert run_config["model"] == "logreg:64-10"
    assert run_config["strategy"] == "fedavg" and run_config["strategy-params"] == "{}"
    assert run_config["partitioning"] == "iid" and run_config["seed"] == 0
    assert run_config["out-dir"] == "runs/tiny"


def test_the_model_takes_its_input_and_classes_from_a_folder(tmp_path):
    folder = tmp_path / "clients"
    folder.mkdir()
    for index in range(2):
        np.savez(folder / f"c{index}.npz", x=np.ones((6, 5)), y=np.array([0, 1, 2, 3, 4, index]))
    path = _write(
        tmp_path,
        f"""
        [scenario]
        name = "own-data"
        [data]
        dataset = "folder"
        path = "{folder}"
        partitioning = "natural"
        [federation]
        clients = 2
        [model]
        kind = "mlp"
        hidden = [8, 4]
        """,
    )
    run_config = load_scenario(path).to_run_config()
    assert run_config["model"] == "mlp:5-8-4-5"
    assert run_config["dataset-path"] == str(folder)


def test_a_scenario_is_frozen():
    scenario = load_scenario(default_scenario_path())
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.training.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scenario.federation = None  # type: ignore[misc]


# -- errors name the file and the key ---------------------------------------------------------
BAD = {
    "unknown table": ("[optimizer]\nlr = 1\n", "\\[optimizer\\]: unknown table"),
    "unknown key": (
        "[training]\nlearning_rate = 0.1\n",
        "\\[training\\] learning_rate: unknown key",
    ),
    "negative alpha": (
        "[data]\ndataset = 'digits'\ndirichlet_alpha = -1\n",
        "\\[data\\] dirichlet_alpha: expected a float > 0, given -1",
    ),
    "float for an int": (
        "[training]\nlocal_epochs = 2.5\n",
        "\\[training\\] local_epochs: expected",
    ),
    "bool for an int": (
        "[federation]\nrounds = true\n",
        "\\[federation\\] rounds: expected an integer",
    ),
    "string for a float": (
        "[training]\nlr = 'fast'\n",
        "\\[training\\] lr: expected a finite float > 0",
    ),
    "zero lr": ("[training]\nlr = 0\n", "\\[training\\] lr: expected a finite float > 0, given 0"),
    "nan lr": (
        "[training]\nlr = nan\n",
        "\\[training\\] lr: expected a finite float > 0, given nan",
    ),
    "fraction above 1": (
        "[federation]\nfraction_train = 1.5\n",
        r"\[federation\] fraction_train: expected a float in \(0, 1\], given 1.5",
    ),
    "test fraction 0": ("[data]\ntest_fraction = 0\n", r"\[data\] test_fraction: expected a float"),
    "unknown strategy": (
        "[federation]\nstrategy = 'fedsgd'\n",
        "\\[federation\\] strategy: expected one of fedavg, fedprox",
    ),
    "strategy param of another strategy": (
        "[federation]\nstrategy = 'fedavg'\n[federation.strategy_params]\nbeta = 0.2\n",
        "\\[federation.strategy_params\\] beta: not a parameter of fedavg",
    ),
    "strategy param out of range": (
        "[federation]\nstrategy = 'fedtrimmedavg'\n[federation.strategy_params]\nbeta = 0.7\n",
        r"\[federation.strategy_params\] beta: expected a float in \(0, 0.5\), given 0.7",
    ),
    "strategy param not a number": (
        "[federation]\nstrategy = 'krum'\n[federation.strategy_params]\n"
        "num_malicious_nodes = 'two'\n",
        "\\[federation.strategy_params\\] num_malicious_nodes: "
        "expected an integer >= 0, given 'two'",
    ),
    "strategy param float for int": (
        "[federation]\nstrategy = 'krum'\n[federation.strategy_params]\n"
        "num_malicious_nodes = 1.5\n",
        "\\[federation.strategy_params\\] num_malicious_nodes: expected an integer >= 0, given 1.5",
    ),
    "unknown model kind": (
        "[model]\nkind = 'cnn'\n",
        "\\[model\\] kind: expected one of logreg, mlp",
    ),
    "logreg with hidden layers": (
        "[model]\nkind = 'logreg'\nhidden = [8]\n",
        r"\[model\] hidden: logreg has no hidden layers: expected \[\], given \[8\]",
    ),
    "mlp without hidden layers": ("[model]\nkind = 'mlp'\n", "\\[model\\] hidden: an mlp needs"),
    "zero width": (
        "[model]\nkind = 'mlp'\nhidden = [8, 0]\n",
        "\\[model\\] hidden: expected a list",
    ),
    "unknown dataset": (
        "[data]\ndataset = 'mnist'\n",
        "\\[data\\] dataset: expected one of digits",
    ),
    "folder without path": (
        "[data]\ndataset = 'folder'\n",
        "\\[data\\] path: the folder data set needs a folder path",
    ),
    "digits natural": (
        "[data]\npartitioning = 'natural'\n",
        "\\[data\\] partitioning: digits has no natural per-device split",
    ),
    "zero clients": (
        "[federation]\nclients = 0\n",
        "\\[federation\\] clients: expected an integer >= 1",
    ),
    "negative seed": (
        "[scenario]\nseed = -3\n",
        "\\[scenario\\] seed: expected an integer >= 0, given -3",
    ),
    "a name with a slash": (
        "[scenario]\nname = 'a/b'\n",
        "\\[scenario\\] name: expected a name of letters",
    ),
    "a table given as a value": ("training = 3\n", "\\[training\\]: expected a table, given 3"),
    # Integers wider than what they end in: the seed went to an int64 report field and
    # failed the run after the engine started ("Value out of range", no key named).
    "a seed beyond int64": (
        "[scenario]\nseed = 100000000000000000000\n",
        "\\[scenario\\] seed: expected an integer >= 0 and <= 9223372036854775807",
    ),
    "rounds beyond int32": (
        "[federation]\nrounds = 2147483648\n",
        "\\[federation\\] rounds: expected an integer >= 1 and <= 2147483647",
    ),
    "a hidden width of 10**9": (
        "[model]\nkind = 'mlp'\nhidden = [1000000000]\n",
        "\\[model\\]: 75000000010 parameters, at most 536870912",
    ),
    "clients beyond int32": (
        "[federation]\nclients = 10000000000000\n",
        "\\[federation\\] clients: expected an integer >= 1 and <= 2147483647",
    ),
}


def _merge(base: str, extra: str) -> str:
    """``base`` with the tables of ``extra`` (a key in both: extra's line wins)."""
    import tomllib

    merged = tomllib.loads(base)
    for table, values in tomllib.loads(extra).items():
        if isinstance(values, dict):
            merged.setdefault(table, {}).update(values)
        else:
            merged[table] = values
    lines = []
    for table, values in merged.items():
        if not isinstance(values, dict):
            lines.insert(0, f"{table} = {values!r}")
            continue
        lines.append(f"[{table}]")
        subtables = []
        for key, value in values.items():
            if isinstance(value, dict):
                subtables.append((key, value))
            else:
                lines.append(f"{key} = {json.dumps(value) if not _is_nan(value) else 'nan'}")
        for key, sub in subtables:
            lines.append(f"[{table}.{key}]")
            lines += [f"{name} = {json.dumps(item)}" for name, item in sub.items()]
    return "\n".join(lines) + "\n"


def _is_nan(value) -> bool:
    return isinstance(value, float) and value != value


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_scenario_is_an_error_naming_the_file_and_the_key(tmp_path, case):
    extra, message = BAD[case]
    path = _write(tmp_path, _merge(MINIMAL, extra))
    with pytest.raises(ScenarioError, match=f"^{path}: {message}"):
        load_scenario(path)


def test_required_keys_are_named(tmp_path):
    path = _write(tmp_path, "[data]\ndataset = 'digits'\n[model]\nkind = 'logreg'\n")
    with pytest.raises(ScenarioError, match=r"\[scenario\] name: required: expected a name"):
        load_scenario(path)


def test_a_file_that_is_not_toml_is_named(tmp_path):
    path = _write(tmp_path, "[scenario\nname = 1\n")
    with pytest.raises(ScenarioError, match=f"^{path}: not valid TOML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.toml")


def test_natural_folder_clients_must_match_the_files(tmp_path):
    folder = tmp_path / "clients"
    folder.mkdir()
    for index in range(3):
        np.savez(folder / f"c{index}.npz", x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    text = MINIMAL.replace(
        'dataset = "digits"', f'dataset = "folder"\npath = "{folder}"\npartitioning = "natural"'
    )
    path = _write(tmp_path, text + "[federation]\nclients = 5\n")
    with pytest.raises(
        ScenarioError, match="\\[federation\\] clients: .* has 3 files, given 5 clients"
    ):
        load_scenario(path)


def test_strategy_params_reach_the_run_config_as_json(tmp_path):
    path = _write(
        tmp_path,
        _merge(
            MINIMAL,
            "[federation]\nstrategy = 'fedadam'\n[federation.strategy_params]\n"
            "tau = 0.001\nbeta_1 = 0.9\n",
        ),
    )
    scenario = load_scenario(path)
    assert scenario.strategy_params == {"beta_1": 0.9, "tau": 0.001}
    assert json.loads(scenario.to_run_config()["strategy-params"]) == {"beta_1": 0.9, "tau": 0.001}


# -- overrides --------------------------------------------------------------------------------
def test_overrides_replace_keys_with_values_of_the_fields_type():
    scenario = load_scenario(default_scenario_path())
    changed = scenario.with_overrides(
        rounds=3,
        clients=5,
        seed=9,
        sets={
            "training.lr": "0.05",
            "training.local_epochs": "2",
            "model.hidden": "[16, 8]",
            "data.partitioning": "iid",
            "data.dataset": '"digits"',
            "federation.strategy": "fedtrimmedavg",
            "federation.strategy_params.beta": "0.2",
        },
    )
    run_config = changed.to_run_config()
    assert (run_config["num-rounds"], run_config["num-partitions"], run_config["seed"]) == (3, 5, 9)
    assert run_config["lr"] == 0.05 and run_config["local-epochs"] == 2
    assert run_config["model"] == "mlp:64-16-8-10"
    assert run_config["partitioning"] == "iid" and run_config["dataset"] == "digits"
    assert json.loads(run_config["strategy-params"]) == {"beta": 0.2}
    assert "with overrides" in changed.source
    # The original is untouched.
    assert scenario.to_run_config()["num-rounds"] == 30 and scenario.training.lr == 0.2


def test_an_override_can_replace_the_strategy_params_table():
    scenario = load_scenario(default_scenario_path()).with_overrides(
        sets={"federation.strategy": "fedtrimmedavg", "federation.strategy_params.beta": "0.2"}
    )
    # Switching strategy needs the old strategy's parameters gone: replace the whole table.
    switched = scenario.with_overrides(
        sets={"federation.strategy": "fedadam", "federation.strategy_params": "{tau = 0.01}"}
    )
    assert switched.strategy_params == {"tau": 0.01}
    cleared = scenario.with_overrides(
        sets={"federation.strategy": "fedavg", "federation.strategy_params": "{}"}
    )
    assert cleared.to_run_config()["strategy-params"] == "{}"


def test_no_overrides_give_an_equal_scenario():
    scenario = load_scenario(default_scenario_path())
    same = scenario.with_overrides()
    assert same.to_run_config() == scenario.to_run_config()
    assert dataclasses.replace(same, source=scenario.source) == scenario


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"training.learning_rate": "0.1"}, "\\[training\\] learning_rate: unknown key"),
        ({"optimizer.lr": "0.1"}, "\\[optimizer\\] lr: unknown key; expected TABLE.KEY"),
        ({"lr": "0.1"}, "\\[lr\\]: unknown key"),
        ({"training.lr.value": "0.1"}, "\\[training.lr\\] value: unknown key"),
        (
            {"federation.strategy_params": "0.2"},
            "\\[federation\\] strategy_params: expected a table",
        ),
        ({"training.lr": "fast"}, "\\[training\\] lr: expected a finite float > 0, given 'fast'"),
        ({"training.lr": "-1"}, "\\[training\\] lr: expected a finite float > 0, given -1"),
        (
            {"federation.rounds": "2.5"},
            "\\[federation\\] rounds: expected an integer >= 1, given 2.5",
        ),
        ({"model.hidden": "32"}, r"\[model\] hidden: expected a list of integers >= 1, given 32"),
        (
            {"federation.strategy_params.beta": "0.2"},
            "\\[federation.strategy_params\\] beta: not a parameter of fedavg",
        ),
    ],
)
def test_a_bad_override_is_an_error_naming_the_key(sets, message):
    scenario = load_scenario(default_scenario_path())
    with pytest.raises(ScenarioError, match=f"with overrides\\): {message}"):
        scenario.with_overrides(sets=sets)


def test_a_bad_shortcut_override_is_named():
    scenario = load_scenario(default_scenario_path())
    with pytest.raises(
        ScenarioError, match="\\[federation\\] clients: expected an integer >= 1, given 0"
    ):
        scenario.with_overrides(clients=0)


def test_from_dict_validates_like_a_file():
    scenario = Scenario.from_dict(
        {"scenario": {"name": "x"}, "data": {"dataset": "digits"}, "model": {"kind": "logreg"}}
    )
    assert scenario.source == "<scenario>"
    assert Scenario.from_dict(scenario.to_dict()) == scenario


def test_strategy_params_match_what_the_coordinator_accepts():
    # The scenario refuses at load time what the coordinator would refuse at run time.
    from coordinator.flower_strategies import STRATEGY_NAMES, settable_params
    from simulations.scenario import STRATEGIES, STRATEGY_PARAMS

    assert set(STRATEGIES) == set(STRATEGY_NAMES)
    for name in STRATEGIES:
        assert set(STRATEGY_PARAMS[name]) == set(settable_params(name)), name


# -- the shipped targets, on the real engine ----------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "target"), [("digits-mlp-dirichlet", 0.93), ("digits-mlp-iid", 0.95)]
)
def test_a_digits_scenario_reaches_its_target_accuracy_within_its_rounds(tmp_path, name, target):
    from simulations.simulate import simulate_on_engine

    run_config = load_scenario(find_scenario(name)).to_run_config()
    assert run_config["num-rounds"] == 30
    report = simulate_on_engine(run_config, tmp_path / "run")
    accuracies = [round_report.central_accuracy for round_report in report.rounds]
    assert len(accuracies) == 30
    assert max(accuracies) >= target, accuracies


def test_the_documented_schema_matches_the_defaults():
    import re
    import tomllib

    import simulations.scenario as scenario_module

    documented: dict[str, dict] = {}
    table = ""
    for line in scenario_module.__doc__.splitlines():
        line = line.split("->")[0].strip()
        if re.fullmatch(r"\[[a-z_.]+\]", line):
            table = line[1:-1]
        elif "=" in line and table and "strategy_params" not in table:
            key, _, value = line.partition("=")
            value = value.strip()
            documented.setdefault(table, {})[key.strip()] = (
                None if value == "required" else tomllib.loads(f"v = {value}")["v"]
            )
    actual = Scenario.from_dict(
        {"scenario": {"name": "x"}, "data": {"dataset": "digits"}, "model": {"kind": "logreg"}}
    ).to_dict()
    actual["federation"].pop("strategy_params")
    for section, values in documented.items():
        assert set(values) == set(actual[section]), section
        for key, value in values.items():
            if value is not None:
                assert actual[section][key] == value, f"{section}.{key}"


@pytest.mark.parametrize("text", ["nan", "inf", "true", "1", "2.5"])
def test_set_takes_text_fields_as_written_even_when_toml_would_read_a_number(text):
    # faults.attack=nan names the "nan" attack: TOML would read the float NaN. Every field that
    # holds text (str or a Literal of strings) takes its --set value as written; the schema then
    # accepts or refuses the string itself, naming the key.
    scenario = load_scenario(find_scenario("digits-mlp-iid"))
    if text == "nan":
        changed = scenario.with_overrides(sets={"faults.attack": text})
        assert changed.faults.attack == "nan"
    else:
        with pytest.raises(ScenarioError, match=rf"\[faults\] attack: .*given '?{text}'?"):
            scenario.with_overrides(sets={"faults.attack": text})
    with pytest.raises(ScenarioError, match=r"\[data\] dataset: .*given"):
        scenario.with_overrides(sets={"data.dataset": text})
