"""The Producer against an embedded broker: batching, futures, acks, errors, retries."""
from __future__ import annotations

import importlib.util
import threading

import pytest

import pylog
from pylog import errors
from pylog.records import iter_records


def read_all(broker, topic, partition):
    out = []
    for r in broker.partition(topic, partition).log.records():
        out.append(r)
    return out


def test_send_returns_offsets_in_order(broker):
    broker.create_topic("t", 3)
    with pylog.Producer(broker, linger_ms=1000) as p:  # flush ships the lingering batches
        futs = [p.send("t", b"v%d" % i, partition=1) for i in range(100)]
        p.flush()
        metas = [f.result(timeout=5) for f in futs]
    assert [m.offset for m in metas] == list(range(100))
    assert all(m.topic == "t" and m.partition == 1 and m.timestamp > 0 for m in metas)
    assert [r.value for r in read_all(broker, "t", 1)] == [b"v%d" % i for i in range(100)]


def test_keyed_records_land_by_murmur2_and_explicit_partition_wins(broker):
    from pylog.client.partitioner import murmur2_partition
    broker.create_topic("t", 6)
    with pylog.Producer(broker) as p:
        futs = {k: p.send("t", b"x", key=b"customer-%d" % k) for k in range(50)}
        forced = p.send("t", b"y", key=b"customer-1", partition=5)
    for k, f in futs.items():
        assert f.result().partition == murmur2_partition(b"customer-%d" % k, 6)
    assert forced.result().partition == 5


def test_keyless_records_spread_over_partitions(broker):
    broker.create_topic("t", 4)
    with pylog.Producer(broker, batch_size=1000) as p:
        futs = [p.send("t", b"z" * 90) for _ in range(4000)]
    counts = [0] * 4
    for f in futs:
        counts[f.result().partition] += 1
    assert all(c > 0 for c in counts), counts
    assert sum(counts) == 4000


def test_headers_keys_timestamps_round_trip(broker):
    broker.create_topic("t", 1)
    with pylog.Producer(broker) as p:
        m = p.send("t", b"v", key=b"k", headers=[("h", b"1"), ("n", None)], timestamp=123456).result()
    assert m.timestamp == 123456
    (r,) = read_all(broker, "t", 0)
    assert (r.key, r.value, r.timestamp, r.headers) == (b"k", b"v", 123456, (("h", b"1"), ("n", None)))


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_types(broker, codec):
    modules = {"snappy": ("snappy", "cramjam"), "lz4": ("lz4",)}.get(codec, ())
    if modules and all(importlib.util.find_spec(m) is None for m in modules):
        with pytest.raises(errors.UnsupportedCompressionType, match=codec):
            pylog.Producer(broker, compression_type=codec)
        return
    broker.create_topic("t", 1)
    with pylog.Producer(broker, compression_type=codec) as p:
        for i in range(20):
            p.send("t", b"value-%d" % i)
    batches = broker.fetch("t", 0, 0).batches
    assert {b.compression_type for b in batches} == {codec}
    assert [r.value for b in batches for r in iter_records(b.buffer)] == [b"value-%d" % i for i in range(20)]


def test_acks_zero_gives_no_offset(broker):
    broker.create_topic("t", 1)
    with pylog.Producer(broker, acks=0) as p:
        m = p.send("t", b"x").result(timeout=5)
    assert m.offset == -1
    assert len(read_all(broker, "t", 0)) == 1


@pytest.mark.parametrize("kwargs", [
    {"acks": 2}, {"acks": "some"}, {"linger_ms": -1}, {"batch_size": "big"},
    {"compression_type": "brotli"}, {"acks": 1, "enable_idempotence": True},
    {"partitioner": "crc"}, {"config": {"no.such": 1}},
])
def test_bad_config(broker, kwargs):
    with pytest.raises(errors.InvalidConfig):
        pylog.Producer(broker, **kwargs)


def test_bad_send_arguments(broker):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, max_request_size=1000) as p:
        with pytest.raises(errors.UnknownTopicOrPartition):
            p.send("nope", b"x")
        with pytest.raises(errors.UnknownTopicOrPartition):
            p.send("t", b"x", partition=2)
        with pytest.raises(errors.InvalidArgument):
            p.send("t", "text")
        with pytest.raises(errors.InvalidArgument):
            p.send("t", b"x", key=5)
        with pytest.raises(errors.InvalidArgument):
            p.send("t", b"x", headers=[(1, b"x")])
        with pytest.raises(errors.InvalidArgument):
            p.send("t", b"x", timestamp=-5)
        with pytest.raises(errors.RecordTooLarge):
            p.send("t", b"x" * 2000)
    with pytest.raises(errors.ProducerClosed):
        p.send("t", b"x")


