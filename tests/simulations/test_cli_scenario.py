"""simulations/cli_scenario.py: `sandflower scenario schema|list|show`, through the real CLI."""

from __future__ import annotations

import json
import tomllib

from typer.testing import CliRunner

from simulations.cli import app
from simulations.scenario import (
    Scenario,
    bundled_scenarios,
    default_scenario_path,
    find_scenario,
    load_scenario,
)

runner = CliRunner()


def test_list_names_every_bundled_scenario_with_its_description():
    result = runner.invoke(app, ["scenario", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == bundled_scenarios()
    iid = next(line for line in lines if line.startswith("digits-mlp-iid "))
    assert "20 IID clients" in iid


def test_show_prints_the_resolved_scenario_as_toml_that_loads_back_equal():
    result = runner.invoke(app, ["scenario", "show", "digits-mlp-iid"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    original = load_scenario(find_scenario("digits-mlp-iid"))
    assert shown == original.to_dict()
    # every key, defaults included (the file leaves clip_delta_norm out)
    assert shown["federation"]["clip_delta_norm"] == float("inf")
    assert Scenario.from_dict(shown).to_run_config() == original.to_run_config()


def test_show_applies_sets_and_prints_the_flat_run_config():
    result = runner.invoke(
        app, ["scenario", "show", "digits-mlp-dirichlet", "--set", "training.lr=0.05", "--flat"]
    )
    assert result.exit_code == 0, result.output
    flat = tomllib.loads(result.stdout)
    expected = load_scenario(default_scenario_path()).to_run_config() | {"lr": 0.05}
    assert flat == expected


def test_show_names_a_misspelt_key_on_stderr_with_its_table():
    result = runner.invoke(
        app, ["scenario", "show", "digits-mlp-iid", "--set", "federation.rouns=3"]
    )
    assert result.exit_code == 2
    assert "[federation] rouns: unknown key, did you mean rounds?" in result.stderr
    assert result.stdout == ""
    missing = runner.invoke(app, ["scenario", "show", "no-such-scenario"])
    assert missing.exit_code == 2 and "bundled: digits-mlp" in missing.stderr


def test_schema_is_json_schema_of_every_table_and_key(tmp_path):
    result = runner.invoke(app, ["scenario", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)  # strict JSON: no Infinity
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"scenario", "data", "model"}
    tables = {
        name: schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        for name, ref in schema["properties"].items()
    }
    defaults = Scenario.from_dict(
        {"scenario": {"name": "x"}, "data": {"dataset": "digits"}, "model": {"kind": "logreg"}}
    ).to_dict()
    for table, values in defaults.items():
        properties = tables[table]["properties"]
        assert set(properties) == set(values), table
        assert tables[table]["additionalProperties"] is False
        for key, prop in properties.items():
            assert prop.get("description"), f"{table}.{key} has no doc string"
    federation = tables["federation"]["properties"]
    assert federation["strategy"]["enum"][:2] == ["fedavg", "fedprox"]
    assert federation["rounds"]["minimum"] == 1 and federation["rounds"]["flat"] == "num-rounds"
    assert federation["clip_delta_norm"]["default"] == "inf"
    out = tmp_path / "scenario.schema.json"
    assert runner.invoke(app, ["scenario", "schema", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == schema


def test_the_schema_validates_the_bundled_scenarios():
    # An editor with the schema accepts every bundled file (jsonschema ships with ray).
    import jsonschema

    schema = json.loads(runner.invoke(app, ["scenario", "schema"]).stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for name in bundled_scenarios():
        raw = tomllib.loads(find_scenario(name).read_text())
        errors = [error.message for error in validator.iter_errors(raw)]
        assert errors == [], name
    bad = {"scenario": {"name": "x"}, "data": {"dataset": "mnist"}, "model": {"kind": "mlp"}}
    assert list(validator.iter_errors(bad))
    # [federation.strategy_params] takes the named strategy's parameters only
    base = {"scenario": {"name": "x"}, "data": {"dataset": "digits"}, "model": {"kind": "mlp"}}
    trimmed = {"strategy": "fedtrimmedavg", "strategy_params": {"beta": 0.2}}
    assert not list(validator.iter_errors(base | {"federation": trimmed}))
    too_high = {"strategy": "fedtrimmedavg", "strategy_params": {"beta": 0.7}}
    assert list(validator.iter_errors(base | {"federation": too_high}))
    not_fedavgs = {"strategy_params": {"beta": 0.2}}  # the default strategy, fedavg
    assert list(validator.iter_errors(base | {"federation": not_fedavgs}))
    krum = {"strategy": "krum", "strategy_params": {"num_malicious_nodes": 1}}
    assert not list(validator.iter_errors(base | {"federation": krum}))
