"""pylog.broker.metrics: traffic counters, partition skew detection (fake clock), and
the Prometheus text format (parsed back by a strict parser written here)."""
from __future__ import annotations

import logging
import math
import re
import threading
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.broker.metrics import (
    PROMETHEUS_CONTENT_TYPE,
    SkewDetector,
    TrafficMetrics,
    render_prometheus,
)
from pylog.errors import InvalidConfig

# ============================================================ strict parser

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _unescape(s: str, allowed: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            assert i + 1 < len(s), f"dangling backslash in {s!r}"
            nxt = s[i + 1]
            assert nxt in allowed, f"bad escape \\{nxt} in {s!r}"
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_value(s: str) -> float:
    if s in ("NaN", "+Inf", "-Inf"):
        return float(s.replace("+", ""))
    assert re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s), f"bad value {s!r}"
    return float(s)


def _parse_labels(line: str, i: int):
    """Parses `{name="value",...}` starting at line[i] == '{'; returns (labels, next i)."""
    assert line[i] == "{"
    i += 1
    labels = []
    while line[i] != "}":
        m = _LABEL_NAME.match(line, i)
        assert m, f"bad label name at {i} in {line!r}"
        name = m.group(0)
        i = m.end()
        assert line[i:i + 2] == '="', f"expected =\" at {i} in {line!r}"
        i += 2
        j = i
        while line[j] != '"':
            assert line[j] != "\n"
            j += 2 if line[j] == "\\" else 1
        labels.append((name, _unescape(line[i:j], '\\"n')))
        i = j + 1
        if line[i] == ",":
            i += 1
            assert line[i] != "}", "trailing comma"
        else:
            assert line[i] == "}", f"expected , or }} at {i} in {line!r}"
    names = [n for n, _ in labels]
    assert len(names) == len(set(names)), f"repeated label in {line!r}"
    return tuple(sorted(labels)), i + 1


def parse_exposition(text: str) -> dict:
    """Parses Prometheus text format 0.0.4 strictly (as this renderer must produce it):
    every family has exactly one HELP and one TYPE line before its samples, samples of a
    family are contiguous, no series repeats, no timestamps, no blank lines.

    Returns {family: {"type", "help", "samples": {labels tuple: value}}}.
    """
    assert text == "" or text.endswith("\n"), "output must end with a newline"
    families: dict = {}
    current = None
    closed = set()
    for line in text[:-1].split("\n") if text else []:
        assert line, "blank line"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (" + _NAME + r") (.*)", line)
            assert m, f"bad comment line {line!r}"
            kind, name, rest = m.groups()
            if name != current:
                assert name not in families and name not in closed, f"{name} described twice"
                if current is not None:
                    closed.add(current)
                current = name
                families[name] = {"type": None, "help": None, "samples": {}}
            fam = families[name]
            assert not fam["samples"], f"{kind} after samples of {name}"
            if kind == "HELP":
                assert fam["help"] is None, f"two HELP lines for {name}"
                fam["help"] = _unescape(rest, "\\n")
            else:
                assert fam["type"] is None, f"two TYPE lines for {name}"
                assert rest in _TYPES, f"bad type {rest!r}"
                fam["type"] = rest
            continue
        m = re.match(_NAME, line)
        assert m, f"bad sample line {line!r}"
        name = m.group(0)
        assert name == current, f"sample of {name} outside its family block ({current})"
        fam = families[name]
        assert fam["type"] is not None and fam["help"] is not None, f"{name} lacks HELP/TYPE"
        i = m.end()
        labels = ()
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i)
        assert line[i] == " ", f"expected a space before the value in {line!r}"
        value_text = line[i + 1:]
        assert " " not in value_text, f"timestamp or junk after the value in {line!r}"
        value = _parse_value(value_text)
        assert labels not in fam["samples"], f"repeated series {name}{labels}"
        if fam["type"] == "counter":
            assert value >= 0 or math.isnan(value), f"negative counter {line!r}"
        fam["samples"][labels] = value
    for name, fam in families.items():
        assert fam["type"] is not None and fam["help"] is not None, name
    return families


