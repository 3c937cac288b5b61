"""kafka-python (3.x, pure Python) against a real `pylog serve`.

One server serves the module (each test has its own topics and groups); the too-large
test starts its own with a small message.max.bytes.  Every read-back is compared per
partition with the exact records produced, in order, at dense offsets
(tests/server/clientdata.py).  Covered: topics created, described and deleted through
KafkaAdminClient; keyed and keyless records with headers, uncompressed and with gzip,
snappy, lz4 and zstd (the stored batches carry the codec); the idempotent producer (its
default); a consumer group of two members on four partitions, a member leaving,
commits and a resume; offsets_for_times; a ~1 MiB record, and MessageSizeTooLargeError
from the broker; acks 0, 1 and all.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (MessageSizeTooLargeError, RebalanceInProgressError, TopicAlreadyExistsError,
                          UnknownTopicOrPartitionError)

from pylog.records import codec_id
from tests.server.clientdata import (BIG_VALUE_BYTES, CODECS, FAST_GROUP_ARGS, SMALL_MESSAGE_MAX_BYTES,
                                     TOO_LARGE_VALUE_BYTES, Got, Rec, assert_keys_partitioned,
                                     assert_partitions, big_value, expected_by_partition, norm_headers,
                                     recent_timestamps, sample_records, wait_for)
from tests.server.wire import stored_batches

SERVER_ARGS = FAST_GROUP_ARGS


# ---------------------------------------------------------------------------- helpers
def create_topic(bootstrap: str, topic: str, partitions: int, config: Optional[Dict[str, str]] = None) -> None:
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        a.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1, "configs": config or {}}})
    finally:
        a.close()


def producer(bootstrap: str, **conf: object) -> KafkaProducer:
    base: Dict[str, object] = {"bootstrap_servers": bootstrap, "linger_ms": 5}
    base.update(conf)
    return KafkaProducer(**base)


def produce_all(p: KafkaProducer, topic: str, records: Sequence[Rec], *, partition: Optional[int] = None,
                timestamps: Optional[Sequence[int]] = None) -> List[Tuple[Rec, int, int]]:
    """Send in order, flush, and return (record, partition, offset) per record from the
    futures; fails on any error."""
    futures = []
    for i, r in enumerate(records):
        futures.append(p.send(topic, value=r.value, key=r.key, headers=list(r.headers), partition=partition,
                              timestamp_ms=None if timestamps is None else timestamps[i]))
    p.flush(30)
    out = []
    for r, f in zip(records, futures):
        md = f.get(timeout=30)
        out.append((r, md.partition, md.offset))
    return out


def to_got(m: object) -> Got:
    return Got(m.partition, m.offset, m.key, m.value, norm_headers(m.headers))  # type: ignore[attr-defined]


def poll_into(c: KafkaConsumer, got: List[Got], timeout_ms: int = 100) -> None:
    for recs in c.poll(timeout_ms=timeout_ms).values():
        got.extend(to_got(m) for m in recs)


def read_all(bootstrap: str, topic: str, partitions: Sequence[int], timeout_s: float = 30,
             **conf: object) -> List[Got]:
    """Every record of ``partitions`` from the beginning up to the high watermark as it
    is when the read starts (assign, no group)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **conf)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = c.end_offsets(tps)
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got: List[Got] = []
        wait_for(f"{topic} up to {ends}", lambda: all(c.position(tp) >= ends[tp] for tp in tps), timeout_s,
                 lambda: poll_into(c, got))
        return got
    finally:
        c.close()


def acked(sent: Sequence[Tuple[Rec, int, int]]) -> List[Tuple[Rec, int]]:
    return [(r, p) for r, p, _ in sent]


