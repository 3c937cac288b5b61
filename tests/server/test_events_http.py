"""``GET /events`` on `pylog serve --metrics-listener` and the read-only broker config
``metrics.listener`` that tells the console where each broker's metrics listener is."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from tests.zk import wait_until

from pylog.client.network.admin import AdminClient

SKEW = ["--override", "partition.skew.window.ms=300", "--override", "partition.skew.min.records=50"]


def _get(port: int, path: str):
    """(status, content type, parsed JSON body or the text)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as r:
            body, status, ctype = r.read(), r.status, r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        body, status, ctype = e.read(), e.code, e.headers["Content-Type"]
    return status, ctype, (json.loads(body) if ctype == "application/json" else body.decode())


def _wait_for(what, predicate, timeout_s: float = 30.0):
    return wait_until(predicate, what, timeout_s, 0.1)


def test_events_endpoint_serves_the_log_words_of_a_skew_warning(start_server):
    srv = start_server("--metrics-listener", "127.0.0.1:0", "--log-level", "warning", *SKEW)
    status, ctype, body = _get(srv.metrics_port, "/events")
    assert (status, ctype) == (200, "application/json")
    assert body == {"broker": 0, "events": []}

    from confluent_kafka import Producer

    with AdminClient(srv.bootstrap) as admin:
        admin.create_topic("hot", 4)
        admin.wait_for_topic("hot")
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 1})

    def skewed():
        for i in range(200):  # partition 0 takes 9 of every 12 records
            p.produce("hot", b"v", partition=0 if i % 12 < 9 else 1 + i % 3)
        assert p.flush(30) == 0
        return [e for e in _get(srv.metrics_port, "/events")[2]["events"] if e["kind"] == "skew"]

    events = _wait_for("skew event", skewed)
    e = events[0]
    assert set(e) == {"seq", "time_ms", "level", "kind", "message", "broker"}
    assert (e["seq"], e["level"], e["broker"]) == (1, "WARNING", 0)
    assert e["message"].startswith("partition skew: topic 'hot' partition 0 received")
    # exactly the words of the broker's log line
    lines = [ln for ln in srv.log_text().splitlines() if " WARNING pylog.broker: partition skew:" in ln]
    assert any(ln.endswith(" WARNING pylog.broker: " + e["message"]) for ln in lines), lines
    # --log-level warning still prints no INFO line although the event log listens at INFO
    assert not re.search(r"^\S+ \S+ INFO ", srv.log_text(), re.M)

    all_events = _get(srv.metrics_port, "/events")[2]["events"]
    assert [x["seq"] for x in all_events] == list(range(1, len(all_events) + 1))
    last = all_events[-1]["seq"]
    assert _get(srv.metrics_port, f"/events?after={last}")[2] == {"broker": 0, "events": []}
    assert _get(srv.metrics_port, f"/events?after={last - 1}")[2]["events"] == all_events[-1:]
    assert _get(srv.metrics_port, "/events?after=0")[2]["events"][:len(all_events)] == all_events
    assert _get(srv.metrics_port, "/events/?after=0&other=1")[0] == 200
    # /metrics is unchanged
    status, ctype, text = _get(srv.metrics_port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert re.search(r"^pylog_skew_warnings_total [1-9]", text, re.M)


def test_bad_after_is_a_400_that_says_why_and_other_paths_404(start_server):
    srv = start_server("--metrics-listener", "127.0.0.1:0")
    for query in ("after=", "after=-1", "after=x", "after=1.5", "after=1&after=2", "after=%C2%B2",
                  "after=99999999999999999999999", "after=%201e3", "after=0x10"):
        status, ctype, body = _get(srv.metrics_port, "/events?" + query)
        assert (status, ctype) == (400, "application/json"), query
        assert "after" in body["error"], query
    for path in ("/", "/event", "/events/x", "/metricsx"):
        assert _get(srv.metrics_port, path)[0] == 404, path
    assert _get(srv.metrics_port, "/events?after=7")[:2] == (200, "application/json")


def test_metrics_listener_is_a_read_only_broker_config(start_server):
    from confluent_kafka.admin import AdminClient as CkAdmin, ConfigResource, ConfigSource

    srv = start_server("--metrics-listener", "127.0.0.1:0")
    want = f"127.0.0.1:{srv.metrics_port}"  # the port bound, not the 0 asked for
    with AdminClient(srv.bootstrap) as admin:
        e = admin.describe_configs("0", resource_type="broker")["0"]["metrics.listener"]
        assert (e.value, e.source, e.read_only) == (want, "STATIC_BROKER_CONFIG", True)
        only = admin.describe_configs("0", resource_type="broker", keys=["metrics.listener"])["0"]
        assert list(only) == ["metrics.listener"]
    ck = CkAdmin({"bootstrap.servers": srv.bootstrap})
    (fut,) = ck.describe_configs([ConfigResource("broker", "0")]).values()
    entry = fut.result(20)["metrics.listener"]
    assert entry.value == want and entry.is_read_only
    assert entry.source == ConfigSource.STATIC_BROKER_CONFIG.value
    # the console reaches /events at that address
    host, port = entry.value.rsplit(":", 1)
    with urllib.request.urlopen(f"http://{host}:{port}/events", timeout=20) as r:
        assert json.loads(r.read())["broker"] == 0


def test_metrics_listener_is_null_without_one(start_server):
    from confluent_kafka.admin import AdminClient as CkAdmin, ConfigResource

    srv = start_server()
    with AdminClient(srv.bootstrap) as admin:
        e = admin.describe_configs("0", resource_type="broker")["0"]["metrics.listener"]
        assert (e.value, e.source, e.read_only) == (None, "DEFAULT_CONFIG", True)
    ck = CkAdmin({"bootstrap.servers": srv.bootstrap})
    (fut,) = ck.describe_configs([ConfigResource("broker", "0")]).values()
    assert fut.result(20)["metrics.listener"].value is None


def test_metrics_listener_on_every_address_names_the_advertised_host(start_server):
    srv = start_server("--metrics-listener", "0.0.0.0:0")
    with AdminClient(srv.bootstrap) as admin:
        e = admin.describe_configs("0", resource_type="broker")["0"]["metrics.listener"]
    assert e.value == f"127.0.0.1:{srv.metrics_port}"
