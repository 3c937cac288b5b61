"""Client load and checks for the cluster tests (real Kafka clients, confluent-kafka).

- :class:`Load`: a producer thread (acks=all, idempotent by default) sending
  key-sequenced values ``b"<key>:<seq>"`` until stopped; it records every acknowledged
  record (partition, offset, value) and every error.
- :func:`produce_now`: send some values to one partition and wait for their reports.
- :func:`read_all`: every record of a topic, read from the leaders up to the high watermark.
- :func:`check_no_loss_no_dup`: every acknowledged record is stored once, at the offset
  it was acknowledged at, and each key's sequence numbers increase along a partition.
- :func:`replica_records`: the records of one broker's replica, read from its segment
  files on disk (a follower's copy, which consumers cannot read).
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import confluent_kafka

Acked = Tuple[int, int, bytes]  # partition, offset, value


def producer(cluster: Any, **extra: Any) -> confluent_kafka.Producer:
    """A producer for ``cluster``: acks=all, idempotent, retrying for two minutes."""
    conf = {"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "retries": 1_000_000, "delivery.timeout.ms": 120_000, "request.timeout.ms": 10_000,
            "metadata.max.age.ms": 5_000}
    conf.update(extra)
    return confluent_kafka.Producer(conf)


def produce_now(cluster: Any, topic: str, partition: int, values: Sequence[bytes],
                timeout_s: float = 60.0, conf: Optional[Dict[str, Any]] = None) -> Tuple[List[Acked], List[str]]:
    """Send ``values`` to one partition (producer settings as :func:`producer`, overridden
    by ``conf``, librdkafka names) and wait for every delivery report.  Returns
    (acknowledged, errors)."""
    p = producer(cluster, **(conf or {}))
    acked: List[Acked] = []
    errors: List[str] = []

    def cb(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    for v in values:
        while True:
            try:
                p.produce(topic, value=v, partition=partition, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(timeout_s)
    if left:
        errors.append(f"{left} records without a delivery report after {timeout_s} s")
    return acked, errors


def read_all(cluster: Any, topic: str, partitions: int) -> Dict[int, List[Tuple[int, bytes]]]:
    """Every record of every partition (offset, value), read from the leaders up to the HW."""
    cons = confluent_kafka.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "reader-" + uuid.uuid4().hex,
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


class Load:
    """A producer thread sending key-sequenced values until stopped; records what was acked.

    Use as a context manager: the thread starts on entry; on exit it stops sending and
    flushes (every record gets its report: acknowledged or an error).  ``conf`` overrides
    the producer's settings (librdkafka names)."""

    def __init__(self, cluster: Any, topic: str, keys: int = 12, *, pace_s: float = 0.002,
                 conf: Optional[Dict[str, Any]] = None) -> None:
        self.topic = topic
        self.keys = keys
        self.pace_s = pace_s
        self.acked: List[Acked] = []
        self.errors: List[str] = []
        #: The producer's fatal error, if it had one (it stops sending then).
        self.fatal: Optional[str] = None
        self.p = producer(cluster, error_cb=self._error, **(conf or {}))
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"load-{topic}")

    def _cb(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.value()))

    def _error(self, err: Any) -> None:
        """librdkafka's error callback: a fatal error (the producer stops) is kept."""
        if err.fatal():
            self.fatal = str(err)
            self.errors.append(f"fatal: {err}")

    def _run(self) -> None:
        seq = 0
        try:
            while not self.stop.is_set():
                k = seq % self.keys
                try:
                    self.p.produce(self.topic, value=b"%d:%d" % (k, seq), key=b"k%d" % k, on_delivery=self._cb)
                    seq += 1
                except BufferError:
                    self.p.poll(0.01)
                    continue
                self.p.poll(0.001 if seq % 50 == 0 else 0)
                if seq % 50 == 0:
                    time.sleep(self.pace_s)
        except confluent_kafka.KafkaException as exc:  # a fatal producer error: stop sending
            self.fatal = self.fatal or str(exc)
            self.errors.append(f"produce raised {exc}")
        self.sent = seq
        try:
            left = self.p.flush(180)
        except (confluent_kafka.KafkaException, SystemError) as exc:
            # After a fatal error flush raises it (confluent-kafka 2.16 sometimes as a
            # SystemError from inside the delivery callback).
            self.fatal = self.fatal or str(exc)
            self.errors.append(f"flush raised {exc!r}")
            left = len(self.p)
        if left:
            self.errors.append(f"{left} records without a delivery report at the end")

    def acked_count(self) -> int:
        return len(self.acked)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(240)
        assert not self.thread.is_alive(), "the producer thread did not finish"
        # librdkafka's threads live as long as the Producer object: drop it now, or a failed
        # test's kept traceback keeps it reconnecting to the stopped brokers for the rest of
        # the run
        self.p = None


