"""Producer.send()'s record path in C (csrc/pysend.c): the records it takes are the
records Python would have written, in the same partitions, with the same futures; what
it cannot take goes to the Python path unchanged; the buffer.memory it borrows comes
back; and sends from many threads, without the producer's lock, lose nothing."""
from __future__ import annotations

import functools
import threading
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylog
from pylog import errors
from pylog.client.partitioner import murmur2_partition
from pylog.client.producer_batch import C_FUTURES, FutureRecordMetadata, RecordMetadata
from pylog.records.builder import SendPath


def read_all(broker, topic):
    """{partition: [(key, value), ...]} in offset order."""
    out = {}
    for p in range(len(broker.describe_topic(topic).partitions)):
        out[p] = [(r.key, r.value) for r in broker.partition(topic, p).log.records()]
    return out


def test_the_c_path_is_on_and_takes_the_common_records(broker):
    assert C_FUTURES, "FutureRecordMetadata no longer lays out as a tuple: send() lost its C path"
    broker.create_topic("t", 3)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        assert p.send is not pylog.Producer.send and type(p.send).__name__ == "builtin_function_or_method"
        futs = [p.send("t", b"v%d" % i) for i in range(500)]
        futs += [p.send("t", b"k%d" % i, key=b"key-%d" % i) for i in range(500)]
        futs += [p.send("t", b"p%d" % i, partition=i % 3) for i in range(30)]
        # All but the first record of each batch (Python opens it) came through C.
        assert p._send_path.fast_sends >= 1030 - 3 * 4
        p.flush()
    assert all(type(f) is FutureRecordMetadata for f in futs)
    metas = [f.result(0) for f in futs]
    assert all(type(m) is RecordMetadata and m.topic == "t" and m.offset >= 0 for m in metas)
    stored = read_all(broker, "t")
    assert sum(len(v) for v in stored.values()) == 1030
    for i, m in enumerate(metas):  # each future names where its record is
        key, value = stored[m.partition][m.offset]
        assert value == (b"v%d" % i if i < 500 else b"k%d" % (i - 500) if i < 1000 else b"p%d" % (i - 1000))
        if 500 <= i < 1000:
            assert key == b"key-%d" % (i - 500)
            assert m.partition == murmur2_partition(key, 3)  # Kafka's partition for the key
        if i >= 1000:
            assert m.partition == (i - 1000) % 3
    # Order per partition is the order of the sends.
    for part, recs in stored.items():
        mine = [m.offset for m in metas if m.partition == part]
        assert mine == sorted(mine) == list(range(len(recs)))


def test_keyless_records_stick_to_a_partition_for_a_batch_then_move(broker):
    broker.create_topic("t", 4)
    with pylog.Producer(broker, batch_size=2000, linger_ms=60_000) as p:
        futs = [p.send("t", b"x" * 86) for _ in range(400)]  # 100 bytes counted a record
        p.flush()
    parts = [f.result(0).partition for f in futs]
    runs = [1]
    for a, b in zip(parts, parts[1:]):
        if a == b:
            runs[-1] += 1
        else:
            runs.append(1)
    assert len(runs) >= 10, runs  # it moved on, again and again
    assert max(runs) <= 21, runs  # about batch.size bytes each (KIP-794)
    assert len(set(parts)) == 4


@pytest.mark.parametrize("kwargs", [
    {"headers": [["h", b"1"]]}, {"headers": [("h", bytearray(b"1"))]}, {"headers": iter([("h", b"1")])},
    {"key": bytearray(b"k")}, {"value": memoryview(b"mv")}, {"value": None}, {"key": b"k", "value": None},
])
def test_records_c_cannot_take_go_to_python_and_arrive_whole(broker, kwargs):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        for _ in range(3):
            p.send("t", b"first")  # an open batch for C to use
        before = p._send_path.fast_sends
        args = {"value": b"v"}
        args.update(kwargs)
        fut = p.send("t", **args)
        assert p._send_path.fast_sends == before
        p.flush()
    m = fut.result(0)
    rec = list(broker.partition("t", m.partition).log.records(m.offset, m.offset + 1))[0]
    want = args["value"]
    assert rec.value == (None if want is None else bytes(want))
    if "key" in args:
        assert rec.key == bytes(args["key"])
    if "headers" in args:
        assert rec.headers == (("h", b"1"),)
    if "timestamp" in args:
        assert rec.timestamp == m.timestamp == args["timestamp"]


