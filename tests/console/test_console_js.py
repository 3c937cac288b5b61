"""console.js in a real browser (issue 14): charts, live refresh, the offline banner.

A small HTTP server in the test (127.0.0.1, port 0, in a thread) serves a page that
follows docs/console.md's contract, the real pylog/console/static files, and chart JSON
and live sections that the test controls; it counts the requests per path.  Headless
Chromium (tests/browser.py) loads the page; the tests read the DOM console.js built.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import (console_errors, console_log, offline_banner, screenshot, updated,
                           wait_for_update, wait_until)

STATIC = Path(__file__).resolve().parents[2] / "pylog" / "console" / "static"
NOW_MS = int(time.time() * 1000) // 1000 * 1000
XSS = '<img src=x onerror="window.pwned=1">'

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>console test</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body>
<nav><a href="/">pylog</a><a href="/topics">topics</a><a href="/groups">groups</a><a href="/events">events</a></nav>
<main>
<h1>test page</h1>
<section class="live" data-refresh="/live?fragment=live"><p id="live-count">initial</p></section>
<div class="charts">
<div class="chart" id="c-lines" data-src="/api/a" data-chart="lines"></div>
<div class="chart" id="c-gap" data-src="/api/a" data-chart="gap"></div>
<div class="chart" id="c-bars" data-src="/api/a" data-chart="bars"></div>
<div class="chart" id="c-many" data-src="/api/a" data-chart="many"></div>
<div class="chart" id="c-empty-line" data-src="/api/b" data-chart="empty-line"></div>
<div class="chart" id="c-empty-bar" data-src="/api/b" data-chart="empty-bar"></div>
<div class="chart" id="c-xss" data-src="/api/b" data-chart="xss"></div>
<div class="chart" id="c-odd" data-src="/api/b" data-chart="odd"></div>
<div class="chart" id="c-odd-bars" data-src="/api/b" data-chart="odd-bars"></div>
<div class="chart" id="c-missing" data-src="/api/b" data-chart="not-in-the-json"></div>
</div>
<div style="height: 3000px">(room to scroll)</div>
</main></body></html>
"""

