"""The plots of a run report, drawn with matplotlib (Agg, no pyplot) as SVG data URIs.

Each plot is a standalone SVG document embedded as ``<img src="data:image/svg+xml;base64,...">``:
the HTML needs no external file, and the ids matplotlib writes inside one SVG cannot clash
with another plot's. Text is drawn as paths, so no font has to be present where it is viewed.

matplotlib is imported only to draw a plot with data: a run writes its report before round 1
(no rounds: every plot is a small fixed placeholder), and importing matplotlib there and
drawing six empty figures cost ~1 s of every run's start-up and ~30 MB of the coordinator.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protos.report_pb2 import FAILED, OK, REJECTED, RoundReport, RunReport

from .formatting import byte_unit

STATUS_COLORS = {OK: "#2a9d8f", FAILED: "#e76f51", REJECTED: "#7b4fa6"}
SERIES_COLORS = ("#1f6feb", "#e76f51", "#2a9d8f", "#b08800", "#7b4fa6", "#6e7781", "#d63384")
# Above this many points a scatter is drawn as an embedded bitmap: the SVG stays small.
RASTERIZE_ABOVE_POINTS = 2000
# With more rounds than this, bars would be thinner than a pixel pair; lines read better.
MAX_ROUNDS_FOR_BARS = 60
# Beyond this many rounds the delta norms are a percentile band instead of one dot per client.
MAX_ROUNDS_FOR_POINTS = 40
FIGURE_SIZE_INCHES = (6.4, 3.3)

_RC: dict[str, Any] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "sandflower",  # fixed ids: the same report gives the same bytes
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
}


@dataclass(frozen=True)
class Plot:
    """One rendered plot: ``plot_id`` is its HTML id, ``svg_data_uri`` the image."""

    plot_id: str
    title: str
    caption: str
    svg_data_uri: str


def run_plots(report: RunReport) -> list[Plot]:
    """Every plot of one run's report, in page order."""
    rounds = list(report.rounds)
    return [
        _draw(
            "plot-accuracy",
            "Accuracy",
            _accuracy,
            rounds,
            "Central: the global model on the coordinator's held-out data after the round. "
            "Federated: clients' held-out splits, weighted by their examples.",
        ),
        _draw(
            "plot-loss",
            "Loss",
            _loss,
            rounds,
            "Train loss is the clients' mean during local training, before the server step.",
        ),
        _draw(
            "plot-clients",
            "Clients per round",
            _clients,
            rounds,
            "Failed: an error reply or none. Rejected: a reply that failed validation and "
            "was never aggregated.",
        ),
        _draw(
            "plot-kernel-time",
            "Kernel time per client",
            _kernel_time,
            rounds,
            "Time inside the Wasm kernel per client that replied: median, 90th percentile, max.",
        ),
        _draw(
            "plot-bytes",
            "Bytes per round",
            _bytes,
            rounds,
            "Uploaded: replies from clients. Downloaded: messages sent to clients.",
        ),
        _draw(
            "plot-delta-norms",
            "Delta norms",
            _delta_norms,
            rounds,
            "L2 norm of each client's delta; rejected ones marked, non-finite ones on the "
            "top edge.",
        ),
    ] + (
        [
            _draw(
                "plot-time-to-accuracy",
                "Time to accuracy (simulated clock)",
                _time_to_accuracy,
                rounds,
                "Central accuracy against simulated seconds (download + fuel / device speed + "
                "upload, the round's slowest kept client or its deadline); markers: rounds "
                "with stragglers.",
            )
        ]
        if any(r.sim_elapsed_seconds > 0 for r in rounds)
        else []
    )


def _time_to_accuracy(axes, rounds: list[RoundReport]) -> None:
    elapsed = [r.sim_elapsed_seconds for r in rounds]
    axes.plot(
        elapsed, [r.central_accuracy for r in rounds], color=SERIES_COLORS[0], label="central"
    )
    late = [r for r in rounds if r.stragglers]
    if late and len(rounds) <= MAX_ROUNDS_FOR_POINTS * 5:
        axes.plot(
            [r.sim_elapsed_seconds for r in late],
            [r.central_accuracy for r in late],
            linestyle="none",
            marker="o",
            markersize=3,
            color=SERIES_COLORS[1],
            label="round with stragglers",
        )
    axes.set_xlabel("simulated seconds")
    axes.set_ylabel("central accuracy")
    axes.legend(loc="lower right")


