"""What checkpoints cost a finished run: ``python -m simulations.bench_checkpoint RUN_DIR``.

Both figures are ratios of times measured in the same run (the machine is shared, so absolute
times are noisy): the seconds the coordinator spent writing checkpoints (the report's
``checkpoint_seconds``, timed around every write) against the run's wall time and against the
time spent in rounds (the stricter figure: it leaves out the engine's start-up), and the time
to read and verify the newest checkpoint (what a resume adds) against a mean round.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from coordinator import strategy_state
from coordinator.checkpoint import load_latest
from coordinator.config import FederationConfig
from coordinator.reports.report_json import load_report
from coordinator.server_app import flower_strategy_of
from simulations.resume import saved_run_config


def measure(run_dir: Path) -> dict[str, float]:
    """Checkpoint write share of the run's wall time, and resume load time per round."""
    report = load_report(run_dir)
    wall = report.finished_at.ToNanoseconds() / 1e9 - report.started_at.ToNanoseconds() / 1e9
    config = FederationConfig.from_run_config(
        saved_run_config(run_dir)[0] | {"out-dir": str(run_dir), "resume-from": ""}
    )
    flower_strategy = flower_strategy_of(config)
    started = time.perf_counter()
    load_latest(
        run_dir,
        array_shapes=config.model.array_shapes(),
        state_slots=strategy_state.state_slots(flower_strategy),
    )
    load_seconds = time.perf_counter() - started
    round_seconds = statistics.mean(r.wall_seconds for r in report.rounds)
    rounds_total = sum(r.wall_seconds for r in report.rounds)
    return {
        "rounds_seconds": rounds_total,
        "checkpoint_share_of_rounds": report.checkpoint_seconds / rounds_total,
        "rounds": float(len(report.rounds)),
        "run_seconds": wall,
        "checkpoint_seconds": report.checkpoint_seconds,
        "checkpoint_share": report.checkpoint_seconds / wall,
        "load_seconds": load_seconds,
        "mean_round_seconds": round_seconds,
        "load_per_round": load_seconds / round_seconds,
    }


def main(argv: list[str]) -> int:
    """Measure the checkpoint cost (arguments as in ``--help``); return the exit code."""
    if len(argv) != 1:
        print("usage: python -m simulations.bench_checkpoint RUN_DIR", file=sys.stderr)
        return 2
    figures = measure(Path(argv[0]))
    print(
        f"{int(figures['rounds'])} rounds in {figures['run_seconds']:.1f} s; writing checkpoints "
        f"took {figures['checkpoint_seconds']:.3f} s = {100 * figures['checkpoint_share']:.2f}% "
        f"of the run, {100 * figures['checkpoint_share_of_rounds']:.2f}% of the time in rounds "
        f"({figures['rounds_seconds']:.1f} s, engine start-up excluded)\n"
        "reading + verifying the latest checkpoint (a resume): "
        f"{1000 * figures['load_seconds']:.1f} ms = {figures['load_per_round']:.3f} of a mean "
        f"round ({1000 * figures['mean_round_seconds']:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
