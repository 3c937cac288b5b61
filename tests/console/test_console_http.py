"""The console over HTTP, served by a real `pylog serve --console` (and `pylog console`):
every page answers, names what it cannot find, escapes what the cluster holds, and
shows the cluster's numbers.  The browser tests (test_console_browser.py) look at the
same pages in chromium."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import module_server, start_server  # noqa: F401 (fixtures)
from tests.server.serverproc import server_env
from tests.zk import wait_until

SERVER_ARGS = ("--console", "127.0.0.1:0", "--override", "partition.skew.window.ms=1000")


def get(base: str, path: str) -> Tuple[int, Dict[str, str], str]:
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def api(base: str, path: str) -> Dict[str, Any]:
    status, _, body = get(base, "/api" + path)
    assert status == 200, body
    return json.loads(body)


def wait_for(pred, what: str, timeout_s: float = 30.0) -> Any:
    """tests.zk.wait_until, polling every 0.2 s (each poll is an HTTP request)."""
    return wait_until(pred, what, timeout_s, 0.2)


@pytest.fixture(scope="module")
def console(module_server):
    assert module_server.console_url, f"no console line in: {module_server.stdout_lines}"
    return module_server


def produce(bootstrap: str, topic: str, records, partitions: int = 3) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    fs = a.create_topics([NewTopic(topic, partitions, 1)])
    fs[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for r in records:
        p.produce(topic, **r)
    assert p.flush(30) == 0


def test_every_page_answers_with_its_script_and_no_inline_code(console):
    base = console.console_url
    produce(console.bootstrap, "pages", [{"value": b"v", "partition": 0}])
    wait_for(lambda: "pages" in get(base, "/topics")[2], "the topic on the topics page")
    for path in ("/", "/topics", "/topics/pages", "/topics/pages/0", "/groups", "/events"):
        status, headers, body = get(base, path)
        assert status == 200, (path, body)
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert '<script src="/static/console.js" defer></script>' in body
        assert "<script>" not in body.replace('<script src="/static/console.js" defer></script>', "")
        assert re.search(r'<section class="live" data-refresh="[^"]+fragment=live">', body), path
        frag_path = path + ("&" if "?" in path else "?") + "fragment=live"
        status, _, frag = get(base, frag_path)
        assert status == 200 and frag.startswith('<section class="live"'), (path, frag[:200])
    for name in ("console.js", "console.css"):
        status, headers, body = get(base, "/static/" + name)
        assert status == 200 and len(body) > 500, name


def test_unknown_names_get_a_404_page_naming_them(console):
    base = console.console_url
    produce(console.bootstrap, "known", [{"value": b"a", "partition": 1}, {"value": b"b", "partition": 1}])
    wait_for(lambda: get(base, "/topics/known")[0] == 200, "the topic page")
    cases = {
        "/topics/no-such-topic": "unknown topic 'no-such-topic'",
        "/topics/known/7": "topic 'known' has no partition 7",
        "/topics/known/x": "topic 'known' has no partition 'x'",
        "/topics/known/1?offset=99": "offset 99 is not in known-1 (log start 0, end 2)",
        "/topics/known/1?offset=-5": "offset -5 is not in known-1",
        "/topics/known/1?offset=abc": "offset 'abc' is not a number",
        "/groups/no-such-group": "unknown group 'no-such-group'",
        "/nothing/here": "no page at /nothing/here",
        "/topics/%3Cscript%3Ealert(1)%3C%2Fscript%3E": "unknown topic '&lt;script&gt;alert(1)&lt;/script&gt;'",
    }
    for path, words in cases.items():
        status, _, body = get(base, path)
        assert status == 404, (path, status)
        m = re.search(r'<p id="not-found">(.*?)</p>', body)
        assert m is not None and words.replace("'", "&#x27;") in m.group(1), (path, body[-400:])
    status, _, body = get(base, "/api/topics/no-such-topic")
    assert status == 404 and json.loads(body) == {"error": "unknown topic 'no-such-topic'"}


def test_records_are_escaped_pretty_printed_truncated_and_paged(console):
    base = console.console_url
    big = b"z" * 100_000
    recs = [{"key": b"<b>key</b>", "value": b"<script>window.pwned=1</script>", "partition": 0,
             "headers": [("h<i>", b"<img src=x onerror=alert(1)>")]},
            {"key": b"j", "value": json.dumps({"a": [1, 2], "s": "<tag>"}).encode(), "partition": 0},
            {"value": bytes(range(256)), "partition": 0},
            {"value": big, "partition": 0}]
    recs += [{"value": f"n{i}".encode(), "partition": 0} for i in range(30)]
    recs += [{"value": f"t{i}".encode(), "partition": 1, "timestamp": 1_700_000_000_000 + i} for i in range(30)]
    produce(console.bootstrap, "browse", recs)
    status, _, body = get(base, "/topics/browse/0?limit=4")
    assert status == 200
    rows = re.findall(r'<tr class="record" data-offset="(\d+)">', body)
    assert rows == ["0", "1", "2", "3"]
    assert "<script>window.pwned" not in body and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in body
    assert "&lt;b&gt;key&lt;/b&gt;" in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "h&lt;i&gt;" in body
    assert '<pre class="value json">{\n  &quot;a&quot;: [\n' in body  # pretty-printed
    assert '<pre class="value hex">00 01 02' in body
    # the 100 kB value is cut, its size shown
    assert '<span class="truncated">… 100000 bytes</span>' in body
    shown = re.search(r'data-offset="3">.*?<pre class="value text">(z+)</pre>', body, re.S)
    assert shown is not None and len(shown.group(1)) == 4096
    m = re.search(r'<a id="next" href="([^"]+)"', body)
    assert m is not None and "offset=4" in m.group(1)
    status, _, body2 = get(base, m.group(1).replace("&amp;", "&"))
    assert re.findall(r'data-offset="(\d+)"', body2) == ["4", "5", "6", "7"]
    assert re.search(r'<a id="prev" href="[^"]*offset=0', body2)
    # by timestamp: the first record at or after it
    status, _, body3 = get(base, "/topics/browse/1?timestamp=1700000000010&limit=2")
    assert re.findall(r'data-offset="(\d+)"', body3) == ["10", "11"]
    assert "2023-11-14 22:13:20.010Z" in body3  # the record's own timestamp, in UTC
    # at most 500 per page, whatever is asked
    status, _, body4 = get(base, "/topics/browse/0?limit=100000")
    assert status == 200 and len(re.findall(r'class="record"', body4)) == 34


def test_overview_counts_and_topic_numbers_match_the_broker(console):
    base = console.console_url
    produce(console.bootstrap, "numbers", [{"value": b"x" * 10, "partition": 2} for _ in range(25)])
    doc = wait_for(lambda: (lambda d: d if any(p["partition"] == 2 and p.get("log_end") == 25
                                                 for p in d["partitions"]) else None)(api(base, "/topics/numbers")),
                   "log end 25 of numbers-2 from the broker's metrics")
    p2 = next(p for p in doc["partitions"] if p["partition"] == 2)
    assert p2["log_start"] == 0 and p2["high_watermark"] == 25 and p2["leader"] == 0
    assert p2["log_size"] > 250
    ov = api(base, "/")
    assert ov["counts"] == {"under_replicated": 0, "under_min_isr": 0, "offline": 0}
    assert [b["state"] for b in ov["brokers"]] == ["online"] and ov["brokers"][0]["controller"]
    status, _, html = get(base, "/topics/numbers?fragment=live")
    row = re.search(r'<tr data-partition="2">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="log-end num">25</td>' in row


def test_traffic_charts_show_the_records_produced(console):
    base = console.console_url
    produce(console.bootstrap, "traffic", [])
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": console.bootstrap, "linger.ms": 5})

    def busy() -> Optional[float]:
        for _ in range(200):
            p.produce("traffic", value=b"y" * 50, partition=0)
        p.flush(10)
        chart = next(c for c in api(base, "/topics/traffic")["charts"] if c["id"] == "partition-records-in")
        series = {s["name"]: s for s in chart["series"]}
        pts = [v for _, v in series["partition 0"]["points"] if v]
        return max(pts) if pts else None

    assert wait_for(busy, "a records-in rate of traffic-0 on the topic's chart") > 0
    chart = next(c for c in api(base, "/topics/traffic")["charts"] if c["id"] == "partition-records-in")
    series = {s["name"]: s for s in chart["series"]}
    assert not any(v for _, v in series["partition 1"]["points"])  # nothing was sent there
    charts = {c["id"]: c for c in api(base, "/")["charts"]}
    assert any(v for _, v in charts["broker-records-in"]["series"][0]["points"])
    assert any(v for _, v in charts["broker-bytes-in"]["series"][0]["points"])


def test_a_consumer_groups_lag_appears_on_its_page(console):
    from confluent_kafka import Consumer

    base = console.console_url
    produce(console.bootstrap, "lagged", [{"value": b"r", "partition": 0} for _ in range(40)], partitions=1)
    c = Consumer({"bootstrap.servers": console.bootstrap, "group.id": "lag-group", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.subscribe(["lagged"])
        got = 0
        deadline = time.monotonic() + 60
        while got < 10 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got += 1
                if got == 10:
                    c.commit(message=m, asynchronous=False)
        assert got == 10
        wait_for(lambda: 'data-group="lag-group"' in get(base, "/groups")[2], "the group on the groups page")
        status, _, body = get(base, "/groups/lag-group")
        assert status == 200
        row = re.search(r'<tr data-topic="lagged" data-partition="0">(.*?)</tr>', body, re.S).group(1)
        assert '<td class="committed num">10</td>' in row
        assert re.search(r'<td class="lag num[^"]*">30</td>', row), row
        assert 'data-member="' in body and "lagged-0" in body  # the member and its assignment
    finally:
        c.close()


def test_standalone_console_runs_against_a_broker_and_stops_by_pid(console, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pylog", "console", "--bootstrap-server", console.bootstrap,
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=server_env(), text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/)", line)
        assert m is not None, line
        status, _, body = get(m.group(1), "/")
        assert status == 200 and 'data-broker="0"' in body
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_console_address_must_be_host_and_port(start_server):
    with pytest.raises(RuntimeError, match="--console must be HOST:PORT"):
        start_server("--console", "nonsense")


def test_console_of_a_broker_with_only_an_ssl_listener(start_server, tmp_path):
    """pylog serve --console on a broker whose one listener is SSL (with client
    certificates required): the console reaches it with the broker's own keystore."""
    from tests.server.tlscerts import make_pki

    pki = make_pki(tmp_path / "pki")
    srv = start_server("--listeners", "SSL://127.0.0.1:0", "--console", "127.0.0.1:0",
                       "--override", f"ssl.keystore.location={pki.keystore}",
                       "--override", f"ssl.truststore.location={pki.ca}",
                       "--override", "ssl.client.auth=required")
    assert srv.console_url
    status, _, body = wait_for(lambda: (lambda r: r if r[0] == 200 and 'data-broker="0"' in r[2] else None)(
        get(srv.console_url, "/")), "the broker on the overview")
    assert '<td class="state good">online</td>' in body


