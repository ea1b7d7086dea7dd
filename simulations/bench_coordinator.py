"""The coordinator's CPU per round: ``python -m simulations.bench_coordinator``.

Three modes, all printing one JSON line:

- live (default): a run on the local engine. Its workers are other processes, so this
  process's CPU time (``time.process_time``, every thread) is the coordinator's: the ServerApp
  logic, the grid's reply unpacking, validation, Flower's aggregation, the report files. Time
  blocked on the workers' pipes is not CPU time, so it does not count. CPU seconds are much
  less noisy than wall seconds on a shared machine.
- ``--record FILE``: a live run that also keeps every round's replies (pickled) in FILE.
- ``--replay FILE``: the same ServerApp logic driven by the recorded replies, no workers: the
  coordinator alone, repeatable (A/B of a change in one process pair, same machine). The
  replies are those of the recorded run, so the final model is the recorded run's bit for bit
  (``final_model_sha256`` printed: a check that a change kept the bits). Only report.html is
  rendered no more than at the start and the end (the live cadence depends on wall time).

``--profile FILE`` also writes a cProfile of the run (this process only) and prints the top
functions by tottime and cumtime. Round 1 (set-up: kernel, data, workers) is left out of the
per-round figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import pstats
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RECORD_PROTOCOL = 5


def _run_config(scenario: str | None, clients: int | None, rounds: int, sets: dict[str, str]):
    from simulations.scenario import default_scenario_path, find_scenario, load_scenario

    path = find_scenario(scenario) if scenario else default_scenario_path()
    loaded = load_scenario(path).with_overrides(rounds=rounds, clients=clients, sets=sets)
    return loaded.to_run_config()


class _ReplayGrid:
    """A Grid that answers each instruction with the reply recorded for it (no workers)."""

    engine_name = "local"

    def __init__(self, recorded: dict[tuple[str, str, int], Any], num_partitions: int) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        from simulations.engine.grid import NODE_ID_OFFSET

        # As LocalGrid does: instruction Messages read the process-wide task identity.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.recorded = recorded
        self.offset = NODE_ID_OFFSET
        self.num_partitions = num_partitions

    def get_node_ids(self) -> Iterable[int]:
        return range(self.offset, self.offset + self.num_partitions)

    def node_partitions(self) -> dict[int, int]:
        return {self.offset + partition: partition for partition in range(self.num_partitions)}

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            metadata = message.metadata
            key = (str(metadata.message_type), str(metadata.group_id), int(metadata.dst_node_id))
            if key in self.recorded:
                replies.append(self.recorded[key])
        return replies


def measure(
    run_config: dict[str, Any],
    *,
    profile: str | None = None,
    record: str | None = None,
    replay: str | None = None,
    out: str | None = None,
) -> dict:
    """Run (or replay) one simulation; return its per-round coordinator CPU seconds."""
    from simulations.simulate import simulate_on_engine

    marks: list[tuple[float, float]] = []

    def on_round(_report) -> None:
        marks.append((time.process_time(), time.perf_counter()))

    recorded: dict[tuple[str, str, int], Any] = {}
    if record:
        from simulations.engine.grid import LocalGrid

        send_and_receive = LocalGrid.send_and_receive

        def recording(self, messages, *, timeout=None, on_reply=None):
            replies = list(send_and_receive(self, messages, timeout=timeout, on_reply=on_reply))
            for reply in replies:
                metadata = reply.metadata
                key = (str(metadata.message_type), str(metadata.group_id), metadata.src_node_id)
                recorded[key] = pickle.dumps(reply, protocol=RECORD_PROTOCOL)
            return replies

        LocalGrid.send_and_receive = recording  # type: ignore[method-assign]

    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as temporary:
        out_dir = Path(out or temporary)
        if replay:
            report = _replay(run_config, out_dir, replay, on_round, marks, profiler)
        else:
            marks.append((time.process_time(), time.perf_counter()))
            if profiler:
                profiler.enable()
            report = simulate_on_engine(run_config, out_dir, engine="local", on_round=on_round)
            if profiler:
                profiler.disable()
    if record:
        Path(record).write_bytes(
            pickle.dumps({"run_config": run_config, "replies": recorded}, RECORD_PROTOCOL)
        )
    if profiler and profile:
        profiler.dump_stats(profile)
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(70)
    cpu = [b[0] - a[0] for a, b in zip(marks[1:], marks[2:], strict=False)]
    wall = [b[1] - a[1] for a, b in zip(marks[1:], marks[2:], strict=False)]
    return {
        "mode": "replay" if replay else "live",
        "scenario": str(run_config["scenario"]),
        "clients": int(run_config["num-partitions"]),
        "rounds": len(report.rounds),
        "final_model_sha256": report.final_model_sha256,
        "coordinator_cpu_s_per_round": [round(value, 4) for value in cpu],
        "median_coordinator_cpu_s": round(statistics.median(cpu), 4) if cpu else None,
        "median_round_s": round(statistics.median(wall), 4) if wall else None,
    }


def _replay(run_config, out_dir: Path, replay: str, on_round, marks, profiler):
    from flwr.app import Context, RecordDict

    from coordinator.reports import writer
    from coordinator.reports.report_json import load_report
    from simulations.engine import transfer
    from simulations.environment import apply_flower_env, limit_blas_threads
    from simulations.flower_app import build_scenario_server_app, resolve_run_config

    apply_flower_env()
    limit_blas_threads()
    # Rendering report.html while running depends on wall time: only the first and last here.
    writer._html_interval_passed = lambda out_dir: False
    replies = {
        key: transfer.load_records(value, f"recorded reply {key!r}")
        for key, value in run_config.pop("_replies").items()
    }
    config = resolve_run_config(run_config | {"out-dir": str(out_dir)})
    grid = _ReplayGrid(replies, int(config["num-partitions"]))
    server_app = build_scenario_server_app(run_config_override=config, on_round=on_round)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    marks.append((time.process_time(), time.perf_counter()))
    if profiler:
        profiler.enable()
    server_app(grid, context)  # type: ignore[arg-type]  # a duck-typed Grid
    if profiler:
        profiler.disable()
    return load_report(out_dir)


def main() -> None:
    """Parse the command line, measure, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("scenario", nargs="?", default=None)
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--profile", default=None, help="write a cProfile here")
    parser.add_argument("--record", default=None, help="keep the replies in this file")
    parser.add_argument("--replay", default=None, help="replay the replies kept in this file")
    parser.add_argument("--out", default=None, help="the run folder (default: a temporary one)")
    arguments = parser.parse_args()
    if arguments.replay:
        from simulations.engine import transfer

        # A recording is a file like any other: read through the records-only gate.
        try:
            saved = transfer.load_records(Path(arguments.replay).read_bytes(), arguments.replay)
        except (OSError, transfer.TransferError) as error:
            parser.error(f"--replay {arguments.replay}: {error}")
        if not isinstance(saved, dict) or not {"run_config", "replies"} <= saved.keys():
            parser.error(f"{arguments.replay}: expected a recording made with --record")
        run_config = dict(saved["run_config"]) | {"_replies": saved["replies"]}
    else:
        sets = dict(item.split("=", 1) for item in arguments.sets)
        run_config = _run_config(arguments.scenario, arguments.clients, arguments.rounds, sets)
    figures = measure(
        run_config,
        profile=arguments.profile,
        record=arguments.record,
        replay=arguments.replay,
        out=arguments.out,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