def test_parser_rejects_malformed_text():
    good = '# HELP a x\n# TYPE a gauge\na{t="1"} 1\n'
    parse_exposition(good)
    for bad in ['# HELP a x\n# TYPE a gauge\na{t="1"} 1',               # no final newline
                '# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n',     # two TYPEs
                '# HELP a x\na 1\n',                                     # no TYPE
                '# HELP a x\n# TYPE a gauge\na{t="\\q"} 1\n',            # bad escape
                '# HELP a x\n# TYPE a gauge\na{t="1"} 1\na{t="1"} 2\n',  # repeated series
                '# HELP a x\n# TYPE a counter\na -1\n',                  # negative counter
                '# HELP a x\n# TYPE a gauge\na 1 123\n',                 # timestamp
                '# HELP a x\n# TYPE a gauge\na 1\n# HELP b y\n# TYPE b gauge\nb 1\na 2\n']:
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# ============================================================ rendering

def _full_metrics() -> dict:
    return {
        "broker": {"id": 3},
        "topics": {
            "orders": {"partitions": {
                0: {"records_in": 10, "bytes_in": 1000, "records_out": 20, "bytes_out": 2000,
                    "log_size_bytes": 4096, "log_start_offset": 0, "log_end_offset": 10,
                    "high_watermark": 10, "share_in": 0.75, "skewed": True},
                1: {"records_in": 3, "bytes_in": 300, "records_out": 0, "bytes_out": 0,
                    "log_size_bytes": 512, "log_start_offset": 2, "log_end_offset": 3,
                    "high_watermark": 3, "share_in": 0.25, "skewed": False},
            }},
            'we"ird\\topic\nname': {"partitions": {
                0: {"records_in": 1, "bytes_in": 2, "records_out": 3, "bytes_out": 4,
                    "log_size_bytes": 5, "log_start_offset": 6, "log_end_offset": 7,
                    "high_watermark": 7, "share_in": 0.0, "skewed": False},
            }},
        },
        "groups": {"billing": {"state": "Stable", "members": 2, "generation": 5,
                               "lag": {"orders": {0: 4, 1: 0}}}},
        "skew_warnings_total": 7,
    }


def test_render_full_schema_and_parse_back():
    m = _full_metrics()
    text = render_prometheus(m)
    fams = parse_exposition(text)

    assert fams["pylog_broker_info"]["samples"] == {(("broker_id", "3"),): 1.0}
    expected_types = {
        "pylog_partition_records_in_total": "counter", "pylog_partition_bytes_in_total": "counter",
        "pylog_partition_records_out_total": "counter", "pylog_partition_bytes_out_total": "counter",
        "pylog_partition_log_size_bytes": "gauge", "pylog_partition_log_start_offset": "gauge",
        "pylog_partition_log_end_offset": "gauge", "pylog_partition_high_watermark": "gauge",
        "pylog_partition_share_in": "gauge", "pylog_partition_skewed": "gauge",
    }
    field_of = {name: name[len("pylog_partition_"):].replace("_total", "") for name in expected_types}
    for name, mtype in expected_types.items():
        assert fams[name]["type"] == mtype
        got = fams[name]["samples"]
        want = {}
        for topic, t in m["topics"].items():
            for p, row in t["partitions"].items():
                want[(("partition", str(p)), ("topic", topic))] = float(row[field_of[name]])
        assert got == want, name

    assert fams["pylog_group_state"]["samples"] == {(("group", "billing"), ("state", "Stable")): 1.0}
    assert fams["pylog_group_members"]["samples"] == {(("group", "billing"),): 2.0}
    assert fams["pylog_group_generation"]["samples"] == {(("group", "billing"),): 5.0}
    assert fams["pylog_group_lag"]["samples"] == {
        (("group", "billing"), ("partition", "0"), ("topic", "orders")): 4.0,
        (("group", "billing"), ("partition", "1"), ("topic", "orders")): 0.0}
    assert fams["pylog_skew_warnings_total"] == {
        "type": "counter", "help": fams["pylog_skew_warnings_total"]["help"], "samples": {(): 7.0}}
    # the awkward topic name is escaped on the wire, and comes back intact
    assert 'topic="we\\"ird\\\\topic\\nname"' in text
    assert "\nname" not in text.replace("\\nname", "")


