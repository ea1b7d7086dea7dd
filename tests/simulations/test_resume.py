"""simulations/resume.py: a run folder back into the run config that continues it."""

import json

import pytest
from typer.testing import CliRunner

from coordinator.checkpoint import CHECKPOINT_DIR
from coordinator.config import FederationConfig
from coordinator.server_app import run_rounds_on_grid
from simulations.cli import app as cli_app
from simulations.resume import (
    ResumeError,
    is_run_folder,
    resume_arguments,
    resume_run_config,
    saved_run_config,
)
from tests.coordinator.test_server_app import InProcessGrid, run_config, write_json_only


@pytest.fixture
def run_dir(tmp_path):
    config = run_config(tmp_path, num_rounds=2, max_delta_norm=float("inf"))
    run_rounds_on_grid(
        InProcessGrid(1), FederationConfig.from_run_config(config), write_report=write_json_only
    )
    return tmp_path / "run"


def test_the_saved_config_parses_and_keeps_inf(run_dir):
    saved, done = saved_run_config(run_dir)
    assert done == 2 and saved["max-delta-norm"] == float("inf") and saved["seed"] == 11
    config = resume_run_config(run_dir, rounds=5)
    assert config["num-rounds"] == 5
    assert config["resume-from"] == str(run_dir.resolve()) == config["out-dir"]
    assert FederationConfig.from_run_config(config).max_delta_norm == float("inf")


def test_a_different_request_is_refused_naming_the_keys(run_dir):
    saved, _ = saved_run_config(run_dir)
    with pytest.raises(ResumeError, match=r"\['lr', 'num-partitions'\]"):
        resume_run_config(run_dir, requested=saved | {"lr": 0.3, "num-partitions": 7})
    # num-rounds and out-dir may change; so may nothing else.
    resume_run_config(run_dir, requested=saved | {"num-rounds": 9, "out-dir": "/x"})
    with pytest.raises(ResumeError, match="--clients|'num-partitions'"):
        resume_arguments(run_dir, None, None, 6, None, [], None)
    with pytest.raises(ResumeError, match="--set with --resume needs the SCENARIO"):
        resume_arguments(run_dir, None, None, None, None, ["training.lr=1"], None)


def test_fewer_rounds_than_done_are_refused(run_dir):
    with pytest.raises(ResumeError, match="2 rounds are done already; --rounds must be at least 2"):
        resume_run_config(run_dir, rounds=1)


def test_without_checkpoints_the_report_config_is_used(run_dir):
    import shutil

    shutil.rmtree(run_dir / CHECKPOINT_DIR)
    saved, done = saved_run_config(run_dir)
    assert done == 0 and saved["seed"] == 11 and isinstance(saved["seed"], int)
    assert saved["max-delta-norm"] == float("inf")
    assert is_run_folder(run_dir)
    (run_dir / "report.json").write_text("{")
    with pytest.raises(ResumeError, match="no checkpoint and no readable report"):
        saved_run_config(run_dir)


def test_not_a_run_folder(tmp_path):
    assert not is_run_folder(tmp_path)
    with pytest.raises(ResumeError, match="no such run folder"):
        saved_run_config(tmp_path / "missing")


def test_the_cli_refuses_an_existing_run_folder_and_a_changed_resume(run_dir):
    runner = CliRunner()
    result = runner.invoke(cli_app, ["simulate", "--out", str(run_dir), "--rounds", "1"])
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--force" in result.output
    result = runner.invoke(cli_app, ["simulate", "--resume", str(run_dir), "--seed", "3"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "['seed']" in text, text
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "completed" and len(report["rounds"]) == 2
