"""The robustness grid: aggregation rules against Byzantine clients, and FedAvg under faults.

``python -m simulations.robustness --out runs/robustness`` runs, 30 rounds each:

- ``digits-mlp-byzantine-signflip`` and ``digits-mlp-byzantine-scaling`` with every rule of
  :data:`RULES` (FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan, FedAvg with
  server-side norm clipping), with the attack and without it (the same scenario, faults off);
- ``digits-mlp-dropout-crash`` with FedAvg (30% dropout + 10% crash per round and client).

It prints a markdown table of final central accuracies (the README's) and writes
``robustness.json`` and each run's folder under ``--out``. Accuracies are deterministic
(seeded), so the machine's load does not change them.

Engine: ``--engine local`` (default) runs each cell on the local multi-process engine,
``--engine ray`` on Flower's simulation engine (both ``simulations.simulate.simulate_on_engine``),
``--engine inprocess`` on ``simulations.inprocess`` (the same ServerApp and ClientApp, one
client after the other in one process). All three give the same bits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# (label, strategy, strategy params, clip-delta-norm). The robust rules are told the number
# of attackers they must tolerate (4 of 20), as their papers assume it is known.
NUM_MALICIOUS = 4
CLIP_NORM = 2.0
RULES: tuple[tuple[str, str, dict[str, Any], float], ...] = (
    ("FedAvg", "fedavg", {}, math.inf),
    ("FedMedian", "fedmedian", {}, math.inf),
    ("FedTrimmedAvg (beta 0.2)", "fedtrimmedavg", {"beta": 0.2}, math.inf),
    ("Krum", "krum", {"num_malicious_nodes": NUM_MALICIOUS}, math.inf),
    (
        "MultiKrum (select 10)",
        "multikrum",
        {"num_malicious_nodes": NUM_MALICIOUS, "num_nodes_to_select": 10},
        math.inf,
    ),
    ("Bulyan", "bulyan", {"num_malicious_nodes": NUM_MALICIOUS}, math.inf),
    (f"FedAvg, clip-delta-norm {CLIP_NORM:g}", "fedavg", {}, CLIP_NORM),
)
ATTACK_SCENARIOS = ("digits-mlp-byzantine-signflip", "digits-mlp-byzantine-scaling")
FAULT_SCENARIO = "digits-mlp-dropout-crash"


def cell_run_config(
    scenario_name: str,
    strategy: str,
    params: Mapping[str, Any],
    clip: float,
    *,
    attack: bool,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Return the flat run config of one cell of the grid."""
    from simulations.scenario import find_scenario, load_scenario

    scenario = load_scenario(find_scenario(scenario_name))
    sets = {
        "federation.strategy": strategy,
        "federation.strategy_params": _inline_table(params),
        "federation.clip_delta_norm": "inf" if math.isinf(clip) else repr(float(clip)),
    }
    if not attack:
        sets["faults.byzantine"] = "0.0"
    return scenario.with_overrides(rounds=rounds, sets=sets).to_run_config()


def run_cell(run_config: Mapping[str, Any], out_dir: Path, engine: str):
    """Run one cell on ``engine`` (local, ray or inprocess); return its RunReport."""
    if engine == "inprocess":
        from simulations.inprocess import simulate_in_process as run_in_process

        return run_in_process(run_config, out_dir)
    from simulations.simulate import simulate_on_engine as run_on_engine

    return run_on_engine(run_config, out_dir, engine=engine)


def _inline_table(params: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{key} = {value!r}" for key, value in params.items()) + "}"


def main(argv: list[str] | None = None) -> int:
    """Run the robustness grid (arguments as in ``--help``); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/robustness"))
    parser.add_argument("--engine", choices=("local", "ray", "inprocess"), default="local")
    parser.add_argument("--rounds", type=int, default=None, help="default: the scenarios' 30")
    args = parser.parse_args(argv)

    cells: list[tuple[str, str, str, dict[str, Any]]] = []
    for label, strategy, params, clip in RULES:
        for scenario_name in ATTACK_SCENARIOS:
            for attack in (False, True):
                if not attack and scenario_name != ATTACK_SCENARIOS[0]:
                    continue  # both attack scenarios share the clean run (same data, seed)
                config = cell_run_config(
                    scenario_name, strategy, params, clip, attack=attack, rounds=args.rounds
                )
                kind = scenario_name.rsplit("-", 1)[1] if attack else "clean"
                cells.append((label, kind, f"{strategy}-{kind}-clip{clip:g}", config))
    fault_config = cell_run_config(
        FAULT_SCENARIO, "fedavg", {}, math.inf, attack=True, rounds=args.rounds
    )
    cells.append(("FedAvg", "dropout 30% + crash 10%", "fedavg-dropout-crash", fault_config))

    results = []
    for label, kind, folder, config in cells:
        started = time.perf_counter()
        report = run_cell(config, args.out / folder, args.engine)
        completed = sum(1 for r in report.rounds if not math.isnan(r.central_accuracy))
        results.append(
            {
                "rule": label,
                "run": kind,
                "status": report.status,
                "rounds_completed": completed,
                "final_central_accuracy": report.final_central_accuracy,
                "clients_failed": sum(r.clients_failed for r in report.rounds),
                "clients_rejected": sum(r.clients_rejected for r in report.rounds),
                "clients_clipped": sum(r.clients_clipped for r in report.rounds),
                "final_model_sha256": report.final_model_sha256,
                "seconds": round(time.perf_counter() - started, 1),
                "folder": str(args.out / folder),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown_table(results))
    return 0


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Tabulate the final central accuracy per rule (rows) and run (columns)."""
    runs = list(dict.fromkeys(result["run"] for result in results))
    rules = list(dict.fromkeys(result["rule"] for result in results))
    cell = {(r["rule"], r["run"]): r["final_central_accuracy"] for r in results}
    lines = ["| rule | " + " | ".join(runs) + " |", "| --- |" + " --- |" * len(runs)]
    for rule in rules:
        values = [f"{cell[(rule, run)]:.3f}" if (rule, run) in cell else "" for run in runs]
        lines.append(f"| {rule} | " + " | ".join(values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