def test_unknown_numeric_fields_render_generically():
    m = _full_metrics()
    m["topics"]["orders"]["partitions"][0].update(
        isr_shrinks_total=4, under_replicated=True, leader="broker-1", lag_ms=1.5)
    m["topics"]["orders"]["partitions"][1].update(isr_shrinks_total=0, under_replicated=False)
    m["broker"]["controller_active"] = 1
    m["broker"]["rack"] = "r1"                     # not numeric: skipped
    m["offline_partitions"] = 2
    m["leader_elections_total"] = 9
    m["groups"]["billing"]["rebalances_total"] = 3
    fams = parse_exposition(render_prometheus(m))
    isr = fams["pylog_partition_isr_shrinks_total"]
    assert isr["type"] == "counter"
    assert isr["samples"] == {(("partition", "0"), ("topic", "orders")): 4.0,
                              (("partition", "1"), ("topic", "orders")): 0.0}
    ur = fams["pylog_partition_under_replicated"]
    assert ur["type"] == "gauge"
    assert ur["samples"][(("partition", "0"), ("topic", "orders"))] == 1.0
    assert fams["pylog_partition_lag_ms"]["samples"] == {(("partition", "0"), ("topic", "orders")): 1.5}
    assert "pylog_partition_leader" not in fams
    assert fams["pylog_controller_active"] == {"type": "gauge", "help": fams["pylog_controller_active"]["help"],
                                               "samples": {(): 1.0}}
    assert "pylog_rack" not in fams
    assert fams["pylog_offline_partitions"]["samples"] == {(): 2.0}
    assert fams["pylog_leader_elections_total"]["type"] == "counter"
    assert fams["pylog_group_rebalances_total"]["type"] == "counter"
    assert fams["pylog_group_rebalances_total"]["samples"] == {(("group", "billing"),): 3.0}


def test_special_float_values():
    m = {"topics": {"t": {"partitions": {0: {"share_in": float("nan"), "x": float("inf"),
                                             "y": float("-inf"), "z": 1e-7}}}}}
    fams = parse_exposition(render_prometheus(m))
    labels = (("partition", "0"), ("topic", "t"))
    assert math.isnan(fams["pylog_partition_share_in"]["samples"][labels])
    assert fams["pylog_partition_x"]["samples"][labels] == math.inf
    assert fams["pylog_partition_y"]["samples"][labels] == -math.inf
    assert fams["pylog_partition_z"]["samples"][labels] == 1e-7


def test_empty_and_partial_dicts():
    assert render_prometheus({}) == ""
    assert render_prometheus({"topics": {}, "groups": {}}) == ""
    fams = parse_exposition(render_prometheus({"skew_warnings_total": 0}))
    assert fams["pylog_skew_warnings_total"]["samples"] == {(): 0.0}
    assert PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("bad,match", [
    ({"topics": []}, "must be a mapping"),
    ({"topics": {"t": {"partitions": {"0": {"records_in": 1}}}}}, "partition keys must be ints"),
    ({"topics": {"t": {"partitions": {True: {"records_in": 1}}}}}, "partition keys must be ints"),
    ({"topics": {"t": {"partitions": {0: {"bad-name": 1}}}}}, "not a valid Prometheus metric name"),
    ({"topics": {"t": {"partitions": {0: 5}}}}, "must be a mapping"),
    ({"groups": {"g": {"lag": {"t": {"x": 1}}}}}, "partition keys must be ints"),
])
def test_bad_shapes_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        render_prometheus(bad)


