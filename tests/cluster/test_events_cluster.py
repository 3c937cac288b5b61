"""Events on a cluster of `pylog serve` processes (issue 14): a paused follower's ISR
shrink and its return appear on its leader's ``/events`` with the words of the leader's
WARNING log lines, and a killed broker's departure and the election that follows appear
on the controller's ``/events``; every broker's ``metrics.listener`` names its metrics
endpoint."""
from __future__ import annotations

import json
import re
import urllib.request
from typing import Any, Dict, List

from tests.cluster.procs import admin, controller_id, create_topic, describe, log_lines, wait_for

LONG_SESSION_MS = 10_000  # longer than the pause: the paused broker keeps its registration


def events(broker: Any, after: int = 0) -> Dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/events?after={after}", timeout=10) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


def find(broker: Any, kind: str, pattern: str, after: int) -> List[Dict[str, Any]]:
    return [e for e in events(broker, after)["events"] if e["kind"] == kind and re.search(pattern, e["message"])]


def logged(broker: Any, level: str, logger: str, message: str) -> bool:
    """Whether the broker's log has the line ``LEVEL LOGGER: MESSAGE`` (the whole message)."""
    return bool(log_lines(broker, rf" {level} {re.escape(logger)}: {re.escape(message)}$"))


def last_seq(broker: Any) -> int:
    got = events(broker)["events"]
    return got[-1]["seq"] if got else 0


def produce(c: Any, topic: str, n: int = 50) -> None:
    import confluent_kafka

    p = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "acks": "1", "linger.ms": 1,
                                  "message.timeout.ms": 5000})
    for i in range(n):
        p.produce(topic, b"v%d" % i, partition=i % 3)
    p.flush(10)  # while a follower is paused some may time out: only the traffic matters


def test_isr_and_broker_events_reach_the_leaders_and_the_controllers_events(process_cluster):
    c = process_cluster(3, overrides={"zookeeper.session.timeout.ms": LONG_SESSION_MS})
    create_topic(c, "ev", 3, 3)
    ctl = controller_id(c)
    x = next(b for b in (3, 2, 1) if b != ctl)  # the controller keeps running
    lead = {p["partition"]: p["leader"] for p in describe(c, "ev")}
    p, leader_id = next((p, b) for p, b in sorted(lead.items()) if b != x)
    leader = c.brokers[leader_id]

    # every broker names its metrics listener in DescribeConfigs (what the console reads)
    from confluent_kafka.admin import ConfigResource

    a = admin(c)
    for bid, b in c.brokers.items():
        (fut,) = a.describe_configs([ConfigResource("broker", str(bid))]).values()
        assert fut.result(30)["metrics.listener"].value == f"127.0.0.1:{b.metrics_port}"
        assert events(b)["broker"] == bid

    after = last_seq(leader)
    c.brokers[x].pause()
    try:
        shrink = wait_for(lambda: produce(c, "ev") or find(leader, "isr_shrink", rf"^ISR shrink for ev-{p}: ", after),
                          f"an isr_shrink event of ev-{p} on leader {leader_id}")
    finally:
        c.brokers[x].resume()
    e = shrink[0]
    assert (e["level"], e["broker"]) == ("WARNING", leader_id)
    m = re.match(r"^ISR shrink for ev-\d+: (\[.*?\]) -> (\[.*?\])", e["message"])
    old, new = (json.loads(s) for s in m.groups())
    assert x in old and x not in new
    assert logged(leader, "WARNING", "pylog.replication", e["message"]), e["message"]
    assert e["seq"] > after

    expand = wait_for(lambda: produce(c, "ev", 5) or find(leader, "isr_expand", rf"^ISR expand for ev-{p}: ", e["seq"]),
                      f"an isr_expand event of ev-{p} on leader {leader_id}")
    e2 = expand[0]
    assert e2["seq"] > e["seq"] and e2["time_ms"] >= e["time_ms"]
    assert x in json.loads(re.match(r"^ISR expand for ev-\d+: \[.*?\] -> (\[.*?\])", e2["message"]).group(1))
    assert logged(leader, "WARNING", "pylog.replication", e2["message"]), e2["message"]
    # the other brokers did not take the leader's ISR change as theirs
    for bid, b in c.brokers.items():
        if bid != leader_id:
            assert not [ev for ev in events(b)["events"] if ev["message"] == e["message"]], bid

    # kill -9 a broker that leads a partition: its registration ends with its session,
    # the controller logs it offline and elects another leader for what it led
    wait_for(lambda: all(sorted(q["isr"]) == [1, 2, 3] for q in describe(c, "ev")), "every ISR full again")
    led = next(q for q, b in sorted(lead.items()) if b == x)
    controller = c.brokers[ctl]
    after = last_seq(controller)
    c.brokers[x].kill()
    gone = wait_for(lambda: find(controller, "broker_leave", rf"^broker {x} is offline", after),
                    f"a broker_leave event of broker {x} on the controller", timeout_s=60)
    assert (gone[0]["level"], gone[0]["broker"]) == ("WARNING", ctl)
    assert logged(controller, "WARNING", "pylog.controller", gone[0]["message"])
    elected = wait_for(lambda: find(controller, "election_clean", rf"^ev-{led}: leader {x} -> \d+ at epoch \d+", after),
                       f"an election_clean event of ev-{led} on the controller")
    assert elected[0]["level"] == "WARNING"  # a failover
    assert logged(controller, "WARNING", "pylog.controller", elected[0]["message"])
    assert elected[0]["seq"] > gone[0]["seq"]