#: The contract's elements that the stylesheet styles (docs/console.md), no live parts.
STYLED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>console styles</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body>
<nav><a href="/">pylog</a><a href="/topics">topics</a><a href="/groups">groups</a><a href="/events">events</a></nav>
<main>
<h1>orders</h1>
<p>under-replicated <span id="count-under-replicated" class="bad">2</span>
offline <span id="count-offline" class="good">0</span></p>
<div id="skew-warning" class="warning">partition 0 of orders takes 70% of records in</div>
<table id="partitions"><thead><tr><th class="id">partition</th><th class="leader">leader</th>
<th>replicas</th><th>isr</th><th class="log-start">log start</th><th class="log-end">log end</th>
<th class="size">size</th><th class="records-in">records in</th></tr></thead><tbody>
<tr data-partition="0" class="skewed"><td class="id">0</td><td class="leader">1</td>
<td class="replicas"><span class="replica in-sync">1</span><span class="replica out-of-sync">2</span></td>
<td class="isr">1</td><td class="log-start">0</td><td class="log-end">123456</td><td class="size">1.2 MB</td>
<td class="records-in">3400</td></tr>
<tr data-partition="1"><td class="id">1</td><td class="leader">2</td>
<td class="replicas"><span class="replica in-sync">2</span><span class="replica in-sync">3</span></td>
<td class="isr">2,3</td><td class="log-start">0</td><td class="log-end">99</td><td class="size">1 kB</td>
<td class="records-in">1</td></tr>
<tr data-partition="2" class="offline"><td class="id">2</td><td class="leader"></td>
<td class="replicas"><span class="replica out-of-sync">3</span></td>
<td class="isr"></td><td class="log-start">0</td><td class="log-end">7</td><td class="size">12 B</td>
<td class="records-in">0</td></tr>
</tbody></table>
<table id="records"><tbody><tr class="record" data-offset="5"><td class="offset">5</td>
<td class="timestamp">2026-12-07 01:00:00</td><td class="key">k</td><td class="headers"></td>
<td class="value"><pre class="value text">""" + "a long value " * 2000 + """</pre>
<span class="truncated">… 1048576 bytes</span></td></tr></tbody></table>
</main></body></html>
"""


def line(name: str, values: list[float | None], highlight: bool = False) -> dict[str, Any]:
    """A series of one point per second ending now."""
    start = NOW_MS - 1000 * (len(values) - 1)
    return {"name": name, "highlight": highlight,
            "points": [[start + 1000 * i, v] for i, v in enumerate(values)]}


def api_a() -> dict[str, Any]:
    return {"time_ms": NOW_MS, "charts": [
        {"id": "lines", "title": "Bytes in per broker", "unit": "B/s", "kind": "line",
         "series": [line("broker 1", [1.2e6, 1.3e6, 1.1e6, 1.25e6] * 15),
                    line("broker 2", [2e5, 2.5e5, 3e5, 2.2e5] * 15),
                    line("broker 3", [3.1e6, 3.3e6, 2.9e6, 3.4e6] * 15, highlight=True)]},
        {"id": "gap", "title": "Records in", "unit": "/s", "kind": "line",
         "series": [line("p0", [3400, 3500, None, None, 3600, 3300]),
                    line("p1", [100, 120, 130, 110, 90, 100])]},
        # a topic with many partitions: 60 series of 300 points, two highlighted
        {"id": "many", "title": "Records in per partition", "unit": "/s", "kind": "line",
         "series": [line(str(p), [float(p + (i % 7)) for i in range(300)], highlight=p in (7, 41))
                    for p in range(60)]},
        {"id": "bars", "title": "Share of records in", "unit": "%", "kind": "bar",
         "bars": [{"name": "0", "value": 70.0, "highlight": True},
                  {"name": "1", "value": 10.0, "highlight": False},
                  {"name": "2", "value": 12.5, "highlight": False},
                  {"name": "3", "value": 7.5, "highlight": False}]},
    ]}


def api_b() -> dict[str, Any]:
    return {"time_ms": NOW_MS, "charts": [
        {"id": "empty-line", "title": "Lag", "unit": "", "kind": "line",
         "series": [{"name": "p0", "highlight": False, "points": []}]},
        {"id": "empty-bar", "title": "Share", "unit": "%", "kind": "bar", "bars": []},
        {"id": "xss", "title": XSS, "unit": "/s", "kind": "line",
         "series": [line(XSS, [1, 2, 3])]},
        # what a buggy server could send: what is not a point or a number is left out
        {"id": "odd", "title": 7, "unit": None, "kind": "line",
         "series": [None, "x", {"name": None, "points": [None, [NOW_MS], ["a", 2], [NOW_MS - 1000, "x"],
                                                         [NOW_MS, 5], 3]},
                    {"name": "no points", "points": None}]},
        {"id": "odd-bars", "title": "odd bars", "unit": "%", "kind": "bar",
         "bars": [None, {"name": "a", "value": "12"}, {"name": 3, "value": 4, "highlight": "yes"}]},
    ]}


class ConsoleServer:
    """The test's HTTP server: the page, the static files, JSON and live sections.

    ``fail_status`` (a path -> HTTP status) makes those paths fail, ``delay_s`` (a path ->
    seconds) makes them slow; ``hits`` counts the requests per path (without the query),
    ``max_in_flight`` the most requests of a path it answered at once."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.fail_status: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        self.delay_s: dict[str, float] = {}
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.live_version = 0
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve (again, on the same port once it had one)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        with self.lock:
            self.hits[path] += 1
            self.in_flight[path] += 1
            self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
            delay_s = self.delay_s.get(path, 0.0)
        try:
            time.sleep(delay_s)
            self.answer(request, path)
        finally:
            with self.lock:
                self.in_flight[path] -= 1

    def answer(self, request: BaseHTTPRequestHandler, path: str) -> None:
        with self.lock:
            status = self.fail_status.get(path)
            location = self.redirect.get(path)
            version = self.live_version
        if status is not None:
            self.send(request, status, "text/plain", b"injected failure")
        elif location is not None:
            request.send_response(303)
            request.send_header("Location", location)
            request.send_header("Content-Length", "0")
            request.end_headers()
        elif path == "/login":
            body = ('<section class="live"><form id="login" method="post">'
                    '<input name="username"><input name="password" type="password">'
                    '<button type="submit">log in</button></form></section>')
            self.send(request, 200, "text/html; charset=utf-8", body.encode())
        elif path == "/":
            self.send(request, 200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/styled":
            self.send(request, 200, "text/html; charset=utf-8", STYLED_PAGE.encode())
        elif path in ("/static/console.js", "/static/console.css"):
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            self.send(request, 200, f"{kind}; charset=utf-8", (STATIC / Path(path).name).read_bytes())
        elif path == "/api/a":
            self.send(request, 200, "application/json", json.dumps(api_a()).encode())
        elif path == "/api/b":
            self.send(request, 200, "application/json", json.dumps(api_b()).encode())
        elif path == "/live":
            body = (f'<section class="live" data-refresh="/live?fragment=live">'
                    f'<p id="live-count">version {version}</p>'
                    f'<div class="chart" id="c-live" data-src="/api/a" data-chart="gap"></div>'
                    f'</section>')
            self.send(request, 200, "text/html; charset=utf-8", body.encode())
        else:
            self.send(request, 404, "text/plain", b"not found")

    @staticmethod
    def send(request: BaseHTTPRequestHandler, status: int, kind: str, body: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ConsoleServer]:
    s = ConsoleServer()
    s.start()
    try:
        yield s
    finally:
        s.stop()


def open_page(browser: Any, server: ConsoleServer) -> int:
    """Load the test page and wait for console.js's first round; returns its time."""
    browser.get(server.url + "/")
    return wait_for_update(browser, previous=None)


def count(browser: Any, selector: str) -> int:
    return browser.execute_script("return document.querySelectorAll(arguments[0]).length;", selector)


def hover(browser: Any, selector: str) -> None:
    """Move the mouse over the element ``selector``; the charts are redrawn every round,
    so an element found just before a redraw is found again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains

    for _ in range(20):
        try:
            ActionChains(browser).move_to_element(browser.find_element("css selector", selector)).perform()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} was replaced 20 times in a row while the mouse moved to it")


def texts(browser: Any, selector: str) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);", selector)


def test_charts_are_drawn_from_the_contract(browser: Any, server: ConsoleServer) -> None:
    open_page(browser, server)

    # line chart: one g.series per series, one polyline each (no gaps), the highlighted one
    assert browser.find_element("id", "c-lines").get_attribute("data-series") == "3"
    assert count(browser, "#c-lines svg g.series") == 3
    assert count(browser, "#c-lines svg g.series polyline") == 3
    assert texts(browser, "#c-lines svg g.series.highlight") == [""]
    assert browser.execute_script(
        "return document.querySelector('#c-lines g.series.highlight').dataset.name;") == "broker 3"
    highlighted_width = browser.execute_script(
        "return getComputedStyle(document.querySelector('#c-lines g.series.highlight polyline')).strokeWidth;")
    normal_width = browser.execute_script(
        "return getComputedStyle(document.querySelector('#c-lines g.series:not(.highlight) polyline')).strokeWidth;")
    assert float(highlighted_width.rstrip("px")) > float(normal_width.rstrip("px"))
    warning = browser.execute_script(
        "return getComputedStyle(document.querySelector('#c-lines g.series.highlight polyline')).stroke;")
    assert warning == "rgb(255, 152, 48)"  # --warning
    legend = texts(browser, "#c-lines .legend-item")
    assert [t.rstrip("⚠") for t in legend] == ["broker 1", "broker 2", "broker 3"]
    assert texts(browser, "#c-lines .legend-item.highlight") == ["broker 3⚠"]
    # axes: HH:MM:SS times; 3 to 5 y ticks in SI units with the unit
    x_ticks = texts(browser, "#c-lines g.axis.x text.tick")
    assert x_ticks and all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in x_ticks), x_ticks
    y_ticks = texts(browser, "#c-lines g.axis.y text.tick")
    assert 3 <= len(y_ticks) <= 5, y_ticks
    assert all(re.fullmatch(r"\d+(\.\d+)? [kMG]?B/s", t) for t in y_ticks), y_ticks
    assert any(t.endswith(" MB/s") for t in y_ticks), y_ticks
    assert texts(browser, "#c-gap g.axis.y text.tick")[-1].endswith("k/s")

    # a null splits the line: p0 is two polylines, p1 one
    assert browser.find_element("id", "c-gap").get_attribute("data-series") == "2"
    assert count(browser, "#c-gap g.series[data-name='p0'] polyline") == 2
    assert count(browser, "#c-gap g.series[data-name='p1'] polyline") == 1
    first, second = browser.execute_script(
        "return Array.from(document.querySelectorAll(\"#c-gap g.series[data-name='p0'] polyline\"))"
        ".map(p => p.getAttribute('points').split(' ').length);")
    assert (first, second) == (2, 2)

    # bars: one rect per bar, the highlighted one, values labelled
    assert browser.find_element("id", "c-bars").get_attribute("data-bars") == "4"
    assert count(browser, "#c-bars svg rect.bar") == 4
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('#c-bars rect.bar.highlight')).map(r => r.dataset.name);"
    ) == ["0"]
    assert texts(browser, "#c-bars text.bar-value") == ["70%", "10%", "12.5%", "7.5%"]
    heights = browser.execute_script(
        "return Array.from(document.querySelectorAll('#c-bars rect.bar')).map(r => +r.getAttribute('height'));")
    assert heights[0] == max(heights) and heights[3] == min(heights)

    # empty charts
    for chart_id, key in (("c-empty-line", "data-series"), ("c-empty-bar", "data-bars")):
        element = browser.find_element("id", chart_id)
        assert element.get_attribute(key) == "0"
        assert texts(browser, f"#{chart_id} .chart-empty") == ["no data yet"]
        assert count(browser, f"#{chart_id} svg") == 0

    # HTML in names and titles is text: no <img> made, its onerror never ran
    assert texts(browser, "#c-xss .legend-item") == [XSS]
    assert texts(browser, "#c-xss .chart-title") == [XSS]
    assert count(browser, "#c-xss img") == 0
    assert browser.execute_script("return window.pwned === undefined;")

    # many series: all drawn, highlighted ones on top; the legend and the tooltip name
    # the highlighted ones and a bounded number of others
    assert browser.find_element("id", "c-many").get_attribute("data-series") == "60"
    assert count(browser, "#c-many g.series") == 60
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('#c-many g.series')).slice(-2).map(g => g.dataset.name);"
    ) == ["7", "41"]
    legend = texts(browser, "#c-many .legend-item")
    assert len(legend) == 24 and "7⚠" in legend and "41⚠" in legend, legend
    assert texts(browser, "#c-many .legend-more") == ["… and 36 more"]
    hover(browser, "#c-many svg")
    wait_until(browser, lambda d: d.execute_script(
        "const t = document.querySelector('#c-many .chart-tooltip'); return t && !t.hidden;"),
        "the tooltip of the chart with many series")
    # the highlighted first, then the largest values (each in value order)
    names = texts(browser, "#c-many .chart-tooltip .row .name")
    assert names == ["41", "7"] + [str(p) for p in range(59, 49, -1)], names
    assert texts(browser, "#c-many .chart-tooltip .more") == ["… and 48 more"]

    # malformed chart JSON: what is usable is drawn, the rest left out, no error
    assert browser.find_element("id", "c-odd").get_attribute("data-series") == "2"
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('#c-odd g.series'))"
        ".map(g => [g.dataset.name, g.querySelectorAll('polyline').length]);") == [["", 1], ["no points", 0]]
    assert browser.find_element("id", "c-odd-bars").get_attribute("data-bars") == "1"
    assert count(browser, "#c-odd-bars rect.bar.highlight") == 0  # highlight must be true
    assert count(browser, ".chart-error") == 0
    # a chart id the JSON does not have: no data yet
    assert texts(browser, "#c-missing .chart-empty") == ["no data yet"]
    assert offline_banner(browser) is None

    # the hover tooltip: the time and each series' value
    hover(browser, "#c-lines svg")
    wait_until(browser, lambda d: d.execute_script(
        "const t = document.querySelector('#c-lines .chart-tooltip'); return t && !t.hidden;"),
        "the tooltip to show")
    tip_rows = texts(browser, "#c-lines .chart-tooltip .row")
    assert len(tip_rows) == 3 and all(r.endswith("B/s") for r in tip_rows), tip_rows
    assert re.fullmatch(r"\d\d:\d\d:\d\d", texts(browser, "#c-lines .chart-tooltip .time")[0])
    inside_js = ("const c = document.getElementById('c-lines').getBoundingClientRect(),"
                 " t = document.querySelector('#c-lines .chart-tooltip').getBoundingClientRect();"
                 "return t.width > 0 && t.left >= c.left && t.right <= c.right"
                 " && t.top >= c.top && t.bottom <= c.bottom;")
    assert browser.execute_script(inside_js)
    # the next round redraws the chart: the tooltip stays while the mouse does
    wait_for_update(browser)
    assert browser.execute_script(
        "return !document.querySelector('#c-lines .chart-tooltip').hidden;")
    assert browser.execute_script(inside_js)
    screenshot(browser, "console-js-charts")

    # sized to its container, and redrawn when the container's width changes (at 1400 px
    # the grid has two columns, at 1000 px one, wider than either of the two)
    width_js = ("const d = document.getElementById('c-lines'), s = getComputedStyle(d);"
                "return [+d.querySelector('svg').getAttribute('width'),"
                " d.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)];")
    before, room = browser.execute_script(width_js)
    assert abs(before - room) <= 1, (before, room)
    browser.set_window_size(1000, 1000)
    wait_until(browser, lambda d: abs(d.execute_script(width_js)[0] - before) > 50,
               "the line chart to be redrawn at its new width")
    after, room = browser.execute_script(width_js)
    assert abs(after - room) <= 1, (after, room)
    assert count(browser, "#c-lines svg g.series") == 3
    screenshot(browser, "console-js-charts-narrow")

    assert console_errors(browser) == []


def test_live_section_is_replaced_and_each_source_fetched_once_per_round(
        browser: Any, server: ConsoleServer) -> None:
    with server.lock:
        server.live_version = 1
    first = open_page(browser, server)
    assert texts(browser, "#live-count") == ["version 1"]
    # the chart inside the new section is drawn in the same round
    assert count(browser, "#c-live g.series") == 2

    browser.execute_script("window.scrollTo(0, 500);")
    with server.lock:
        server.live_version = 2
    wait_until(browser, lambda d: d.execute_script(
        "const p = document.getElementById('live-count'); return p && p.textContent === 'version 2';"),
        "the live section to show the server's new content")
    assert count(browser, "section.live[data-refresh='/live?fragment=live']") == 1
    assert count(browser, "#live-count") == 1
    assert browser.execute_script("return window.scrollY;") == 500

    # one fetch per distinct data-src per round, although /api/a feeds four charts and
    # /api/b three; /live is fetched once per round too, so they keep step with it (one
    # round may be in flight while the counts are read)
    latest = wait_for_update(browser, str(first))
    latest = wait_for_update(browser, str(latest))
    with server.lock:
        hits = dict(server.hits)
    assert hits["/live"] >= 3
    for src in ("/api/a", "/api/b"):
        assert abs(hits[src] - hits["/live"]) <= 1, hits
    assert hits["/"] == 1 and hits["/static/console.js"] == 1
    screenshot(browser, "console-js-live")
    assert console_errors(browser) == []


def split_failed_requests(entries: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(messages of Chromium's own reports of failed requests, the other SEVERE entries).
    Chromium logs every HTTP error and refused connection as SEVERE (source "network"),
    whatever the script does."""
    errors = console_errors(None, entries)
    network = [e["message"] for e in errors if e.get("source") == "network"]
    return network, [e for e in errors if e.get("source") != "network"]


def test_offline_banner_comes_and_goes(browser: Any, server: ConsoleServer) -> None:
    first = open_page(browser, server)
    assert offline_banner(browser) is None

    # the server answers 500 for one data source, and sends the live section to /login
    # (a SASL session that ended)
    with server.lock:
        server.fail_status["/api/b"] = 500
        server.redirect["/live"] = "/login"
    wait_until(browser, lambda d: updated(d) == "error", "the round to fail")
    banner = offline_banner(browser)
    assert banner is not None and banner.startswith("console lost the cluster: "), banner
    assert "/api/b: HTTP 500" in banner, banner
    assert "/live?fragment=live: the session ended, log in again" in banner, banner
    assert count(browser, "form#login") == 0
    assert count(browser, "#live-count") == 1
    # what did load is still drawn
    assert count(browser, "#c-lines svg g.series") == 3
    screenshot(browser, "console-js-offline")
    # it answers again, but slower than the refresh period: rounds that would start while
    # one is in flight are skipped, so no two requests for /api/b are ever open at once
    with server.lock:
        server.delay_s["/api/b"] = 3.0
        del server.fail_status["/api/b"]
        del server.redirect["/live"]
    wait_for_update(browser, "error")
    assert offline_banner(browser) is None
    with server.lock:
        del server.delay_s["/api/b"]
        assert server.max_in_flight["/api/b"] == 1, server.max_in_flight

    # the server goes away, then comes back on the same port
    server.stop()
    wait_until(browser, lambda d: updated(d) == "error", "the round to fail with the server gone")
    banner = offline_banner(browser)
    assert banner is not None and "unreachable" in banner, banner
    server.start()
    latest = wait_for_update(browser, "error")
    assert latest > first
    assert offline_banner(browser) is None
    assert count(browser, "#c-lines svg g.series") == 3
    assert count(browser, "div#console-offline") == 0

    # Chromium itself logs each failed request as SEVERE (source "network"); the script
    # adds nothing of its own
    network, others = split_failed_requests(console_log(browser))
    assert others == []
    assert network, "Chromium reported no failed request"
    for message in network:
        assert ("/api/b - Failed to load resource: the server responded with a status of 500" in message
                or "net::ERR_CONNECTION_REFUSED" in message), message


def test_stylesheet_marks_what_the_contract_names(browser: Any, server: ConsoleServer) -> None:
    browser.get(server.url + "/styled")
    wait_for_update(browser, previous=None)

    def style(selector: str, prop: str) -> str:
        return browser.execute_script(
            "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];", selector, prop)

    red, green, orange = "rgb(242, 73, 92)", "rgb(115, 191, 105)", "rgb(255, 152, 48)"
    assert style("#count-under-replicated", "color") == red
    assert style("#count-offline", "color") == green
    assert style("tr.skewed td.log-end", "color") == orange
    assert style("tr.offline td.size", "color") == orange
    assert style(".replica.out-of-sync", "color") == orange
    assert style(".replica.in-sync", "color") == green
    assert style("#skew-warning", "borderLeftColor") == orange
    # numbers right-aligned, offsets in monospace
    assert style("td.log-end", "textAlign") == "right"
    assert style("td.records-in", "textAlign") == "right"
    assert style("th.records-in", "textAlign") == "right"
    assert style("td.replicas", "textAlign") == "left"
    assert "mono" in style("td.offset", "fontFamily").lower()
    # zebra rows
    assert style("#partitions tbody tr:nth-child(2)", "backgroundColor") != \
        style("#partitions tbody tr:nth-child(1)", "backgroundColor")
    # a long value wraps and scrolls inside its box
    assert style("pre.value", "whiteSpace") == "pre-wrap"
    assert style("pre.value", "maxHeight") == "240px"
    height, scroll = browser.execute_script(
        "const p = document.querySelector('pre.value'); return [p.clientHeight, p.scrollHeight];")
    assert height <= 240 < scroll
    assert browser.execute_script(
        "const p = document.querySelector('pre.value'); return p.scrollWidth <= p.clientWidth;")
    assert style(".truncated", "color") == orange
    screenshot(browser, "console-css-contract")
    assert console_errors(browser) == []