def test_same_family_from_two_levels_is_merged():
    # A broker-level field that names a partition family joins it (one HELP/TYPE).
    text = render_prometheus({"topics": {"t": {"partitions": {0: {"x_total": 1}}}},
                              "partition_x_total": 5})
    fams = parse_exposition(text)
    assert fams["pylog_partition_x_total"]["samples"] == {
        (("partition", "0"), ("topic", "t")): 1.0, (): 5.0}


def test_repeated_series_raise():
    # An extra field that names a known family for the same labels.
    with pytest.raises(ValueError, match="two samples"):
        render_prometheus({"topics": {"t": {"partitions": {0: {"records_in": 1,
                                                                "records_in_total": 2}}}}})
    with pytest.raises(ValueError, match="two samples"):
        render_prometheus({"broker": {"skew_warnings_total": 1}, "skew_warnings_total": 2})


_label_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_label_text,
                       st.dictionaries(st.integers(0, 10_000),
                                       st.fixed_dictionaries({
                                           "records_in": st.integers(0, 2**63),
                                           "bytes_out": st.integers(0, 2**63),
                                           "share_in": st.floats(0, 1),
                                           "skewed": st.booleans(),
                                           "log_end_offset": st.integers(-1, 2**63)}),
                                       max_size=4),
                       max_size=4),
       st.dictionaries(_label_text, st.text(max_size=8), max_size=3),
       st.integers(0, 2**40))
def test_round_trip_arbitrary_names_and_values(topics, group_states, warnings):
    m = {"broker": {"id": 1},
         "topics": {t: {"partitions": ps} for t, ps in topics.items()},
         "groups": {g: {"state": s, "members": 1, "generation": 0, "lag": {}}
                    for g, s in group_states.items()},
         "skew_warnings_total": warnings}
    fams = parse_exposition(render_prometheus(m))
    for t, ps in topics.items():
        for p, row in ps.items():
            labels = (("partition", str(p)), ("topic", t))
            assert fams["pylog_partition_records_in_total"]["samples"][labels] == float(row["records_in"])
            assert fams["pylog_partition_bytes_out_total"]["samples"][labels] == float(row["bytes_out"])
            assert fams["pylog_partition_share_in"]["samples"][labels] == row["share_in"]
            assert fams["pylog_partition_skewed"]["samples"][labels] == float(row["skewed"])
            assert fams["pylog_partition_log_end_offset"]["samples"][labels] == float(row["log_end_offset"])
    for g, s in group_states.items():
        assert fams["pylog_group_state"]["samples"][(("group", g), ("state", s))] == 1.0
    assert fams["pylog_skew_warnings_total"]["samples"] == {(): float(warnings)}


# ============================================================ traffic counters

def test_counters_sum_per_partition_and_snapshot_schema():
    tm = TrafficMetrics(window_ms=1000, min_records=10**9)
    tm.record_in("a", 0, 5, 500, now_ms=10)
    tm.record_in("a", 0, 2, 200, now_ms=20)
    tm.record_in("a", 2, 1, 100, now_ms=30)
    tm.record_out("a", 0, 4, 400, now_ms=40)
    tm.record_out("b", 1, 3, 30, now_ms=50)
    snap = tm.snapshot(now_ms=60)
    assert set(snap) == {"topics", "skew_warnings_total"}
    a = snap["topics"]["a"]["partitions"]
    assert a[0] == {"records_in": 7, "bytes_in": 700, "records_out": 4, "bytes_out": 400,
                    "share_in": 0.0, "skewed": False}
    assert a[2]["records_in"] == 1 and a[2]["bytes_in"] == 100
    assert a[1]["records_in"] == 0  # partition 1 lies below the highest one seen
    assert snap["topics"]["b"]["partitions"][1]["records_out"] == 3
    assert snap["skew_warnings_total"] == 0
    # the snapshot is a copy
    a[0]["records_in"] = 999
    assert tm.snapshot(now_ms=70)["topics"]["a"]["partitions"][0]["records_in"] == 7
    # it renders
    parse_exposition(render_prometheus(snap))


