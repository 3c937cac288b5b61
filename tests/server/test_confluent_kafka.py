"""confluent-kafka (librdkafka) against a real `pylog serve`.

One server serves the module (each test has its own topics and groups); the too-large
test starts its own with a small message.max.bytes.  Every read-back is compared per
partition with the exact records produced, in order, at dense offsets
(tests/server/clientdata.py).  Covered: topics created and deleted through AdminClient;
keyed and keyless records with headers, uncompressed and with gzip, snappy, lz4 and
zstd (the stored batches carry the codec); the idempotent producer; a consumer group of
two members on four partitions, a member leaving, commits and a resume; offsets by
timestamp; a ~1 MiB record, and MSG_SIZE_TOO_LARGE from the broker; acks 0, 1 and all.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pylog.records import codec_id
from tests.server.clientdata import (BIG_VALUE_BYTES, CODECS, FAST_GROUP_ARGS, SMALL_MESSAGE_MAX_BYTES,
                                     TOO_LARGE_VALUE_BYTES, Got, Rec, assert_keys_partitioned,
                                     assert_partitions, big_value, expected_by_partition, norm_headers,
                                     recent_timestamps, sample_records, wait_for)
from tests.server.wire import stored_batches

SERVER_ARGS = FAST_GROUP_ARGS


# ---------------------------------------------------------------------------- helpers
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, topic: str, partitions: int, config: Optional[Dict[str, str]] = None) -> None:
    a = admin(bootstrap)  # kept alive until the answer: a destroyed handle fails its futures
    (fut,) = a.create_topics([NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10).values()
    fut.result(15)


def producer(bootstrap: str, **conf: object) -> Producer:
    base = {"bootstrap.servers": bootstrap, "linger.ms": 5,
            # Kafka's Java hash for keys (librdkafka's default is CRC32)
            "partitioner": "murmur2_random"}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


def produce_all(p: Producer, topic: str, records: Sequence[Rec], *, partition: Optional[int] = None,
                timestamps: Optional[Sequence[int]] = None) -> List[Tuple[Rec, int, int]]:
    """Produce in order, flush, and return (record, partition, offset) per record from
    the delivery reports; fails on any delivery error."""
    reports: Dict[int, Tuple[Optional[KafkaError], int, int]] = {}
    for i, r in enumerate(records):
        def report(err: Optional[KafkaError], msg: Message, i: int = i) -> None:
            reports[i] = (err, msg.partition(), msg.offset())
        kwargs = {} if partition is None else {"partition": partition}
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        p.produce(topic, value=r.value, key=r.key, headers=list(r.headers) or None, on_delivery=report, **kwargs)
        p.poll(0)
    assert p.flush(30) == 0, "records still queued after 30 s"
    errors = [(i, e) for i, (e, _, _) in sorted(reports.items()) if e is not None]
    assert not errors, f"delivery failed: {errors[:3]}"
    assert len(reports) == len(records)
    return [(r, reports[i][1], reports[i][2]) for i, r in enumerate(records)]


def to_got(m: Message) -> Got:
    return Got(m.partition(), m.offset(), m.key(), m.value(), norm_headers(m.headers()))


def read_all(bootstrap: str, topic: str, partitions: Sequence[int], timeout_s: float = 30) -> List[Got]:
    """Every record of ``partitions`` from the beginning up to the high watermark as it
    is when the read starts (assign, no group)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: List[Got] = []
        pos = {p: 0 for p in partitions}

        def step() -> None:
            for m in c.consume(500, 0.2):
                if m.error():
                    raise KafkaException(m.error())
                got.append(to_got(m))
                pos[m.partition()] = m.offset() + 1

        wait_for(f"{topic} up to {ends}", lambda: all(pos[p] >= ends[p] for p in partitions), timeout_s, step)
        return got
    finally:
        c.close()


def acked(sent: Sequence[Tuple[Rec, int, int]]) -> List[Tuple[Rec, int]]:
    return [(r, p) for r, p, _ in sent]


# ---------------------------------------------------------------------------- admin
def test_admin_creates_describes_and_deletes_topics(module_server):
    a = admin(module_server.bootstrap)
    futs = a.create_topics([NewTopic("ck-admin-a", 3, 1, config={"retention.ms": "3600000"}),
                            NewTopic("ck-admin-b", 1, 1)], operation_timeout=10)
    for fut in futs.values():
        assert fut.result(15) is None
    md = a.list_topics(timeout=10)
    assert sorted(md.topics["ck-admin-a"].partitions) == [0, 1, 2]
    assert sorted(md.topics["ck-admin-b"].partitions) == [0]
    (cfg,) = a.describe_configs([ConfigResource("topic", "ck-admin-a")]).values()
    assert cfg.result(15)["retention.ms"].value == "3600000"

    (dup,) = a.create_topics([NewTopic("ck-admin-a", 1, 1)], operation_timeout=10).values()
    with pytest.raises(KafkaException) as exc:
        dup.result(15)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    for fut in a.delete_topics(["ck-admin-a", "ck-admin-b"], operation_timeout=10).values():
        assert fut.result(15) is None
    topics = a.list_topics(timeout=10).topics
    assert "ck-admin-a" not in topics and "ck-admin-b" not in topics
    (gone,) = a.delete_topics(["ck-admin-a"], operation_timeout=10).values()
    with pytest.raises(KafkaException) as exc:
        gone.result(15)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


