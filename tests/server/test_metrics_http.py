"""--metrics-listener: Prometheus text at /metrics with the server's and the broker's metrics."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families


def _scrape(srv) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=20) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):  # also proves the page parses
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def test_metrics_endpoint(start_server):
    srv = start_server("--metrics-listener", "127.0.0.1:0")
    assert srv.metrics_port
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    admin.create_topics([NewTopic("m", num_partitions=2, replication_factor=1)])["m"].result(30)
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 5})
    for i in range(300):
        p.produce("m", key=b"k%d" % (i % 7), value=b"x" * 100)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "mg", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["m"])
    got = 0
    while got < 200:
        m = c.poll(10)
        assert m is not None, "no record within 10 s"
        assert m.error() is None
        got += 1
    c.commit(asynchronous=False)
    s = _scrape(srv)
    c.close()

    # the server's own: requests and latency per API, connections, network bytes
    assert _value(s, "pylog_server_requests_total", api="Produce") >= 1
    assert _value(s, "pylog_server_requests_total", api="Fetch") >= 1
    assert _value(s, "pylog_server_request_latency_seconds_count", api="Produce") >= 1
    assert _value(s, "pylog_server_request_latency_seconds_bucket", api="Produce", le="+Inf") >= 1
    assert _value(s, "pylog_server_connections") >= 1
    assert _value(s, "pylog_server_network_bytes_in_total") > 300 * 100
    assert _value(s, "pylog_server_network_bytes_out_total") > 200 * 100
    # traffic per topic and per broker: exactly what went in
    assert _value(s, "pylog_topic_records_in_total", topic="m") == 300
    assert _value(s, "pylog_broker_records_in_total") == 300
    assert _value(s, "pylog_topic_bytes_in_total", topic="m") > 300 * 100
    assert _value(s, "pylog_topic_records_out_total", topic="m") >= 200
    # the broker's: per partition offsets, skew, group lag
    ends = [_value(s, "pylog_partition_log_end_offset", topic="m", partition=p) for p in (0, 1)]
    assert sum(ends) == 300
    assert _value(s, "pylog_partition_share_in", topic="m", partition=0) is not None
    lag = [_value(s, "pylog_group_lag", group="mg", topic="m", partition=p) for p in (0, 1)]
    assert sum(x for x in lag if x is not None) == 300 - 200
    assert _value(s, "pylog_skew_warnings_total") is not None


def test_metrics_endpoint_serves_only_metrics(start_server):
    srv = start_server("--metrics-listener", "127.0.0.1:0")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/other", timeout=20)
    assert e.value.code == 404