# ---------------------------------------------------------------------------- admin
def test_admin_creates_describes_and_deletes_topics(module_server):
    a = KafkaAdminClient(bootstrap_servers=module_server.bootstrap)
    try:
        a.create_topics({"kp-admin-a": {"num_partitions": 3, "replication_factor": 1,
                                        "configs": {"retention.ms": "3600000"}},
                         "kp-admin-b": {"num_partitions": 1, "replication_factor": 1}})
        described = {t["name"]: t for t in a.describe_topics(["kp-admin-a", "kp-admin-b"])}
        assert sorted(p["partition_index"] for p in described["kp-admin-a"]["partitions"]) == [0, 1, 2]
        assert len(described["kp-admin-b"]["partitions"]) == 1
        cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin-a", ["retention.ms"])])
        assert cfg["topic"]["kp-admin-a"]["retention.ms"]["value"] == "3600000"

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({"kp-admin-a": {"num_partitions": 1, "replication_factor": 1}})

        a.delete_topics(["kp-admin-a", "kp-admin-b"])
        names = a.list_topics()
        assert "kp-admin-a" not in names and "kp-admin-b" not in names
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics(["kp-admin-a"])
    finally:
        a.close()


# ---------------------------------------------------------------------------- produce/consume
@pytest.mark.parametrize("codec", CODECS)
def test_keyed_and_keyless_records_with_headers_round_trip(module_server, codec):
    bs, topic = module_server.bootstrap, f"kp-records-{codec}"
    create_topic(bs, topic, 3)
    records = sample_records(topic, 300)
    p = producer(bs, compression_type=None if codec == "none" else codec, enable_idempotence=False, acks="all")
    try:
        sent = produce_all(p, topic, records)
    finally:
        p.close()
    assert_keys_partitioned(acked(sent), 3)
    expected = expected_by_partition(acked(sent))
    assert_partitions(read_all(bs, topic, [0, 1, 2]), expected)
    for part in expected:
        batches = stored_batches(bs, topic, part)
        assert {b.compression for b in batches} == {codec_id(codec)}, f"partition {part} stored {batches[:3]}"


def test_idempotent_producer_writes_each_record_once_in_order(module_server):
    bs, topic = module_server.bootstrap, "kp-idempotent"
    create_topic(bs, topic, 3)
    records = sample_records(topic, 600)
    p = producer(bs, enable_idempotence=True, acks="all", linger_ms=0, batch_size=512,
                 max_in_flight_requests_per_connection=5)
    try:
        sent = produce_all(p, topic, records)
    finally:
        p.close()
    expected = expected_by_partition(acked(sent))
    assert_partitions(read_all(bs, topic, [0, 1, 2]), expected)
    for part, recs in expected.items():
        batches = stored_batches(bs, topic, part)
        assert len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
        seqs = [(b.base_sequence, b.record_count) for b in batches]
        assert [s for s, _ in seqs] == [sum(n for _, n in seqs[:i]) for i in range(len(seqs))], seqs
        assert sum(n for _, n in seqs) == len(recs)


def test_acks_0_1_and_all_records_are_all_consumed(module_server):
    bs, topic = module_server.bootstrap, "kp-acks"
    create_topic(bs, topic, 1)
    expected: List[Rec] = []
    for acks in (0, 1, "all"):
        records = sample_records(f"{topic}-{acks}", 20)
        # idempotence needs acks=all; the others send plain batches
        p = producer(bs, acks=acks, enable_idempotence=acks == "all", linger_ms=0)
        try:
            sent = produce_all(p, topic, records, partition=0)
        finally:
            p.close()
        if acks != 0:  # acks=0 has no answer, hence no offset to report
            assert [o for _, _, o in sent] == list(range(len(expected), len(expected) + 20))
        expected += records
    assert_partitions(read_all(bs, topic, [0]), {0: expected})