# ---------------------------------------------------------------------------- produce/consume
@pytest.mark.parametrize("codec", CODECS)
def test_keyed_and_keyless_records_with_headers_round_trip(module_server, codec):
    bs, topic = module_server.bootstrap, f"ck-records-{codec}"
    create_topic(bs, topic, 3)
    records = sample_records(topic, 300)
    p = producer(bs, compression_type=codec, enable_idempotence=False, acks="all")
    sent = produce_all(p, topic, records)
    assert_keys_partitioned(acked(sent), 3)
    expected = expected_by_partition(acked(sent))
    assert_partitions(read_all(bs, topic, [0, 1, 2]), expected)
    for part in expected:
        batches = stored_batches(bs, topic, part)
        # librdkafka sends a batch uncompressed when compressing would not make it smaller
        # (one small record): every stored batch is the codec's or uncompressed, some the codec's
        kinds = [b.compression for b in batches]
        assert set(kinds) <= {codec_id(codec), 0} and codec_id(codec) in kinds, \
            f"partition {part} stored {batches[:3]}"


def test_idempotent_producer_writes_each_record_once_in_order(module_server):
    bs, topic = module_server.bootstrap, "ck-idempotent"
    create_topic(bs, topic, 3)
    records = sample_records(topic, 600)
    p = producer(bs, enable_idempotence=True, linger_ms=0, batch_num_messages=7,
                 max_in_flight_requests_per_connection=5)
    sent = produce_all(p, topic, records)
    expected = expected_by_partition(acked(sent))
    assert_partitions(read_all(bs, topic, [0, 1, 2]), expected)
    for part, recs in expected.items():
        batches = stored_batches(bs, topic, part)
        assert len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
        # the sequence numbers run on without a gap or a repeat, batch after batch
        seqs = [(b.base_sequence, b.record_count) for b in batches]
        assert [s for s, _ in seqs] == [sum(n for _, n in seqs[:i]) for i in range(len(seqs))], seqs
        assert sum(n for _, n in seqs) == len(recs)


def test_acks_0_1_and_all_records_are_all_consumed(module_server):
    bs, topic = module_server.bootstrap, "ck-acks"
    create_topic(bs, topic, 1)
    expected: List[Rec] = []
    for acks in ("0", "1", "all"):
        records = sample_records(f"{topic}-{acks}", 20)
        p = producer(bs, acks=acks, enable_idempotence=False, linger_ms=0)
        sent = produce_all(p, topic, records, partition=0)
        if acks != "0":  # acks=0 has no answer, hence no offset to report
            assert [o for _, _, o in sent] == list(range(len(expected), len(expected) + 20))
        expected += records
    assert_partitions(read_all(bs, topic, [0]), {0: expected})


