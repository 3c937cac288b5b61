"""Three `pylog serve --zookeeper` processes form a cluster that real Kafka clients use.

Each test starts its brokers as real processes on loopback ports over a real ZooKeeper
(tests/cluster/procs.py) and stops them by PID at the end.
"""
from __future__ import annotations

import confluent_kafka
from confluent_kafka.admin import AdminClient, ConfigResource

from pylog.protocol.apis import API_NAMES
from tests.cluster.load import Load, check_no_loss_no_dup, read_all
from tests.cluster.procs import create_topic, describe, metric, wait_for


def test_three_processes_form_a_cluster(process_cluster):
    c = process_cluster(3, racks=["a", "b", "c"])
    for b in c.brokers.values():  # any broker bootstraps the whole cluster
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=20)
        assert sorted(md.brokers) == [1, 2, 3]
        assert {bid: f"{m.host}:{m.port}" for bid, m in md.brokers.items()} == \
            {bid: x.bootstrap for bid, x in c.brokers.items()}
        assert md.controller_id in (1, 2, 3)
    create_topic(c, "orders", 6, 3, {"min.insync.replicas": "2", "retention.ms": "3600000"})
    parts = describe(c, "orders")
    assert len(parts) == 6
    for p in parts:
        assert sorted(p["replicas"]) == [1, 2, 3] and sorted(p["isr"]) == [1, 2, 3]
        assert p["leader"] == p["replicas"][0]
    # rack-aware, leaders spread: every broker leads two partitions
    assert sorted(p["leader"] for p in parts) == [1, 1, 2, 2, 3, 3]
    a = AdminClient({"bootstrap.servers": c.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "orders")
    cfg = a.describe_configs([res])[res].result(30)
    assert cfg["min.insync.replicas"].value == "2" and cfg["retention.ms"].value == "3600000"
    # alter through a broker that is not the controller: every broker sees it
    ctl = AdminClient({"bootstrap.servers": c.brokers[1].bootstrap}).list_topics(timeout=20).controller_id
    other = next(b for bid, b in c.brokers.items() if bid != ctl)
    a2 = AdminClient({"bootstrap.servers": other.bootstrap})
    a2.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "orders", incremental_configs=[
        confluent_kafka.admin.ConfigEntry("retention.ms", "7200000",
                                          incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET)])])[
        ConfigResource(ConfigResource.Type.TOPIC, "orders")].result(30)
    for b in c.brokers.values():
        ab = AdminClient({"bootstrap.servers": b.bootstrap})
        wait_for(lambda ab=ab: ab.describe_configs([res])[res].result(30)["retention.ms"].value == "7200000",
                 f"broker {b.broker_id} to see retention.ms=7200000")


def test_kill9_the_leader_twice_under_acks_all_idempotent_load(process_cluster):
    c = process_cluster(3)
    create_topic(c, "events", 3, 3, {"min.insync.replicas": "2"})
    killed = []
    with Load(c, "events") as load:
        wait_for(lambda: len(load.acked) > 2000, "the first acknowledgements")
        for round_ in range(2):
            leaders = {p["partition"]: p["leader"] for p in describe(c, "events")}
            victim = next(b for b in (leaders[0], leaders[1], leaders[2]) if b not in killed)
            before = len(load.acked)
            c.brokers[victim].kill()
            killed.append(victim)
            # leadership moves to the surviving in-sync replicas; the load goes on
            wait_for(lambda: all(p["leader"] not in (-1, victim) for p in describe(c, "events")),
                     f"new leaders after broker {victim} was killed")
            wait_for(lambda: len(load.acked) > before + 2000, "acknowledgements after the failover")
            c.brokers[victim].restart()
            wait_for(lambda: all(sorted(p["isr"]) == [1, 2, 3] for p in describe(c, "events")),
                     f"broker {victim} back in every ISR")
    assert len(set(killed)) == 2
    assert not load.errors, load.errors[:5]
    # the restarted followers asked their leaders where their last epoch ends
    asked = sum(metric(b, "pylog_server_requests_total", api=API_NAMES[23]) or 0 for b in c.brokers.values())
    assert asked > 0
    records = read_all(c, "events", 3)
    check_no_loss_no_dup(load.acked, records, 3)
    assert len(load.acked) == load.sent


def test_each_broker_judges_partition_skew_from_the_partitions_it_leads(process_cluster):
    # Each broker counts the records of the partitions it leads, and nothing of the
    # others: even traffic must not look skewed to it, and a hot key must still be found.
    c = process_cluster(3, overrides={"partition.skew.window.ms": 2000, "partition.skew.min.records": 600})
    for topic in ("even", "hot"):
        create_topic(c, topic, 6, 1)
    leaders = {p["partition"]: p["leader"] for p in describe(c, "even")}
    hot_leaders = {p["partition"]: p["leader"] for p in describe(c, "hot")}
    assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3]
    prod = confluent_kafka.Producer({"bootstrap.servers": c.bootstrap, "linger.ms": 2})

    def produce_round(topic: str, weights: dict) -> None:
        for p, n in weights.items():
            for _ in range(n):
                prod.produce(topic, b"v" * 20, partition=p)
        assert prod.flush(30) == 0

    def judged(topic: str, who: dict) -> bool:
        """Every leader has a complete window with records of ``topic`` (a share > 0)."""
        return all((metric(c.brokers[b], "pylog_partition_share_in", topic=topic, partition=str(p)) or 0) > 0
                   for p, b in who.items())

    even = {p: 50 for p in range(6)}
    wait_for(lambda: produce_round("even", even) or judged("even", leaders), "every leader to judge 'even'")
    for b in c.brokers.values():
        assert metric(b, "pylog_skew_warnings_total") == 0, f"broker {b.broker_id} called even traffic skewed"
        for p, lead in leaders.items():
            if lead == b.broker_id:
                share = metric(b, "pylog_partition_share_in", topic="even", partition=str(p))
                assert share is not None and 0.1 < share < 0.25, (b.broker_id, p, share)
    hot = {**even, 0: 450}  # partition 0 takes 9 times what any other does
    hot_broker = c.brokers[hot_leaders[0]]
    wait_for(lambda: produce_round("hot", hot)
             or metric(hot_broker, "pylog_partition_skewed", topic="hot", partition="0") == 1,
             "partition 0's leader to find it skewed")
    assert metric(hot_broker, "pylog_skew_warnings_total") >= 1
    for b in c.brokers.values():
        for p, lead in hot_leaders.items():
            if lead == b.broker_id and p != 0:
                assert metric(b, "pylog_partition_skewed", topic="hot", partition=str(p)) == 0