def _overlay_central(axes, reports: Sequence[tuple[str, RunReport]], metric: str) -> None:
    """One ``central_<metric>`` curve per run, each in its own colour."""
    for index, (label, report) in enumerate(reports):
        rounds = list(report.rounds)
        axes.plot(
            [r.round for r in rounds],
            [getattr(r, f"central_{metric}") for r in rounds],
            marker="o" if len(rounds) <= 40 else None,
            markersize=3,
            color=_series_color(index),
            label=label,
        )


def comparison_plots(
    reports: Sequence[tuple[str, RunReport]], target_accuracy: float
) -> list[Plot]:
    """Central accuracy and loss of several runs, overlaid."""

    def accuracy(axes, _) -> None:
        _overlay_central(axes, reports, "accuracy")
        axes.axhline(target_accuracy, color="#6e7781", linestyle=":", linewidth=1)
        axes.annotate(
            f"target {target_accuracy:g}",
            xy=(0, target_accuracy),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            color="#6e7781",
            fontsize=8,
        )
        axes.set_ylabel("central accuracy")
        _finish_round_axis(
            axes,
            max((_last_round(r.rounds) for _, r in reports), default=0),
            legend_above=False,
        )

    def loss(axes, _) -> None:
        _overlay_central(axes, reports, "loss")
        axes.set_ylabel("central loss")
        _finish_round_axis(
            axes,
            max((_last_round(r.rounds) for _, r in reports), default=0),
            legend_above=False,
        )

    has_rounds = any(report.rounds for _, report in reports)
    return [
        _draw(
            "plot-compare-accuracy",
            "Central accuracy",
            accuracy,
            has_rounds,
            "The global model on each run's held-out data, per round.",
        ),
        _draw(
            "plot-compare-loss",
            "Central loss",
            loss,
            has_rounds,
            "The global model on each run's held-out data, per round.",
        ),
    ]


def _draw(plot_id: str, title: str, draw, data, caption: str) -> Plot:
    if not data:
        svg = _placeholder_svg(title)
        return Plot(plot_id, title, caption, _data_uri(svg.encode("utf-8")))
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):  # type: ignore[arg-type]  # the stub wants literal rcParams keys
        # Fixed margins: a layout engine would double the drawing time of every plot.
        figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=100)
        figure.subplots_adjust(left=0.11, right=0.98, top=0.9, bottom=0.15)
        axes = figure.add_subplot()
        axes.set_title(title, loc="left")
        draw(axes, data)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return Plot(plot_id, title, caption, _data_uri(buffer.getvalue()))


def _placeholder_svg(title: str) -> str:
    """Return the frame of a plot with no data: its title and "no finished rounds yet".

    Written by hand (matplotlib is not needed for two lines of text); the same size as a
    drawn plot, so the page does not reflow when the first plots arrive.
    """
    width, height = (round(inches * 72) for inches in FIGURE_SIZE_INCHES)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}pt" height="{height}pt" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">'
        f'<text x="{round(0.11 * width)}" y="{round(0.08 * height)}" font-size="10" '
        f'font-weight="bold">{html.escape(title)}</text>'
        f'<text x="{width // 2}" y="{height // 2}" font-size="9" fill="#6e7781" '
        'text-anchor="middle">no finished rounds yet</text></svg>'
    )


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _central_and_federated(axes, rounds: list[RoundReport], metric: str) -> list[int]:
    """Plot ``central_<metric>`` and ``federated_eval_<metric>`` per round; return the x values."""
    numbers = [r.round for r in rounds]
    marker = "o" if len(rounds) <= 40 else None
    if _has_central_evaluation(rounds):
        axes.plot(
            numbers,
            [getattr(r, f"central_{metric}") for r in rounds],
            marker=marker,
            markersize=3,
            color=SERIES_COLORS[0],
            label="central",
        )
    federated = [
        getattr(r, f"federated_eval_{metric}") if _has_federated_evaluation(r) else math.nan
        for r in rounds
    ]
    if not all(math.isnan(value) for value in federated):
        axes.plot(
            numbers,
            federated,
            marker=marker,
            markersize=3,
            color=SERIES_COLORS[1],
            label="federated",
        )
    return numbers


