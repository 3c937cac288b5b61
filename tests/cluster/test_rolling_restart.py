"""A rolling restart of three `pylog serve` processes under load, as an operator does it.

confluent-kafka produces with acks=all and enable.idempotence to a 6-partition RF=3 topic
(min.insync.replicas=2), a steady stream to every partition, while a consumer group of
two confluent-kafka consumers reads and commits.  Each broker in turn gets SIGTERM (a
controlled shutdown: its leaderships move first), is started again, and the next one
goes once every ISR is full again.  Then: no error reached the application, every
acknowledged record is in the log exactly once and in order, and the group read every
record exactly once.  Each partition's unavailability window — the longest time between two
acknowledgements of that partition while records were being sent — is measured per
restart and printed (tests never assert on time; the figures go to the report).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Dict, List, Tuple

import confluent_kafka

from tests.cluster.procs import create_topic, describe, wait_for

TOPIC = "payments"
PARTITIONS = 6


class _SteadyProducer:
    """Sends one record to every partition every ``period_s``; records every ack's time."""

    def __init__(self, bootstrap: str, period_s: float = 0.005) -> None:
        self.p = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 1,
            "delivery.timeout.ms": 120_000, "request.timeout.ms": 10_000, "metadata.max.age.ms": 5_000,
            "retry.backoff.ms": 20, "retry.backoff.max.ms": 100, "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200})
        self.period_s = period_s
        self.acks: Dict[int, List[Tuple[float, int, bytes]]] = {p: [] for p in range(PARTITIONS)}
        self.errors: List[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acks[msg.partition()].append((time.time(), msg.offset(), msg.value()))

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            for p in range(PARTITIONS):
                self.p.produce(TOPIC, value=b"%d:%d" % (p, seq), partition=p, on_delivery=self._cb)
            seq += 1
            self.p.poll(self.period_s)
        self.sent = seq * PARTITIONS
        self.p.flush(120)

    def acked(self) -> int:
        return sum(len(v) for v in self.acks.values())


class _GroupReader:
    """A consumer group member reading and committing in its own thread."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.c = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": "auditors", "auto.offset.reset": "earliest",
            "enable.auto.commit": True, "auto.commit.interval.ms": 200, "client.id": name,
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 500, "metadata.max.age.ms": 5_000})
        self.seen: List[bytes] = []
        #: (partition, offset, value) of every record read
        self.read: List[Tuple[int, int, bytes]] = []
        self.errors: List[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.c.subscribe([TOPIC])
        while not self.stop.is_set():
            for m in self.c.consume(1000, 0.2):
                if m.error() is not None:
                    self.errors.append(str(m.error()))
                else:
                    self.seen.append(m.value())
                    self.read.append((m.partition(), m.offset(), m.value()))
        self.c.close()


def _windows(acks: List[Tuple[float, int, bytes]], start: float, end: float) -> Tuple[float, float]:
    """The longest gap between consecutive acknowledgement times in [start, end], and
    when it began (wall clock, to find it in the brokers' logs)."""
    times = [t for t, _, _ in acks if start <= t <= end]
    edges = [start] + times + [end]
    return max((b - a, a) for a, b in zip(edges, edges[1:]))


def test_rolling_restart_under_idempotent_acks_all_load_and_a_consumer_group(process_cluster, tmp_path):
    c = process_cluster(3, racks=["a", "b", "c"])
    create_topic(c, TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})
    prod = _SteadyProducer(c.bootstrap)
    readers = [_GroupReader(c.bootstrap, f"reader-{i}") for i in range(2)]
    for r in readers:
        r.thread.start()
    prod.thread.start()
    restarts: List[Dict[str, object]] = []
    try:
        wait_for(lambda: prod.acked() > 3000, "the first acknowledgements")
        for bid in (1, 2, 3):
            b = c.brokers[bid]
            before = prod.acked()
            t0 = time.time()
            assert b.stop() == 0, b.log_tail()  # SIGTERM: controlled shutdown, exit 0
            stopped = time.time()
            log = b.log_text()
            assert "controlled shutdown succeeded" in log, b.log_tail()
            b.restart()
            wait_for(lambda: all(sorted(p["isr"]) == [1, 2, 3] for p in describe(c, TOPIC)),
                     f"broker {bid} back in every ISR")
            wait_for(lambda: prod.acked() > before + 2000, f"acknowledgements after broker {bid} returned")
            t1 = time.time()
            w = [_windows(prod.acks[p], t0, t1) for p in range(PARTITIONS)]
            restarts.append({"broker": bid, "shutdown_s": round(stopped - t0, 3),
                             "windows_s": [round(x, 3) for x, _ in w],
                             "worst_at": time.strftime("%H:%M:%S", time.localtime(max(w)[1]))
                             + f".{int(max(w)[1] * 1000) % 1000:03d}"})
    finally:
        prod.stop.set()
        prod.thread.join(180)
    # the group reads what was produced
    total = prod.acked()
    wait_for(lambda: len(set(v for r in readers for v in r.seen)) >= total, "the group to read every record",
             timeout_s=120)
    for r in readers:
        r.stop.set()
        r.thread.join(60)
    assert not prod.errors, prod.errors[:5]
    assert total == prod.sent
    # every acknowledged record is in the log once, in order: per partition, the records
    # the group read have increasing sequence numbers in offset order, and each
    # acknowledgement that carries an offset names the one the record was read at.
    # (librdkafka acknowledges a batch whose answer was lost when the broker's answer
    # to a later batch of the same idempotent producer shows it was written: its
    # delivery report has no offset, an "implicit ack"; the read-back covers those.)
    read_at = {v: (p, o) for r in readers for p, o, v in r.read}
    for p in range(PARTITIONS):
        in_log = sorted((o, v) for r in readers for q, o, v in r.read if q == p)
        seqs = [int(v.split(b":")[1]) for _, v in in_log]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"partition {p} out of order or duplicated"
        for _, o, v in prod.acks[p]:
            assert o is None or read_at.get(v) == (p, o), f"{v!r} acknowledged at {p}/{o}, read at {read_at.get(v)}"
    implicit = sum(1 for acks in prod.acks.values() for _, o, _ in acks if o is None)
    seen = [v for r in readers for v in r.seen]
    acked_values = {v for acks in prod.acks.values() for _, _, v in acks}
    assert acked_values <= set(seen)
    # and read each once: the group's coordinator moved with every restart, and the new
    # one carried on with the group's stored members and assignments (no rebalance, so
    # nothing after the last auto-commit is read again)
    consumer_repeats = len(seen) - len(set(seen))
    assert consumer_repeats == 0, f"{consumer_repeats} records were delivered to the group twice"
    windows = sorted(w for r in restarts for w in r["windows_s"])  # type: ignore[union-attr]
    p99 = windows[min(len(windows) - 1, int(0.99 * len(windows)))]
    report = {"restarts": restarts, "window_p99_s": p99, "window_max_s": windows[-1],
              "records": total, "acks_without_offset": implicit, "consumer_redeliveries": consumer_repeats,
              "consumer_errors": sum(len(r.errors) for r in readers)}
    (tmp_path / "rolling-restart.json").write_text(json.dumps(report, indent=1))
    print("rolling restart:", json.dumps(report))