@pytest.mark.parametrize("call, error", [
    (lambda p: p.send("t", "str value"), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", key="str key"), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", partition=7), errors.UnknownTopicOrPartition),
    (lambda p: p.send("t", b"v", partition=-1), errors.UnknownTopicOrPartition),
    (lambda p: p.send("t", b"v", partition=True), errors.UnknownTopicOrPartition),
    (lambda p: p.send("t", b"v", headers=[(1, b"x")]), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", timestamp=-5), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", timestamp=1 << 63), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", timestamp=1.5), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", headers=[("h", "str value")]), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", headers=[("\ud800", b"x")]), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", headers=[("h", b"x", b"y")]), errors.InvalidArgument),
    (lambda p: p.send("t", b"v", headers=b"h"), errors.InvalidArgument),
    (lambda p: p.send("t"), TypeError),
    (lambda p: p.send("t", b"v", colour=1), TypeError),
    (lambda p: p.send("t", b"v", value=b"w"), TypeError),
    (lambda p: p.send("t", b"v", None, None, None, None, None), TypeError),
    (lambda p: p.send(b"t", b"v"), errors.InvalidArgument),
    (lambda p: p.send("t", b"x" * 2_000_000), errors.RecordTooLarge),
])
def test_bad_sends_raise_as_the_python_path_does_and_leave_nothing(broker, call, error):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        p.send("t", b"ok")
        with pytest.raises(error):
            call(p)
        p.flush()
    assert sum(len(v) for v in read_all(broker, "t").values()) == 1


@pytest.mark.parametrize("headers, timestamp", [
    ([("h", b"1")], None),
    (None, 1_700_000_000_000),
    ((("trace-id", b"abc"), ("\u00e9t\u00e9 \U0001f600", None), ("", b"")), 0),
    ([("big", b"x" * 2000)], None),  # encoded in heap memory, not on the stack
    ([], 5),  # no headers, as None
])
def test_headers_and_timestamps_go_through_c_and_arrive_whole(broker, headers, timestamp):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        for _ in range(3):
            p.send("t", b"first", partition=0)  # an open batch for C to use
        before = p._send_path.fast_sends
        fut = p.send("t", b"v", key=b"k", headers=headers, timestamp=timestamp, partition=0)
        assert p._send_path.fast_sends == before + 1
        p.flush()
    m = fut.result(0)
    rec = list(broker.partition("t", 0).log.records(m.offset, m.offset + 1))[0]
    assert (rec.key, rec.value) == (b"k", b"v")
    assert rec.headers == tuple(headers or ())
    if timestamp is not None:
        assert rec.timestamp == m.timestamp == timestamp
    else:
        assert rec.timestamp == m.timestamp


def test_headers_count_against_buffer_memory_as_in_python(broker):
    """C counts a record's headers as the Python path does (key characters, value
    bytes, 4 a header): the batch is sealed at the same record either way."""
    broker.create_topic("t", 1)
    sizes = {}
    for name in ("c", "py"):
        with pylog.Producer(broker, linger_ms=60_000, batch_size=1000) as p:
            send = p.send if name == "c" else functools.partial(pylog.Producer.send, p)
            futs = [send("t", b"v" * 10, headers=[("\u00e9" * 20, b"x" * 20)]) for _ in range(40)]
            p.flush()
        sizes[name] = [f[0] for f in futs]
        sizes[name] = [sum(1 for b in sizes[name] if b is first) for first in dict.fromkeys(sizes[name])]
    assert sizes["c"] == sizes["py"] and len(sizes["c"]) > 1


