"""A rule that needs more replies a round than the scenario samples is refused before the run.

Bulyan makes an aggregate of at least 4 * num_malicious_nodes + 3 replies; a scenario that
samples fewer would run every round without changing the model (a round short of usable
replies keeps the model, coordinator/strategy.py), so it is a ScenarioError naming the key.
"""

from __future__ import annotations

import pytest

from simulations.scenario import ScenarioError, default_scenario_path, load_scenario


def _with(**sets: str):
    return load_scenario(default_scenario_path()).with_overrides(sets=sets)


def test_bulyan_sampling_fewer_than_its_minimum_is_refused_naming_the_key():
    # The default scenario: 20 clients at fraction_train 0.5 sample 10; f = 2 needs 11.
    with pytest.raises(
        ScenarioError,
        match=r"\[federation\.strategy_params\] num_malicious_nodes: bulyan needs at least 11 "
        r"replies a round to make an aggregate, but 20 clients at fraction_train 0\.5 sample 10",
    ):
        _with(
            **{
                "federation.strategy": "bulyan",
                "federation.strategy_params.num_malicious_nodes": "2",
            }
        )


def test_bulyan_at_its_minimum_and_rules_without_one_are_accepted():
    at_minimum = _with(
        **{
            "federation.strategy": "bulyan",
            "federation.strategy_params.num_malicious_nodes": "1",
            "federation.fraction_train": "0.35",  # 7 of 20 = 4 * 1 + 3
        }
    )
    assert at_minimum.to_run_config()["strategy"] == "bulyan"
    krum = _with(**{"federation.strategy": "krum", "federation.fraction_train": "0.1"})
    assert krum.to_run_config()["fraction-train"] == 0.1
