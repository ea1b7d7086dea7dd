"""End to end: a real `sandflower simulate` process killed with SIGKILL, then `--resume`d.

Each case runs the same small scenario twice on Flower's Ray engine: once uninterrupted, once
killed at some point and resumed. The resumed run must give the bit-identical final model
(``final_model_sha256``) and the same central accuracy in every round. The kill points: while
a checkpoint is being written (the test hook SANDFLOWER_TEST_CHECKPOINT_PAUSE holds the write
open; the kill lands while only the hidden temporary folder exists), mid-round, right after a
checkpoint (before or while the report claims that round), and after a seeded random delay.
The whole process tree (Ray's processes included) is killed by pid.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.checkpoint import CHECKPOINT_DIR, PAUSE_ENV
from coordinator.reports.report_json import ReportError, load_report
from simulations.deploy.processes import descendants
from simulations.environment import apply_flower_env

pytestmark = pytest.mark.e2e

SANDFLOWER = str(Path(sys.executable).with_name("sandflower"))
ROUNDS = 3
RUN_TIMEOUT_S = 600.0
BASE = ["digits-mlp-iid", "--clients", "3", "--rounds", str(ROUNDS)]
# strategy -> (overrides, where the kill lands)
CASES = {
    "fedavg": (["--set", "federation.fraction_train=1.0"], "checkpoint-write"),
    "fedadam": (
        [
            "--set",
            "federation.strategy=fedadam",
            "--set",
            "federation.server_lr=0.01",
            "--set",
            "federation.strategy_params.beta_1=0.9",
        ],
        "mid-round",
    ),
    "fedavgm": (
        [
            "--set",
            "federation.strategy=fedavgm",
            "--set",
            "federation.strategy_params.server_momentum=0.9",
        ],
        "after-checkpoint",
    ),
    "krum": (
        ["--set", "federation.strategy=krum", "--set", "federation.fraction_train=1.0"],
        "random",
    ),
    "fedprox": (
        ["--set", "federation.strategy=fedprox", "--set", "training.proximal_mu=0.1"],
        "random",
    ),
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = apply_flower_env(dict(os.environ))
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")
    env.pop(PAUSE_ENV, None)
    env.update(extra)
    return env


def _simulate(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    with log.open("w") as out:
        return subprocess.run(
            [SANDFLOWER, "simulate", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT_S,
            start_new_session=True,
        )


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process, its group and every descendant (Ray's too), each by its pid."""
    tree = [pid for pid, _ in descendants(process.pid)]
    for target in (process.pid, *tree):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in tree):
        time.sleep(0.1)


def _wait_for(condition, process: subprocess.Popen, what: str, timeout_s: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before {what}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _rounds_in_report(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "report.json").read_text())["rounds"])
    except (OSError, ValueError, KeyError):
        return -1


