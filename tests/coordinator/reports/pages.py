"""Reading the report pages back in tests: their tags, ids, plots, text and table cells."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser


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


def table_rows(page_text: str, table_id: str) -> list[list[str]]:
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
