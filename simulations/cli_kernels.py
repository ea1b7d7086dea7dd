"""`sandflower kernels`: build and verify the wasm kernels, benchmark them against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from simulations.cli_output import EXIT_FAILED, fail, literal, print_error, stdout_console

app = typer.Typer(help="Build, verify and benchmark the wasm kernels.", no_args_is_help=True)


@app.command()
def build() -> None:
    """Compile kernels/*.c into kernels/wasm/*.wasm and write the manifest."""
    from kernels import build as kernel_build

    console = stdout_console()
    try:
        built = kernel_build.build()
    except kernel_build.KernelBuildError as error:
        fail(error)
    for name, kernel in built.items():
        console.print(f"{name}  {kernel.size} bytes  sha256 {kernel.sha256}", markup=False)


@app.command()
def verify() -> None:
    """Rebuild into a temporary directory; exit 1 if a hash differs from the committed .wasm."""
    from kernels import build as kernel_build

    console = stdout_console()
    try:
        problems = kernel_build.check()
    except kernel_build.KernelBuildError as error:
        fail(error)
    for problem in problems:
        print_error(problem, label="mismatch")
    if problems:
        raise typer.Exit(EXIT_FAILED)
    console.print("kernels/wasm matches its sources")


@app.command()
def bench(
    json_path: Path = typer.Option(None, "--json", help="Also write the figures to this file."),
    quick: bool = typer.Option(False, "--quick", help="A short run (smoke test, rough figures)."),
    portable: bool = typer.Option(
        False, "--simd128", help="Benchmark the plain SIMD128 build instead of relaxed SIMD."
    ),
) -> None:
    """Measure the kernels against numpy (one BLAS thread) and print a table."""
    from client.runner import default_kernel_path
    from simulations.bench import run_benchmark

    console = stdout_console()
    with console.status("benchmarking") as status:
        figures = run_benchmark(
            quick=quick,
            kernel_path=default_kernel_path(relaxed_simd=not portable),
            progress=lambda stage: status.update(f"benchmarking: {stage}"),
        )
    print_figures(console, figures)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        console.print(f"figures written to {literal(json_path)}")


def print_figures(console: Console, figures: dict) -> None:
    """Print the benchmark's figures as a table, then the targets and whether each is met."""
    from simulations.bench import target_checks

    blas = figures["blas"]
    table = Table(
        title=f"{figures['kernel']} vs numpy ({blas.get('internal_api')} "
        f"{blas.get('version')}, {blas.get('architecture')}, 1 thread)"
        + ("  [quick run]" if figures["quick"] else "")
    )
    for column in ("figure", "wasm", "numpy", "wasm/numpy"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for n, gflops in figures["sgemm_gflops"].items():
        table.add_row(
            f"sgemm n={n} (GFLOP/s)", f"{gflops:.1f}",
            f"{figures['numpy_sgemm_gflops'][n]:.1f}", f"{figures['sgemm_ratio'][n]:.2f}x",
        )  # fmt: skip
    for key, micros in figures["train_step_us"].items():
        table.add_row(
            f"train step {key} (us)", f"{micros:.1f}",
            f"{figures['numpy_train_step_us'][key]:.1f}",
            _speed(figures["train_step_speedup"][key]),
        )  # fmt: skip
    table.add_row(
        "digits MLP training (samples/s)", f"{figures['fused_train_samples_per_s']:,.0f}",
        f"{figures['numpy_train_samples_per_s']:,.0f}",
        _speed(figures["fused_train_speedup"]),
    )  # fmt: skip
    for key, label in (
        ("compile_ms", "compile, cold (ms)"),
        ("cached_load_ms", "load from disk cache (ms)"),
        ("instantiate_ms", "new Store + Instance (ms)"),
        ("sgemm_call_us", "one sf_sgemm call on 1x1 (us)"),
        ("fuel_slowdown", "fuel metering slowdown"),
        ("deadline_slowdown", "deadline (epoch) slowdown"),
        ("fuel_budget_slowdown", "fuel budget (probes + sf_train_budget) slowdown"),
    ):
        table.add_row(label, f"{figures[key]:.3f}", "", "")
    console.print(table)
    for check in target_checks(figures):
        mark = "[green]met[/]" if check.met else "[red]not met[/]"
        console.print(f"target {check.name} {check.target}: {check.value:.2f} {mark}")


def _speed(speedup: float) -> str:
    """``1.45x faster`` or ``1.45x slower``: never ``0.69x faster`` for a slowdown."""
    if speedup >= 1.0:
        return f"{speedup:.2f}x faster"
    return f"{1.0 / speedup:.2f}x slower"