def test_borrowed_buffer_memory_comes_back(broker):
    broker.create_topic("t", 3)
    # No batch fills or lingers out: none is shipped (and freed) while we count.
    with pylog.Producer(broker, linger_ms=60_000, batch_size=1_000_000) as p:
        total = p.metrics()["buffer_total_bytes"]
        held = 0
        for i in range(3000):
            key = b"%d" % i
            p.send("t", b"v" * 50, key=key)
            held += 50 + len(key) + 14  # bytes counted a record (RECORD_OVERHEAD_BYTES)
        # Credit lent to the open batches is set aside, not used: it counts as available.
        assert p._send_path.credit > 0
        assert p._pool.available == total - held - p._send_path.credit
        assert p.metrics()["buffer_available_bytes"] == total - held
        p.flush()
        assert p._send_path.credit == 0
        assert p.metrics()["buffer_available_bytes"] == p._pool.available == total
        p.send("t", b"again")  # a new open batch, a new credit
        p.flush()
        assert p.metrics()["buffer_available_bytes"] == p._pool.available == total


def test_a_tight_buffer_counts_exactly_with_credit_lent(broker):
    """Records count the same whether C or Python appends them: with 1000 bytes of
    buffer.memory two 314-byte records fit and a 514-byte one does not (max.block.ms=0:
    BufferExhausted at once), whatever C held as credit."""
    broker.create_topic("t", 1)
    with pylog.Producer(broker, linger_ms=60_000, buffer_memory=1000, max_block_ms=0) as p:
        p.send("t", b"x" * 300)
        p.send("t", b"x" * 300)
        assert p._send_path.fast_sends == 1  # the second, on the first one's credit
        with pytest.raises(errors.BufferExhausted):
            p.send("t", b"x" * 500)
        assert p._send_path.credit == 0  # taken back before giving up
        assert p.metrics()["buffer_available_bytes"] == 1000 - 2 * 314
        p.send("t", b"x" * 300)  # still fits
        p.flush()
    assert [len(v) for v in read_all(broker, "t").values()] == [3]


class Gated:
    """A broker whose produce calls wait until ``gate`` is set (batches stay in flight)."""

    #: It wraps produce calls: without produce_many the sender makes one per batch.
    produce_many = None

    def __init__(self, broker) -> None:
        self.broker = broker
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self.broker, name)

    def produce(self, *args, **kwargs):
        assert self.gate.wait(30), "the test never opened the gate"
        return self.broker.produce(*args, **kwargs)


def test_a_send_that_must_wait_takes_the_credit_back_first(broker):
    """Credit lent to an open batch is not left idle while a send would block for room:
    it comes back first (max.block.ms=0 would raise BufferExhausted otherwise)."""
    broker.create_topic("t", 2)
    gated = Gated(broker)
    record = 1000  # bytes counted: 986 of value + 14
    p = pylog.Producer(gated, acks=1, linger_ms=60_000, batch_size=8 * record, buffer_memory=24 * record,
                       max_block_ms=0)
    try:
        for _ in range(2):
            p.send("t", b"x" * (record - 14), partition=0)  # partition 0's batch gets credit
        lent = p._send_path.credit
        assert lent > 0
        # 16 records fit beside partition 0's 2 and its credit; the 17th only with the
        # credit back (sealed batches wait at the gate, freeing nothing).
        free = 24 * record - 2 * record - lent
        n = free // record + 3
        for _ in range(n):
            p.send("t", b"x" * (record - 14), partition=1)
        assert p.metrics()["buffer_available_bytes"] == (24 - 2 - n) * record
        with pytest.raises(errors.BufferExhausted):  # the memory is now really full
            for _ in range(10):
                p.send("t", b"x" * (record - 14), partition=1)
    finally:
        gated.gate.set()
        p.close()
    assert [len(v) for v in read_all(broker, "t").values()] == [2, 22]


