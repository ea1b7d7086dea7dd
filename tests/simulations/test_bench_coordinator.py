"""The coordinator benchmark: a recorded run replayed without workers gives the same model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Two real runs (one on the local engine's workers): with the end-to-end tests.
pytestmark = pytest.mark.e2e


def _bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "simulations.bench_coordinator", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_replayed_run_gives_the_recorded_runs_model_and_a_cpu_figure_per_round(tmp_path):
    record = tmp_path / "replies.pkl"
    live = _bench("digits-mlp-iid", "--clients", "3", "--rounds", "3", "--record", str(record))
    replayed = _bench("--replay", str(record))
    assert live["mode"] == "live" and replayed["mode"] == "replay"
    assert replayed["final_model_sha256"] == live["final_model_sha256"]
    assert replayed["rounds"] == live["rounds"] == 3
    # Rounds 2 and 3 (round 1 carries the set-up): CPU seconds of this process, > 0.
    assert len(replayed["coordinator_cpu_s_per_round"]) == 2
    assert all(seconds > 0 for seconds in replayed["coordinator_cpu_s_per_round"])


class _Sneaky:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


_REFUSED = "Flower records only, given posix.system"


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"run_config": {}, "replies": {"k": _Sneaky()}}, _REFUSED),
        ([1, 2], "expected a recording made with --record"),
        (b"not a pickle", "bytes"),
    ],
)
def test_a_replay_file_is_read_through_the_records_only_gate(tmp_path, payload, expected):
    import pickle

    recording = tmp_path / "recording.pickle"
    recording.write_bytes(payload if isinstance(payload, bytes) else pickle.dumps(payload))
    done = subprocess.run(
        [sys.executable, "-m", "simulations.bench_coordinator", "--replay", str(recording)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and expected in done.stderr, done.stderr[-2000:]
    assert "pwned" not in done.stdout
