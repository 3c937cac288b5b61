"""The Consumer without group management: assign, poll, poll_arrays, seek, resets."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import pylog
from pylog import errors
from pylog.records import build_batch


def fill(broker, topic, partitions, per_partition, size=0, compression="none"):
    with pylog.Producer(broker, linger_ms=0, compression_type=compression) as p:
        for i in range(per_partition):
            for part in range(partitions):
                p.send(topic, (b"%d-%d|" % (part, i)).ljust(size, b"."), partition=part)


def drain(consumer, want, **kwargs):
    out = []
    for _ in range(1000):
        got = consumer.poll(timeout=0, **kwargs)
        out.extend(got)
        if len(out) >= want or not got:
            break
    return out


def test_poll_returns_every_record_in_partition_order(broker):
    broker.create_topic("t", 3)
    fill(broker, "t", 3, 200)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", p) for p in range(3)])
    recs = drain(c, 600)
    assert len(recs) == 600
    for part in range(3):
        mine = [r for r in recs if r.partition == part]
        assert [r.offset for r in mine] == list(range(200))
        assert [r.value for r in mine] == [b"%d-%d|" % (part, i) for i in range(200)]
    assert c.poll(timeout=0) == []
    assert [c.position(("t", p)) for p in range(3)] == [200, 200, 200]


def test_max_records_limits_and_resumes(broker):
    broker.create_topic("t", 1)
    fill(broker, "t", 1, 50)
    c = pylog.Consumer(broker, auto_offset_reset="earliest", max_poll_records=7)
    c.assign([("t", 0)])
    first = c.poll()
    assert [r.offset for r in first] == list(range(7))
    rest = drain(c, 43)
    assert [r.offset for r in rest] == list(range(7, 50))


def test_consuming_deletes_nothing_and_each_consumer_sees_all(broker):
    broker.create_topic("t", 2)
    fill(broker, "t", 2, 30)
    seen = []
    for _ in range(3):
        c = pylog.Consumer(broker, auto_offset_reset="earliest")
        c.assign([("t", 0), ("t", 1)])
        seen.append(sorted((r.partition, r.offset) for r in drain(c, 60)))
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 60


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_poll_arrays_matches_poll(broker, compression):
    """Compressed batches take another decode path (each decompressed once into one buffer)."""
    broker.create_topic("t", 3)
    fill(broker, "t", 3, 300, size=40, compression=compression)
    a = pylog.Consumer(broker, auto_offset_reset="earliest")
    a.assign([("t", p) for p in range(3)])
    arrays = a.poll_arrays(max_records=100_000)
    assert len(arrays) == 900
    assert isinstance(arrays.offsets, np.ndarray) and arrays.value_len.dtype == np.int32
    from_arrays = sorted(zip(arrays.partition.tolist(), arrays.offsets.tolist(), arrays.values()))
    b = pylog.Consumer(broker, auto_offset_reset="earliest")
    b.assign([("t", p) for p in range(3)])
    from_poll = sorted((r.partition, r.offset, r.value) for r in drain(b, 900, max_records=1000))
    assert from_arrays == from_poll
    buf = bytes(arrays.buffer)
    i = 17
    pos, n = int(arrays.value_pos[i]), int(arrays.value_len[i])
    assert buf[pos:pos + n] == arrays.values()[i]
    assert len(a.poll_arrays()) == 0


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_poll_arrays_copies_no_payload(broker, compression):
    """The embedded consumer's poll_arrays keeps every fetch's buffer as it is: views of
    the segment mappings for uncompressed batches (no b"".join of partitions or batches),
    the decompressed buffer for compressed ones; keys, values, views and the lazily
    joined buffer all agree."""
    import mmap

    broker.create_topic("t", 3)
    with pylog.Producer(broker, linger_ms=0, batch_size=2000, compression_type=compression) as p:
        for i in range(400):
            p.send("t", b"value-%d" % i, key=b"key-%d" % i, partition=i % 3)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", part) for part in range(3)])
    arrays = c.poll_arrays(max_records=100_000)
    assert len(arrays) == 400
    assert len(arrays.buffers) == 3 and len(arrays.parts()) == 3
    for buf in arrays.buffers:
        if compression == "none":
            assert isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap), type(buf)
        else:
            assert not (isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap))
    values, keys = arrays.values(), arrays.keys()
    assert sorted(values) == sorted(b"value-%d" % i for i in range(400))
    assert [k.replace(b"key", b"value") for k in keys] == values
    assert [bytes(arrays.value_view(i)) for i in range(400)] == values
    assert [bytes(arrays.key_view(i)) for i in range(400)] == keys
    for (tp, part), start in zip(arrays.parts(), arrays.buffer_starts.tolist()):
        assert tp.topic == "t" and set(part.values()) <= set(values)
        assert bytes(arrays.buffer[start:start + len(part.buffer)]) == bytes(part.buffer)
    joined = bytes(arrays.buffer)  # the lazily joined buffer agrees with the positions
    assert [joined[p:p + n] for p, n in zip(arrays.value_pos.tolist(), arrays.value_len.tolist())] == values
    assert [(r.partition, r.offset, r.key, r.value) for r in arrays.records()] == \
        list(zip(arrays.partition.tolist(), arrays.offsets.tolist(), keys, values))


def test_poll_arrays_results_keep_their_bytes_after_the_log_changes(tmp_path):
    """Views handed out by poll_arrays outlive delete_records, retention and the broker's
    close with their bytes (Invariant 3)."""
    broker = pylog.Broker.open(tmp_path / "b", {"log.segment.bytes": 4096}, background_threads=False)
    broker.create_topic("t", 2)
    fill(broker, "t", 2, 300, size=50)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", 0), ("t", 1)])
    arrays = c.poll_arrays(max_records=150)
    shown = (arrays.offsets.tolist(), arrays.values(), [bytes(arrays.value_view(i)) for i in range(len(arrays))])
    assert len(shown[0]) == 150 and len(arrays.buffers) >= 1
    for part in (0, 1):
        broker.delete_records("t", part, 300)
    fill(broker, "t", 2, 300, size=50)
    c.close()
    broker.close()
    assert (arrays.offsets.tolist(), arrays.values(),
            [bytes(arrays.value_view(i)) for i in range(len(arrays))]) == shown


def test_poll_arrays_respects_max_records_exactly(broker):
    broker.create_topic("t", 1)
    fill(broker, "t", 1, 1000)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", 0)])
    got = c.poll_arrays(max_records=333)
    assert got.offsets.tolist() == list(range(333))
    assert c.position(("t", 0)) == 333


def test_latest_earliest_none(broker):
    broker.create_topic("t", 1)
    fill(broker, "t", 1, 5)
    latest = pylog.Consumer(broker)  # Kafka's default: latest
    latest.assign([("t", 0)])
    assert latest.poll() == [] and latest.position(("t", 0)) == 5
    fill(broker, "t", 1, 1)
    assert [r.offset for r in latest.poll()] == [5]
    none = pylog.Consumer(broker, group_id="g-none", auto_offset_reset="none")
    none.assign([("t", 0)])
    with pytest.raises(errors.NoOffsetForPartition):
        none.poll()


def test_seek_and_offsets_for_times(broker):
    broker.create_topic("t", 1)
    broker.produce("t", 0, build_batch([b"a", b"b", b"c"], timestamps=[1_800_000_000_000 + i for i in range(3)]))
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", 0)])
    c.seek(("t", 0), 2)
    assert [r.value for r in c.poll()] == [b"c"]
    c.seek_to_beginning()
    assert c.position(("t", 0)) == 0
    c.seek_to_end([("t", 0)])
    assert c.position(("t", 0)) == 3
    found = c.offsets_for_times({("t", 0): 1_800_000_000_001, pylog.TopicPartition("t", 0): 1_800_000_000_001})
    assert found == {("t", 0): (1, 1_800_000_000_001)}
    assert c.offsets_for_times({("t", 0): 1_900_000_000_000}) == {("t", 0): None}
    assert c.beginning_offsets([("t", 0)]) == {("t", 0): 0}
    assert c.end_offsets([("t", 0)]) == {("t", 0): 3}


def test_position_reset_when_retention_deleted_it(broker):
    broker.create_topic("t", 1)
    fill(broker, "t", 1, 10)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", 0)])
    c.seek(("t", 0), 3)
    broker.partition("t", 0).log.delete_records(8)
    assert [r.offset for r in c.poll()] == [8, 9]


def test_bad_calls(broker):
    broker.create_topic("t", 1)
    c = pylog.Consumer(broker)
    with pytest.raises(errors.IllegalState):
        c.poll()
    with pytest.raises(errors.IllegalState):
        c.subscribe(["t"])  # no group_id
    with pytest.raises(errors.UnknownTopicOrPartition):
        c.assign([("t", 3)])
    with pytest.raises(errors.InvalidArgument):
        c.assign(["t"])
    c.assign([("t", 0)])
    with pytest.raises(errors.IllegalState):
        c.seek(("t", 1), 0)
    with pytest.raises(errors.InvalidArgument):
        c.seek(("t", 0), -1)
    with pytest.raises(errors.InvalidArgument):
        c.poll(timeout=-1)
    with pytest.raises(errors.IllegalState):
        c.commit()
    c.close()
    with pytest.raises(errors.ConsumerClosed):
        c.poll()
    for kwargs in ({"auto_offset_reset": "smallest"}, {"max_poll_records": 0}, {"group_id": ""},
                   {"config": {"fetch.min.bytez": 1}}, {"enable_auto_commit": "yes"}):
        with pytest.raises(errors.InvalidConfig):
            pylog.Consumer(broker, **kwargs)


def test_poll_waits_for_new_data(broker):
    broker.create_topic("t", 1)
    c = pylog.Consumer(broker, auto_offset_reset="earliest")
    c.assign([("t", 0)])

    def later():
        broker.produce("t", 0, build_batch([b"late"]))

    t = threading.Timer(0.05, later)
    t.start()
    got = c.poll(timeout=10)
    t.join()
    assert [r.value for r in got] == [b"late"]


def test_producer_and_consumer_threads_at_once(broker):
    broker.create_topic("t", 4)
    n_prod, per = 4, 400
    got = {}
    lock = threading.Lock()
    done = threading.Event()

    def produce(i):
        with pylog.Producer(broker, linger_ms=1) as p:
            for j in range(per):
                p.send("t", b"%d:%d" % (i, j), key=b"p%d" % i)

    def consume(part):
        c = pylog.Consumer(broker, auto_offset_reset="earliest")
        c.assign([("t", part)])
        mine = []
        while not (done.is_set() and c.position(("t", part)) >= broker.partition("t", part).high_watermark):
            mine.extend(c.poll(timeout=0.05))
        with lock:
            got[part] = mine

    consumers = [threading.Thread(target=consume, args=(p,)) for p in range(4)]
    producers = [threading.Thread(target=produce, args=(i,)) for i in range(n_prod)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    for t in consumers:
        t.join()
    total = sum(len(v) for v in got.values())
    assert total == n_prod * per
    for part, recs in got.items():
        assert [r.offset for r in recs] == list(range(len(recs)))
        by_producer = {}
        for r in recs:
            i, j = r.value.split(b":")
            by_producer.setdefault(i, []).append(int(j))
        assert all(v == sorted(v) for v in by_producer.values())  # per-key order holds
