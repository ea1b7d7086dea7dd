"""coordinator/flower_strategies.py: the one check of strategy-params, over the schema's table."""

import pytest

from coordinator import schema
from coordinator.flower_strategies import (
    STRATEGY_NAMES,
    StrategyParamsError,
    build_flower_strategy,
    check_strategy_params,
    settable_params,
)


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("fedavg", {"eta": 0.1}, "fedavg parameter(s) ['eta'] not allowed here"),
        ("fedavg", {"beta": 0.2}, "fedavg has no parameter(s) ['beta']; it takes"),
        ("fedtrimmedavg", {"beta": 0.7}, "beta: expected a float in (0, 0.5), given 0.7"),
        ("krum", {"num_malicious_nodes": True}, "expected an integer >= 0, given True"),
        ("fedadam", {"tau": float("inf")}, "tau: expected a finite float > 0, given inf"),
        ("fedsgd", {}, "unknown strategy 'fedsgd'"),
    ],
)
def test_bad_params_are_refused_with_what_was_expected(name, params, expected):
    with pytest.raises(StrategyParamsError) as info:
        check_strategy_params(name, params)
    assert expected in str(info.value)


def test_the_check_is_the_schemas_table():
    # The names a run may set are those of the schema's model: no second list to drift.
    for name in STRATEGY_NAMES:
        assert set(schema.STRATEGY_PARAMS[name].model_fields) == set(settable_params(name))
        check_strategy_params(name, {})
    check_strategy_params("multikrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 2})
    settings = dict(fraction_train=1.0, fraction_evaluate=0.0, server_lr=1.0, proximal_mu=0.0)
    with pytest.raises(StrategyParamsError, match="server_momentum: expected a float in"):
        build_flower_strategy("fedavgm", {"server_momentum": 1.5}, lr=0.1, **settings)
