"""report.html: the page of one run (finals, facts, config, plots, rounds, clients).

Self-contained (:mod:`coordinator.reports.html_parts`): inline CSS, plots as SVG data URIs.
"""

from __future__ import annotations

import math

from protos.report_pb2 import (
    FAILED,
    OK,
    REJECTED,
    ClientResult,
    ClientStatus,
    RoundReport,
    RunReport,
)

from .formatting import (
    format_bytes,
    format_fixed,
    format_norm,
    format_seconds,
    format_significant,
    format_timestamp,
    has_time,
    resume_text,
)
from .html_parts import (
    cell,
    config_value,
    escape,
    html_table,
    page,
    plots_section,
    section,
    status_badge,
)
from .plots import run_plots
from .queries import flat_run_config, latest_finite, simulates_devices

# Above this many client rows the page keeps the rounds with failures or rejections and the
# latest ones; clients.csv always has every row.
MAX_CLIENT_ROWS = 5000
# The latest rounds with failed or rejected clients open by default, at most this many.
MAX_OPEN_ROUNDS = 3


def render_report_html(report: RunReport) -> str:
    """Render the report.html page of one run (self-contained HTML text)."""
    title = report.scenario or "unnamed run"
    body = [
        _header(report),
        _cards(report),
        section("Run", _facts(report) + _config(report)),
        section("Plots", plots_section(run_plots(report))),
        section("Rounds", _rounds_table(report)),
        section("Clients", _clients_section(report)),
        f"<footer>Written by sandflower {escape(report.versions.sandflower or '?')}. "
        "The same figures are in report.json, rounds.csv and clients.csv.</footer>",
    ]
    return page(f"Sandflower report: {title}", body)


# --- page parts ---------------------------------------------------------------------------


def _header(report: RunReport) -> str:
    done = len(report.rounds)
    parts = [f"{done} of {report.num_rounds} rounds"]
    if report.engine:
        parts.append(f"{report.engine} engine")
    parts.append(f"seed {report.seed}")
    error = f'<div class="error">{escape(report.error)}</div>' if report.error else ""
    return (
        f"<header><h1>{escape(report.scenario or 'unnamed run')}"
        f"{status_badge(report.status)}</h1>"
        f'<p class="subtitle">{escape(" · ".join(parts))}</p>{error}</header>'
    )


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
            "started to finished" if has_time(report.finished_at) else "so far (rounds)",
        ),
    ]
    items = "".join(
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>'
        f'<div class="detail">{escape(detail)}</div></div>'
        for label, value, detail in cards
    )
    return f'<section class="cards" id="finals">{items}</section>'


def _metric_card(
    report: RunReport, label: str, final_field: str, round_field: str
) -> tuple[str, str, str]:
    """Make a card with the final figure, or the latest one (run going on, or failed)."""
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


def _facts(report: RunReport) -> str:
    versions = report.versions
    facts = [
        ("scenario", escape(report.scenario)),
        ("status", escape(report.status)),
        ("engine", escape(report.engine)),
        ("seed", str(report.seed)),
        ("rounds", f"{len(report.rounds)} finished of {report.num_rounds} planned"),
        ("started", escape(format_timestamp(report.started_at))),
        ("finished", escape(format_timestamp(report.finished_at))),
        ("kernel sha256", f"<code>{escape(report.kernel_sha256 or '—')}</code>"),
        ("final model sha256", f"<code>{escape(report.final_model_sha256 or '—')}</code>"),
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
            escape(
                f"sandflower {versions.sandflower or '?'} · flwr {versions.flwr or '?'} · "
                f"wasmtime {versions.wasmtime or '?'} · python {versions.python or '?'}"
            ),
        ),
    ]
    if report.error:
        facts.insert(2, ("error", f'<span class="mono">{escape(report.error)}</span>'))
    for event in report.resumes:
        facts.append(("resumed", escape(resume_text(event))))
    items = "".join(f"<dt>{escape(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<dl class="facts" id="facts">{items}</dl>'


def _config(report: RunReport) -> str:
    flat = flat_run_config(report)
    if not flat:
        return '<p class="note" id="config">No run config was recorded.</p>'
    rows = [
        [cell(key, "text mono"), cell(config_value(value), "text mono")]
        for key, value in sorted(flat.items())
    ]
    table = html_table([("key", "text"), ("value", "text")], rows, table_id="config-table")
    return (
        f'<details id="config"><summary>Resolved run config ({len(flat)} keys)</summary>'
        f"{table}</details>"
    )


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
                cell(str(r.round)),
                cell(str(r.clients_sampled)),
                cell(str(r.clients_succeeded)),
                cell(str(r.clients_failed)),
                cell(str(r.clients_rejected)),
                cell(format_significant(r.train_loss)),
                cell(format_significant(r.central_loss)),
                cell(format_fixed(r.central_accuracy, 4)),
                cell(format_significant(r.federated_eval_loss)),
                cell(format_fixed(r.federated_eval_accuracy, 4)),
                cell(format_bytes(r.bytes_uploaded), title=f"{r.bytes_uploaded} B"),
                cell(format_bytes(r.bytes_downloaded), title=f"{r.bytes_downloaded} B"),
                _update_norm_cell(r),
                cell(format_seconds(r.wall_seconds)),
            ]
            + (_device_round_cells(r) if devices else [])
        )
    if devices:
        columns += _DEVICE_ROUND_COLUMNS
    return html_table(columns, rows, table_id="rounds-table")


