"""coordinator/schema.py: one declaration per key, and the views derived from it."""

from __future__ import annotations

import dataclasses
import math

import pytest
from pydantic import ValidationError

from coordinator import schema
from coordinator.config import DEFAULTS, REQUIRED_KEYS
from coordinator.flower_strategies import STRATEGY_NAMES, settable_params


def _problem(section: type, **values) -> schema.Problem:
    with pytest.raises(ValidationError) as info:
        section(**values)
    return schema.describe_error(info.value.errors()[0], section)


def test_the_flat_view_is_the_run_configs_coordinator_keys():
    # coordinator/config.py derives both lists from the schema; these are the documented keys.
    assert set(REQUIRED_KEYS) == {
        "scenario", "seed", "num-rounds", "fraction-train", "fraction-evaluate",
        "local-epochs", "batch-size", "lr", "strategy", "model", "max-delta-norm", "out-dir",
    }  # fmt: skip
    assert dict(DEFAULTS) == {
        "strategy-params": "{}",
        "server-lr": 1.0,
        "proximal-mu": 0.0,
        "kernel-sha256": "",
        "clip-delta-norm": math.inf,
        "max-num-examples": 0,
        "max-examples-ratio": 10.0,
        "resume-from": "",
        "devices": "",
    }


def test_errors_name_the_key_say_what_is_expected_and_show_the_value():
    assert _problem(schema.FederationSection, fraction_train=1.5) == schema.Problem(
        ("fraction_train",), "expected a float in (0, 1], given 1.5"
    )
    assert _problem(schema.FederationSection, rounds=True).problem == (
        "expected an integer >= 1, given True"
    )
    assert _problem(schema.TrainingSection, lr=math.nan).problem == (
        "expected a finite float > 0, given nan"
    )
    assert _problem(schema.FederationSection, max_examples_ratio=0.5).problem.startswith(
        "expected 0 (off) or a finite float >= 1"
    )


def test_an_unknown_key_gets_a_suggestion_or_the_list_of_keys():
    assert _problem(schema.FederationSection, rouns=3).problem == (
        "unknown key, did you mean rounds?"
    )
    far = schema.unknown_key_problem("zzz", ["rounds", "strategy"])
    assert far == "unknown key; expected one of rounds, strategy"


def test_sections_are_frozen_and_ints_stand_for_floats():
    training = schema.TrainingSection(lr=1)
    assert training.lr == 1.0 and isinstance(training.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        training.lr = 0.5  # type: ignore[misc]
    assert schema.FederationSection(strategy="FedAvg").strategy == "fedavg"


def test_one_parameter_table_matches_flowers_constructors():
    assert tuple(schema.STRATEGY_PARAMS) == STRATEGY_NAMES == schema.STRATEGIES
    for name, model in schema.STRATEGY_PARAMS.items():
        assert set(model.model_fields) == set(settable_params(name)), name


def test_strategy_parameters_are_checked_by_their_strategys_model():
    assert schema.check_strategy_params("fedtrimmedavg", {"beta": 0.2}) is None
    assert schema.check_strategy_params("fedtrimmedavg", {"beta": 0.7}) == schema.Problem(
        ("beta",), "expected a float in (0, 0.5), given 0.7"
    )
    unknown = schema.check_strategy_params("fedavg", {"beta": 0.2})
    assert unknown is not None and unknown.problem.startswith("not a parameter of fedavg")
    wrong_type = schema.check_strategy_params("krum", {"num_malicious_nodes": 1.5})
    assert wrong_type == schema.Problem(
        ("num_malicious_nodes",), "expected an integer >= 0, given 1.5"
    )


def test_validate_flat_names_the_flat_key():
    class Refused(Exception):
        def __init__(self, key: str, problem: str) -> None:
            super().__init__(f"{key}: {problem}")
            self.key = key

    with pytest.raises(Refused) as info:
        schema.validate_flat(schema.FederationSection, {"num-rounds": 0}, Refused)
    assert info.value.key == "num-rounds"
    assert str(info.value) == "num-rounds: expected an integer >= 1, given 0"
    parsed = schema.validate_flat(schema.FederationSection, {"num-rounds": 3}, Refused)
    assert parsed.rounds == 3 and parsed.strategy == "fedavg"