_SEGMENTS = st.sampled_from(["topics", "groups", "events", "api", "static", "pages", "0", "-1", "999999999999999999999",
                             "%00", "%ff", "%2F", "..", ".", "", "<script>", "a b", "é", "console.js", "known",
                             "fragment=live", "?", "#"])
_QUERY = st.lists(st.tuples(st.sampled_from(["offset", "timestamp", "limit", "fragment", "kind", "next", "x"]),
                            st.sampled_from(["", "0", "-5", "1e9", "abc", "99999999999999999999999", "live",
                                             "%ff", "<b>", "isr_shrink"])), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_SEGMENTS, min_size=1, max_size=5), _QUERY)
def test_fuzz_any_url_gets_a_page_or_a_named_error_never_a_crash(console, parts, query):
    # what a browser sends: raw '%' sequences kept (%ff, %00 reach the server), the rest encoded
    path = "/" + "/".join(urllib.parse.quote(p, safe="%?#=") for p in parts)
    qs = "&".join(f"{k}={urllib.parse.quote(v, safe='%')}" for k, v in query)
    status, headers, body = get(console.console_url, path + ("?" + qs if qs else ""))
    assert status in (200, 204, 400, 404), (path, qs, status, body[:300])
    if status == 404 and headers.get("content-type", "").startswith("text/html"):
        assert '<p id="not-found">' in body
