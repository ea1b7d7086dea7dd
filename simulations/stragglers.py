"""The FedProx paper's systems-heterogeneity grid.

Synthetic(0,0), (0.5,0.5), (1,1) x 0/50/90% stragglers x FedAvg (stragglers dropped) /
FedProx (mu = 1, partial work kept).

``run_grid`` runs each bundled scenario ``synthetic-A-B-stragglers-S-ALGO`` through a
``simulate(run_config, out_dir, **engine_kwargs)`` (default: the in-process grid,
``simulations.inprocess``; ``simulations.simulate.simulate_on_engine`` runs Flower's Ray engine,
and a faster engine with the same signature can be passed), then writes ``stragglers.csv``,
``stragglers.md`` (the README table) and ``stragglers.svg`` (central accuracy by round, one
panel per data set) into the output folder.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = ("0-0", "0.5-0.5", "1-1")
STRAGGLER_SHARES = (0, 50, 90)
ALGORITHMS = ("fedavg", "fedprox")


def scenario_name(dataset: str, share: int, algorithm: str) -> str:
    """Return the bundled scenario's name for a data set, straggler share and algorithm."""
    return f"synthetic-{dataset}-stragglers-{share}-{algorithm}"


@dataclass(frozen=True)
class GridResult:
    """One run of the grid."""

    dataset: str
    share: int
    algorithm: str
    rounds: int
    final_accuracy: float
    best_accuracy: float
    mean_stragglers: float  # per round
    dropped: int  # client-rounds dropped
    partial: int  # client-rounds kept with partial work
    sim_seconds: float  # simulated time of the whole run
    accuracy_by_round: tuple[float, ...]


def run_grid(
    out_dir: Path,
    *,
    rounds: int | None = None,
    datasets: Sequence[str] = DATASETS,
    shares: Sequence[int] = STRAGGLER_SHARES,
    simulate: Callable[..., Any] | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    on_run: Callable[[GridResult], None] | None = None,
) -> list[GridResult]:
    """Run the grid; ``rounds`` overrides the scenarios' 200 (the paper's) when given."""
    from simulations.scenario import find_scenario, load_scenario

    if simulate is None:
        from simulations.inprocess import simulate_in_process

        simulate = simulate_in_process
    out_dir = Path(out_dir)
    results = []
    for dataset in datasets:
        for share in shares:
            for algorithm in ALGORITHMS:
                name = scenario_name(dataset, share, algorithm)
                scenario = load_scenario(find_scenario(name))
                run_config = scenario.to_run_config()
                if rounds is not None:
                    run_config["num-rounds"] = int(rounds)
                report = simulate(run_config, out_dir / name, **(engine_kwargs or {}))
                result = _result(dataset, share, algorithm, report)
                results.append(result)
                # Rewritten after every run: an interrupted grid leaves a table of what ran.
                write_outputs(out_dir, results)
                if on_run is not None:
                    on_run(result)
    return results


def _result(dataset: str, share: int, algorithm: str, report) -> GridResult:
    accuracy = tuple(float(r.central_accuracy) for r in report.rounds)
    return GridResult(
        dataset=dataset,
        share=share,
        algorithm=algorithm,
        rounds=len(report.rounds),
        final_accuracy=float(report.final_central_accuracy),
        best_accuracy=max(accuracy, default=float("nan")),
        mean_stragglers=sum(r.stragglers for r in report.rounds) / max(1, len(report.rounds)),
        dropped=sum(r.clients_dropped for r in report.rounds),
        partial=sum(r.clients_partial for r in report.rounds),
        sim_seconds=float(report.rounds[-1].sim_elapsed_seconds) if report.rounds else 0.0,
        accuracy_by_round=accuracy,
    )


def write_outputs(out_dir: Path, results: Sequence[GridResult]) -> None:
    """stragglers.csv (every run), stragglers.md (the table), stragglers.svg (the curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["dataset", "stragglers_pct", "algorithm", "rounds", "final_accuracy", "best_accuracy",
         "mean_stragglers_per_round", "dropped", "partial", "sim_seconds"]
    )  # fmt: skip
    for r in results:
        writer.writerow(
            [r.dataset, r.share, r.algorithm, r.rounds, f"{r.final_accuracy:.4f}",
             f"{r.best_accuracy:.4f}", f"{r.mean_stragglers:.2f}", r.dropped, r.partial,
             f"{r.sim_seconds:.2f}"]
        )  # fmt: skip
    (out_dir / "stragglers.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (out_dir / "stragglers.md").write_text(markdown_table(results), encoding="utf-8")
    if results:
        (out_dir / "stragglers.svg").write_text(comparison_svg(results), encoding="utf-8")


def markdown_table(results: Sequence[GridResult]) -> str:
    """Tabulate the final central accuracy, FedAvg vs FedProx, per data set and straggler share."""
    by_key = {(r.dataset, r.share, r.algorithm): r for r in results}
    lines = [
        "| data set | stragglers | FedAvg (drop) | FedProx mu=1 (partial) | FedProx - FedAvg |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset in dict.fromkeys(r.dataset for r in results):
        for share in dict.fromkeys(r.share for r in results):
            fedavg = by_key.get((dataset, share, "fedavg"))
            fedprox = by_key.get((dataset, share, "fedprox"))
            if fedavg is None and fedprox is None:
                continue
            cells = [
                f"{x.final_accuracy:.3f}" if x is not None else "not run" for x in (fedavg, fedprox)
            ]
            gap = (
                f"{fedprox.final_accuracy - fedavg.final_accuracy:+.3f}"
                if fedavg is not None and fedprox is not None
                else ""
            )
            lines.append(f"| Synthetic({dataset.replace('-', ',')}) | {share}% | {cells[0]} "
                         f"| {cells[1]} | {gap} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def comparison_svg(results: Sequence[GridResult]) -> str:
    """Central accuracy by round: one panel per data set, one line per (share, algorithm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in results))
    with matplotlib.rc_context({"svg.hashsalt": "sandflower", "svg.fonttype": "path"}):
        return _draw_comparison(plt, datasets, results)


def _draw_comparison(plt, datasets: list[str], results: Sequence[GridResult]) -> str:
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    colors = {0: "tab:green", 50: "tab:orange", 90: "tab:red"}
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for r in results:
            if r.dataset != dataset:
                continue
            axis.plot(
                range(1, r.rounds + 1),
                r.accuracy_by_round,
                color=colors.get(r.share, "tab:gray"),
                linestyle="-" if r.algorithm == "fedprox" else "--",
                linewidth=1.2,
                label=f"{r.algorithm} {r.share}%",
            )
        axis.set_title(f"Synthetic({dataset.replace('-', ',')})")
        axis.set_xlabel("round")
        axis.set_ylabel("central test accuracy")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, title="solid FedProx, dashed FedAvg", title_fontsize=7)
    figure.tight_layout()
    buffer = io.StringIO()
    # A fixed hash salt (rc above) and no date: the same runs give the same bytes.
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    return buffer.getvalue()
