"""Three `pylog serve --zookeeper` processes form a cluster that real Kafka clients use.

Each test starts its brokers as real processes on loopback ports over a real ZooKeeper
(tests/cluster/procs.py) and stops them by PID at the end.
"""
from __future__ import annotations

import threading
import time
from typing import Dict, List, Tuple

import confluent_kafka
from confluent_kafka.admin import AdminClient, ConfigResource

from pylog.protocol.apis import API_NAMES
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


def _producer(c, **extra):
    conf = {"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "retries": 1_000_000, "delivery.timeout.ms": 120_000, "request.timeout.ms": 10_000,
            "metadata.max.age.ms": 5_000}
    conf.update(extra)
    return confluent_kafka.Producer(conf)


def _read_all(c, topic: str, partitions: int) -> Dict[int, List[Tuple[int, bytes]]]:
    """Every record of every partition (offset, value), read from the leaders up to the HW."""
    cons = confluent_kafka.Consumer({"bootstrap.servers": c.bootstrap, "group.id": "reader-" + str(time.time()),
                                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        lo_hi = {}
        for p in range(partitions):
            lo_hi[p] = cons.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)
        cons.assign([confluent_kafka.TopicPartition(topic, p, lo_hi[p][0]) for p in range(partitions)])
        out: Dict[int, List[Tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 120
        while any((out[p][-1][0] + 1 if out[p] else lo_hi[p][0]) < lo_hi[p][1] for p in range(partitions)):
            assert time.monotonic() < deadline, f"could not read everything: {lo_hi}"
            for m in cons.consume(10_000, 1.0):
                if m.error() is None:
                    out[m.partition()].append((m.offset(), m.value()))
        return out
    finally:
        cons.close()


class _Load:
    """A producer thread sending key-sequenced values until stopped; records what was acked."""

    def __init__(self, c, topic: str, keys: int = 12) -> None:
        self.p = _producer(c)
        self.topic = topic
        self.keys = keys
        self.acked: List[Tuple[int, int, bytes]] = []  # partition, offset, value
        self.errors: List[str] = []
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.value()))

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            k = seq % self.keys
            try:
                self.p.produce(self.topic, value=b"%d:%d" % (k, seq), key=b"k%d" % k, on_delivery=self._cb)
                seq += 1
            except BufferError:
                pass
            self.p.poll(0.001 if seq % 50 == 0 else 0)
            if seq % 50 == 0:
                time.sleep(0.002)
        self.sent = seq
        self.p.flush(120)

    def __enter__(self) -> "_Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(180)


def _check_no_loss_no_dup(acked, records, partitions) -> None:
    seen: Dict[bytes, Tuple[int, int]] = {}
    for p, recs in records.items():
        for off, v in recs:
            assert v not in seen, f"{v!r} is stored twice: {seen[v]} and {(p, off)}"
            seen[v] = (p, off)
        # order per key (one key lives in one partition): sequence numbers increase
        last: Dict[bytes, int] = {}
        for off, v in recs:
            k, s = v.split(b":")
            assert int(s) > last.get(k, -1), f"partition {p}: key {k!r} out of order at offset {off}"
            last[k] = int(s)
    missing = [(p, o, v) for p, o, v in acked if v not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    wrong = [(p, o, v, seen[v]) for p, o, v in acked if seen[v] != (p, o)]
    assert not wrong, f"acknowledged at one offset, stored at another: {wrong[:5]}"


def test_kill9_the_leader_twice_under_acks_all_idempotent_load(process_cluster):
    c = process_cluster(3)
    create_topic(c, "events", 3, 3, {"min.insync.replicas": "2"})
    killed = []
    with _Load(c, "events") as load:
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
    records = _read_all(c, "events", 3)
    _check_no_loss_no_dup(load.acked, records, 3)
    assert len(load.acked) == load.sent