# ---------------------------------------------------------------------------- groups
def test_group_of_two_splits_partitions_rebalances_commits_and_resumes(module_server):
    bs, topic, group = module_server.bootstrap, "ck-group", "ck-group-g"
    create_topic(bs, topic, 4)
    p = producer(bs)
    waves = [{part: sample_records(f"{topic}-w{w}-p{part}", 5) for part in range(4)} for w in range(3)]

    def produce_wave(w: int) -> None:
        for part in range(4):
            produce_all(p, topic, waves[w][part], partition=part)

    conf = {"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 100}
    c1, c2 = Consumer(conf), Consumer(conf)
    consumers = [c1, c2]
    got: Dict[int, List[Got]] = {0: [], 1: []}

    def poll_all(members: Sequence[int]) -> None:
        for i in members:
            for m in consumers[i].consume(100, 0.05):
                if m.error():
                    raise KafkaException(m.error())
                got[i].append(to_got(m))

    def owned(c: Consumer) -> Set[int]:
        return {tp.partition for tp in c.assignment()}

    try:
        c1.subscribe([topic])
        c2.subscribe([topic])
        # both members get partitions, none twice, all four between them; the records
        # come after, so that no member reads a partition it is about to lose
        wait_for("the two members to split four partitions",
                 lambda: owned(c1) and owned(c2) and len(owned(c1)) + len(owned(c2)) == 4, 30,
                 lambda: poll_all([0, 1]))
        a1, a2 = owned(c1), owned(c2)
        assert not a1 & a2 and a1 | a2 == {0, 1, 2, 3}
        produce_wave(0)
        wait_for("wave 0", lambda: len(got[0]) + len(got[1]) >= 20, 30, lambda: poll_all([0, 1]))
        assert (owned(c1), owned(c2)) == (a1, a2)
        assert_partitions(got[0], {part: waves[0][part] for part in a1})
        assert_partitions(got[1], {part: waves[0][part] for part in a2})
        c1.commit(asynchronous=False)
        c2.commit(asynchronous=False)

        c2.close()  # leaves the group: c1 takes over all four partitions
        consumers.pop()
        got[0].clear()
        wait_for("the remaining member to own all partitions", lambda: owned(c1) == {0, 1, 2, 3}, 30,
                 lambda: poll_all([0]))
        produce_wave(1)
        wait_for("wave 1 on all partitions", lambda: len(got[0]) >= 20, 30, lambda: poll_all([0]))
        # from the committed offsets: every partition resumes at 5, c2's included
        assert_partitions(got[0], waves[1], first_offsets={part: 5 for part in range(4)})
        c1.commit(asynchronous=False)
        c1.close()
        consumers.pop()

        produce_wave(2)
        c3 = Consumer(conf)
        consumers.append(c3)
        committed = c3.committed([TopicPartition(topic, part) for part in range(4)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {part: 10 for part in range(4)}
        c3.subscribe([topic])
        got[0].clear()
        wait_for("the new member to read wave 2", lambda: len(got[0]) >= 20, 30, lambda: poll_all([0]))
        assert_partitions(got[0], waves[2], first_offsets={part: 10 for part in range(4)})
    finally:
        for c in consumers:
            c.close()


# ---------------------------------------------------------------------------- timestamps
def test_offsets_for_times_finds_the_exact_offsets(module_server):
    bs, topic = module_server.bootstrap, "ck-times"
    create_topic(bs, topic, 2)
    ts = recent_timestamps(6, step_ms=1000)
    p = producer(bs, linger_ms=0)
    records = sample_records(topic, 6)
    produce_all(p, topic, records, partition=0, timestamps=ts)
    produce_all(p, topic, records, partition=1, timestamps=[t + 500 for t in ts])
    c = Consumer({"bootstrap.servers": bs, "group.id": f"{topic}-g"})
    try:
        # (timestamp asked of partition 0, offset expected; of partition 1, offset expected);
        # a partition may appear once per request (Kafka refuses duplicates)
        queries = [(ts[0] - 1, 0, ts[0], 0), (ts[0], 0, ts[2] + 500, 2), (ts[2], 2, ts[2] + 501, 3),
                   (ts[2] + 1, 3, ts[5] + 500, 5), (ts[5], 5, ts[5] + 501, -1), (ts[5] + 1, -1, ts[0] - 1, 0)]
        for t0, off0, t1, off1 in queries:
            found = c.offsets_for_times([TopicPartition(topic, 0, t0), TopicPartition(topic, 1, t1)], timeout=10)
            assert [(tp.partition, tp.offset) for tp in found] == [(0, off0), (1, off1)], (t0 - ts[0], t1 - ts[0])
        # and consuming from an offset found gives the record with that timestamp
        c.assign([TopicPartition(topic, 0, 3)])
        m = wait_for("the record at offset 3", lambda: c.poll(0.2))
        assert (m.offset(), m.timestamp()[1], m.value()) == (3, ts[3], records[3].value)
    finally:
        c.close()


# ---------------------------------------------------------------------------- message size
def test_one_mib_record_round_trips_under_the_default_message_max_bytes(module_server):
    bs, topic = module_server.bootstrap, "ck-big"
    create_topic(bs, topic, 1)
    big = Rec(b"big", big_value(topic), (("h", b"1"),))
    small = Rec(None, b"after")
    p = producer(bs, message_max_bytes=2_000_000, compression_type="lz4")
    produce_all(p, topic, [big, small], partition=0)
    got = read_all(bs, topic, [0])
    assert len(got[0].value) == BIG_VALUE_BYTES
    assert_partitions(got, {0: [big, small]})


def test_record_over_message_max_bytes_is_refused_by_the_broker(start_server):
    srv = start_server("--override", f"message.max.bytes={SMALL_MESSAGE_MAX_BYTES}")
    topic = "ck-too-large"
    create_topic(srv.bootstrap, topic, 1)
    # the client's own limit is raised, so the broker is the one that says no
    p = producer(srv.bootstrap, message_max_bytes=2_000_000, linger_ms=0, enable_idempotence=False)
    errors: List[KafkaError] = []
    p.produce(topic, value=big_value(topic)[:TOO_LARGE_VALUE_BYTES], partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    # the partition stays usable and holds only what was accepted
    fine = Rec(None, b"x" * 1000)
    produce_all(p, topic, [fine], partition=0)
    assert_partitions(read_all(srv.bootstrap, topic, [0]), {0: [fine]})
