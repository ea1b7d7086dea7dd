"""Scenario values whose split of the data cannot be made: refused by the scenario, naming the key.

Before: each passed ``load_scenario``/``--set`` and failed only when the run loaded its data,
after the engine had started and the run folder was made, with a DataConfigError traceback
(and too many clients for a Dirichlet split was blamed on ``dirichlet-alpha``).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simulations.cli import app as cli_app
from simulations.scenario import ScenarioError, default_scenario_path, load_scenario

# --set overrides on the default scenario (digits, dirichlet, 20 clients) -> the refusal.
CASES = {
    "more clients than the pool": (
        {"federation.clients": "5000"},
        r"\[federation\] clients: num partitions: expected an int in 1\.\.1527 \(the pool's "
        r"size\), given 5000",
    ),
    "int32-max clients": (
        {"federation.clients": "2147483647"},
        r"\[federation\] clients: num partitions: .* given 2147483647",
    ),
    "too many clients for ten samples each": (
        {"federation.clients": "200"},
        r"\[data\] dirichlet_alpha: a Dirichlet split gives every client >= 10 samples",
    ),
    "more clients than the pool, iid": (
        {"federation.clients": "1600", "data.partitioning": "iid"},
        r"\[federation\] clients: num partitions: .* given 1600",
    ),
    "shards beyond the pool": (
        {"data.partitioning": "shards", "data.shards_per_client": "2147483647"},
        r"\[data\] shards_per_client: 20 clients x 2147483647 shards need",
    ),
    "a tiny dirichlet alpha": (
        {"data.dirichlet_alpha": "1e-300"},
        r"\[data\] dirichlet_alpha: dirichlet alpha 1e-300: no draw in \d+ gave all 20 clients",
    ),
    "a test fraction that leaves no training pool": (
        {"data.test_fraction": "0.9999"},
        r"\[data\] test_fraction: a stratified hold-out of 0.9999 of 1797 samples keeps 0",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_impossible_split_is_a_scenario_error_naming_the_key(case):
    sets, refusal = CASES[case]
    scenario = load_scenario(default_scenario_path())
    with pytest.raises(ScenarioError, match=refusal):
        scenario.with_overrides(sets=sets)


def test_a_possible_split_is_still_accepted():
    scenario = load_scenario(default_scenario_path()).with_overrides(
        sets={"federation.clients": "100", "data.partitioning": "iid"}
    )
    assert scenario.to_run_config()["num-partitions"] == 100


def test_the_cli_refuses_it_before_the_engine_or_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli_app, ["simulate", "--clients", "5000", "--out", str(out)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "[federation] clients: num partitions" in text and "Traceback" not in text
    assert not out.exists()