# ---------------------------------------------------------------------------- groups
class Member:
    """A group member: a KafkaConsumer polled by a thread of its own, which also runs
    every other call on it (kafka-python's consumer is not thread-safe).

    One thread per consumer, and polls of 200 ms, because kafka-python 3.0.12 loses a
    JoinGroup/SyncGroup that finishes while no poll() is waiting for it: it then either
    joins again (two consumers polled in turn from one thread rebalance without end)
    or never applies the assignment and stops heartbeating.  The server answers every
    request in both cases; the client drops the answer."""

    def __init__(self, conf: Dict[str, object], topic: str) -> None:
        self.consumer = KafkaConsumer(**conf)
        self.topic = topic
        self.records: List[Got] = []
        #: the partitions assigned when the last poll returned
        self.assigned: Set[int] = set()
        self._calls: "queue.Queue[Tuple[Callable[[KafkaConsumer], object], Future]]" = queue.Queue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"member-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c = self.consumer
        while not self._stopped:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                pass
            else:
                try:
                    fut.set_result(fn(c))
                except BaseException as exc:
                    fut.set_exception(exc)
                continue
            poll_into(c, self.records, 200)
            self.assigned = {tp.partition for tp in c.assignment()}

    def call(self, fn: Callable[[KafkaConsumer], object]) -> object:
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout=60)

    def commit(self, timeout_s: float = 30.0) -> None:
        """Commit the positions.  A commit that finds the group rebalancing fails with
        RebalanceInProgressError; as kafka-python's message says (and as Kafka's
        documentation tells a consumer to do), poll to finish the rebalance, then commit
        again.  The polls collect into :attr:`records`, like the member's own."""
        def commit(c: KafkaConsumer) -> None:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    c.commit()
                    return
                except RebalanceInProgressError:
                    if time.monotonic() >= deadline:
                        raise
                    poll_into(c, self.records, 200)
                    self.assigned = {tp.partition for tp in c.assignment()}
        self.call(commit)

    def owned(self) -> Set[int]:
        return self.assigned

    def subscribe(self) -> None:
        # the topic's metadata first, so that the leader never assigns without it
        def sub(c: KafkaConsumer) -> None:
            assert c.partitions_for_topic(self.topic) == {0, 1, 2, 3}
            c.subscribe([self.topic])
        self.call(sub)

    def close(self) -> None:
        """Close the consumer (leaving the group) and end the thread."""
        if self._thread.is_alive():
            def close(c: KafkaConsumer) -> None:
                self._stopped = True
                c.close()
            self.call(close)
            self._thread.join(30)


def test_group_of_two_splits_partitions_rebalances_commits_and_resumes(module_server):
    bs, topic, group = module_server.bootstrap, "kp-group", "kp-group-g"
    create_topic(bs, topic, 4)
    p = producer(bs)
    waves = [{part: sample_records(f"{topic}-w{w}-p{part}", 5) for part in range(4)} for w in range(3)]

    def produce_wave(w: int) -> None:
        for part in range(4):
            produce_all(p, topic, waves[w][part], partition=part)

    conf = dict(bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                session_timeout_ms=6000, heartbeat_interval_ms=100)
    m1, m2 = Member(conf, topic), Member(conf, topic)
    members = [m1, m2]
    try:
        m1.subscribe()
        m2.subscribe()
        # the records come once the members have split the partitions, so that no
        # member reads a partition it is about to lose
        wait_for("the two members to split four partitions",
                 lambda: m1.owned() and m2.owned() and len(m1.owned()) + len(m2.owned()) == 4, 30)
        a1, a2 = m1.owned(), m2.owned()
        assert not a1 & a2 and a1 | a2 == {0, 1, 2, 3}
        produce_wave(0)
        wait_for("wave 0", lambda: len(m1.records) + len(m2.records) >= 20, 30)
        assert (m1.owned(), m2.owned()) == (a1, a2)
        assert_partitions(m1.records, {part: waves[0][part] for part in a1})
        assert_partitions(m2.records, {part: waves[0][part] for part in a2})
        m1.commit()
        m2.commit()

        m2.close()  # leaves the group: m1 takes over all four partitions
        wait_for("the remaining member to own all partitions", lambda: m1.owned() == {0, 1, 2, 3}, 30)
        seen = len(m1.records)
        produce_wave(1)
        wait_for("wave 1 on all partitions", lambda: len(m1.records) >= seen + 20, 30)
        assert_partitions(m1.records[seen:], waves[1], first_offsets={part: 5 for part in range(4)})
        m1.commit()
        m1.close()

        produce_wave(2)
        m3 = Member(conf, topic)
        members.append(m3)
        committed = m3.call(lambda c: {part: c.committed(TopicPartition(topic, part)) for part in range(4)})
        assert committed == {part: 10 for part in range(4)}
        m3.subscribe()
        wait_for("the new member to read wave 2", lambda: len(m3.records) >= 20, 30)
        assert_partitions(m3.records, waves[2], first_offsets={part: 10 for part in range(4)})
    except BaseException:
        # What the coordinator said about the group (rebalances and why), to tell a
        # broker bug from a client that did not rejoin.
        print(f"----- the server's log lines about group {group!r} -----")
        print("\n".join(line for line in module_server.log_text().splitlines() if repr(group) in line))
        raise
    finally:
        p.close()
        for m in members:
            m.close()


