"""coordinator/reports/run_page.py: report.html content, self-containment, escaping."""

from html.parser import HTMLParser

import coordinator.reports.run_page as run_page
from coordinator.reports.run_page import render_report_html
from protos.report_pb2 import FAILED
from tests.coordinator.report_factory import TRICKY_REASON, make_report
from tests.coordinator.reports.pages import parse, svg_of, table_rows

RUN_PLOT_IDS = {
    "plot-accuracy",
    "plot-loss",
    "plot-clients",
    "plot-kernel-time",
    "plot-bytes",
    "plot-delta-norms",
}


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
    rows = table_rows(page, "rounds-table")
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
    rows = table_rows(render_report_html(make_report(num_rounds=3)), "")
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
    monkeypatch.setattr(run_page, "MAX_CLIENT_ROWS", 12)
    report = make_report(num_rounds=8, num_clients=4)  # 32 client rows, budget 12
    page = parse(render_report_html(report))
    shown = sorted(
        int(i.split("-")[1]) for i in page.ids() if i.startswith("round-") and "clients" in i
    )
    assert shown == [2, 3, 8]  # rounds with failures/rejections, then the latest
    assert "clients.csv has every client of every round" in " ".join(page.text)


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


def test_a_round_that_kept_the_model_says_so_with_the_reason():
    report = make_report(num_rounds=2)
    report.rounds[1].update_norm = 0.0
    report.rounds[1].model_unchanged_reason = "Bulyan returned no aggregate for 6 <usable> replies"
    page = render_report_html(report)
    rows = table_rows(page, "rounds-table")
    assert rows[1][12] == "unchanged" and rows[0][12] != "unchanged"
    assert 'title="Bulyan returned no aggregate for 6 &lt;usable&gt; replies"' in page
