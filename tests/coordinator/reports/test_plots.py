"""coordinator/reports/plots.py: what each plot of report.html draws and labels."""

import base64
import math
import re

from coordinator.reports.run_page import render_report_html
from tests.coordinator.report_factory import make_report
from tests.coordinator.reports.pages import parse


def plot_texts(report) -> dict[str, list[str]]:
    """The text of each plot (matplotlib writes each text as an XML comment by its glyphs)."""
    page = parse(render_report_html(report))
    texts = {}
    for plot_id, source in page.plots().items():
        svg_text = base64.b64decode(source.split(",", 1)[1]).decode()
        texts[plot_id] = re.findall(r"<!-- (.*?) -->", svg_text)
    return texts


def test_plots_label_what_they_draw():
    texts = plot_texts(make_report(num_rounds=3))
    assert {"central", "federated"} <= set(texts["plot-accuracy"])
    assert {"central", "federated", "train"} <= set(texts["plot-loss"])
    assert {"ok", "failed", "rejected"} <= set(texts["plot-clients"])
    assert {"p50", "p90", "max", "milliseconds"} <= set(texts["plot-kernel-time"])
    assert {"uploaded", "downloaded", "KB"} <= set(texts["plot-bytes"])
    assert {"kept", "rejected", "median kept", "not finite"} <= set(texts["plot-delta-norms"])


def test_long_runs_draw_delta_norms_as_a_band():
    texts = plot_texts(make_report(num_rounds=70, num_clients=3))
    assert "kept p10-p90" in texts["plot-delta-norms"]
    assert "kept" not in texts["plot-delta-norms"]


def test_unmeasured_evaluations_are_left_out_of_the_plots():
    report = make_report(num_rounds=3)
    for round_report in report.rounds:
        round_report.central_loss = round_report.central_accuracy = math.nan
    texts = plot_texts(report)
    assert "central" not in texts["plot-accuracy"] and "federated" in texts["plot-accuracy"]


def test_a_report_with_no_rounds_is_drawn_without_importing_matplotlib():
    # A run writes its report before round 1: importing matplotlib for six empty plots cost
    # ~1 s of every run's start-up. Checked in a fresh interpreter (this one may have it).
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from coordinator.reports.run_page import render_report_html\n"
        "from tests.coordinator.report_factory import make_report\n"
        "page = render_report_html(make_report(num_rounds=0, status='running'))\n"
        "assert page.count('no finished rounds yet') == 0  # base64 inside the data URIs\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_plot_with_no_rounds_is_a_titled_placeholder_svg():
    texts = {}
    page = parse(render_report_html(make_report(num_rounds=0, status="running")))
    for plot_id, source in page.plots().items():
        svg_text = base64.b64decode(source.split(",", 1)[1]).decode()
        texts[plot_id] = re.findall(r">([^<>]+)</text>", svg_text)
    assert texts["plot-accuracy"] == ["Accuracy", "no finished rounds yet"]
    assert all(found[1:] == ["no finished rounds yet"] for found in texts.values())
