"""report.html and compare.html: self-contained pages (inline CSS, plots as SVG data URIs).

No script, no external stylesheet, font or image: the page can be mailed, archived or opened
offline and looks the same.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf import json_format

from protos.report_pb2 import (
    FAILED,
    OK,
    REJECTED,
    ClientResult,
    ClientStatus,
    ResumeEvent,
    RoundReport,
    RunReport,
)

from .report_plots import Plot, byte_unit, comparison_plots, run_plots

COMPARE_HTML = "compare.html"
# Above this many client rows the page keeps the rounds with failures or rejections and the
# latest ones; clients.csv always has every row.
MAX_CLIENT_ROWS = 5000
# The latest rounds with failed or rejected clients open by default, at most this many.
MAX_OPEN_ROUNDS = 3

_CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d0d7de; --panel:#f6f8fa; --ok:#1a7f37;
  --failed:#cf222e; --rejected:#7b4fa6; --running:#9a6700; --accent:#1f6feb; }
* { box-sizing: border-box; }
body { margin:0;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color:var(--ink); background:#fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.badge { display:inline-block; padding: 1px 10px; border-radius: 999px; font-size: 13px;
  font-weight: 600; vertical-align: middle; margin-left: 8px; color:#fff; }
.badge.completed { background: var(--ok); }
.badge.failed { background: var(--failed); }
.badge.running { background: var(--running); }
.badge.other { background: var(--muted); }
.error { border: 1px solid var(--failed); background: #ffebe9; padding: 10px 14px;
  border-radius: 6px; margin: 12px 0; white-space: pre-wrap;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .detail { color: var(--muted); font-size: 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px;
  background:#fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; padding: 4px 6px 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { background: var(--panel); position: sticky; top: 0; font-weight: 600; }
td.text, th.text { text-align: left; }
td.reason { text-align: left; white-space: normal; min-width: 220px; max-width: 420px; }
tbody tr:hover { background: #f0f6ff; }
tr.failed td { background: #fff5f5; }
tr.rejected td { background: #f8f3fc; }
.status { font-weight: 600; }
.status.OK { color: var(--ok); }
.status.FAILED { color: var(--failed); }
.status.REJECTED { color: var(--rejected); }
.status.CLIENT_STATUS_UNSPECIFIED { color: var(--muted); font-weight: 400; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; }
details > summary { cursor: pointer; padding: 6px 12px; background: var(--panel);
  border-radius: 6px; }
details[open] > summary { border-bottom: 1px solid var(--line); border-radius: 6px 6px 0 0; }
details > .table-wrap, details > table { padding: 0 4px 4px; }
.pill { display:inline-block; border-radius: 999px; padding: 0 8px; font-size: 12px;
  margin-left: 6px; }
.pill.failed { background:#ffebe9; color: var(--failed); }
.pill.rejected { background:#f3ebfa; color: var(--rejected); }
.pill.ok { background:#dafbe1; color: var(--ok); }
.note { color: var(--muted); font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def render_report_html(report: RunReport) -> str:
    """Return the report.html page of one run (self-contained HTML text)."""
    title = report.scenario or "unnamed run"
    body = [
        _header(report),
        _cards(report),
        _section("Run", _facts(report) + _config(report)),
        _section("Plots", _plots(run_plots(report))),
        _section("Rounds", _rounds_table(report)),
        _section("Clients", _clients_section(report)),
        f"<footer>Written by sandflower {_escape(report.versions.sandflower or '?')}. "
        "The same figures are in report.json, rounds.csv and clients.csv.</footer>",
    ]
    return _page(f"Sandflower report: {title}", body)


def render_comparison(
    reports: Sequence[tuple[str, RunReport]], out_dir: Path, target_accuracy: float = 0.9
) -> Path:
    """Write ``out_dir``/compare.html comparing several runs; return its path.

    Parameters
    ----------
    reports : (label, report) pairs, in the order they are shown.
    out_dir : the folder to write into (created when missing).
    target_accuracy : the central accuracy for the "rounds to reach" column.
    """
    from .report_writer import atomic_write_text

    if not reports:
        raise ValueError("render_comparison: expected at least one (label, report), got none")
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy: expected a value in [0, 1], got {target_accuracy}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / COMPARE_HTML
    atomic_write_text(path, comparison_html(reports, target_accuracy))
    return path


def comparison_html(reports: Sequence[tuple[str, RunReport]], target_accuracy: float) -> str:
    """Return the compare.html page (self-contained HTML text)."""
    header = (
        f"<header><h1>Comparison of {len(reports)} runs</h1>"
        f'<p class="subtitle">Central evaluation on the coordinator\'s held-out data; '
        f"target accuracy {target_accuracy:g}.</p></header>"
    )
    rows = []
    for label, report in reports:
        reached = rounds_to_reach(report, target_accuracy)
        latest = latest_finite(report, "central_accuracy")
        final = latest[1] if latest else math.nan
        rows.append(
            [
                _td(label, "text"),
                _td(report.scenario, "text"),
                f'<td class="text">{_status_badge(report.status)}</td>',
                _td(f"{len(report.rounds)} / {report.num_rounds}"),
                _td(format_fixed(final, 4)),
                _td(str(reached) if reached is not None else "not reached"),
                _td(
                    format_bytes(report.total_bytes_uploaded + report.total_bytes_downloaded),
                    title=f"{report.total_bytes_uploaded + report.total_bytes_downloaded} B",
                ),
                _td(
                    format_bytes(report.total_bytes_uploaded),
                    title=f"{report.total_bytes_uploaded} B",
                ),
                _td(
                    format_bytes(report.total_bytes_downloaded),
                    title=f"{report.total_bytes_downloaded} B",
                ),
                _td(format_seconds(sum(r.wall_seconds for r in report.rounds))),
            ]
        )
    table = _table(
        [
            ("run", "text"),
            ("scenario", "text"),
            ("status", "text"),
            ("rounds", ""),
            ("last central accuracy", ""),
            (f"rounds to reach {target_accuracy:g}", ""),
            ("total bytes", ""),
            ("uploaded", ""),
            ("downloaded", ""),
            ("wall time (rounds)", ""),
        ],
        rows,
        table_id="compare-table",
    )
    body = [
        header,
        _section("Final figures", table),
        _section("Curves", _plots(comparison_plots(reports, target_accuracy))),
        _section("Config differences", _config_differences(reports)),
    ]
    return _page(f"Sandflower comparison of {len(reports)} runs", body)


def config_differences(
    reports: Sequence[tuple[str, RunReport]],
) -> dict[str, list[object | None]]:
    """Run config keys whose values differ between the runs: key -> value per run (None: unset).

    Keys that only name where a run writes its files (``out-dir``) are left out.
    """
    flat = [_flat_config(report) for _, report in reports]
    keys = sorted(set().union(*flat) - {"out-dir"})
    values = {key: [config.get(key) for config in flat] for key in keys}
    return {key: row for key, row in values.items() if any(value != row[0] for value in row[1:])}


def _config_differences(reports: Sequence[tuple[str, RunReport]]) -> str:
    differences = config_differences(reports)
    if not differences:
        return '<p class="note" id="config-differences">The runs share one run config.</p>'
    columns = [("key", "text")] + [(label, "text") for label, _ in reports]
    rows = [
        [_td(key, "text mono")]
        + [_td("—" if value is None else _config_value(value), "text mono") for value in row]
        for key, row in differences.items()
    ]
    return _table(columns, rows, table_id="config-differences")


def _flat_config(report: RunReport) -> dict[str, object]:
    if not report.HasField("config"):
        return {}
    return _flatten(json_format.MessageToDict(report.config))


def rounds_to_reach(report: RunReport, target_accuracy: float) -> int | None:
    """Return the first round whose central accuracy is at least ``target_accuracy``, or None."""
    for round_report in report.rounds:
        if round_report.central_accuracy >= target_accuracy:
            return round_report.round
    return None


# --- page parts ---------------------------------------------------------------------------


def _page(title: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{_CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )


def _section(title: str, content: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{_escape(title)}</h2>{content}</section>'


def _header(report: RunReport) -> str:
    done = len(report.rounds)
    parts = [f"{done} of {report.num_rounds} rounds"]
    if report.engine:
        parts.append(f"{report.engine} engine")
    parts.append(f"seed {report.seed}")
    error = f'<div class="error">{_escape(report.error)}</div>' if report.error else ""
    return (
        f"<header><h1>{_escape(report.scenario or 'unnamed run')}"
        f"{_status_badge(report.status)}</h1>"
        f'<p class="subtitle">{_escape(" · ".join(parts))}</p>{error}</header>'
    )


def _status_badge(status: str) -> str:
    kind = status if status in ("completed", "failed", "running") else "other"
    return f'<span class="badge {kind}">{_escape(status or "unknown")}</span>'


def _cards(report: RunReport) -> str:
    failed = sum(r.clients_failed for r in report.rounds)
    rejected = sum(r.clients_rejected for r in report.rounds)
    succeeded = sum(r.clients_succeeded for r in report.rounds)
    cards = [
        _metric_card(report, "Central accuracy", "final_central_accuracy", "central_accuracy"),
        _metric_card(report, "Central loss", "final_central_loss", "central_loss"),
        _metric_card(
            report,
            "Federated accuracy",
            "final_federated_eval_accuracy",
            "federated_eval_accuracy",
        ),
        (
            "Bytes",
            format_bytes(report.total_bytes_uploaded + report.total_bytes_downloaded),
            f"{format_bytes(report.total_bytes_uploaded)} up · "
            f"{format_bytes(report.total_bytes_downloaded)} down",
        ),
        ("Aggregated replies", str(succeeded), f"{failed} failed · {rejected} rejected"),
        (
            "Duration",
            _duration(report),
            "started to finished" if _has_time(report.finished_at) else "so far (rounds)",
        ),
    ]
    items = "".join(
        f'<div class="card"><div class="label">{_escape(label)}</div>'
        f'<div class="value">{_escape(value)}</div>'
        f'<div class="detail">{_escape(detail)}</div></div>'
        for label, value, detail in cards
    )
    return f'<section class="cards" id="finals">{items}</section>'


def _metric_card(
    report: RunReport, label: str, final_field: str, round_field: str
) -> tuple[str, str, str]:
    """Render a card with the final figure (the latest while running or after a failure)."""
    digits = 4 if "accuracy" in round_field else None

    def shown(value: float) -> str:
        return format_fixed(value, digits) if digits else format_significant(value)

    final = getattr(report, final_field)
    if math.isfinite(final) and report.status == "completed":
        return label, shown(final), f"final, round {len(report.rounds)}"
    latest = latest_finite(report, round_field)
    if latest is None:
        return label, "—", "not evaluated yet" if report.status == "running" else "not evaluated"
    round_number, value = latest
    return label, shown(value), f"round {round_number}, the latest evaluated"


def latest_finite(report: RunReport, round_field: str) -> tuple[int, float] | None:
    """Return the last round where ``round_field`` (e.g. "central_accuracy") is finite, and value.

    NaN is how the coordinator records a figure that was not measured (no evaluation that
    round, or a round that produced no model).
    """
    for round_report in reversed(report.rounds):
        value = getattr(round_report, round_field)
        if math.isfinite(value):
            return round_report.round, value
    return None


def _facts(report: RunReport) -> str:
    versions = report.versions
    facts = [
        ("scenario", _escape(report.scenario)),
        ("status", _escape(report.status)),
        ("engine", _escape(report.engine)),
        ("seed", str(report.seed)),
        ("rounds", f"{len(report.rounds)} finished of {report.num_rounds} planned"),
        ("started", _escape(_timestamp(report.started_at))),
        ("finished", _escape(_timestamp(report.finished_at))),
        ("kernel sha256", f"<code>{_escape(report.kernel_sha256 or '—')}</code>"),
        ("final model sha256", f"<code>{_escape(report.final_model_sha256 or '—')}</code>"),
        (
            "final central",
            f"accuracy {format_fixed(report.final_central_accuracy, 4)}, "
            f"loss {format_significant(report.final_central_loss)}",
        ),
        ("final federated accuracy", format_fixed(report.final_federated_eval_accuracy, 4)),
        (
            "bytes",
            f"{report.total_bytes_uploaded:,} uploaded, "
            f"{report.total_bytes_downloaded:,} downloaded",
        ),
        (
            "versions",
            _escape(
                f"sandflower {versions.sandflower or '?'} · flwr {versions.flwr or '?'} · "
                f"wasmtime {versions.wasmtime or '?'} · python {versions.python or '?'}"
            ),
        ),
    ]
    if report.error:
        facts.insert(2, ("error", f'<span class="mono">{_escape(report.error)}</span>'))
    for event in report.resumes:
        facts.append(("resumed", _escape(resume_text(event))))
    items = "".join(f"<dt>{_escape(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<dl class="facts" id="facts">{items}</dl>'


def resume_text(event: ResumeEvent) -> str:
    """One line on a resume: when, from which round, and any checkpoint refused on the way."""
    text = (
        f"{_timestamp(event.resumed_at)} after round {event.from_round} "
        f"(was {event.previous_status or '?'}, {event.previous_num_rounds} rounds planned; "
        f"{event.engine or '?'} engine)"
    )
    if event.refused_checkpoints:
        text += f"; refused {len(event.refused_checkpoints)} newer checkpoint(s): " + "; ".join(
            event.refused_checkpoints
        )
    return text


def _config(report: RunReport) -> str:
    flat = _flat_config(report)
    if not flat:
        return '<p class="note" id="config">No run config was recorded.</p>'
    rows = [
        [_td(key, "text mono"), _td(_config_value(value), "text mono")]
        for key, value in sorted(flat.items())
    ]
    table = _table([("key", "text"), ("value", "text")], rows, table_id="config-table")
    return (
        f'<details id="config"><summary>Resolved run config ({len(flat)} keys)</summary>'
        f"{table}</details>"
    )


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _config_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Struct holds every number as a double
    return value if isinstance(value, str) else json.dumps(value)


def _plots(plots: Sequence[Plot]) -> str:
    figures = "".join(
        f'<figure><img class="plot" id="{plot.plot_id}" alt="{_escape(plot.title)}" '
        f'src="{plot.svg_data_uri}"><figcaption>{_escape(plot.caption)}</figcaption></figure>'
        for plot in plots
    )
    return f'<div class="plots">{figures}</div>'


def _rounds_table(report: RunReport) -> str:
    if not report.rounds:
        return '<p class="note">No finished rounds yet.</p>'
    devices = simulates_devices(report)
    columns = [
        ("round", ""),
        ("sampled", ""),
        ("ok", ""),
        ("failed", ""),
        ("rejected", ""),
        ("train loss", ""),
        ("central loss", ""),
        ("central acc", ""),
        ("fed. loss", ""),
        ("fed. acc", ""),
        ("uploaded", ""),
        ("downloaded", ""),
        ("update norm", ""),
        ("wall", ""),
    ]
    rows = []
    for r in report.rounds:
        rows.append(
            [
                _td(str(r.round)),
                _td(str(r.clients_sampled)),
                _td(str(r.clients_succeeded)),
                _td(str(r.clients_failed)),
                _td(str(r.clients_rejected)),
                _td(format_significant(r.train_loss)),
                _td(format_significant(r.central_loss)),
                _td(format_fixed(r.central_accuracy, 4)),
                _td(format_significant(r.federated_eval_loss)),
                _td(format_fixed(r.federated_eval_accuracy, 4)),
                _td(format_bytes(r.bytes_uploaded), title=f"{r.bytes_uploaded} B"),
                _td(format_bytes(r.bytes_downloaded), title=f"{r.bytes_downloaded} B"),
                _td(format_significant(r.update_norm)),
                _td(format_seconds(r.wall_seconds)),
            ]
            + (_device_round_cells(r) if devices else [])
        )
    if devices:
        columns += _DEVICE_ROUND_COLUMNS
    return _table(columns, rows, table_id="rounds-table")


# Simulated device clock (coordinator/clock.py): shown only for runs that simulate devices.
_DEVICE_ROUND_COLUMNS = [
    ("sim round", ""),
    ("sim elapsed", ""),
    ("stragglers", ""),
    ("dropped", ""),
    ("partial", ""),
    ("offline", ""),
]
_DEVICE_CLIENT_COLUMNS = [("sim time", ""), ("steps", ""), ("fuel budget", ""), ("device", "text")]


def simulates_devices(report: RunReport) -> bool:
    """Whether the run has a simulated device clock (its rounds carry simulated seconds)."""
    return any(r.sim_elapsed_seconds > 0 for r in report.rounds)


def _device_round_cells(r: RoundReport) -> list[str]:
    return [
        _td(f"{r.sim_round_seconds:.4g} s"),
        _td(f"{r.sim_elapsed_seconds:.5g} s"),
        _td(str(r.stragglers)),
        _td(str(r.clients_dropped)),
        _td(str(r.clients_partial)),
        _td(str(r.clients_offline)),
    ]


def _device_client_cells(client: ClientResult) -> list[str]:
    if not client.device_status:
        return [_td("—"), _td("—"), _td("—"), _td("—", "text")]
    return [
        _td(
            f"{client.sim_seconds:.4g} s",
            title=f"download {client.sim_download_seconds:.4g} s, compute "
            f"{client.sim_compute_seconds:.4g} s, upload {client.sim_upload_seconds:.4g} s",
        ),
        _td(f"{client.steps_done:,} / {client.steps_planned:,}"),
        _td(f"{client.fuel_budget:,}" if client.fuel_budget >= 0 else "none"),
        _td(client.device_status, "text"),
    ]


_CLIENT_COLUMNS = [
    ("node", "text"),
    ("partition", ""),
    ("status", "text"),
    ("reason", "text"),
    ("examples", ""),
    ("train loss", ""),
    ("kernel", ""),
    ("fuel", ""),
    ("uploaded", ""),
    ("downloaded", ""),
    ("delta norm", ""),
    ("cosine", ""),
    ("weight", ""),
    ("selected", "text"),
    ("aggregation note", "text"),
    ("eval", "text"),
    ("eval loss", ""),
    ("eval acc", ""),
    ("eval examples", ""),
    ("claimed examples", ""),
    ("norm clip", ""),
    ("injected fault", "text"),
]


def _clients_section(report: RunReport) -> str:
    if not report.rounds:
        return '<p class="note">No finished rounds yet.</p>'
    shown = _rounds_to_show(report)
    note = ""
    if len(shown) < len(report.rounds):
        note = (
            f'<p class="note">{len(report.rounds) - len(shown)} rounds are left out to keep '
            f"this page small (rounds with failures or rejections are kept first, then the "
            f"latest); clients.csv has every client of every round.</p>"
        )
    problem_rounds = [
        r.round for r in report.rounds if r.round in shown and r.clients_failed + r.clients_rejected
    ]
    opened = set(problem_rounds[-MAX_OPEN_ROUNDS:])
    blocks = []
    for r in report.rounds:
        if r.round not in shown:
            continue
        is_open = r.round in opened
        pills = f'<span class="pill ok">{r.clients_succeeded} ok</span>'
        if r.clients_failed:
            pills += f'<span class="pill failed">{r.clients_failed} failed</span>'
        if r.clients_rejected:
            pills += f'<span class="pill rejected">{r.clients_rejected} rejected</span>'
        rows = [_client_row(client) for client in r.clients]
        columns = _CLIENT_COLUMNS
        if simulates_devices(report):
            rows = [row + _device_client_cells(c) for row, c in zip(rows, r.clients, strict=True)]
            columns = _CLIENT_COLUMNS + _DEVICE_CLIENT_COLUMNS
        table = _table(
            columns,
            rows,
            row_classes=[
                ClientStatus.Name(c.status).lower() if c.status in (FAILED, REJECTED) else ""
                for c in r.clients
            ],
        )
        blocks.append(
            f'<details class="round-clients" id="round-{r.round}-clients"'
            f"{' open' if is_open else ''}><summary><strong>Round {r.round}</strong> · "
            f"{r.clients_sampled} sampled{pills}</summary>{table}</details>"
        )
    return note + "".join(blocks)


def _rounds_to_show(report: RunReport) -> set[int]:
    total = sum(len(r.clients) for r in report.rounds)
    if total <= MAX_CLIENT_ROWS:
        return {r.round for r in report.rounds}
    # Rounds with problems first (they are why one reads this table), then the latest ones.
    by_priority = sorted(
        report.rounds,
        key=lambda r: (r.clients_failed + r.clients_rejected == 0, -r.round),
    )
    shown: set[int] = set()
    budget = MAX_CLIENT_ROWS
    for r in by_priority:
        if len(r.clients) > budget:
            break
        shown.add(r.round)
        budget -= len(r.clients)
    return shown


def _client_row(client: ClientResult) -> list[str]:
    status = ClientStatus.Name(client.status)
    eval_status = ClientStatus.Name(client.eval_status)
    sampled_for_eval = client.eval_status != 0
    # A failed client sent no delta: its training figures are absent, not zero.
    trained = client.status != FAILED
    return [
        _td(client.node_id, "text mono"),
        _td(str(client.partition_id) if client.partition_id >= 0 else "—"),
        f'<td class="text"><span class="status {status}">{status}</span></td>',
        _td(client.reason or "", "reason"),
        _td(f"{client.num_examples:,}"),
        _td(format_significant(client.train_loss) if trained else "—"),
        _td(format_seconds(client.kernel_seconds) if trained else "—"),
        _td(f"{client.fuel_used:,}" if client.fuel_used else "—"),
        _td(format_bytes(client.bytes_uploaded), title=f"{client.bytes_uploaded} B"),
        _td(format_bytes(client.bytes_downloaded), title=f"{client.bytes_downloaded} B"),
        # A NaN norm is a finding here (why the delta was rejected), not a missing figure.
        _td(_norm(client.delta_norm) if trained else "—"),
        _td(format_fixed(client.cosine_to_update, 3) if client.status == OK else "—"),
        _td(format_fixed(client.aggregation_weight, 3) if client.status == OK else "—"),
        _td("yes" if client.selected else "no", "text"),
        _td(client.aggregation_note, "text"),
        f'<td class="text"><span class="status {eval_status}">'
        f"{eval_status if sampled_for_eval else 'not sampled'}</span></td>",
        _td(format_significant(client.eval_loss) if sampled_for_eval else "—"),
        _td(format_fixed(client.eval_accuracy, 4) if sampled_for_eval else "—"),
        _td(f"{client.eval_num_examples:,}" if sampled_for_eval else "—"),
        # What the client claimed, where a weight policy clipped it (the note says why).
        _td(
            f"{client.claimed_num_examples:,}" if client.num_examples_note else "",
            title=client.num_examples_note or None,
        ),
        _td(format_fixed(client.clip_factor, 3) if 0 < client.clip_factor < 1 else ""),
        # Ground truth of a simulation with [faults]: what this client was made to do.
        _td(", ".join(filter(None, (client.injected_fault, client.attack))), "text"),
    ]


def _table(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[str]],
    *,
    table_id: str | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    head = "".join(f'<th class="{kind}">{_escape(name)}</th>' for name, kind in columns)
    classes = row_classes or [""] * len(rows)
    body = "".join(
        f'<tr class="{row_class}">' + "".join(cells) + "</tr>"
        if row_class
        else "<tr>" + "".join(cells) + "</tr>"
        for cells, row_class in zip(rows, classes, strict=True)
    )
    id_attribute = f' id="{table_id}"' if table_id else ""
    return (
        f'<div class="table-wrap"><table{id_attribute}><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _td(text: str, kind: str = "", *, title: str | None = None) -> str:
    class_attribute = f' class="{kind}"' if kind else ""
    title_attribute = f' title="{_escape(title)}"' if title else ""
    return f"<td{class_attribute}{title_attribute}>{_escape(text)}</td>"


# --- formatting ---------------------------------------------------------------------------


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def format_fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals; NaN (not measured) as a dash, inf as such."""
    return f"{value:.{digits}f}" if math.isfinite(value) else _non_finite(value)


