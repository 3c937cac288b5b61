"""The console in a real browser against a real three-broker cluster (issue 14 point 5).

Three `pylog serve` processes on a private ZooKeeper; broker 2 serves the console (any
broker shows the whole cluster).  Headless chromium (tests/browser.py) loads every page
and the test checks what it shows against the cluster: brokers, racks and controller as
Metadata tells them; a follower stopped with SIGSTOP drops out of the ISR on the page and
the under-replicated count turns red, and comes back; a hot key's partition is
highlighted with the partition.skew warning beside the chart; a consumer group's lag
appears and drains; a ``<script>`` stored in a record does not run.  No page logs a
console error; screenshots are saved as test artifacts (tests/browser.py says where).
"""
from __future__ import annotations

import threading
import time
from typing import Any, List

from tests.browser import console_errors, screenshot, wait_for_update, wait_until
from tests.cluster.procs import create_topic, describe, process_cluster  # noqa: F401 (fixture)

from pylog.client.partitioner import murmur2_partition

TOPIC = "orders"
PARTITIONS = 6
HOT_KEY = b"customer-42"


# Every read is one script run in the page: the live sections are replaced every 2 s, so
# element handles kept across two calls may go stale; a script sees one state of the page.
def count(driver: Any, selector: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))


def texts(driver: Any, selector: str) -> List[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim());", selector))


def text_of(driver: Any, selector: str) -> str:
    found = texts(driver, selector)
    return found[0] if found else ""


def attrs(driver: Any, selector: str, name: str) -> List[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]) || '');",
        selector, name))


def rows_of(driver: Any, selector: str, cells: List[str]) -> List[List[Any]]:
    """For each row matched: the innerText of each cell selector (a list when it matches several)."""
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), r => arguments[1].map(c => {"
        " const m = Array.from(r.querySelectorAll(c), e => e.innerText.trim());"
        " return m.length === 1 ? m[0] : m; }));", selector, cells))


def no_console_errors(driver: Any, page: str, allow: str = "") -> None:
    errors = [e for e in console_errors(driver) if not (allow and allow in e.get("message", ""))]
    assert errors == [], f"console errors on {page}: {errors}"


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for_update(driver, previous=None)


