"""The hostile-module corpus (hostile_modules.py next to this file), each in a fresh process.

Every case must end as its corpus entry says (refused with a reason, or a typed job error, or
contained), within the issue's budget of 2 s and 256 MB over the baseline, leave no compiled
file of a refused module in the disk cache, and leave the process able to run a normal job.
Time: CPU time (all threads) is held to 2 s; wall time, which other processes on a shared
2-core machine stretch, to twice that.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.sandbox.hostile_modules import CASES

HARNESS = Path(__file__).with_name("hostile_harness.py")
SECONDS = 2.0
MEMORY_BYTES = 256 * 2**20


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_hostile_module(case_name, tmp_path):
    case = CASES[case_name]
    completed = subprocess.run(
        [sys.executable, str(HARNESS), case_name, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    if case.outcome == "refused":
        assert not outcome["loaded"], outcome
        assert "ModuleRefused" in outcome["error_type"], outcome
        assert re.search(case.reason, outcome["error"]), outcome["error"]
        assert case_name in outcome["error"]  # the message names the module
        assert outcome["cache_files"] == []  # a refused module leaves nothing on disk
    elif case.outcome == "job":
        assert outcome["loaded"], outcome
        assert case.error in outcome["error_type"], outcome
        assert re.search(case.reason, outcome["error"]), outcome["error"]
    else:
        assert outcome["loaded"] and outcome["error"] is None, outcome
    assert outcome["cpu_seconds"] < SECONDS, outcome
    assert outcome["seconds"] < 2 * SECONDS, outcome
    assert outcome["rss_growth_bytes"] < MEMORY_BYTES, outcome
    assert outcome["normal_after"], outcome


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 20 + 6