def _update_norm_cell(r: RoundReport) -> str:
    if r.model_unchanged_reason:
        return cell("unchanged", title=r.model_unchanged_reason)
    return cell(format_significant(r.update_norm))


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


def _device_round_cells(r: RoundReport) -> list[str]:
    return [
        cell(f"{r.sim_round_seconds:.4g} s"),
        cell(f"{r.sim_elapsed_seconds:.5g} s"),
        cell(str(r.stragglers)),
        cell(str(r.clients_dropped)),
        cell(str(r.clients_partial)),
        cell(str(r.clients_offline)),
    ]


def _device_client_cells(client: ClientResult) -> list[str]:
    if not client.device_status:
        return [cell("—"), cell("—"), cell("—"), cell("—", "text")]
    return [
        cell(
            f"{client.sim_seconds:.4g} s",
            title=f"download {client.sim_download_seconds:.4g} s, compute "
            f"{client.sim_compute_seconds:.4g} s, upload {client.sim_upload_seconds:.4g} s",
        ),
        cell(f"{client.steps_done:,} / {client.steps_planned:,}"),
        cell(f"{client.fuel_budget:,}" if client.fuel_budget >= 0 else "none"),
        cell(client.device_status, "text"),
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
        table = html_table(
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
        cell(client.node_id, "text mono"),
        cell(str(client.partition_id) if client.partition_id >= 0 else "—"),
        f'<td class="text"><span class="status {status}">{status}</span></td>',
        cell(client.reason or "", "reason"),
        cell(f"{client.num_examples:,}"),
        cell(format_significant(client.train_loss) if trained else "—"),
        cell(format_seconds(client.kernel_seconds) if trained else "—"),
        cell(f"{client.fuel_used:,}" if client.fuel_used else "—"),
        cell(format_bytes(client.bytes_uploaded), title=f"{client.bytes_uploaded} B"),
        cell(format_bytes(client.bytes_downloaded), title=f"{client.bytes_downloaded} B"),
        # A NaN norm is a finding here (why the delta was rejected), not a missing figure.
        cell(format_norm(client.delta_norm) if trained else "—"),
        cell(format_fixed(client.cosine_to_update, 3) if client.status == OK else "—"),
        cell(format_fixed(client.aggregation_weight, 3) if client.status == OK else "—"),
        cell("yes" if client.selected else "no", "text"),
        cell(client.aggregation_note, "text"),
        f'<td class="text"><span class="status {eval_status}">'
        f"{eval_status if sampled_for_eval else 'not sampled'}</span></td>",
        cell(format_significant(client.eval_loss) if sampled_for_eval else "—"),
        cell(format_fixed(client.eval_accuracy, 4) if sampled_for_eval else "—"),
        cell(f"{client.eval_num_examples:,}" if sampled_for_eval else "—"),
        # What the client claimed, where a weight policy clipped it (the note says why).
        cell(
            f"{client.claimed_num_examples:,}" if client.num_examples_note else "",
            title=client.num_examples_note or None,
        ),
        cell(format_fixed(client.clip_factor, 3) if 0 < client.clip_factor < 1 else ""),
        # Ground truth of a simulation with [faults]: what this client was made to do.
        cell(", ".join(filter(None, (client.injected_fault, client.attack))), "text"),
    ]


def _duration(report: RunReport) -> str:
    if has_time(report.started_at) and has_time(report.finished_at):
        seconds = (report.finished_at.ToNanoseconds() - report.started_at.ToNanoseconds()) / 1e9
        return format_seconds(seconds)
    return format_seconds(sum(r.wall_seconds for r in report.rounds))
