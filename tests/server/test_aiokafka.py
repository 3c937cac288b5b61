"""aiokafka (asyncio) against a real `pylog serve`.

One server serves the module (each test has its own topics and groups); the too-large
test starts its own with a small message.max.bytes.  Each test is a coroutine run with
asyncio.run (no pytest plugin needed).  Every read-back is compared per partition with
the exact records produced, in order, at dense offsets (tests/server/clientdata.py).
Covered: topics created, described and deleted through AIOKafkaAdminClient; keyed and
keyless records with headers, uncompressed and with gzip, snappy, lz4 and zstd (the
stored batches carry the codec); the idempotent producer; a consumer group of two
members on four partitions, a member leaving, commits and a resume; offsets_for_times;
a ~1 MiB record, and MessageSizeTooLargeError from the broker; acks 0, 1 and all.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from pylog.records import codec_id
from tests.server.clientdata import (BIG_VALUE_BYTES, CODECS, FAST_GROUP_ARGS, SMALL_MESSAGE_MAX_BYTES,
                                     TOO_LARGE_VALUE_BYTES, Got, Rec, assert_keys_partitioned,
                                     assert_partitions, big_value, expected_by_partition, norm_headers,
                                     recent_timestamps, sample_records)
from tests.server.wire import stored_batches

SERVER_ARGS = FAST_GROUP_ARGS

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC_OR_PARTITION = 3


# ---------------------------------------------------------------------------- helpers
async def wait_until(what: str, check: Callable[[], Any], step: Callable[[], Awaitable[None]],
                     timeout_s: float = 30.0) -> Any:
    """Await ``step`` and call ``check`` until it returns something truthy; fails
    naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        await step()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def admin_call(bootstrap: str, fn: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
    a = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await a.start()
    try:
        return await fn(a)
    finally:
        await a.close()


def topic_errors(resp: Any) -> Dict[str, int]:
    """topic -> error code of a CreateTopics or DeleteTopics answer."""
    obj = resp.to_object()
    rows = obj.get("topic_errors") or obj.get("topic_error_codes") or obj.get("responses") or []
    return {r.get("topic") or r.get("name"): r["error_code"] for r in rows}


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    resp = await admin_call(bootstrap, lambda a: a.create_topics([NewTopic(topic, partitions, 1)]))
    assert topic_errors(resp) == {topic: 0}


async def producer(bootstrap: str, **conf: Any) -> AIOKafkaProducer:
    base: Dict[str, Any] = {"bootstrap_servers": bootstrap, "linger_ms": 5}
    base.update(conf)
    p = AIOKafkaProducer(**base)
    await p.start()
    return p


async def produce_all(p: AIOKafkaProducer, topic: str, records: Sequence[Rec], *, partition: Optional[int] = None,
                      timestamps: Optional[Sequence[int]] = None) -> List[Tuple[Rec, int, int]]:
    """Send in order, then await every answer: (record, partition, offset) per record
    (with acks=0 aiokafka answers None: (record, partition asked for, -1))."""
    futures = []
    for i, r in enumerate(records):
        futures.append(await p.send(topic, value=r.value, key=r.key, headers=list(r.headers), partition=partition,
                                    timestamp_ms=None if timestamps is None else timestamps[i]))
    mds = await asyncio.wait_for(asyncio.gather(*futures), 30)
    return [(r, partition, -1) if md is None else (r, md.partition, md.offset) for r, md in zip(records, mds)]


def to_got(m: Any) -> Got:
    return Got(m.partition, m.offset, m.key, m.value, norm_headers(m.headers))


async def poll_into(c: AIOKafkaConsumer, got: List[Got], timeout_ms: int = 100) -> None:
    for recs in (await c.getmany(timeout_ms=timeout_ms)).values():
        got.extend(to_got(m) for m in recs)


async def read_all(bootstrap: str, topic: str, partitions: Sequence[int], timeout_s: float = 30,
                   **conf: Any) -> List[Got]:
    """Every record of ``partitions`` from the beginning up to the high watermark as it
    is when the read starts (assign, no group)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **conf)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await c.end_offsets(tps)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got: List[Got] = []
        positions: Dict[TopicPartition, int] = {}

        async def step() -> None:
            await poll_into(c, got)
            for tp in tps:
                positions[tp] = await c.position(tp)

        await wait_until(f"{topic} up to {ends}", lambda: all(positions.get(tp, 0) >= ends[tp] for tp in tps),
                         step, timeout_s)
        return got
    finally:
        await c.stop()


def acked(sent: Sequence[Tuple[Rec, int, int]]) -> List[Tuple[Rec, int]]:
    return [(r, p) for r, p, _ in sent]


# ---------------------------------------------------------------------------- admin
def test_admin_creates_describes_and_deletes_topics(module_server):
    async def main() -> None:
        a = AIOKafkaAdminClient(bootstrap_servers=module_server.bootstrap)
        await a.start()
        try:
            resp = await a.create_topics([NewTopic("ak-admin-a", 3, 1, topic_configs={"retention.ms": "3600000"}),
                                          NewTopic("ak-admin-b", 1, 1)])
            assert topic_errors(resp) == {"ak-admin-a": 0, "ak-admin-b": 0}
            described = {t["topic"]: t for t in await a.describe_topics(["ak-admin-a", "ak-admin-b"])}
            assert sorted(p["partition"] for p in described["ak-admin-a"]["partitions"]) == [0, 1, 2]
            assert len(described["ak-admin-b"]["partitions"]) == 1
            (cfg,) = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "ak-admin-a",
                                                              {"retention.ms": None})])
            (res,) = cfg.to_object()["resources"]
            assert res["error_code"] == 0
            assert {e["config_names"]: e["config_value"] for e in res["config_entries"]} == {"retention.ms": "3600000"}

            resp = await a.create_topics([NewTopic("ak-admin-a", 1, 1)])
            assert topic_errors(resp) == {"ak-admin-a": _TOPIC_ALREADY_EXISTS}

            resp = await a.delete_topics(["ak-admin-a", "ak-admin-b"])
            assert topic_errors(resp) == {"ak-admin-a": 0, "ak-admin-b": 0}
            names = await a.list_topics()
            assert "ak-admin-a" not in names and "ak-admin-b" not in names
            resp = await a.delete_topics(["ak-admin-a"])
            assert topic_errors(resp) == {"ak-admin-a": _UNKNOWN_TOPIC_OR_PARTITION}
        finally:
            await a.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- produce/consume
@pytest.mark.parametrize("codec", CODECS)
def test_keyed_and_keyless_records_with_headers_round_trip(module_server, codec):
    bs, topic = module_server.bootstrap, f"ak-records-{codec}"

    async def main() -> None:
        await create_topic(bs, topic, 3)
        records = sample_records(topic, 300)
        p = await producer(bs, compression_type=None if codec == "none" else codec, acks="all")
        try:
            sent = await produce_all(p, topic, records)
        finally:
            await p.stop()
        assert_keys_partitioned(acked(sent), 3)
        expected = expected_by_partition(acked(sent))
        assert_partitions(await read_all(bs, topic, [0, 1, 2]), expected)
        for part in expected:
            batches = stored_batches(bs, topic, part)
            assert {b.compression for b in batches} == {codec_id(codec)}, f"partition {part} stored {batches[:3]}"

    asyncio.run(main())


def test_idempotent_producer_writes_each_record_once_in_order(module_server):
    bs, topic = module_server.bootstrap, "ak-idempotent"

    async def main() -> None:
        await create_topic(bs, topic, 3)
        records = sample_records(topic, 600)
        p = await producer(bs, enable_idempotence=True, acks="all", linger_ms=0, max_batch_size=512)
        try:
            sent = await produce_all(p, topic, records)
        finally:
            await p.stop()
        expected = expected_by_partition(acked(sent))
        assert_partitions(await read_all(bs, topic, [0, 1, 2]), expected)
        for part, recs in expected.items():
            batches = stored_batches(bs, topic, part)
            assert len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
            seqs = [(b.base_sequence, b.record_count) for b in batches]
            assert [s for s, _ in seqs] == [sum(n for _, n in seqs[:i]) for i in range(len(seqs))], seqs
            assert sum(n for _, n in seqs) == len(recs)

    asyncio.run(main())


def test_acks_0_1_and_all_records_are_all_consumed(module_server):
    bs, topic = module_server.bootstrap, "ak-acks"

    async def main() -> None:
        await create_topic(bs, topic, 1)
        expected: List[Rec] = []
        for acks in (0, 1, "all"):
            records = sample_records(f"{topic}-{acks}", 20)
            p = await producer(bs, acks=acks, linger_ms=0)
            try:
                sent = await produce_all(p, topic, records, partition=0)
            finally:
                await p.stop()
            if acks != 0:  # acks=0 has no answer, hence no offset to report
                assert [o for _, _, o in sent] == list(range(len(expected), len(expected) + 20))
            expected += records
        assert_partitions(await read_all(bs, topic, [0]), {0: expected})

    asyncio.run(main())


# ---------------------------------------------------------------------------- groups
def test_group_of_two_splits_partitions_rebalances_commits_and_resumes(module_server):
    bs, topic, group = module_server.bootstrap, "ak-group", "ak-group-g"
    waves = [{part: sample_records(f"{topic}-w{w}-p{part}", 5) for part in range(4)} for w in range(3)]
    conf = dict(bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                session_timeout_ms=6000, heartbeat_interval_ms=100)

    async def main() -> None:
        await create_topic(bs, topic, 4)
        p = await producer(bs)

        async def produce_wave(w: int) -> None:
            for part in range(4):
                await produce_all(p, topic, waves[w][part], partition=part)

        c1, c2 = AIOKafkaConsumer(topic, **conf), AIOKafkaConsumer(topic, **conf)
        consumers = [c1, c2]
        got: Dict[int, List[Got]] = {0: [], 1: []}

        async def poll_all(members: Sequence[int]) -> None:
            await asyncio.gather(*(poll_into(consumers[i], got[i], 50) for i in members))

        def owned(c: AIOKafkaConsumer) -> Set[int]:
            return {tp.partition for tp in c.assignment()}

        started: List[AIOKafkaConsumer] = []
        try:
            for c in consumers:
                await c.start()
                started.append(c)
            # the records come once the members have split the partitions, so that no
            # member reads a partition it is about to lose
            await wait_until("the two members to split four partitions",
                             lambda: owned(c1) and owned(c2) and len(owned(c1)) + len(owned(c2)) == 4,
                             lambda: poll_all([0, 1]))
            a1, a2 = owned(c1), owned(c2)
            assert not a1 & a2 and a1 | a2 == {0, 1, 2, 3}
            await produce_wave(0)
            await wait_until("wave 0", lambda: len(got[0]) + len(got[1]) >= 20, lambda: poll_all([0, 1]))
            assert (owned(c1), owned(c2)) == (a1, a2)
            assert_partitions(got[0], {part: waves[0][part] for part in a1})
            assert_partitions(got[1], {part: waves[0][part] for part in a2})
            await c1.commit()
            await c2.commit()

            await c2.stop()  # leaves the group: c1 takes over all four partitions
            started.remove(c2)
            consumers.pop()
            got[0].clear()
            await wait_until("the remaining member to own all partitions", lambda: owned(c1) == {0, 1, 2, 3},
                             lambda: poll_all([0]))
            await produce_wave(1)
            await wait_until("wave 1 on all partitions", lambda: len(got[0]) >= 20, lambda: poll_all([0]))
            assert_partitions(got[0], waves[1], first_offsets={part: 5 for part in range(4)})
            await c1.commit()
            await c1.stop()
            started.remove(c1)
            consumers.pop()

            await produce_wave(2)
            c3 = AIOKafkaConsumer(**conf)
            await c3.start()
            started.append(c3)
            consumers.append(c3)
            committed = {part: await c3.committed(TopicPartition(topic, part)) for part in range(4)}
            assert committed == {part: 10 for part in range(4)}
            c3.subscribe([topic])
            got[0].clear()
            await wait_until("the new member to read wave 2", lambda: len(got[0]) >= 20, lambda: poll_all([0]))
            assert_partitions(got[0], waves[2], first_offsets={part: 10 for part in range(4)})
        finally:
            await p.stop()
            for c in started:
                await c.stop()

    asyncio.run(main())


# ---------------------------------------------------------------------------- timestamps
def test_offsets_for_times_finds_the_exact_offsets(module_server):
    bs, topic = module_server.bootstrap, "ak-times"
    ts = recent_timestamps(6, step_ms=1000)
    records = sample_records(topic, 6)

    async def main() -> None:
        await create_topic(bs, topic, 2)
        p = await producer(bs, linger_ms=0)
        try:
            await produce_all(p, topic, records, partition=0, timestamps=ts)
            await produce_all(p, topic, records, partition=1, timestamps=[t + 500 for t in ts])
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False)
        await c.start()
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        try:
            queries = [(ts[0] - 1, 0, ts[0], 0), (ts[0], 0, ts[2] + 500, 2), (ts[2], 2, ts[2] + 501, 3),
                       (ts[2] + 1, 3, ts[5] + 500, 5), (ts[5], 5, ts[5] + 501, None),
                       (ts[5] + 1, None, ts[0] - 1, 0)]
            for t0, off0, t1, off1 in queries:
                found = await c.offsets_for_times({tp0: t0, tp1: t1})
                offs = {tp: None if v is None else v.offset for tp, v in found.items()}
                assert offs == {tp0: off0, tp1: off1}, (t0 - ts[0], t1 - ts[0])
            found = await c.offsets_for_times({tp0: ts[3]})
            assert (found[tp0].offset, found[tp0].timestamp) == (3, ts[3])
            c.assign([tp0])
            c.seek(tp0, 3)
            got: List[Got] = []
            await wait_until("the record at offset 3", lambda: got, lambda: poll_into(c, got))
            assert (got[0].offset, got[0].value) == (3, records[3].value)
        finally:
            await c.stop()

    asyncio.run(main())


# ---------------------------------------------------------------------------- message size
def test_one_mib_record_round_trips_under_the_default_message_max_bytes(module_server):
    bs, topic = module_server.bootstrap, "ak-big"
    big = Rec(b"big", big_value(topic), (("h", b"1"),))
    small = Rec(None, b"after")

    async def main() -> None:
        await create_topic(bs, topic, 1)
        p = await producer(bs, max_request_size=2_000_000, compression_type="lz4")
        try:
            await produce_all(p, topic, [big, small], partition=0)
        finally:
            await p.stop()
        got = await read_all(bs, topic, [0])
        assert len(got[0].value) == BIG_VALUE_BYTES
        assert_partitions(got, {0: [big, small]})

    asyncio.run(main())


def test_record_over_message_max_bytes_is_refused_by_the_broker(start_server):
    srv = start_server("--override", f"message.max.bytes={SMALL_MESSAGE_MAX_BYTES}")
    topic = "ak-too-large"
    fine = Rec(None, b"x" * 1000)

    async def main() -> None:
        await create_topic(srv.bootstrap, topic, 1)
        # the client's own limit (max_request_size) is above the record: send() accepts
        # it and the error comes back in the broker's answer
        p = await producer(srv.bootstrap, max_request_size=2_000_000, linger_ms=0)
        try:
            fut = await p.send(topic, value=big_value(topic)[:TOO_LARGE_VALUE_BYTES], partition=0)
            with pytest.raises(MessageSizeTooLargeError):
                await asyncio.wait_for(fut, 30)
            await produce_all(p, topic, [fine], partition=0)
        finally:
            await p.stop()
        assert_partitions(await read_all(srv.bootstrap, topic, [0]), {0: [fine]})

    asyncio.run(main())
