"""The engine benchmark's plan, memory sampling and target rows (the runs themselves are the
e2e engine tests' business; `sandflower bench engines` is run by hand)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from simulations.bench_engines import RUN_KEYS, plan, ratios, tree_memory


def test_the_plan_is_the_issues_four_runs():
    runs = plan()
    assert [(r.scenario, r.clients, r.rounds, r.engine) for r in runs] == [
        ("digits-mlp-dirichlet", None, 30, "local"),
        ("synthetic-1-1-fedavg", 1000, 3, "local"),
        ("digits-mlp-dirichlet", None, 30, "ray"),
        ("synthetic-1-1-fedavg", 1000, 3, "ray"),
    ]
    assert dict(runs[1].sets) == {"federation.fraction_train": "1.0"}


def test_tree_memory_counts_the_children_too():
    alone, _ = tree_memory(os.getpid())
    # A child that holds 200 MB of touched memory.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; b=bytearray(200*2**20); print(1, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline().strip() == b"1"
        time.sleep(0.1)
        with_child, with_child_pss = tree_memory(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert with_child - alone > 190 * 2**20
    assert with_child_pss > 190 * 2**20


def _run(engine, median, bound, rss, total, sha="a" * 64):
    return {
        "scenario": "s",
        "clients": 1000,
        "engine": engine,
        "first_round_s": 1.0,
        "median_round_s": median,
        "kernel_bound_s": bound,
        "peak_rss_mb": rss,
        "final_model_sha256": sha,
        "total_s": total,
    }


def test_ratios_compare_runs_of_the_same_invocation():
    figures = {"runs": [_run("local", 1.0, 0.9, 400, 10.0), _run("ray", 6.0, 0.9, 1900, 40.0)]}
    assert all(set(RUN_KEYS) <= set(run) for run in figures["runs"])
    rows = {name: (value, met) for name, value, _, met in ratios(figures)}
    assert rows["s: ray / local median round"] == (6.0, True)
    assert rows["s: ray / local whole run"] == (4.0, False)
    assert rows["s: same final_model_sha256"] == (1.0, True)
    assert rows["s: local median round / kernel_bound"] == (1.11, True)
    assert rows["s: local peak RSS MB"] == (400, True)
    figures["runs"][1]["final_model_sha256"] = "b" * 64
    rows = {name: (value, met) for name, value, _, met in ratios(figures)}
    assert rows["s: same final_model_sha256"] == (0.0, False)
