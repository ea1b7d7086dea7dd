"""The building blocks the report pages share: the style sheet, page frame, sections, tables.

No script, no external stylesheet, font or image: a page can be mailed, archived or opened
offline and looks the same. Every text put into a page goes through :func:`escape`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence

from .plots import Plot

CSS = """
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


def page(title: str, body: Iterable[str]) -> str:
    """Wrap the ``body`` parts in a whole HTML document titled ``title``, with the styles."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )


def section(title: str, content: str) -> str:
    """Make a titled section; its id is the title in lower case with dashes."""
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>'


def status_badge(status: str) -> str:
    """Make a coloured badge for a run status (completed, failed, running; others grey)."""
    kind = status if status in ("completed", "failed", "running") else "other"
    return f'<span class="badge {kind}">{escape(status or "unknown")}</span>'


def config_value(value: object) -> str:
    """Show a run config value: text as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def plots_section(plots: Sequence[Plot]) -> str:
    """Lay the plots out as figures with their captions, in a responsive grid."""
    figures = "".join(
        f'<figure><img class="plot" id="{plot.plot_id}" alt="{escape(plot.title)}" '
        f'src="{plot.svg_data_uri}"><figcaption>{escape(plot.caption)}</figcaption></figure>'
        for plot in plots
    )
    return f'<div class="plots">{figures}</div>'


def html_table(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[str]],
    *,
    table_id: str | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    """Make a table; ``columns`` are (title, CSS class) pairs, ``rows`` :func:`cell` strings."""
    head = "".join(f'<th class="{kind}">{escape(name)}</th>' for name, kind in columns)
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


def cell(text: str, kind: str = "", *, title: str | None = None) -> str:
    """One table cell holding ``text`` (escaped), with CSS class ``kind`` and a tooltip."""
    class_attribute = f' class="{kind}"' if kind else ""
    title_attribute = f' title="{escape(title)}"' if title else ""
    return f"<td{class_attribute}{title_attribute}>{escape(text)}</td>"


def escape(text: str) -> str:
    """``text`` made safe for HTML content and attribute values."""
    return html.escape(str(text), quote=True)