def test_broker_error_reaches_the_future(broker):
    broker.create_topic("small", 1, config={"max.message.bytes": 300})
    with pylog.Producer(broker, linger_ms=1000) as p:
        ok = p.send("small", b"a" * 10)
        big = p.send("small", b"b" * 500)
        p.flush()
    assert ok.result().offset == 0
    with pytest.raises(errors.RecordTooLarge):
        big.result()
    assert isinstance(big.exception(), errors.RecordTooLarge)
    assert [r.value for r in read_all(broker, "small", 0)] == [b"a" * 10]


def test_serializers_and_callbacks(broker):
    broker.create_topic("t", 1)
    seen = []
    with pylog.Producer(broker, key_serializer=str.encode, value_serializer=lambda v: repr(v).encode()) as p:
        f = p.send("t", {"a": 1}, key="k")
        f.add_done_callback(lambda fut: seen.append(fut.result().offset))
    assert seen == [0]
    (r,) = read_all(broker, "t", 0)
    assert (r.key, r.value) == (b"k", b"{'a': 1}")


class LosesReplies:
    """A broker whose first ``n`` produce replies are lost after the write (retriable)."""

    #: It wraps produce calls: without produce_many the sender makes one per batch.
    produce_many = None

    def __init__(self, broker, n):
        self.broker = broker
        self.n = n

    def __getattr__(self, name):
        return getattr(self.broker, name)

    def produce(self, *args, **kwargs):
        res = self.broker.produce(*args, **kwargs)
        if self.n > 0:
            self.n -= 1
            raise errors.RequestTimedOut("reply lost")
        return res


class FailsBeforeWrite(LosesReplies):
    def produce(self, *args, **kwargs):
        if self.n > 0:
            self.n -= 1
            raise errors.NotEnoughReplicas("no replicas")
        return self.broker.produce(*args, **kwargs)


@pytest.mark.parametrize("flaky", [LosesReplies, FailsBeforeWrite])
def test_idempotent_retries_never_duplicate(broker, flaky):
    broker.create_topic("t", 1)
    conn = flaky(broker, 3)
    with pylog.Producer(conn, retry_backoff_ms=0, linger_ms=0) as p:
        futs = [p.send("t", b"r%d" % i) for i in range(50)]
        p.flush()
    offsets = [f.result().offset for f in futs]
    assert offsets == list(range(50))
    assert [r.value for r in read_all(broker, "t", 0)] == [b"r%d" % i for i in range(50)]


def test_without_idempotence_a_lost_reply_duplicates(broker):
    """The contrast that shows what idempotence buys (Kafka's at-least-once)."""
    broker.create_topic("t", 1)
    with pylog.Producer(LosesReplies(broker, 1), acks=1, retry_backoff_ms=0) as p:
        p.send("t", b"once").result(timeout=5)
    assert [r.value for r in read_all(broker, "t", 0)] == [b"once", b"once"]


def test_retries_exhausted_fail_the_future(broker):
    broker.create_topic("t", 1)
    with pylog.Producer(FailsBeforeWrite(broker, 100), retries=2, retry_backoff_ms=0) as p:
        f = p.send("t", b"x")
        p.flush()
    with pytest.raises(errors.NotEnoughReplicas):
        f.result()


def test_many_producer_threads(broker):
    broker.create_topic("t", 4)
    n_threads, per = 8, 500
    results = [[] for _ in range(n_threads)]
    with pylog.Producer(broker) as p:
        def work(i):
            for j in range(per):
                results[i].append(p.send("t", b"%d:%d" % (i, j), key=b"%d" % i))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seen = set()
    for i, futs in enumerate(results):
        metas = [f.result() for f in futs]
        assert len({m.partition for m in metas}) == 1  # one key, one partition
        offs = [m.offset for m in metas]
        assert offs == sorted(offs)  # one thread's records keep their order
        seen.update((m.partition, m.offset) for m in metas)
    assert len(seen) == n_threads * per
    total = sum(p.log_end_offset for p in broker.describe_topic("t").partitions)
    assert total == n_threads * per
