"""`pylog topics --bootstrap-server` and the AdminClient against three broker processes.

The CLI runs as a subprocess (``python -m pylog topics ...``), as an operator runs it;
faults are real: SIGSTOP of a broker (its followers fall behind, the leaders shrink
their ISRs) and kill -9 of the only replica of a partition.
"""
from __future__ import annotations

import re
import subprocess
import sys
from typing import Dict, List

import pytest

from pylog.cli.cluster_up import broker_env
from pylog.client.network.admin import AdminClient
from pylog.errors import InvalidConfig, InvalidReplicationFactor, TopicAlreadyExists, UnknownTopicOrPartition
from tests.cluster.procs import wait_for

_PART = re.compile(r"^\tTopic: (?P<topic>\S+)\tPartition: (?P<p>\d+)\tLeader: (?P<leader>\S+)\t"
                   r"Replicas: (?P<replicas>[\d,]*)\tIsr: (?P<isr>[\d,]*)(?P<rest>.*)$")


def topics(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pylog topics ARGS`` as a subprocess."""
    r = subprocess.run([sys.executable, "-m", "pylog", "topics", *args], capture_output=True, text=True,
                       env=broker_env(), timeout=120)
    if check:
        assert r.returncode == 0, f"pylog topics {' '.join(args)} failed ({r.returncode}): {r.stderr}"
    return r


def partitions(out: str) -> Dict[tuple, Dict]:
    """The partition lines of a describe: (topic, partition) -> fields and marks."""
    rows = {}
    for line in out.splitlines():
        m = _PART.match(line)
        if m is None:
            continue
        rest = m.group("rest")
        rows[(m.group("topic"), int(m.group("p")))] = {
            "leader": -1 if m.group("leader") == "none" else int(m.group("leader")),
            "replicas": [int(x) for x in m.group("replicas").split(",") if x],
            "isr": [int(x) for x in m.group("isr").split(",") if x],
            "offline": "(offline)" in rest, "under_replicated": "(under-replicated)" in rest,
            "under_min_isr": "(under-min-isr)" in rest, "rest": rest}
    return rows


def topic_lines(out: str) -> List[str]:
    return [line for line in out.splitlines() if line.startswith("Topic: ")]


def test_create_describe_alter_delete_over_the_network(process_cluster):
    c = process_cluster(3, racks=["a", "b", "c"])
    b = c.bootstrap
    assert topics("create", "orders", "--partitions", "6", "--replication-factor", "3",
                  "--config", "min.insync.replicas=2", "--config", "retention.ms=3600000",
                  "--bootstrap-server", b).stdout == "Created topic orders.\n"
    # kafka-topics.sh's own form, through one broker only
    r = topics("--bootstrap-server", c.brokers[2].bootstrap, "--create", "--topic", "audit", "--partitions", "2",
               "--replication-factor", "2")
    assert r.stdout == "Created topic audit.\n"
    with AdminClient(b) as admin:
        for name in ("orders", "audit"):
            admin.wait_for_topic(name)
        cluster = admin.describe_cluster()
        assert [n.node_id for n in cluster.brokers] == [1, 2, 3] and cluster.controller_id in (1, 2, 3)
        assert [n.rack for n in cluster.brokers] == ["a", "b", "c"]

    assert topics("list", "--bootstrap-server", b).stdout.split() == ["audit", "orders"]
    out = topics("describe", "orders", "--bootstrap-server", b).stdout
    [head] = topic_lines(out)
    assert re.match(r"Topic: orders\tTopicId: [\w-]{22}\tPartitionCount: 6\tReplicationFactor: 3\t"
                    r"Configs: min\.insync\.replicas=2,retention\.ms=3600000$", head), head
    parts = partitions(out)
    assert sorted(parts) == [("orders", p) for p in range(6)]
    for row in parts.values():
        assert sorted(row["replicas"]) == [1, 2, 3] and sorted(row["isr"]) == [1, 2, 3]
        assert row["leader"] == row["replicas"][0]
        assert not (row["offline"] or row["under_replicated"] or row["under_min_isr"]), row
    assert sorted(r["leader"] for r in parts.values()) == [1, 1, 2, 2, 3, 3]
    # the Kafka form of describe, with --topic as a regular expression
    both = topics("--describe", "--topic", "(orders|audit)", "--bootstrap-server", b).stdout
    assert len(topic_lines(both)) == 2 and len(partitions(both)) == 8
    # nothing under-replicated or unavailable: the filters print nothing
    assert topics("describe", "--under-replicated-partitions", "--unavailable-partitions",
                  "--under-min-isr-partitions", "--bootstrap-server", b).stdout == ""
    assert topic_lines(topics("describe", "--topics-with-overrides", "--bootstrap-server", b).stdout) == [head]

    # errors come back as Kafka's, as messages
    r = topics("create", "orders", "--bootstrap-server", b, check=False)
    assert r.returncode == 2 and "TOPIC_ALREADY_EXISTS" in r.stderr and "Traceback" not in r.stderr
    assert topics("create", "orders", "--if-not-exists", "--bootstrap-server", b).returncode == 0
    r = topics("create", "wide", "--replication-factor", "4", "--bootstrap-server", b, check=False)
    assert r.returncode == 2 and "INVALID_REPLICATION_FACTOR" in r.stderr
    r = topics("describe", "nope", "--bootstrap-server", b, check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr

    # alter, then delete
    assert topics("alter", "audit", "--partitions", "3", "--bootstrap-server", b).returncode == 0
    with AdminClient(b) as admin:
        wait_for(lambda: len(admin.wait_for_topic("audit").partitions) == 3, "audit to have 3 partitions")
    assert topics("delete", "--topic", "audit", "--bootstrap-server", b).stdout == "Deleted topic audit.\n"
    r = topics("delete", "audit", "--bootstrap-server", b, check=False)
    assert r.returncode == 2 and "audit" in r.stderr
    assert topics("delete", "audit", "--if-exists", "--bootstrap-server", b).returncode == 0
    assert topics("list", "--bootstrap-server", b).stdout.split() == ["orders"]


def test_admin_client_topics_and_configs(process_cluster):
    c = process_cluster(3)
    with AdminClient(c.bootstrap) as admin:
        made = admin.create_topic("events", 3, 2, {"retention.ms": 7_200_000, "cleanup.policy": "delete"})
        assert (made.partitions, made.replication_factor) == (3, 2)
        d = admin.wait_for_topic("events")
        assert [len(p.replicas) for p in d.partitions] == [2, 2, 2] and d.replication_factor == 2
        assert all(not p.offline and not p.under_replicated for p in d.partitions)
        # a manual assignment
        admin.create_topic("pinned", replica_assignment=[[3, 1], [1, 2]])
        assert [p.replicas for p in admin.wait_for_topic("pinned").partitions] == [[3, 1], [1, 2]]
        with pytest.raises(TopicAlreadyExists):
            admin.create_topic("events", 1, 1)
        with pytest.raises(InvalidReplicationFactor):
            admin.create_topic("toomany", 1, 5)
        cfg = admin.describe_configs("events")["events"]
        assert cfg["retention.ms"].value == "7200000" and cfg["retention.ms"].source == "DYNAMIC_TOPIC_CONFIG"
        assert cfg["segment.bytes"].is_default
        admin.incremental_alter_configs("events", {"retention.ms": None, "max.message.bytes": "2000000"},
                                        append={"cleanup.policy": "compact"})
        # any broker sees the change: ask each one
        for bid in (1, 2, 3):
            with AdminClient(c.brokers[bid].bootstrap) as one:
                wait_for(lambda one=one: (lambda x: x["max.message.bytes"].value == "2000000"
                                          and x["retention.ms"].is_default
                                          and x["cleanup.policy"].value == "delete,compact")(
                    one.describe_configs("events")["events"]), f"broker {bid} to see the new configs")
        with pytest.raises(InvalidConfig):
            admin.incremental_alter_configs("events", {"no.such.setting": "1"})
        with pytest.raises(UnknownTopicOrPartition):
            admin.describe_configs("missing")
        broker2 = admin.describe_configs("2", resource_type="broker")["2"]
        # static broker configs, read-only; the replication throttle's rates are dynamic
        assert broker2 and all(e.read_only for n, e in broker2.items() if not n.endswith(".throttled.rate"))
        assert broker2["leader.replication.throttled.rate"].is_default
        assert not broker2["leader.replication.throttled.rate"].read_only
        admin.delete_topic("pinned")
        wait_for(lambda: "pinned" not in admin.list_topics(), "pinned to go")
        with pytest.raises(UnknownTopicOrPartition):
            admin.delete_topic("pinned")


def test_paused_broker_under_replicated_then_killed_replica_offline(process_cluster):
    c = process_cluster(3)
    b = c.bootstrap
    topics("create", "orders", "--partitions", "3", "--replication-factor", "3", "--config",
           "min.insync.replicas=2", "--bootstrap-server", b)
    topics("create", "solo", "--replica-assignment", "2", "--bootstrap-server", b)
    with AdminClient(b) as admin:
        admin.wait_for_topic("orders")
        admin.wait_for_topic("solo")

    # SIGSTOP broker 3: it stops fetching, the leaders drop it from their ISRs after
    # replica.lag.time.max.ms (2 s), and the partitions show under-replicated.
    live = ",".join(c.brokers[i].bootstrap for i in (1, 2))
    c.brokers[3].pause()
    try:
        def under() -> Dict:
            rows = partitions(topics("describe", "--under-replicated-partitions", "--bootstrap-server", live).stdout)
            return rows if sorted(rows) == [("orders", p) for p in range(3)] else {}

        rows = wait_for(under, "every partition of orders to be under-replicated", timeout_s=60, interval_s=0.5)
        for row in rows.values():
            assert row["under_replicated"] and 3 not in row["isr"] and sorted(row["replicas"]) == [1, 2, 3]
            assert row["leader"] in (1, 2) and not row["offline"]
            assert not row["under_min_isr"]  # an ISR of 2 is min.insync.replicas=2
        full = partitions(topics("describe", "orders", "--bootstrap-server", live).stdout)
        assert all(r["under_replicated"] for r in full.values())
        at_min = partitions(topics("describe", "orders", "--at-min-isr-partitions", "--bootstrap-server",
                                   live).stdout)
        assert sorted(at_min) == [("orders", p) for p in range(3)]
    finally:
        c.brokers[3].resume()
    wait_for(lambda: topics("describe", "--under-replicated-partitions", "--bootstrap-server", b).stdout == "",
             "broker 3 to be back in every ISR", timeout_s=90, interval_s=0.5)

    # kill -9 the only replica of solo-0: it is offline (no leader), and listed as unavailable
    c.brokers[2].kill()
    live = ",".join(c.brokers[i].bootstrap for i in (1, 3))

    def offline() -> Dict:
        rows = partitions(topics("describe", "--unavailable-partitions", "--bootstrap-server", live).stdout)
        return rows if ("solo", 0) in rows else {}

    rows = wait_for(offline, "solo-0 to be listed as unavailable", timeout_s=60, interval_s=0.5)
    assert list(rows) == [("solo", 0)]
    row = rows[("solo", 0)]
    assert row["leader"] == -1 and row["offline"] and row["replicas"] == [2]
    assert "Leader: none" in row["rest"] or row["leader"] == -1
    assert "\tOffline: 2" in row["rest"]
    out = topics("describe", "solo", "--bootstrap-server", live).stdout
    assert partitions(out)[("solo", 0)]["offline"] and "(offline)" in out
    assert partitions(topics("describe", "--under-min-isr-partitions", "--bootstrap-server", live).stdout).get(
        ("solo", 0)) is not None  # no leader counts as under min ISR, as in Kafka
    # the other topic lost broker 2 as a follower or leader; it stays available
    assert ("orders", 0) not in partitions(
        topics("describe", "--unavailable-partitions", "--bootstrap-server", live).stdout)

    c.brokers[2].restart()
    wait_for(lambda: topics("describe", "--unavailable-partitions", "--bootstrap-server", c.bootstrap).stdout == "",
             "solo-0 to have its leader back", timeout_s=90, interval_s=0.5)
