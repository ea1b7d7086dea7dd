"""Device simulation on the local engine and on Flower's Ray engine gives the bits of the
in-process grid: the same model, the same simulated times, the same stragglers (the clock is
engine-agnostic)."""

from __future__ import annotations

import pytest

from simulations.inprocess import simulate_in_process as run_in_process
from simulations.simulate import simulate_on_engine as run_on_engine
from tests.simulations.test_devices import small

pytestmark = pytest.mark.e2e


def _clock(report) -> list:
    return [
        [
            (c.partition_id, c.status, c.device_status, c.fuel_used, c.steps_done, c.sim_seconds)
            for c in r.clients
        ]
        + [r.sim_round_seconds, r.stragglers, r.clients_dropped, r.clients_partial]
        for r in report.rounds
    ]


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox"])
def test_the_engines_and_the_in_process_grid_agree_on_model_and_clock(tmp_path, algorithm, engine):
    run_config = small(f"synthetic-1-1-stragglers-50-{algorithm}", 0.5).to_run_config()
    run_config["num-rounds"] = 2
    on_engine = run_on_engine(run_config, tmp_path / engine, engine=engine)
    in_process = run_in_process(run_config, tmp_path / "in-process")
    assert on_engine.status == in_process.status == "completed"
    assert on_engine.final_model_sha256 == in_process.final_model_sha256
    assert _clock(on_engine) == _clock(in_process)
    assert any(r.stragglers for r in on_engine.rounds)