def check_no_loss_no_dup(acked: Iterable[Acked], records: Dict[int, List[Tuple[int, bytes]]],
                         partitions: int) -> None:
    """Each stored value once; per key increasing sequence numbers along a partition (values
    are ``b"<key>:<seq>"``); every acknowledged record stored, in the partition and at the
    offset it was acknowledged at.

    An acknowledgement without an offset (``None``) is librdkafka's implicit ack: an
    idempotent producer whose request failed with a possibly-persisted error (a timeout, a
    dropped connection) learns from a later batch's acknowledgement that the earlier batch
    was written, and reports it delivered without an offset.  Such a record must be stored
    once, in its partition; its offset cannot be checked."""
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
    acked = list(acked)
    missing = [(p, o, v) for p, o, v in acked if v not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    wrong = [(p, o, v, seen[v]) for p, o, v in acked
             if (seen[v][0] != p if o is None else seen[v] != (p, o))]
    assert not wrong, f"acknowledged at one offset, stored at another: {wrong[:5]}"


def replica_batches(broker: Any, topic: str, partition: int) -> Iterable[Any]:
    """The record batches of ``broker``'s replica of ``topic``-``partition``, read from its
    segment files (as `pylog dump-log` does; a live broker's files are read as far as
    whole, valid batches go)."""
    from pylog.errors import PylogError
    from pylog.records import RecordBatch
    from pylog.storage.segment import parse_segment_file_name

    d = Path(broker.data_dir) / f"{topic}-{partition}"
    try:
        names = sorted(n for n in os.listdir(d) if parse_segment_file_name(n) is not None)
    except FileNotFoundError:
        return
    for name in names:
        try:
            data = (d / name).read_bytes()
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        pos = 0
        while len(data) - pos >= 61:
            batch = RecordBatch(memoryview(data)[pos:])
            if batch.magic != 2 or batch.batch_length < 49 or pos + batch.size_bytes > len(data):
                break
            batch = RecordBatch(memoryview(data)[pos:pos + batch.size_bytes])
            try:
                batch.validate()
            except PylogError:
                break
            yield batch
            pos += batch.size_bytes


def replica_records(broker: Any, topic: str, partition: int) -> List[Tuple[int, bytes]]:
    """The (offset, value) records of ``broker``'s replica of ``topic``-``partition``
    (:func:`replica_batches`)."""
    return [(rec.offset, bytes(rec.value) if rec.value is not None else b"")
            for batch in replica_batches(broker, topic, partition) for rec in batch.records()]


def record_producers(broker: Any, topic: str, partition: int) -> Dict[int, Tuple[int, int, int]]:
    """offset -> (producer id, producer epoch, sequence) of each record of ``broker``'s
    replica of ``topic``-``partition``, from the batch headers (:func:`replica_batches`)."""
    return {rec.offset: (batch.producer_id, batch.producer_epoch, batch.base_sequence + rec.offset - batch.base_offset)
            for batch in replica_batches(broker, topic, partition) for rec in batch.records()}