@pytest.mark.parametrize("buffer_memory", [33_554_432, 20_000])  # 20,000: sends wait for room
def test_sends_from_many_threads_lose_and_duplicate_nothing(broker, buffer_memory):
    broker.create_topic("t", 4)
    n_threads, per_thread = 6, 5000
    with pylog.Producer(broker, linger_ms=1, batch_size=4096, buffer_memory=buffer_memory) as p:
        errors_seen = []

        def work(t: int) -> None:
            try:
                for i in range(per_thread):
                    if i % 3 == 0:
                        p.send("t", b"%d:%d" % (t, i), key=b"%d" % (i % 17))
                    else:
                        p.send("t", b"%d:%d" % (t, i))
            except BaseException as exc:  # pragma: no cover - reported below
                errors_seen.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush()
        assert not errors_seen
        assert p._send_path.fast_sends > n_threads * per_thread // 2
        m = p.metrics()  # every byte counted came back (none lost between C and Python)
        assert m["buffer_available_bytes"] == m["buffer_total_bytes"] == buffer_memory
        if buffer_memory < 100_000:
            assert m["blocked_sends_total"] > 0
    stored = read_all(broker, "t")
    values = Counter(v for recs in stored.values() for _, v in recs)
    assert len(values) == n_threads * per_thread and set(values.values()) == {1}
    # Each thread's records of one partition keep their order.
    for recs in stored.values():
        last = defaultdict(lambda: -1)
        for _, v in recs:
            t, i = map(int, v.split(b":"))
            assert i > last[t]
            last[t] = i


def test_send_after_close_raises_and_close_takes_every_batch_back(broker):
    broker.create_topic("t", 2)
    p = pylog.Producer(broker, linger_ms=60_000)
    for i in range(100):
        p.send("t", b"v%d" % i)
    assert p._send_path.credit > 0
    p.close()
    assert p._send_path.credit == 0
    with pytest.raises(errors.ProducerClosed):
        p.send("t", b"late")
    assert sum(len(v) for v in read_all(broker, "t").values()) == 100


def test_partitions_added_later_are_used_and_open_batches_kept(broker):
    broker.create_topic("t", 2)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        keys = [b"k%d" % i for i in range(200)]
        first = [p.send("t", b"a", key=k) for k in keys]
        broker.create_partitions("t", 5)
        assert p.partitions_for("t") == [0, 1, 2, 3, 4]
        second = [p.send("t", b"b", key=k) for k in keys]
        p.flush()
    assert {f.result(0).partition for f in first} <= {0, 1}
    assert [f.result(0).partition for f in second] == [murmur2_partition(k, 5) for k in keys]
    assert sum(len(v) for v in read_all(broker, "t").values()) == 400


def test_serializers_turn_the_c_path_off(broker):
    broker.create_topic("t", 1)
    with pylog.Producer(broker, value_serializer=lambda v: v.upper(), linger_ms=60_000) as p:
        assert p.send.__func__ is pylog.Producer.send
        for _ in range(5):
            p.send("t", b"abc")
        p.flush()
        assert p._send_path.fast_sends == 0
    assert [v for _, v in read_all(broker, "t")[0]] == [b"ABC"] * 5


def test_send_path_methods_check_their_arguments():
    sp = SendPath(lambda *a, **k: None, 1000, 10_000, 14, True, 1)
    with pytest.raises(KeyError):
        sp.keyless_partition("nope", 1)
    sp.add_topic("t", 2, 0)
    assert sp.take("t", 0) is None and sp.take("t", 9) is None and sp.take("other", 0) is None
    with pytest.raises(IndexError):
        sp.give("t", 2, object(), 1, ("t", 2), 61, 100)
    with pytest.raises(ValueError):
        sp.give("t", 0, object(), 0, ("t", 0), 61, 100)  # null builder
    with pytest.raises(ValueError):
        sp.give("t", 0, object(), 8, ("t", 0), 61, -1)
    with pytest.raises(ValueError):
        sp.add_topic("t", 0, 0)
    with pytest.raises(ValueError):
        sp.add_topic("u", 3, 3)
    with pytest.raises(TypeError):
        sp.add_topic(b"t", 2, 0)
    with pytest.raises(ValueError):
        SendPath(print, 0, 10, 14, True, 1)
    assert sp.sticky("t", False) in (0, 1)
    moved = {sp.sticky("t", True) for _ in range(20)}
    assert moved == {0, 1}