def test_set_partitions_lists_idle_partitions_and_forget_topic():
    tm = TrafficMetrics()
    tm.set_partitions("t", 4)
    tm.record_in("t", 1, 1, 1, now_ms=0)
    assert sorted(tm.snapshot(0)["topics"]["t"]["partitions"]) == [0, 1, 2, 3]
    tm.forget_topic("t")
    assert tm.snapshot(0)["topics"] == {}
    tm.forget_topic("never-seen")
    with pytest.raises(ValueError, match="num_partitions"):
        tm.set_partitions("t", 0)


def test_counters_are_thread_safe():
    tm = TrafficMetrics(window_ms=50, ratio=1.0, min_records=0)
    threads_n, per_thread = 8, 5000

    def work(i):
        for k in range(per_thread):
            tm.record_in("t", k % 3, 2, 10, now_ms=k)
            tm.record_out("t", i % 3, 1, 5, now_ms=k)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parts = tm.snapshot(now_ms=per_thread)["topics"]["t"]["partitions"]
    assert sum(p["records_in"] for p in parts.values()) == threads_n * per_thread * 2
    assert sum(p["bytes_in"] for p in parts.values()) == threads_n * per_thread * 10
    assert sum(p["records_out"] for p in parts.values()) == threads_n * per_thread
    assert sum(p["bytes_out"] for p in parts.values()) == threads_n * per_thread * 5


# ============================================================ skew detection