def _interrupt(args, run_dir: Path, kill_at: str, tmp_path: Path, seed: int) -> str:
    """Start the run, kill it at ``kill_at``; return what was on disk at the kill."""
    checkpoints = run_dir / CHECKPOINT_DIR
    # The local engine runs a round of this small scenario in tens of milliseconds: every
    # checkpoint write is slowed (the test hook) so that the run is still going when a kill
    # that waits for round 1 lands, and a checkpoint-write kill has 5 s to land in the write.
    extra = {PAUSE_ENV: "5" if kill_at == "checkpoint-write" else "0.3"}
    log = (tmp_path / "interrupted.log").open("w")
    process = subprocess.Popen(
        [SANDFLOWER, "simulate", *args, "--out", str(run_dir)],
        env=_env(tmp_path, **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if kill_at == "checkpoint-write":
            # Round 1's checkpoint is written (slowly), then round 2's write is in progress.
            _wait_for(
                lambda: (
                    (checkpoints / "round-000001").is_dir()
                    and any(checkpoints.glob(".round-000002.*.tmp"))
                ),
                process,
                "the write of round 2's checkpoint",
            )
        elif kill_at == "mid-round":
            _wait_for(lambda: _rounds_in_report(run_dir) >= 1, process, "round 1 in the report")
            time.sleep(0.05)
        elif kill_at == "after-checkpoint":
            _wait_for(lambda: (checkpoints / "round-000001").is_dir(), process, "checkpoint 1")
        else:
            _wait_for(lambda: (checkpoints / "round-000001").is_dir(), process, "checkpoint 1")
            time.sleep(random.Random(seed).uniform(0.0, 0.25))
    finally:
        _kill_tree(process)
        log.close()
    return " ".join(sorted(p.name for p in checkpoints.iterdir())) if checkpoints.is_dir() else ""


@pytest.mark.parametrize("strategy", sorted(CASES))
def test_a_killed_run_resumes_to_the_same_bits(tmp_path, strategy):
    overrides, kill_at = CASES[strategy]
    args = [*BASE, *overrides]
    env = _env(tmp_path)
    whole_dir = tmp_path / "whole"
    done = _simulate([*args, "--out", str(whole_dir)], env, tmp_path / "whole.log")
    assert done.returncode == 0, (tmp_path / "whole.log").read_text()[-3000:]
    whole = load_report(whole_dir)

    run_dir = tmp_path / "killed"
    on_disk = _interrupt(args, run_dir, kill_at, tmp_path, seed=len(strategy))
    if kill_at == "checkpoint-write":
        # Killed inside the write: round 2 is only a hidden temporary folder, round 1 is whole.
        assert on_disk.startswith(".round-000002.") and on_disk.endswith("round-000001"), on_disk
    stopped = load_report(run_dir)  # the report on disk is valid JSON whatever the kill point
    assert stopped.status == "running" and len(stopped.rounds) < ROUNDS

    resumed_run = _simulate(["--resume", str(run_dir)], env, tmp_path / "resumed.log")
    assert resumed_run.returncode == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    resumed = load_report(run_dir)
    assert resumed.status == "completed"
    assert resumed.final_model_sha256 == whole.final_model_sha256
    assert [r.central_accuracy for r in resumed.rounds] == [
        r.central_accuracy for r in whole.rounds
    ]
    assert [r.round for r in resumed.rounds] == list(range(1, ROUNDS + 1))
    event = resumed.resumes[0]
    assert len(resumed.resumes) == 1 and event.previous_status == "running"
    assert event.from_round >= (1 if kill_at != "random" else 0)
    if kill_at == "checkpoint-write":
        assert event.from_round == 1
    assert resumed.total_bytes_uploaded == sum(r.bytes_uploaded for r in resumed.rounds)
    assert resumed.total_bytes_downloaded == whole.total_bytes_downloaded
    assert not list((run_dir / CHECKPOINT_DIR).glob(".*tmp"))  # the partial write is gone


def test_extend_a_finished_run_and_refuse_what_does_not_fit(tmp_path):
    env = _env(tmp_path)
    args = [*BASE[:-1], "2", "--set", "federation.fraction_train=1.0"]
    run_dir = tmp_path / "run"
    first = _simulate([*args, "--out", str(run_dir)], env, tmp_path / "first.log")
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]

    # --out to an existing run folder, and a resume with another scenario, are refused early.
    again = _simulate([*args, "--out", str(run_dir)], env, tmp_path / "again.log")
    assert again.returncode == 2 and "--resume" in (tmp_path / "again.log").read_text()
    changed = _simulate(
        ["digits-mlp-iid", "--clients", "3", "--set", "training.lr=0.3", "--resume", str(run_dir)],
        env,
        tmp_path / "changed.log",
    )
    text = " ".join((tmp_path / "changed.log").read_text().split())
    assert changed.returncode == 2 and "'lr'" in text and "'fraction-train'" in text, text
    assert load_report(run_dir).status == "completed" and len(load_report(run_dir).rounds) == 2

    extended = _simulate(
        ["--resume", str(run_dir), "--rounds", "3"], env, tmp_path / "extended.log"
    )
    assert extended.returncode == 0, (tmp_path / "extended.log").read_text()[-3000:]
    report = load_report(run_dir)
    assert [r.round for r in report.rounds] == [1, 2, 3] and report.num_rounds == 3
    assert report.resumes[0].previous_status == "completed"
    assert report.resumes[0].from_round == 2 and report.resumes[0].previous_num_rounds == 2


def test_a_deployment_continues_on_a_new_superlink(tmp_path):
    """deploy local: the first federation finishes 1 round and is gone; a new SuperLink and new
    SuperNodes (new keys, new node ids) continue the run folder from its checkpoint."""
    from simulations.deploy import local
    from simulations.resume import resume_run_config
    from simulations.scenario import find_scenario, load_scenario

    app_dir = Path(__file__).resolve().parents[2]
    run_config = (
        load_scenario(find_scenario("digits-mlp-iid"))
        .with_overrides(rounds=1, clients=2, sets={"federation.fraction_train": "1.0"})
        .to_run_config()
    )
    run_dir = tmp_path / "run"
    local.run_local_deployment(run_config, 2, run_dir, app_dir)
    first = load_report(run_dir)
    assert first.status == "completed" and len(first.rounds) == 1

    local.run_local_deployment(resume_run_config(run_dir, rounds=2), 2, run_dir, app_dir)
    report = load_report(run_dir)
    assert report.status == "completed" and [r.round for r in report.rounds] == [1, 2]
    assert report.rounds[0] == first.rounds[0]  # round 1 is the checkpoint's, not run again
    event = report.resumes[0]
    assert event.from_round == 1 and event.engine == "deployment"
    assert event.previous_status == "completed" and event.previous_num_rounds == 1
    assert report.rounds[1].clients_succeeded == 2
    assert report.total_bytes_uploaded == sum(r.bytes_uploaded for r in report.rounds)


def test_flwr_run_resumes_with_the_run_config_key(tmp_path):
    """`flwr run .` on a simulation SuperLink: 1 round, then `resume-from` to 2 rounds, gives
    the bits of an uninterrupted 2-round run (pyproject's default scenario, partial sampling)."""
    from simulations.deploy.processes import (
        ProcessSupervisor,
        find_free_port,
        flower_environment,
        port_accepts,
        wait_until,
    )

    loopback = "127.0.0.1"
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    control_port, http_port = find_free_port(), find_free_port()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "sim"\n\n'
        f'[superlink.sim]\naddress = "{loopback}:{http_port}"\ninsecure = true\n'
    )
    env = flower_environment(flwr_home)
    bin_dir = Path(sys.executable).parent
    repo = Path(__file__).resolve().parents[2]

    def flwr_run(run_config: str, out_dir: Path) -> None:
        completed = subprocess.run(
            [str(bin_dir / "flwr"), "run", str(repo), "sim", "--stream", "--run-config"]
            + [f"num-partitions=3 out-dir='{out_dir}' {run_config}"]
            + ["--federation-config", "num-supernodes=3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        # --stream may return before the ServerApp's last report write.
        wait_until(
            lambda: _status(out_dir) not in ("", "running"), "the final report", 60, [superlink]
        )

    with ProcessSupervisor(env) as supervisor:
        superlink = supervisor.start(
            "superlink",
            [str(bin_dir / "flower-superlink"), "--insecure", "--simulation"]
            + ["--isolation", "subprocess"]
            + ["--control-api-address", f"{loopback}:{control_port}"]
            + ["--host", loopback, "--port", str(http_port)]
            + ["--database", str(tmp_path / "state.db")],
            tmp_path / "superlink.log",
        )
        wait_until(lambda: port_accepts(loopback, http_port), "the SuperLink", 60, [superlink])
        flwr_run("num-rounds=2", tmp_path / "whole")
        flwr_run("num-rounds=1", tmp_path / "part")
        flwr_run(f"num-rounds=2 resume-from='{tmp_path / 'part'}'", tmp_path / "part")

    whole, resumed = load_report(tmp_path / "whole"), load_report(tmp_path / "part")
    assert resumed.final_model_sha256 == whole.final_model_sha256
    assert [r.central_accuracy for r in resumed.rounds] == [
        r.central_accuracy for r in whole.rounds
    ]
    assert [e.from_round for e in resumed.resumes] == [1]


def _status(out_dir: Path) -> str:
    try:
        return load_report(out_dir).status
    except ReportError:  # not written yet
        return ""