def test_an_argument_that_runs_python_code_cannot_leave_send_path_pointing_at_freed_state():
    """An __index__ that re-adds the topic (with more partitions: the old state is freed)
    runs before the slot is looked up, so the batch lands in the new state (run under
    AddressSanitizer by scripts/asan-test.sh, a use after free would be caught)."""
    from pylog.records.builder import BatchBuilder

    sp = SendPath(lambda *a, **k: None, 1000, 10_000, 14, True, 1)
    sp.add_topic("t", 2, 0)

    class Regrow:
        def __index__(self):
            sp.add_topic("t", 64, 0)
            return 61

    builder = BatchBuilder(100, 0)
    sp.give("t", 1, builder, builder.address, ("t", 1), Regrow(), 500)
    assert sp.credit == 500
    assert sp.take("t", 1) == (61, 500)
    assert sp.credit == 0


def test_with_the_xxhash_partitioner_keyed_records_go_through_python_to_their_xxhash_partition(broker):
    from pylog.client.partitioner import xxhash_partition

    broker.create_topic("t", 5)
    with pylog.Producer(broker, partitioner="xxhash", linger_ms=60_000) as p:
        keys = [b"k%d" % i for i in range(300)]
        keyed = [p.send("t", b"v", key=k) for k in keys]
        assert p._send_path.fast_sends == 0  # C knows murmur2 only
        keyless = [p.send("t", b"v") for _ in range(300)]
        assert p._send_path.fast_sends > 250  # keyless records still go through C
        p.flush()
    assert [f.result(0).partition for f in keyed] == [xxhash_partition(k, 5) for k in keys]
    assert all(f.result(0).offset >= 0 for f in keyless)


_values = st.one_of(st.binary(max_size=40), st.none(), st.binary(max_size=10).map(bytearray))
_calls = st.lists(st.fixed_dictionaries({
    "value": _values,
    "key": st.one_of(st.none(), st.binary(max_size=12)),
    "partition": st.one_of(st.none(), st.integers(0, 2)),
    "headers": st.one_of(st.none(), st.just([("h", b"x")]),
                         st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=8))),
                                  max_size=3)),
    "timestamp": st.one_of(st.none(), st.integers(0, 1 << 50)),
}), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=_calls)
def test_c_and_python_paths_write_the_same_records(tmp_path_factory, calls):
    """Any mix of sends through the C twin and through Producer.send (Python only)
    gives the same records, keyed and explicit ones in the same partitions."""
    broker = pylog.Broker.open(tmp_path_factory.mktemp("data"), background_threads=False)
    written = {}
    for name in ("c", "py"):
        broker.create_topic(name, 3)
        with pylog.Producer(broker, linger_ms=60_000, batch_size=300) as p:
            send = p.send if name == "c" else functools.partial(pylog.Producer.send, p)
            futs = [send(name, **{k: v for k, v in c.items() if v is not None or k == "value"})
                    for c in calls]
            p.flush()
        metas = [f.result(0) for f in futs]
        recs = read_all(broker, name)
        written[name] = [(m.partition if (c["key"] is not None or c["partition"] is not None) else None,
                          recs[m.partition][m.offset][0], recs[m.partition][m.offset][1])
                         for c, m in zip(calls, metas)]
        headers = [r.headers for part in range(3) for r in broker.partition(name, part).log.records()]
        written[name + "-headers"] = sorted(headers, key=repr)
        stamped = {(m.partition, m.offset): r.timestamp for part in range(3)
                   for m in metas if m.partition == part
                   for r in broker.partition(name, part).log.records(m.offset, m.offset + 1)}
        for c, m in zip(calls, metas):
            if c["timestamp"] is not None:
                assert m.timestamp == stamped[(m.partition, m.offset)] == c["timestamp"]
    broker.close()
    assert written["c"] == written["py"]
    assert written["c-headers"] == written["py-headers"]
    want = [(None if c["value"] is None else bytes(c["value"])) for c in calls]
    assert [v for _, _, v in written["c"]] == want