def _skewed_window(tm, start_ms, topic="orders", hot=0, n=6, hot_records=600, other=80,
                   batches=20):
    """Feeds one window: `hot` gets hot_records, every other partition `other`, spread
    over `batches` batches each, interleaved, all within [start, start + 500)."""
    for b in range(batches):
        t = start_ms + b * 500 // batches
        for p in range(n):
            total = hot_records if p == hot else other
            tm.record_in(topic, p, total // batches, 100, now_ms=t)


def test_skewed_partition_warns_once_per_window_with_topic_partition_and_shares(caplog):
    tm = TrafficMetrics(window_ms=1000, ratio=2.0, min_records=1000)
    tm.set_partitions("orders", 6)
    with caplog.at_level(logging.WARNING, logger="pylog.broker"):
        _skewed_window(tm, 0)                     # 600 of 1000 on partition 0
        assert caplog.records == []               # judged when the window is over ...
        assert tm.check_skew("orders", 6, now_ms=999) == []
        found = tm.check_skew("orders", 6, now_ms=1000)  # ... here
        assert [(w.topic, w.partition) for w in found] == [("orders", 0)]
        assert found[0].share == pytest.approx(0.6)
        assert found[0].fair_share == pytest.approx(1 / 6)
        assert tm.check_skew("orders", 6, now_ms=1500) == []   # not again in this window
        tm.record_in("orders", 0, 5, 10, now_ms=1600)
    assert len(caplog.records) == 1
    rec = caplog.records[0]
    assert rec.name == "pylog.broker" and rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert "'orders'" in msg and "partition 0" in msg
    assert "60.0%" in msg and "fair share 16.7%" in msg
    snap = tm.snapshot(now_ms=1700)
    parts = snap["topics"]["orders"]["partitions"]
    assert parts[0]["share_in"] == pytest.approx(0.6) and parts[0]["skewed"] is True
    for p in range(1, 6):
        assert parts[p]["share_in"] == pytest.approx(0.08) and parts[p]["skewed"] is False
    assert snap["skew_warnings_total"] == 1
    assert tm.skew_warnings_total == 1


def test_a_new_window_gets_its_own_warning_and_a_quiet_window_clears_the_flag():
    tm = TrafficMetrics(window_ms=1000, min_records=1000)
    tm.set_partitions("orders", 6)
    _skewed_window(tm, 0)
    _skewed_window(tm, 1000, hot=3)
    snap = tm.snapshot(now_ms=2000)
    assert snap["skew_warnings_total"] == 2
    parts = snap["topics"]["orders"]["partitions"]
    assert parts[3]["skewed"] and not parts[0]["skewed"]
    snap = tm.snapshot(now_ms=3500)               # window [2000, 3000) had no records
    parts = snap["topics"]["orders"]["partitions"]
    assert not any(p["skewed"] for p in parts.values())
    assert all(p["share_in"] == 0.0 for p in parts.values())
    assert parts[3]["records_in"] > 0             # counters are cumulative, not windowed


def test_no_warning_below_min_records_or_when_balanced_or_at_exactly_the_threshold():
    tm = TrafficMetrics(window_ms=1000, ratio=2.0, min_records=1000)
    tm.set_partitions("small", 6)
    _skewed_window(tm, 0, topic="small", hot_records=600, other=60)   # 900 < 1000 records
    tm.set_partitions("even", 6)
    _skewed_window(tm, 0, topic="even", hot_records=200, other=200)
    tm.set_partitions("edge", 4)
    # 4 partitions, ratio 2: threshold share 0.5; partition 0 has exactly half
    tm.record_in("edge", 0, 1000, 1, now_ms=0)
    for p in (1, 2, 3):
        tm.record_in("edge", p, 1000 // 3 + (1 if p == 1 else 0), 1, now_ms=0)
    snap = tm.snapshot(now_ms=1000)
    assert snap["skew_warnings_total"] == 0
    assert snap["topics"]["small"]["partitions"][0]["share_in"] == pytest.approx(600 / 900)
    assert snap["topics"]["edge"]["partitions"][0]["share_in"] == 0.5


def test_partition_count_decides_the_fair_share():
    # Two partitions share everything equally: fine for a 2-partition topic, skewed
    # for a topic of 6 whose other 4 partitions get nothing.
    for n, expect in ((None, 0), (2, 0), (6, 2)):
        tm = TrafficMetrics(window_ms=1000, min_records=100)
        if n is not None:
            tm.set_partitions("t", n)
        tm.record_in("t", 0, 500, 1, now_ms=0)
        tm.record_in("t", 1, 500, 1, now_ms=0)
        assert tm.snapshot(now_ms=1000)["skew_warnings_total"] == expect, n


def test_clock_going_backwards_stays_in_the_current_window():
    tm = TrafficMetrics(window_ms=1000, min_records=10)
    tm.set_partitions("t", 4)
    tm.record_in("t", 0, 100, 1, now_ms=5000)
    tm.record_in("t", 0, 100, 1, now_ms=4000)     # earlier: counted in [5000, 6000)
    tm.record_in("t", 1, 10, 1, now_ms=5500)
    assert tm.check_skew("t", 4, now_ms=4500) == []
    found = tm.check_skew("t", 4, now_ms=6000)
    assert [(w.partition, w.records, w.topic_records) for w in found] == [(0, 200, 210)]


def test_forget_topic_drops_windows_but_keeps_the_warning_total():
    tm = TrafficMetrics(window_ms=1000, min_records=1000)
    tm.set_partitions("orders", 6)
    _skewed_window(tm, 0)
    tm.snapshot(now_ms=1000)
    tm.forget_topic("orders")
    _skewed_window(tm, 1000)  # topic re-created: no partition count known, 6 inferred
    snap = tm.snapshot(now_ms=1500)
    assert snap["skew_warnings_total"] == 1
    assert all(p["share_in"] == 0.0 for p in snap["topics"]["orders"]["partitions"].values())


@pytest.mark.parametrize("kwargs,match", [
    ({"window_ms": 0}, "partition.skew.window.ms"),
    ({"window_ms": 1.5}, "partition.skew.window.ms"),
    ({"ratio": 0.5}, "partition.skew.ratio"),
    ({"ratio": float("nan")}, "partition.skew.ratio"),
    ({"ratio": "2"}, "partition.skew.ratio"),
    ({"min_records": -1}, "partition.skew.min.records"),
    ({"min_records": True}, "partition.skew.min.records"),
])
def test_bad_skew_config(kwargs, match):
    with pytest.raises(InvalidConfig, match=match):
        SkewDetector(**kwargs)
    with pytest.raises(InvalidConfig, match=match):
        TrafficMetrics(**kwargs)


def test_from_config_uses_pylog_names_and_defaults():
    d = SkewDetector.from_config({"partition.skew.ratio": 3, "retention.ms": 5})
    assert (d.window_ms, d.ratio, d.min_records) == (60_000, 3.0, 1_000)
    tm = TrafficMetrics.from_config({"partition.skew.window.ms": 10,
                                     "partition.skew.min.records": 0})
    assert (tm.skew.window_ms, tm.skew.ratio, tm.skew.min_records) == (10, 2.0, 0)
    with pytest.raises(InvalidConfig, match="partition.skew.window.ms"):
        TrafficMetrics.from_config({"partition.skew.window.ms": -5})


# A plain model: all events known up front, windows judged by brute force.
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 4), st.integers(0, 50)),
                max_size=60),
       st.integers(1, 2000), st.sampled_from([1.0, 1.5, 2.0, 3.0]), st.integers(0, 100),
       st.integers(1, 6))