# ---------------------------------------------------------------------------- timestamps
def test_offsets_for_times_finds_the_exact_offsets(module_server):
    bs, topic = module_server.bootstrap, "kp-times"
    create_topic(bs, topic, 2)
    ts = recent_timestamps(6, step_ms=1000)
    p = producer(bs, linger_ms=0)
    records = sample_records(topic, 6)
    try:
        produce_all(p, topic, records, partition=0, timestamps=ts)
        produce_all(p, topic, records, partition=1, timestamps=[t + 500 for t in ts])
    finally:
        p.close()
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    try:
        queries = [(ts[0] - 1, 0, ts[0], 0), (ts[0], 0, ts[2] + 500, 2), (ts[2], 2, ts[2] + 501, 3),
                   (ts[2] + 1, 3, ts[5] + 500, 5), (ts[5], 5, ts[5] + 501, None), (ts[5] + 1, None, ts[0] - 1, 0)]
        for t0, off0, t1, off1 in queries:
            found = c.offsets_for_times({tp0: t0, tp1: t1})
            offs = {tp: None if v is None else v.offset for tp, v in found.items()}
            assert offs == {tp0: off0, tp1: off1}, (t0 - ts[0], t1 - ts[0])
        found = c.offsets_for_times({tp0: ts[3]})
        assert (found[tp0].offset, found[tp0].timestamp) == (3, ts[3])
        c.assign([tp0])
        c.seek(tp0, 3)
        got: List[Got] = []
        wait_for("the record at offset 3", lambda: got, 30, lambda: poll_into(c, got))
        assert (got[0].offset, got[0].value) == (3, records[3].value)
    finally:
        c.close()


# ---------------------------------------------------------------------------- message size
def test_one_mib_record_round_trips_under_the_default_message_max_bytes(module_server):
    bs, topic = module_server.bootstrap, "kp-big"
    create_topic(bs, topic, 1)
    big = Rec(b"big", big_value(topic), (("h", b"1"),))
    small = Rec(None, b"after")
    p = producer(bs, max_request_size=2_000_000, compression_type="lz4")
    try:
        produce_all(p, topic, [big, small], partition=0)
    finally:
        p.close()
    got = read_all(bs, topic, [0])
    assert len(got[0].value) == BIG_VALUE_BYTES
    assert_partitions(got, {0: [big, small]})


def test_record_over_message_max_bytes_is_refused_by_the_broker(start_server):
    srv = start_server("--override", f"message.max.bytes={SMALL_MESSAGE_MAX_BYTES}")
    topic = "kp-too-large"
    create_topic(srv.bootstrap, topic, 1)
    # the client's own limit (max_request_size) is above the record: send() accepts it
    # and the error comes back in the broker's answer
    p = producer(srv.bootstrap, max_request_size=2_000_000, linger_ms=0, enable_idempotence=False)
    try:
        fut = p.send(topic, value=big_value(topic)[:TOO_LARGE_VALUE_BYTES], partition=0)
        with pytest.raises(MessageSizeTooLargeError):
            fut.get(timeout=30)
        fine = Rec(None, b"x" * 1000)
        produce_all(p, topic, [fine], partition=0)
    finally:
        p.close()
    assert_partitions(read_all(srv.bootstrap, topic, [0]), {0: [fine]})
