"""pylog.console.scrape reads what pylog's /metrics writes, and nothing else crashes it."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.broker.metrics import render_prometheus
import json

from pylog.console.scrape import MetricsFormatError, parse_events, parse_metrics
from pylog.errors import PylogError


def _metrics(topic: str) -> dict:
    row = {"records_in": 10, "bytes_in": 1000, "records_out": 7, "bytes_out": 700, "log_size_bytes": 4096,
           "log_start_offset": 2, "log_end_offset": 10, "high_watermark": 9, "share_in": 0.75, "skewed": True}
    return {"broker": {"id": 3}, "topics": {topic: {"partitions": {0: row, 5: dict(row, skewed=False)}}},
            "groups": {'g"1\\x': {"state": "Stable", "members": 2, "generation": 4, "lag": {topic: {0: 12}}}},
            "skew_warnings_total": 1}


def test_reads_what_render_prometheus_writes_with_escaped_names():
    topic = 'odd"topic\\name'
    m = parse_metrics(render_prometheus(_metrics(topic)))
    row = m.partitions[(topic, 0)]
    assert row == {"records_in": 10, "bytes_in": 1000, "records_out": 7, "bytes_out": 700, "log_size": 4096,
                   "log_start": 2, "log_end": 10, "high_watermark": 9, "share_in": 0.75, "skewed": 1}
    assert m.partitions[(topic, 5)]["skewed"] == 0
    assert m.lag == {('g"1\\x', topic, 0): 12}


def test_reads_a_real_servers_broker_totals():
    text = ("# TYPE pylog_broker_records_in_total counter\npylog_broker_records_in_total 42.0\n"
            "pylog_broker_bytes_out_total 7.0\npylog_broker_info{broker_id=\"0\"} 1\n")
    assert parse_metrics(text).totals == {"records_in": 42.0, "bytes_out": 7.0}


def test_other_families_with_the_same_prefix_are_skipped():
    # a cluster broker writes pylog_partition_count (no labels) beside the per-partition rows
    text = ('pylog_partition_count 6\npylog_partition_leader_epoch{topic="t",partition="0"} 3\n'
            'pylog_partition_records_in_total{topic="t",partition="0"} 5\n')
    assert parse_metrics(text).partitions == {("t", 0): {"records_in": 5.0}}


def test_a_line_it_cannot_read_is_named():
    bad = 'pylog_partition_records_in_total{topic="t",partition="x"} 1\n'
    try:
        parse_metrics(bad)
    except MetricsFormatError as exc:
        assert "pylog_partition_records_in_total" in str(exc)
    else:
        raise AssertionError("no MetricsFormatError")
    try:
        parse_metrics('pylog_partition_records_in_total{topic="t",partition="1"} many\n')
    except MetricsFormatError as exc:
        assert "not a number" in str(exc)
    else:
        raise AssertionError("no MetricsFormatError")


_PIECES = st.sampled_from(["pylog_partition_records_in_total", "pylog_group_lag", "pylog_broker_bytes_in_total",
                           "{", "}", 'topic="', 'partition="', '"', ",", " ", "1", "-2.5e3", "NaN", "\\", "\n",
                           "group=", "\x00", "é", "#"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=200))
def test_fuzz_any_text_parses_or_raises_metrics_format_error(text):
    try:
        parse_metrics(text)
    except MetricsFormatError:
        pass


def test_reads_the_events_document_a_broker_serves():
    body = json.dumps({"broker": 2, "events": [{"seq": 1, "time_ms": 5, "level": "WARNING", "kind": "isr_shrink",
                                                "message": "ISR shrink for t-0: [1, 2] -> [1] (x)", "broker": 2}]})
    assert parse_events(body.encode()) == [{"seq": 1, "time_ms": 5, "level": "WARNING", "kind": "isr_shrink",
                                            "message": "ISR shrink for t-0: [1, 2] -> [1] (x)", "broker": 2}]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["events", "seq", "time_ms", "level", "kind", "message", "broker", "x"]),
                         inner, max_size=6), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_JSON | st.binary(max_size=60))
def test_fuzz_any_events_answer_parses_or_raises_pylog_error(doc):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    try:
        for e in parse_events(body):
            assert isinstance(e["seq"], int) and isinstance(e["message"], str)
            assert e["broker"] is None or isinstance(e["broker"], int)
            hash((e["broker"], e["time_ms"], e["message"]))  # the collector keys on these
    except PylogError:
        pass