def format_significant(value: float) -> str:
    """``value`` to 4 significant digits; NaN (not measured) as a dash, inf as such."""
    return f"{value:.4g}" if math.isfinite(value) else _non_finite(value)


def _non_finite(value: float) -> str:
    return "—" if math.isnan(value) else str(value)


def format_seconds(value: float) -> str:
    """Format a duration in ms, s or min, whichever reads best."""
    if not math.isfinite(value):
        return str(value)
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def format_bytes(count: int | float) -> str:
    """``count`` bytes in B, KB, MB or GB (powers of 1000)."""
    scale, unit = byte_unit(float(count))
    return f"{count:.0f} B" if unit == "B" else f"{count / scale:.2f} {unit}"


def _norm(value: float) -> str:
    return "NaN" if math.isnan(value) else format_significant(value)


def _has_time(timestamp) -> bool:
    return timestamp.seconds != 0 or timestamp.nanos != 0


def _timestamp(timestamp) -> str:
    if not _has_time(timestamp):
        return "—"
    moment = timestamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(report: RunReport) -> str:
    if _has_time(report.started_at) and _has_time(report.finished_at):
        seconds = (report.finished_at.ToNanoseconds() - report.started_at.ToNanoseconds()) / 1e9
        return format_seconds(seconds)
    return format_seconds(sum(r.wall_seconds for r in report.rounds))
