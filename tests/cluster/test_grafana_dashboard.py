"""contrib/grafana/pylog.json (issue 14 point 4) against what brokers really expose: a
three-broker `pylog serve` cluster with a topic, keyed traffic and a consumer group that
committed; every metric each panel's PromQL names is on some broker's /metrics, with every
label the query groups or filters by (``instance`` is Prometheus's own)."""
from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Set

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.procs import create_topic, describe, wait_for

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "pylog.json"
_METRIC = re.compile(r"\bpylog_[a-z0-9_]+")
_BY = re.compile(r"\bby \(([^)]*)\)\s*\((?:[a-z_]+\()?(pylog_[a-z0-9_]+)")
_MATCHER = re.compile(r"(pylog_[a-z0-9_]+)\{([^}]*)\}")
_LABEL_VALUES = re.compile(r"label_values\((pylog_[a-z0-9_]+), *([a-z_]+)\)")


def _exprs(dash: dict) -> list:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"], p["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for needed in ("per broker", "per topic", "per partition", "isr", "under-replicated", "offline", "lag",
                   "latency"):
        assert needed in titles, needed


def _scrape(port: int) -> Dict[str, Set[str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
        text = r.read().decode()
    out: Dict[str, Set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_every_query_names_what_brokers_expose(process_cluster):
    dash = json.loads(DASHBOARD.read_text())
    c = process_cluster(3)
    topic = f"graf-{uuid.uuid4().hex[:8]}"
    create_topic(c, topic, 3, 3)
    wait_for(lambda: all(sorted(p["isr"]) == [1, 2, 3] for p in describe(c, topic)), "full ISRs")
    from confluent_kafka import Consumer, Producer

    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(300):
        p.produce(topic, b"v", key=b"k%d" % (i % 7))
    assert p.flush(30) == 0
    p = None  # librdkafka's threads go with it (a failed test's traceback would keep them)
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"{topic}-g", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    try:
        cons.subscribe([topic])
        got, deadline = 0, time.monotonic() + 60
        while got < 300 and time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got += 1
        assert got == 300
        cons.commit(asynchronous=False)
    finally:
        cons.close()

    def exposed() -> Dict[str, Set[str]]:
        names: Dict[str, Set[str]] = {}
        for b in c.brokers.values():
            for name, labels in _scrape(b.metrics_port).items():
                names.setdefault(name, set()).update(labels)
        return names

    # group lag and per-partition traffic appear once the coordinator and the leaders
    # have counted them
    names = wait_for(lambda: (lambda n: n if "pylog_group_lag" in n and "pylog_partition_share_in" in n else None)(
        exposed()), "the group's lag and the partitions' shares on /metrics")
    missing = []
    for expr in _exprs(dash) + [dash["templating"]["list"][0]["definition"]]:
        for m in _METRIC.findall(expr):
            if m not in names:
                missing.append((m, expr))
        for labels, m in _BY.findall(expr):
            for label in (x.strip() for x in labels.split(",")):
                if label != "instance" and label not in names.get(m, set()):
                    missing.append((f"{m} label {label}", expr))
        for m, matchers in _MATCHER.findall(expr):
            for label in re.findall(r"([a-z_]+)\s*=~?", matchers):
                if label not in names.get(m, set()):
                    missing.append((f"{m} label {label}", expr))
        for m, label in _LABEL_VALUES.findall(expr):
            if label not in names.get(m, set()):
                missing.append((f"{m} label {label}", expr))
    assert not missing, missing
