"""Producer.send_batch: columnar records through the producer to an embedded broker —
offsets aligned with the input, keyed records on their murmur2 partition, keyless ones
spread batch by batch, order kept with send(), acks=0, bad input refused at once, and
buffer.memory back-pressure holding for a call larger than the buffer."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import pylog
from pylog import errors
from pylog.client.partitioner import murmur2_partition
from tests.client.test_producer_buffer_memory import Stalls, wait_for


def _records(broker, topic, partition):
    return list(broker.partition(topic, partition).log.records())


def _values(n, size=20):
    vals = [(b"%08d" % i).ljust(size, b".") for i in range(n)]
    return vals, b"".join(vals), np.full(n, size, dtype=np.int32)


def test_keyless_offsets_align_and_spread_by_batch(broker):
    broker.create_topic("t", 3)
    vals, buf, lens = _values(20_000)
    with pylog.Producer(broker, acks=1, max_request_size=16_384) as p:
        fut = p.send_batch("t", buf, lengths=lens)
        offsets = fut.result(timeout=30)
    assert offsets.dtype == np.int64 and len(offsets) == 20_000
    parts = fut.partitions
    assert set(parts.tolist()) == {0, 1, 2}  # the sticky partition moved after each batch
    got = {}
    for p in range(3):
        for r in _records(broker, "t", p):
            got[(p, r.offset)] = r.value
    assert [got[(int(p), int(o))] for p, o in zip(parts, offsets)] == vals
    for p in range(3):  # each partition's offsets are dense, in input order
        mine = offsets[parts == p]
        assert mine.tolist() == list(range(len(mine)))


def test_keyed_records_go_to_their_murmur2_partition_in_order(broker):
    broker.create_topic("t", 4)
    keys = [b"customer-%d" % (i % 37) if i % 11 else None for i in range(3000)]
    vals, buf, lens = _values(3000)
    kbuf = b"".join(k for k in keys if k is not None)
    klens = [-1 if k is None else len(k) for k in keys]
    with pylog.Producer(broker) as p:  # acks=all, idempotent
        fut = p.send_batch("t", buf, lengths=lens, keys=kbuf, key_lengths=klens)
        offsets = fut.result(timeout=30)
    parts = fut.partitions.tolist()
    nulls = {parts[i] for i, k in enumerate(keys) if k is None}
    assert len(nulls) == 1  # null keys: the sticky partition
    for i, k in enumerate(keys):
        if k is not None:
            assert parts[i] == murmur2_partition(k, 4)
    for p in range(4):
        recs = _records(broker, "t", p)
        idx = [i for i in range(3000) if parts[i] == p]
        assert [(r.key, r.value) for r in recs] == [(keys[i], vals[i]) for i in idx]
        assert [r.offset for r in recs] == [int(offsets[i]) for i in idx]


def test_poll_arrays_layout_explicit_partition_timestamps_and_send_order(broker):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, linger_ms=10**6) as p:
        first = p.send("t", b"before", partition=1)  # lingering: must stay first
        fut = p.send_batch("t", b"..bb.a", positions=[5, 2], lengths=[1, 2], partition=1,
                           timestamps=[1_700_000_000_000, 1_700_000_000_005])
        offsets = fut.result(timeout=30)
        assert first.result(timeout=30).offset == 0
    assert offsets.tolist() == [1, 2] and fut.partitions.tolist() == [1, 1]
    recs = _records(broker, "t", 1)
    assert [(r.value, r.timestamp) for r in recs[1:]] == [(b"a", 1_700_000_000_000), (b"bb", 1_700_000_000_005)]


def test_acks_zero_gives_minus_one_and_compression(broker):
    broker.create_topic("t", 1)
    vals, buf, lens = _values(500)
    with pylog.Producer(broker, acks=0, compression_type="gzip") as p:
        offsets = p.send_batch("t", buf, lengths=lens).result(timeout=30)
    assert offsets.tolist() == [-1] * 500
    assert [r.value for r in _records(broker, "t", 0)] == vals


@pytest.mark.parametrize("kwargs,exc", [
    (dict(values=b"abc"), errors.InvalidArgument),
    (dict(values=b"abc", lengths=[4]), errors.InvalidArgument),
    (dict(values=b"abc", lengths=[3], partition=7), errors.UnknownTopicOrPartition),
    (dict(values=b"a" * 2000, lengths=[2000]), errors.RecordTooLarge),
    (dict(values=b"abc", lengths=[3], timestamps=[-3]), errors.InvalidTimestamp),
])
def test_bad_input_is_refused_at_once_and_nothing_is_sent(broker, kwargs, exc):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, max_request_size=1024) as p:
        kwargs = dict(kwargs)
        values = kwargs.pop("values")
        with pytest.raises(exc):
            p.send_batch("t", values, **kwargs)
        p.flush()
    assert broker.partition("t", 0).log.log_end_offset == broker.partition("t", 1).log.log_end_offset == 0


def test_closed_producer(broker):
    broker.create_topic("t", 1)
    p = pylog.Producer(broker)
    p.close()
    with pytest.raises(errors.ProducerClosed):
        p.send_batch("t", b"a", lengths=[1])


def test_a_call_larger_than_buffer_memory_waits_for_room(broker):
    """buffer.memory 4 KB, 20 KB of records: the call queues batches as the broker
    acknowledges earlier ones (held here), and never holds more than the buffer."""
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    vals, buf, lens = _values(1000)
    seen = []
    p = pylog.Producer(conn, acks=1, buffer_memory=4096, max_request_size=2048, max_block_ms=60_000)
    conn.on_produce = lambda: seen.append(p.metrics()["buffer_available_bytes"])
    done = []
    t = threading.Thread(target=lambda: done.append(p.send_batch("t", buf, lengths=lens)))
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "send_batch to block for room")
    assert not done
    conn.go.set()
    t.join(30)
    offsets = done[0].result(timeout=30)
    p.close()
    assert offsets.tolist() == list(range(1000))
    assert min(seen) >= 0 and p.metrics()["buffer_available_bytes"] == 4096
    assert [r.value for r in _records(broker, "t", 0)] == vals


def test_buffer_exhausted_after_max_block_ms(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    vals, buf, lens = _values(1000)
    p = pylog.Producer(conn, acks=1, buffer_memory=4096, max_request_size=2048, max_block_ms=50)
    with pytest.raises(errors.BufferExhausted):
        p.send_batch("t", buf, lengths=lens)
    conn.go.set()
    p.close()
    n = broker.partition("t", 0).log.log_end_offset
    assert 0 < n < 1000  # the batches queued before it were sent
    assert [r.value for r in _records(broker, "t", 0)] == vals[:n]


def test_idempotent_batches_carry_the_producer_id_and_dense_sequences(broker):
    """Batches are encoded in the calling thread with no producer fields; the sender
    stamps each with the producer id, epoch and its sequence numbers (a new CRC), as
    the broker's idempotence checks need: per partition the sequences run on densely
    from 0 across calls, and a second call continues them."""
    broker.create_topic("t", 2)
    vals, buf, lens = _values(6000)
    with pylog.Producer(broker, max_request_size=8192) as p:  # acks=all, idempotent
        first = p.send_batch("t", buf, lengths=lens)
        first.result(timeout=30)
        second = p.send_batch("t", buf, lengths=lens, partition=1)
        second.result(timeout=30)
    pids = set()
    for part in range(2):
        log = broker.partition("t", part).log
        batches = log.read(0, max_bytes=1 << 30)
        assert batches[-1].next_offset == log.log_end_offset
        assert len(batches) > 2
        expect = 0
        for b in batches:
            b.check_crc()
            pids.add((b.producer_id, b.producer_epoch))
            assert b.base_sequence == expect
            expect += b.record_count
    (pid, epoch), = pids
    assert pid >= 0 and epoch >= 0
    got = [r.value for r in _records(broker, "t", 1)]
    assert got[-6000:] == vals


def test_closed_while_a_batch_was_encoded(broker, monkeypatch):
    """close() from elsewhere while send_batch encodes a batch: that batch is not
    queued, its room goes back to buffer.memory, and the call raises ProducerClosed;
    the batches queued before it were sent."""
    from pylog.client.producer_batch import ArrayBatch

    broker.create_topic("t", 1)
    vals, buf, lens = _values(2000)
    p = pylog.Producer(broker, acks=1, max_request_size=4096)
    real = ArrayBatch.prebuild
    calls = []

    def prebuild(self, codec):
        calls.append(1)
        if len(calls) == 3:
            closer = threading.Thread(target=p.close)
            closer.start()
            closer.join(30)
        real(self, codec)

    monkeypatch.setattr(ArrayBatch, "prebuild", prebuild)
    with pytest.raises(errors.ProducerClosed, match="closed meanwhile"):
        p.send_batch("t", buf, lengths=lens)
    assert p.metrics()["buffer_available_bytes"] == p.metrics()["buffer_total_bytes"]
    stored = [r.value for r in _records(broker, "t", 0)]
    assert 0 < len(stored) < 2000 and stored == vals[:len(stored)]


def test_an_encoding_that_raises_gives_its_room_back(broker, monkeypatch):
    """An unexpected error while send_batch encodes a batch (here a MemoryError) is
    raised to the caller and the batch's room in buffer.memory goes back."""
    from pylog.client.producer_batch import ArrayBatch

    broker.create_topic("t", 1)
    vals, buf, lens = _values(100)
    p = pylog.Producer(broker, acks=1)
    try:
        def boom(self, codec):
            raise MemoryError("no room for the batch")

        monkeypatch.setattr(ArrayBatch, "prebuild", boom)
        with pytest.raises(MemoryError):
            p.send_batch("t", buf, lengths=lens)
        assert p.metrics()["buffer_available_bytes"] == p.metrics()["buffer_total_bytes"]
        monkeypatch.undo()
        assert p.send_batch("t", buf, lengths=lens).result(timeout=30).tolist() == list(range(100))
    finally:
        p.close()


def test_a_batch_that_cannot_be_encoded_fails_through_its_future(broker, monkeypatch):
    """A PylogError while encoding is left to the sender, which builds the batch again
    when it ships it and reports the error through the future; the room goes back."""
    from pylog.records.columnar import Columns

    broker.create_topic("t", 1)
    vals, buf, lens = _values(100)

    def refuse(self, *a, **kw):
        raise errors.InvalidArgument("refused by the test")

    monkeypatch.setattr(Columns, "build", refuse)
    p = pylog.Producer(broker, acks=1)
    try:
        fut = p.send_batch("t", buf, lengths=lens)
        with pytest.raises(errors.InvalidArgument, match="refused by the test"):
            fut.result(timeout=30)
        p.flush()
        assert p.metrics()["buffer_available_bytes"] == p.metrics()["buffer_total_bytes"]
    finally:
        p.close()
    assert broker.partition("t", 0).log.log_end_offset == 0
