"""coordinator/strategy_state.py: every attribute a Flower strategy changes between rounds is
either captured for the checkpoint or reset by the adapter each round."""

import numpy as np
import pytest

from coordinator import strategy_state
from coordinator.config import FederationConfig
from coordinator.flower_strategies import build_flower_strategy
from coordinator.server_app import flower_strategy_of, run_rounds_on_grid
from kernels.spec import ModelSpec
from tests.coordinator.test_checkpoint import STRATEGIES
from tests.coordinator.test_server_app import (
    MODEL,
    InProcessGrid,
    central_evaluate,
    run_config,
    write_json_only,
)

SHAPES = ModelSpec.parse(MODEL).array_shapes()
# Set by the adapter before every aggregation (coordinator.rules.prime_reference), so not state.
RESET_EACH_ROUND = {"current_arrays"}
SLOT_ATTRIBUTES = {"m_t": "m_t", "v_t": "v_t", "momentum": "momentum_vector"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_strategy_keeps_state_the_checkpoint_misses(tmp_path, monkeypatch, name):
    seen = []
    capture = strategy_state.capture

    def recording_capture(strategy, array_names):
        seen.append(strategy)
        return capture(strategy, array_names)

    monkeypatch.setattr(strategy_state, "capture", recording_capture)
    config = FederationConfig.from_run_config(
        run_config(tmp_path, num_rounds=3, strategy=name, strategy_params=STRATEGIES[name])
    )
    run_rounds_on_grid(
        InProcessGrid(1), config, central_evaluate=central_evaluate, write_report=write_json_only
    )
    used = seen[-1]
    fresh = flower_strategy_of(config)
    captured = {SLOT_ATTRIBUTES[slot] for slot in strategy_state.state_slots(fresh)}
    changed = [
        attribute
        for attribute, value in vars(used).items()
        if attribute not in captured | RESET_EACH_ROUND
        and not callable(value)
        and not _same(value, vars(fresh).get(attribute))
    ]
    assert changed == [], f"{name} changed {changed} between rounds; checkpoint them"
    state = strategy_state.capture(used, list(SHAPES))
    assert {key.split("/")[0] for key in state} == set(strategy_state.state_slots(fresh))


def _same(left, right) -> bool:
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        return np.array_equal(left, right)
    return left == right


def _fedadam():
    return build_flower_strategy(
        "fedadam",
        {"beta_1": 0.9},
        fraction_train=1.0,
        fraction_evaluate=0.0,
        server_lr=0.1,
        proximal_mu=0.0,
        lr=0.1,
    )


def test_capture_and_restore_round_trip_bit_for_bit():
    strategy = _fedadam()
    rng = np.random.default_rng(0)
    strategy.m_t = {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
    strategy.v_t = {n: rng.random(s).astype(np.float32) for n, s in SHAPES.items()}
    state = strategy_state.capture(strategy, list(SHAPES))
    other = _fedadam()
    strategy_state.restore(other, state, SHAPES)
    for name in SHAPES:
        assert other.m_t[name].tobytes() == strategy.m_t[name].tobytes()
        assert other.v_t[name].dtype == np.float32
    with pytest.raises(strategy_state.StrategyStateError, match="lacks the arrays"):
        strategy_state.restore(other, {"m_t/layer0.bias": state["m_t/layer0.bias"]}, SHAPES)
    with pytest.raises(strategy_state.StrategyStateError, match="does not belong"):
        strategy_state.restore(other, {"momentum/layer0.bias": state["m_t/layer0.bias"]}, SHAPES)