def test_skew_detector_matches_a_model(events, window_ms, ratio, min_records, registered):
    events = sorted(events, key=lambda e: e[0])
    det = SkewDetector(window_ms, ratio, min_records, logger=logging.getLogger("test.skew"))
    det.set_partitions("t", registered)
    got = []
    for t, p, r in events:
        got.extend(det.record("t", p, r, t))
    got.extend(det.check("t", 10**9))

    windows = defaultdict(lambda: defaultdict(int))
    for t, p, r in events:
        windows[t // window_ms][p] += r
    expected = []
    max_seen = -1
    # The first window is judged only if the detector saw at least half of it.
    first = events[0][0] if events else None
    for w in sorted(windows):
        counts = windows[w]
        max_seen = max(max_seen, max(counts))
        n = max(registered, max_seen + 1)
        total = sum(counts.values())
        if total == 0 or total < min_records:
            continue
        if w == first // window_ms and first - w * window_ms > window_ms // 2:
            continue
        for p in sorted(counts):
            if counts[p] * n > ratio * total:  # share above ratio x fair share
                expected.append((w * window_ms, p, counts[p], total))
    assert [(x.window_start_ms, x.partition, x.records, x.topic_records) for x in got] == expected
    assert det.warnings_total == len(expected)
    # the verdict shown is the last complete window's
    if events:
        last = events[-1][0] // window_ms
        det2 = SkewDetector(window_ms, ratio, min_records, logger=logging.getLogger("test.skew"))
        det2.set_partitions("t", registered)
        for t, p, r in events:
            det2.record("t", p, r, t)
        det2.check("t", (last + 1) * window_ms)
        shares = det2.shares("t")
        total = sum(windows[last].values())
        for p, (share, skewed) in shares.items():
            c = windows[last].get(p, 0)
            assert share == (c / total if total else 0.0)
            assert skewed == ((last * window_ms, p, c, total) in expected)


def test_a_first_window_seen_for_less_than_half_is_not_judged(caplog):
    """A broker started near a window's end sees a sliver of it, in which a producer's
    batches, shipped partition by partition, look skewed: not judged.  The next
    window, seen whole, is."""
    det = SkewDetector(window_ms=1000, ratio=2.0, min_records=100)
    det.set_partitions("t", 6)
    with caplog.at_level(logging.WARNING, logger="pylog.broker"):
        det.record("t", 4, 5000, 700)  # from 700 of [0, 1000): less than half seen
        det.record("t", 5, 5000, 800)
        assert det.record("t", 0, 10, 1000) == []
        for p in range(6):
            det.record("t", p, 100 if p else 5000, 1100)
        warned = det.check("t", 2000)
    assert [(w.partition, w.window_start_ms) for w in warned] == [(0, 1000)]
    assert det.warnings_total == 1 and len(caplog.records) == 1
    # Seen from its middle on: judged.
    det = SkewDetector(window_ms=1000, ratio=2.0, min_records=100)
    det.record("t", 4, 5000, 500)
    det.record("t", 5, 100, 500)
    det.record("t", 3, 100, 500)
    assert [w.partition for w in det.check("t", 1000)] == [4]


def test_shares_after_a_gap_of_windows_are_zero():
    # Records in window 0, next look in window 2: the last complete window (1) was empty.
    det = SkewDetector(window_ms=100, ratio=1.0, min_records=0)
    det.set_partitions("t", 2)
    det.record("t", 0, 10, 50)
    warnings = det.check("t", 250)
    assert [(w.partition, w.window_start_ms) for w in warnings] == [(0, 0)]  # still judged
    assert det.shares("t") == {0: (0.0, False), 1: (0.0, False)}
    det.record("t", 1, 10, 260)
    det.check("t", 300)
    assert det.shares("t") == {0: (0.0, False), 1: (1.0, True)}


def test_a_cluster_broker_judges_skew_from_the_partitions_it_leads(caplog):
    # A broker of a cluster leads partitions 1 and 4 of a 6-partition topic and records
    # only their traffic.  Even traffic is not skew (taken as silent, the four others
    # would make each of its two three times over the fair 1/6) ...
    tm = TrafficMetrics(window_ms=1000, ratio=2.0, min_records=1000)
    tm.check_skew("orders", 6, now_ms=0, counted=[1, 4])
    for p in (1, 4):
        tm.record_in("orders", p, 1000, 100, now_ms=10)
    assert tm.check_skew("orders", 6, now_ms=1000, counted=[1, 4]) == []
    shares = tm.snapshot(now_ms=1000)["topics"]["orders"]["partitions"]
    assert shares[1]["share_in"] == pytest.approx(1 / 6) and shares[4]["share_in"] == pytest.approx(1 / 6)
    # ... a hot key is: partition 1 took 9 times what partition 4 did; the topic is
    # estimated at 9000 + 5 x 1000 records, so partition 1 had 64%, over 2 x 1/6.
    tm.record_in("orders", 1, 9000, 100, now_ms=1010)
    tm.record_in("orders", 4, 1000, 100, now_ms=1010)
    with caplog.at_level(logging.WARNING, logger="pylog.broker"):
        found = tm.check_skew("orders", 6, now_ms=2000, counted=[1, 4])
    assert [(w.partition, round(w.share, 3), w.topic_records) for w in found] == [(1, round(9 / 14, 3), 14000)]
    assert "an estimate: this broker sees 2 of the 6 partitions" in caplog.records[-1].getMessage()
    # One partition seen: nothing to compare it with, nothing judged.
    tm.record_in("orders", 1, 9000, 100, now_ms=2010)
    assert tm.check_skew("orders", 6, now_ms=3000, counted=[1]) == []
    # Without `counted` (every leader in this process) the partitions not recorded
    # are silent: the same even window on 1 and 4 is skew.
    tm2 = TrafficMetrics(window_ms=1000, ratio=2.0, min_records=1000)
    tm2.check_skew("orders", 6, now_ms=0)
    for p in (1, 4):
        tm2.record_in("orders", p, 1000, 100, now_ms=10)
    assert [w.partition for w in tm2.check_skew("orders", 6, now_ms=1000)] == [1, 4]
