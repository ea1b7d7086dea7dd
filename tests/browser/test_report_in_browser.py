"""report.html and compare.html in a real browser: Debian's chromium, headless.

The pages carry no script. To see what the browser saw, a copy of the page gets a small
harness script at the top of <head> that records errors (script errors, images that fail to
load) and each plot's decoded size into attributes of <html>; --dump-dom prints them. The page
itself is also loaded untouched, with chromium's logging on, to check the console stays
silent, and screenshotted.

Chromium is looked for at /usr/bin/chromium. Without it the tests skip, except under CI=true,
where they fail: CI installs it (.ci/run).
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as matplotlib_image

from coordinator.reports.comparison_page import render_comparison
from coordinator.reports.plots import FIGURE_SIZE_INCHES
from coordinator.reports.writer import REPORT_HTML, write_run
from tests.browser.chromium import HEADLESS_FLAGS, require_chromium
from tests.coordinator.report_factory import make_report

pytestmark = pytest.mark.browser

RUN_PLOT_IDS = {
    "plot-accuracy",
    "plot-loss",
    "plot-clients",
    "plot-kernel-time",
    "plot-bytes",
    "plot-delta-norms",
}
COMPARE_PLOT_IDS = {"plot-compare-accuracy", "plot-compare-loss"}
WINDOW = (1280, 2000)
CHROMIUM_FLAGS = [
    *HEADLESS_FLAGS,
    "--enable-logging=stderr",
    "--v=0",
    # Lets the page finish loading (the load event) before the DOM is dumped.
    "--virtual-time-budget=10000",
]

HARNESS = """<script>
(function () {
  var root = document.documentElement, errors = [];
  function note(message) {
    errors.push(message);
    root.setAttribute('data-errors', errors.join(' | '));
  }
  window.addEventListener('error', function (event) {
    var target = event.target;
    note(target && target !== window && target.tagName
      ? 'failed to load ' + target.tagName + '#' + (target.id || '?')
      : String(event.message));
  }, true);
  window.addEventListener('unhandledrejection', function (event) { note(String(event.reason)); });
  var consoleError = console.error;
  console.error = function () { note('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return consoleError.apply(console, arguments); };
  window.addEventListener('load', function () {
    var sizes = [];
    document.querySelectorAll('img').forEach(function (img) {
      sizes.push((img.id || '?') + ':' + (img.complete ? img.naturalWidth : 0) + 'x'
        + (img.complete ? img.naturalHeight : 0));
    });
    root.setAttribute('data-image-sizes', sizes.join(','));
    root.setAttribute('data-loaded', 'true');
  });
})();
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


def test_a_missing_chromium_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    absent = [str(tmp_path / "no-chromium-here"), None]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        require_chromium(absent)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="required"):
        require_chromium(absent)


_profiles = itertools.count()


def run_chromium(chromium: str, tmp_path: Path, page: Path, *extra: str):
    """Run headless chromium on ``page`` with a fresh profile; return the finished process."""
    profile = tmp_path / f"profile-{next(_profiles)}"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    return result


class DumpedDom(HTMLParser):
    """The <html> element's attributes and every <img> of a dumped DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root: dict[str, str | None] = {}
        self.images: list[dict[str, str | None]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "html":
            self.root = dict(attrs)
        elif tag == "img":
            self.images.append(dict(attrs))

    def image_sizes(self) -> dict[str, tuple[int, int]]:
        sizes = {}
        for item in filter(None, (self.root.get("data-image-sizes") or "").split(",")):
            image_id, _, size = item.rpartition(":")
            width, _, height = size.partition("x")
            sizes[image_id] = (int(width), int(height))
        return sizes


def load_in_browser(chromium: str, tmp_path: Path, page: Path) -> DumpedDom:
    """Load a copy of ``page`` with the harness; return what the browser recorded."""
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") == 1, "the harness goes right after <head>"
    harnessed = page.with_name(f"harnessed-{page.name}")
    harnessed.write_text(text.replace("<head>", "<head>" + HARNESS, 1), encoding="utf-8")
    result = run_chromium(chromium, tmp_path, harnessed, "--dump-dom")
    dom = DumpedDom(result.stdout)
    assert dom.root.get("data-loaded") == "true", "the page never finished loading"
    return dom


def console_messages(stderr: str) -> list[str]:
    """Lines chromium logs for the page's console (errors, warnings, logs, uncaught)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def check_plots(dom: DumpedDom, expected_ids: set[str]) -> None:
    plots = [image for image in dom.images if "plot" in (image.get("class") or "")]
    assert {image.get("id") for image in plots} == expected_ids
    assert len(plots) == len(expected_ids), "a plot id is used twice"
    assert dom.root.get("data-errors") is None, dom.root.get("data-errors")
    sizes = dom.image_sizes()
    for plot_id in expected_ids:
        width, height = sizes[plot_id]
        # Decoded at the figure's size: 96 CSS pixels per inch.
        expected = tuple(round(96 * inches) for inches in FIGURE_SIZE_INCHES)
        assert (width, height) == expected, f"{plot_id} decoded as {width}x{height}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def run_folder(tmp_path) -> Path:
    folder = tmp_path / "run"
    write_run(folder, make_report(num_rounds=3, num_clients=4))
    return folder


def test_report_loads_every_plot_without_errors(chromium, tmp_path, run_folder):
    dom = load_in_browser(chromium, tmp_path, run_folder / REPORT_HTML)
    check_plots(dom, RUN_PLOT_IDS)


def test_report_console_is_silent_and_the_screenshot_is_a_real_page(chromium, tmp_path, run_folder):
    screenshot = tmp_path / "report.png"
    result = run_chromium(
        chromium,
        tmp_path,
        run_folder / REPORT_HTML,
        f"--screenshot={screenshot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    )
    assert console_messages(result.stderr) == []
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 50_000, "a page of plots compresses to more than this"
    pixels = matplotlib_image.imread(screenshot)[..., :3]
    not_white = np.any(pixels < 0.9, axis=-1)
    # Text, cards and plots cover a good part of the window; a blank or error page does not.
    assert not_white.mean() > 0.05, f"only {not_white.mean():.1%} of the page is drawn on"
    # The plot colours show up (the accuracy line's blue, the ok bars' teal).
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x6F, 0xEB]) / 255) < 0.08, axis=-1)
    teal = np.all(np.abs(pixels - np.array([0x2A, 0x9D, 0x8F]) / 255) < 0.08, axis=-1)
    assert blue.sum() > 200 and teal.sum() > 2000, (blue.sum(), teal.sum())
    if os.environ.get("SANDFLOWER_KEEP_SCREENSHOTS"):
        shutil.copy(screenshot, Path(os.environ["SANDFLOWER_KEEP_SCREENSHOTS"]) / "report.png")