class HotProducer:
    """Produces to TOPIC until stopped: nine records in ten with HOT_KEY."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        # murmur2_random: the Java client's partitioner (and pylog's), so HOT_KEY's partition is known
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "1",
                                  "partitioner": "murmur2_random"})
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            for _ in range(100):
                key = HOT_KEY if i % 10 else f"k{i}".encode()
                self.producer.produce(TOPIC, key=key, value=b"x" * 100)
                i += 1
            self.producer.poll(0)
            self.sent = i
            time.sleep(0.02)
        self.producer.flush(30)

    def __enter__(self) -> "HotProducer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def test_console_pages_match_the_cluster_in_a_browser(process_cluster, browser):
    cluster = process_cluster(3, racks=["rack-a", "rack-b", "rack-c"], consoles={2: "127.0.0.1:0"}, overrides={
        "partition.skew.window.ms": 2000, "partition.skew.min.records": 200})
    base = cluster.brokers[2].console_url.rstrip("/")
    create_topic(cluster, TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})
    driver = browser

    # ---- overview: every broker with its rack, the controller, nothing under-replicated
    open_page(driver, base + "/")
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=20)
    wait_until(driver, lambda d: count(d, "#brokers tr[data-broker]") == 3, "three brokers on the overview")
    rows = rows_of(driver, "#brokers tr[data-broker]", ["td.id", "td.rack", "td.state", "td.controller"])
    assert [r[:3] for r in rows] == [["1", "rack-a", "online"], ["2", "rack-b", "online"], ["3", "rack-c", "online"]]
    assert [r[0] for r in rows if r[3] == "controller"] == [str(md.controller_id)]
    assert text_of(driver, "#count-under-replicated") == "0"
    assert "good" in attrs(driver, "#count-under-replicated", "class")[0]
    no_console_errors(driver, "the overview")

    hot = murmur2_partition(HOT_KEY, PARTITIONS)
    with HotProducer(cluster.bootstrap) as producer:
        # ---- the per-broker charts draw the traffic
        wait_until(driver, lambda d: count(d, 'div.chart[data-chart="broker-records-in"] g.series') == 3
                   and count(d, 'div.chart[data-chart="broker-records-in"] g.series polyline'),
                   "a line per broker on the records-in chart")
        screenshot(driver, "overview")

        # ---- topic page: the hot key's partition is highlighted, the skew warning beside the chart
        open_page(driver, f"{base}/topics/{TOPIC}")
        wait_until(driver, lambda d: attrs(d, "#partitions tr.skewed", "data-partition")
                   == [str(hot)], f"partition {hot} (the hot key's) and only it marked skewed")
        # the broker's own WARNING words, once the console has read them from its /events
        warning = wait_until(driver, lambda d: (lambda t: t if f"topic 'orders' partition {hot} received" in t
                                                else None)(text_of(d, "#skew-warning")),
                             "the broker's skew WARNING beside the chart")
        assert warning.startswith("partition skew: ") and "fair share" in warning
        wait_until(driver, lambda d: count(d, 'div.chart[data-chart="partition-share"] .highlight'),
                   "the hot partition's bar highlighted")
        wait_until(driver, lambda d: count(d, 'div.chart[data-chart="partition-records-in"] .highlight'),
                   "the hot partition's line highlighted")
        # the numbers on the page are the cluster's
        shown = {r[0]: r[1:] for r in rows_of(driver, "#partitions tr[data-partition]",
                                               ["td.partition", "td.leader", "td.replicas span.replica"])}
        for p in describe(cluster, TOPIC):
            leader, replicas = shown[str(p["partition"])]
            assert leader == str(p["leader"]) and replicas == [str(r) for r in p["replicas"]]
        screenshot(driver, "topic")
        no_console_errors(driver, "the topic page")

        # ---- a follower stopped with SIGSTOP leaves the ISR on the page, and comes back
        victim = 3
        cluster.brokers[victim].pause()
        try:
            wait_until(driver, lambda d: str(victim) in texts(d, "#partitions span.replica.out-of-sync"),
                       f"broker {victim} shown out of sync",
                       timeout_s=60)
            assert "bad" in attrs(driver, "#count-under-replicated", "class")[0]
            open_page(driver, base + "/")
            wait_until(driver, lambda d: text_of(d, "#count-under-replicated") not in ("", "0"),
                       "the overview's under-replicated count above 0")
            assert "bad" in attrs(driver, "#count-under-replicated", "class")[0]
            screenshot(driver, "overview-under-replicated")
            open_page(driver, base + "/events")
            shrink = wait_until(driver, lambda d: texts(d, '#events li[data-kind="isr_shrink"]'),
                                "an ISR shrink on the events page")
            assert any("ISR shrink" in t for t in shrink)
        finally:
            cluster.brokers[victim].resume()
        open_page(driver, f"{base}/topics/{TOPIC}")
        wait_until(driver, lambda d: not count(d, "#partitions span.replica.out-of-sync")
                   and text_of(d, "#count-under-replicated") == "0", "every replica back in sync", timeout_s=60)
        open_page(driver, base + "/events")
        wait_until(driver, lambda d: count(d, '#events li[data-kind="isr_expand"]'),
                   "an ISR expand on the events page")
        screenshot(driver, "events")
        no_console_errors(driver, "the events page")
        assert producer.sent > 0

    # ---- a consumer group's lag appears and drains
    from confluent_kafka import Consumer, Producer, TopicPartition

    create_topic(cluster, "lagging", 1, 3)
    p = Producer({"bootstrap.servers": cluster.bootstrap})
    for i in range(100):
        p.produce("lagging", value=f"r{i}".encode())
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "readers", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition("lagging", 0, 0)])
        got = 0
        while got < 20:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got += 1
        c.commit(offsets=[TopicPartition("lagging", 0, 20)], asynchronous=False)
        open_page(driver, base + "/groups/readers")
        lag_cell = '#offsets tr[data-topic="lagging"][data-partition="0"] td.lag'
        wait_until(driver, lambda d: text_of(d, lag_cell) == "80", "lag 80 on the group page")
        assert text_of(driver, '#offsets tr[data-topic="lagging"] td.committed') == "20"
        c.commit(offsets=[TopicPartition("lagging", 0, 100)], asynchronous=False)
        wait_until(driver, lambda d: text_of(d, lag_cell) == "0", "the lag drained to 0 (live refresh)")
        wait_until(driver, lambda d: count(d, 'div.chart[data-chart="group-lag"] svg'), "the lag chart")
        screenshot(driver, "group")
        no_console_errors(driver, "the group page")
    finally:
        c.close()

    # ---- a <script> stored in a record is shown, not run
    p.produce("lagging", key=b'<img src=x onerror="window.__pylog_pwned_key=1">',
              value=b"<script>window.__pylog_pwned=1</script>")
    assert p.flush(30) == 0
    open_page(driver, base + "/topics/lagging/0?offset=100")
    cell = wait_until(driver, lambda d: text_of(d, 'tr.record[data-offset="100"] td.value'), "the record's value")
    assert cell == "<script>window.__pylog_pwned=1</script>"
    assert text_of(driver, 'tr.record[data-offset="100"] td.key') == '<img src=x onerror="window.__pylog_pwned_key=1">'
    assert driver.execute_script("return [window.__pylog_pwned, window.__pylog_pwned_key];") == [None, None]
    screenshot(driver, "records")
    no_console_errors(driver, "the records page")

    # ---- a 404 page names what it did not find
    driver.get(base + "/topics/no-such-topic")
    assert text_of(driver, "#not-found") == "unknown topic 'no-such-topic'"
    no_console_errors(driver, "the 404 page", allow="404")
