"""coordinator/reports/run_page.py: report.html and compare.html content, escaping."""

import base64
import math
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import pytest

import coordinator.reports.run_page as report_html
from coordinator.reports.run_page import (
    COMPARE_HTML,
    config_differences,
    render_comparison,
    render_report_html,
    rounds_to_reach,
)
from protos.report_pb2 import FAILED
from tests.coordinator.report_factory import TRICKY_REASON, make_report

RUN_PLOT_IDS = {
    "plot-accuracy",
    "plot-loss",
    "plot-clients",
    "plot-kernel-time",
    "plot-bytes",
    "plot-delta-norms",
}


class PageParser(HTMLParser):
    """Collects what the tests look at: tags with their attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def ids(self) -> set[str]:
        return {attrs["id"] for _, attrs in self.tags if attrs.get("id")}

    def plots(self) -> dict[str, str]:
        return {
            attrs["id"]: attrs["src"]
            for tag, attrs in self.tags
            if tag == "img" and "plot" in (attrs.get("class") or "")
        }


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def svg_of(data_uri: str) -> ElementTree.Element:
    prefix = "data:image/svg+xml;base64,"
    assert data_uri.startswith(prefix)
    return ElementTree.fromstring(base64.b64decode(data_uri[len(prefix) :]))


def test_every_plot_is_an_embedded_valid_svg_with_its_id():
    page = parse(render_report_html(make_report()))
    plots = page.plots()
    assert set(plots) == RUN_PLOT_IDS
    for plot_id, source in plots.items():
        root = svg_of(source)
        assert root.tag.endswith("svg"), plot_id
        assert len(list(root.iter())) > 50, f"{plot_id} draws almost nothing"


def test_page_is_self_contained():
    page_text = render_report_html(make_report())
    page = parse(page_text)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object"), tag
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:") or value.startswith("#"), (
                tag,
                name,
                value[:60],
            )
    assert "url(" not in page_text.split("<body>")[0]  # no fonts or images from the CSS


def test_header_has_the_run_facts_and_the_full_config():
    report = make_report()
    page = parse(render_report_html(report))
    text = " ".join(page.text)
    for expected in (
        "digits-mlp-dirichlet",
        "completed",
        "simulation",
        "ab" * 32,
        "cd" * 32,
        "flwr 1.42.0",
        "wasmtime 50.0.1",
        "2026-11-18",
        "0.9300",  # final central accuracy
        "42.00 s",  # started to finished
    ):
        assert expected in text, expected
    config_cells = {attrs.get("id") for tag, attrs in page.tags if tag == "table"}
    assert "config-table" in config_cells
    for key in ("training.lr", "training.batch-size", "num-rounds", "strategy", "seed"):
        assert key in text, key
    assert "0.05" in text and "mlp:64-32-10" in text


def test_round_and_client_tables_cover_every_round_and_client():
    report = make_report(num_rounds=3, num_clients=4)
    page_text = render_report_html(report)
    page = parse(page_text)
    assert {"rounds-table", "round-1-clients", "round-2-clients", "round-3-clients"} <= page.ids()
    rows = [attrs for tag, attrs in page.tags if tag == "tr"]
    # rounds table: header + 3; per round: header + 4 clients; config table: header + 9 keys
    assert len(rows) == (1 + 3) + 3 * (1 + 4) + (1 + 9)
    failed_rows = [attrs for attrs in rows if attrs.get("class") == "failed"]
    rejected_rows = [attrs for attrs in rows if attrs.get("class") == "rejected"]
    assert (len(failed_rows), len(rejected_rows)) == (1, 2)
    # Rounds with problems open by default; a clean round stays folded.
    details = {
        attrs["id"]: "open" in attrs
        for tag, attrs in page.tags
        if tag == "details" and attrs.get("id", "").startswith("round-")
    }
    assert details == {"round-1-clients": False, "round-2-clients": True, "round-3-clients": True}
    text = " ".join(page.text)
    assert "ClientAppException: sandbox trap: out of fuel" in text
    assert "delta has non-finite values" in text


def test_reasons_are_escaped():
    page_text = render_report_html(make_report())
    assert "<script>x</script>" not in page_text
    assert "&lt;script&gt;x&lt;/script&gt;" in page_text
    assert TRICKY_REASON in " ".join(parse(page_text).text)


def card_values(page_text: str) -> dict[str, tuple[str, str]]:
    """The summary cards: label -> (value, detail)."""
    cards, current, part = {}, None, None

    class Cards(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal part
            part = dict(attrs).get("class") if tag == "div" else None

        def handle_endtag(self, tag):
            nonlocal part
            part = None

        def handle_data(self, data):
            nonlocal current
            if part == "label":
                current = data
                cards[current] = ["", ""]
            elif part == "value" and current:
                cards[current][0] = data
            elif part == "detail" and current:
                cards[current][1] = data

    Cards().feed(page_text)
    return {label: tuple(values) for label, values in cards.items()}


def test_completed_run_cards_show_the_finals():
    cards = card_values(render_report_html(make_report(num_rounds=3)))
    assert cards["Central accuracy"] == ("0.9300", "final, round 3")
    assert cards["Central loss"] == ("0.4", "final, round 3")
    assert cards["Federated accuracy"] == ("0.9500", "final, round 3")
    assert cards["Aggregated replies"] == ("9", "1 failed · 2 rejected")


def test_failed_run_shows_its_error_and_the_latest_evaluated_round():
    report = make_report(num_rounds=3, status="failed")
    report.error = "RoundFailedError: round 3 had no usable reply <none>"
    page = render_report_html(report)
    assert 'class="badge failed"' in page and "no usable reply &lt;none&gt;" in page
    cards = card_values(page)
    # Round 3 produced no model (NaN figures): the cards show round 2's.
    assert cards["Central accuracy"] == ("0.8500", "round 2, the latest evaluated")
    rows = _table_rows(page, "rounds-table")
    assert rows[2][0] == "3" and rows[2][7] == "—"  # not measured, not "nan"


def test_running_run_shows_progress_so_far():
    running = render_report_html(make_report(num_rounds=1, status="running"))
    assert 'class="badge running"' in running
    cards = card_values(running)
    assert cards["Central accuracy"] == ("0.6200", "round 1, the latest evaluated")
    assert cards["Duration"][1] == "so far (rounds)"
    nothing = card_values(render_report_html(make_report(num_rounds=0, status="running")))
    assert nothing["Central accuracy"] == ("—", "not evaluated yet")


def test_a_nan_delta_norm_is_shown_as_nan():
    rows = _table_rows(render_report_html(make_report(num_rounds=3)), "")
    nan_rows = [row for row in rows if "delta has non-finite values" in row]
    assert len(nan_rows) == 1 and nan_rows[0][10] == "NaN"


def test_a_report_with_no_rounds_renders():
    report = make_report(num_rounds=0, status="running")
    page = parse(render_report_html(report))
    assert set(page.plots()) == RUN_PLOT_IDS
    assert "No finished rounds yet." in " ".join(page.text)


def test_rendering_is_deterministic():
    assert render_report_html(make_report()) == render_report_html(make_report())


def test_large_runs_keep_problem_rounds_and_the_latest_in_the_client_section(monkeypatch):
    monkeypatch.setattr(report_html, "MAX_CLIENT_ROWS", 12)
    report = make_report(num_rounds=8, num_clients=4)  # 32 client rows, budget 12
    page = parse(render_report_html(report))
    shown = sorted(
        int(i.split("-")[1]) for i in page.ids() if i.startswith("round-") and "clients" in i
    )
    assert shown == [2, 3, 8]  # rounds with failures/rejections, then the latest
    assert "clients.csv has every client of every round" in " ".join(page.text)


def test_rounds_to_reach():
    report = make_report(num_rounds=5)  # central accuracy 0.62, 0.85, 0.93, 0.95, 0.96
    assert rounds_to_reach(report, 0.9) == 3
    assert rounds_to_reach(report, 0.62) == 1
    assert rounds_to_reach(report, 0.97) is None


def test_comparison_page(tmp_path):
    short, long = make_report(num_rounds=2), make_report(num_rounds=5)
    path = render_comparison([("fedavg", short), ("fedprox", long)], tmp_path / "cmp", 0.9)
    assert path == tmp_path / "cmp" / COMPARE_HTML
    page = parse(path.read_text())
    assert set(page.plots()) == {"plot-compare-accuracy", "plot-compare-loss"}
    rows = [cells for cells in _table_rows(path.read_text(), "compare-table")]
    assert [row[0] for row in rows] == ["fedavg", "fedprox"]
    assert rows[0][5] == "not reached" and rows[1][5] == "3"
    assert rows[0][4] == "0.8500" and rows[1][4] == "0.9600"
    assert rows[1][6] == report_html.format_bytes(
        long.total_bytes_uploaded + long.total_bytes_downloaded
    )
    assert rows[1][9] == report_html.format_seconds(sum(r.wall_seconds for r in long.rounds))


def _table_rows(page_text: str, table_id: str) -> list[list[str]]:
    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside = False
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.inside = (dict(attrs).get("id") or "") == table_id
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag == "td":
                self.cell = []

        def handle_endtag(self, tag):
            if tag == "td" and self.cell is not None:
                self.rows[-1].append("".join(self.cell).strip())
                self.cell = None
            elif tag == "table":
                self.inside = False

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(page_text)
    return [row for row in parser.rows if row]  # the header row has th cells only


@pytest.mark.parametrize(
    ("reports", "target", "message"),
    [([], 0.9, "at least one"), ([("a", make_report())], 1.5, "target_accuracy")],
)
def test_comparison_refuses_bad_arguments(tmp_path, reports, target, message):
    with pytest.raises(ValueError, match=message):
        render_comparison(reports, tmp_path, target)


def test_the_latest_rounds_with_problems_open_by_default():
    report = make_report(num_rounds=7, num_clients=3)
    for round_report in report.rounds[3:6]:  # rounds 4, 5 and 6 get a failed client too
        round_report.clients[1].status = FAILED
        round_report.clients_failed, round_report.clients_succeeded = 1, 2
    page = parse(render_report_html(report))
    opened = sorted(
        int(attrs["id"].split("-")[1])
        for tag, attrs in page.tags
        if tag == "details" and attrs.get("id", "").startswith("round-") and "open" in attrs
    )
    assert opened == [4, 5, 6]  # problems in rounds 2 to 6; round 7 is clean


def test_comparison_lists_the_config_keys_that_differ(tmp_path):
    fedavg, fedprox = make_report(num_rounds=2), make_report(num_rounds=2)
    fedprox.config.update({"strategy": "fedprox", "proximal-mu": 0.1, "out-dir": "runs/b"})
    fedprox.config["training"]["lr"] = 0.1
    assert config_differences([("a", fedavg), ("b", fedprox)]) == {
        "proximal-mu": [None, 0.1],
        "strategy": ["fedavg", "fedprox"],
        "training.lr": [0.05, 0.1],
    }
    page = render_comparison([("a", fedavg), ("b", fedprox)], tmp_path).read_text()
    rows = _table_rows(page, "config-differences")
    assert rows == [
        ["proximal-mu", "—", "0.1"],
        ["strategy", "fedavg", "fedprox"],
        ["training.lr", "0.05", "0.1"],
    ]
    same = render_comparison([("a", fedavg), ("b", fedavg)], tmp_path).read_text()
    assert "The runs share one run config." in same


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