def test_comparison_loads_in_the_browser(chromium, tmp_path):
    reports = [("fedavg", make_report(num_rounds=3)), ("fedprox", make_report(num_rounds=5))]
    page = render_comparison(reports, tmp_path / "cmp", target_accuracy=0.9)
    dom = load_in_browser(chromium, tmp_path, page)
    check_plots(dom, COMPARE_PLOT_IDS)
    screenshot = tmp_path / "compare.png"
    result = run_chromium(
        chromium, tmp_path, page, f"--screenshot={screenshot}", "--window-size=1280,1200"
    )
    assert console_messages(result.stderr) == []
    assert png_size(screenshot) == (1280, 1200)
    if os.environ.get("SANDFLOWER_KEEP_SCREENSHOTS"):
        shutil.copy(screenshot, Path(os.environ["SANDFLOWER_KEEP_SCREENSHOTS"]) / "compare.png")


def test_the_checks_catch_a_broken_page(chromium, tmp_path):
    # The same checks on a page with a broken plot and a failing script must fail.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img class="plot" id="plot-accuracy" src="data:image/svg+xml;base64,AAAA">'
        "<script>console.error('boom'); notDefined();</script></body></html>"
    )
    dom = load_in_browser(chromium, tmp_path, page)
    errors = dom.root.get("data-errors") or ""
    assert "failed to load IMG#plot-accuracy" in errors
    assert "notDefined" in errors and "console.error: boom" in errors
    with pytest.raises(AssertionError):
        check_plots(dom, {"plot-accuracy"})
    result = run_chromium(chromium, tmp_path, page)
    messages = console_messages(result.stderr)
    assert any("boom" in line for line in messages)
    assert any("Uncaught ReferenceError" in line for line in messages)