def _accuracy(axes, rounds: list[RoundReport]) -> None:
    _central_and_federated(axes, rounds, "accuracy")
    axes.set_ylabel("accuracy")
    _finish_round_axis(axes, _last_round(rounds))


def _loss(axes, rounds: list[RoundReport]) -> None:
    numbers = _central_and_federated(axes, rounds, "loss")
    marker = "o" if len(rounds) <= 40 else None
    axes.plot(
        numbers,
        [r.train_loss if r.clients_succeeded else math.nan for r in rounds],
        marker=marker,
        markersize=3,
        color=SERIES_COLORS[2],
        linestyle="--",
        label="train",
    )
    axes.set_ylabel("loss")
    _finish_round_axis(axes, _last_round(rounds))


def _clients(axes, rounds: list[RoundReport]) -> None:
    numbers = np.array([r.round for r in rounds])
    bottom = np.zeros(len(rounds))
    # Gaps between many thin bars read as stripes; past a few dozen rounds the bars touch.
    bar_width = 0.8 if len(rounds) <= MAX_ROUNDS_FOR_BARS else 1.0
    for status, label, attribute in (
        (OK, "ok", "clients_succeeded"),
        (FAILED, "failed", "clients_failed"),
        (REJECTED, "rejected", "clients_rejected"),
    ):
        counts = np.array([getattr(r, attribute) for r in rounds], dtype=float)
        axes.bar(
            numbers,
            counts,
            bottom=bottom,
            width=bar_width,
            color=STATUS_COLORS[status],
            label=label,
            linewidth=0,
        )
        bottom += counts
    axes.set_ylabel("clients")
    axes.yaxis.get_major_locator().set_params(integer=True)
    _finish_round_axis(axes, _last_round(rounds))


def _kernel_time(axes, rounds: list[RoundReport]) -> None:
    numbers = [r.round for r in rounds]
    marker = "o" if len(rounds) <= 40 else None
    percentiles = np.array([_kernel_percentiles(r) for r in rounds])
    finite = percentiles[np.isfinite(percentiles)]
    # Kernels mostly run for milliseconds; seconds only when some client took that long.
    scale, unit = (1.0, "seconds") if finite.size and finite.max() >= 1 else (1e3, "milliseconds")
    percentiles = percentiles * scale
    for column, (label, style) in enumerate((("p50", "-"), ("p90", "--"), ("max", ":"))):
        axes.plot(
            numbers,
            percentiles[:, column],
            marker=marker,
            markersize=3,
            linestyle=style,
            color=SERIES_COLORS[column],
            label=label,
        )
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    _finish_round_axis(axes, _last_round(rounds))


def _kernel_percentiles(round_report: RoundReport) -> tuple[float, float, float]:
    # Rejected clients ran the kernel too; failed ones may not have reached it.
    seconds = [
        c.kernel_seconds
        for c in round_report.clients
        if c.status in (OK, REJECTED) and math.isfinite(c.kernel_seconds)
    ]
    if not seconds:
        return (math.nan, math.nan, math.nan)
    p50, p90 = np.percentile(seconds, [50, 90])
    return (float(p50), float(p90), max(seconds))


def _bytes(axes, rounds: list[RoundReport]) -> None:
    numbers = np.array([r.round for r in rounds], dtype=float)
    uploaded = np.array([r.bytes_uploaded for r in rounds], dtype=float)
    downloaded = np.array([r.bytes_downloaded for r in rounds], dtype=float)
    scale, unit = byte_unit(max(uploaded.max(), downloaded.max()))
    if len(rounds) <= MAX_ROUNDS_FOR_BARS:
        axes.bar(
            numbers - 0.2,
            uploaded / scale,
            width=0.4,
            color=SERIES_COLORS[0],
            label="uploaded",
        )
        axes.bar(
            numbers + 0.2,
            downloaded / scale,
            width=0.4,
            color=SERIES_COLORS[3],
            label="downloaded",
        )
    else:
        axes.plot(numbers, uploaded / scale, color=SERIES_COLORS[0], label="uploaded")
        axes.plot(numbers, downloaded / scale, color=SERIES_COLORS[3], label="downloaded")
    largest = max(uploaded.max(), downloaded.max()) / scale
    # From zero (a flat line must not look like a swing), with room above for the legend.
    axes.set_ylim(0, largest * 1.12 if largest > 0 else 1)
    axes.set_ylabel(unit)
    _finish_round_axis(axes, _last_round(rounds))


def _delta_norms(axes, rounds: list[RoundReport]) -> None:
    kept_x, kept_y, rejected_x, rejected_y, nonfinite_x = [], [], [], [], []
    percentiles = []
    for round_report in rounds:
        replied = [c for c in round_report.clients if c.status in (OK, REJECTED)]
        # Spread a round's points evenly across its slot instead of random jitter.
        offsets = np.linspace(-0.3, 0.3, len(replied)) if len(replied) > 1 else [0.0]
        for client, offset in zip(replied, offsets, strict=False):
            x = round_report.round + offset
            if not math.isfinite(client.delta_norm):
                nonfinite_x.append(x)
            elif client.status == OK:
                kept_x.append(x)
                kept_y.append(client.delta_norm)
            else:
                rejected_x.append(x)
                rejected_y.append(client.delta_norm)
        kept_norms = [
            c.delta_norm for c in replied if c.status == OK and math.isfinite(c.delta_norm)
        ]
        percentiles.append(
            np.percentile(kept_norms, [10, 50, 90]) if kept_norms else [math.nan] * 3
        )
    numbers = [r.round for r in rounds]
    low, median, high = np.array(percentiles, dtype=float).reshape(-1, 3).T
    if len(rounds) <= MAX_ROUNDS_FOR_POINTS:
        axes.scatter(
            kept_x,
            kept_y,
            s=12,
            color="#57606a",
            alpha=0.6,
            linewidths=0,
            label="kept",
            rasterized=len(kept_x) > RASTERIZE_ABOVE_POINTS,
        )
    else:
        # Too many rounds for one dot per client: the middle 80% of kept norms as a band.
        axes.fill_between(
            numbers, low, high, color="#57606a", alpha=0.25, linewidth=0, label="kept p10-p90"
        )
    if rejected_x:
        axes.scatter(
            rejected_x,
            rejected_y,
            s=36,
            marker="x",
            color=STATUS_COLORS[REJECTED],
            label="rejected",
            rasterized=len(rejected_x) > RASTERIZE_ABOVE_POINTS,
        )
    axes.plot(numbers, median, color=SERIES_COLORS[0], linewidth=1.2, label="median kept")
    finite = [value for value in kept_y + rejected_y if value > 0]
    if finite and max(finite) / min(finite) > 50:
        axes.set_yscale("log")
    if nonfinite_x:
        # NaN/Inf norms have no place on the axis: mark them along the top edge.
        axes.scatter(
            nonfinite_x,
            [1.0] * len(nonfinite_x),
            marker="^",
            s=40,
            color=STATUS_COLORS[REJECTED],
            transform=axes.get_xaxis_transform(),
            clip_on=False,
            label="not finite",
        )
    axes.set_ylabel("L2 norm")
    _finish_round_axis(axes, _last_round(rounds))


def _last_round(rounds) -> int:
    return max((r.round for r in rounds), default=0)


def _finish_round_axis(axes, last_round: int, *, legend_above: bool = True) -> None:
    axes.set_xlabel("round")
    axes.xaxis.get_major_locator().set_params(integer=True)
    if last_round:
        axes.set_xlim(0.4, last_round + 0.6)
    handles, _ = axes.get_legend_handles_labels()
    if handles and legend_above:
        # Beside the left-aligned title, above the axes: it never hides a bar or a point.
        axes.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=len(handles),
            borderaxespad=0.2,
            handlelength=1.6,
            columnspacing=1.0,
        )
    elif handles:
        axes.legend(loc="best")


def _has_central_evaluation(rounds: list[RoundReport]) -> bool:
    # NaN is how the coordinator records "not evaluated"; all zeros means the field was unset.
    return any(
        math.isfinite(r.central_loss) and (r.central_loss != 0 or r.central_accuracy != 0)
        for r in rounds
    )


def _has_federated_evaluation(round_report: RoundReport) -> bool:
    value = round_report.federated_eval_accuracy
    return math.isfinite(value) and (
        value != 0 or any(c.eval_status != 0 for c in round_report.clients)
    )


def _series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]
