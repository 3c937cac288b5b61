"""The Producer's buffer.memory / max.block.ms back-pressure (as Kafka's BufferPool).

A broker that stalls on an Event holds the sender thread, so the records sent stay
outstanding; the tests wait for states (a send blocked, a batch stalled) and assert on
outcomes and metrics, never on time.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional

import pytest

import pylog
from pylog import errors

#: Bytes one record of VALUE_SIZE bytes, no key, no headers, counts against buffer.memory
#: (value + the producer's per-record overhead).
VALUE_SIZE = 100
RECORD_BYTES = VALUE_SIZE + 14
WAIT_S = 10.0


def value(i: int) -> bytes:
    return (b"%06d" % i).ljust(VALUE_SIZE, b".")


def wait_for(cond: Callable[[], bool], what: str) -> None:
    """Poll until ``cond()`` (another thread changes the state); fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


class Stalls:
    """A broker whose produce() waits for ``go`` before writing (the sender thread is
    held there), and calls ``on_produce`` first to observe the producer."""

    #: It wraps produce calls: without produce_many the sender makes one per batch.
    produce_many = None

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.go = threading.Event()
        self.stalled = threading.Event()  # a produce() call is waiting for go
        self.on_produce: Optional[Callable[[], None]] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_produce is not None:
            self.on_produce()
        self.stalled.set()
        assert self.go.wait(WAIT_S), "the test never released the broker"
        return self.broker.produce(*args, **kwargs)


def values_in_log(broker: Any, topic: str, partition: int = 0) -> List[bytes]:
    return [r.value for r in broker.partition(topic, partition).log.records()]


def test_send_blocks_when_buffer_memory_is_full_and_resumes_as_batches_complete(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    n, room = 40, 10
    p = pylog.Producer(conn, buffer_memory=room * RECORD_BYTES, batch_size=3 * RECORD_BYTES,
                       max_block_ms=60_000)
    futs: List[Any] = []
    outstanding: List[int] = []  # records whose send() returned and whose future is not done

    def observe() -> None:  # in the sender thread, before each write
        outstanding.append(sum(1 for f in list(futs) if not f.done()))

    conn.on_produce = observe

    def work() -> None:
        for i in range(n):
            futs.append(p.send("t", value(i)))

    t = threading.Thread(target=work)
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "send() to block")
    m = p.metrics()
    assert len(futs) == room  # the eleventh record does not fit
    assert m["buffer_total_bytes"] == room * RECORD_BYTES
    assert m["buffer_available_bytes"] == 0
    assert not any(f.done() for f in futs)
    conn.go.set()
    t.join(WAIT_S)
    assert not t.is_alive()
    p.flush()
    assert [f.result(timeout=WAIT_S).offset for f in futs] == list(range(n))
    assert values_in_log(broker, "t") == [value(i) for i in range(n)]
    assert outstanding and max(outstanding) <= room
    m = p.metrics()
    assert m["buffer_available_bytes"] == room * RECORD_BYTES  # every completed batch gave its bytes back
    assert m["blocked_sends_total"] >= 1 and m["waiting_threads"] == 0 and m["buffer_exhausted_total"] == 0
    p.close()


def test_a_full_buffer_ships_lingering_batches_instead_of_waiting_for_linger(broker):
    """As Kafka: while a send waits for room every batch is ready, else a long linger.ms
    with batches below batch.size would hold the memory until max.block.ms."""
    broker.create_topic("t", 2)
    with pylog.Producer(broker, buffer_memory=4 * RECORD_BYTES, linger_ms=10**9,
                        max_block_ms=30_000) as p:
        futs = [p.send("t", value(i), partition=i % 2) for i in range(50)]
        assert p.metrics()["blocked_sends_total"] > 0
    assert sorted(values_in_log(broker, "t", 0) + values_in_log(broker, "t", 1)) == [value(i) for i in range(50)]
    assert all(f.result().offset >= 0 for f in futs)


def test_send_raises_buffer_exhausted_after_max_block_ms(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, buffer_memory=2 * RECORD_BYTES, linger_ms=0, max_block_ms=50)
    first = [p.send("t", value(0)), p.send("t", value(1))]
    with pytest.raises(errors.BufferExhausted, match="max.block.ms=50") as info:
        p.send("t", value(2))
    assert isinstance(info.value, errors.RequestTimedOut) and isinstance(info.value, TimeoutError)
    m = p.metrics()
    assert m["buffer_exhausted_total"] == 1 and m["waiting_threads"] == 0
    assert m["buffer_available_bytes"] == 0  # the first two are still held
    conn.go.set()
    p.close()
    assert [f.result().offset for f in first] == [0, 1]
    assert values_in_log(broker, "t") == [value(0), value(1)]
    assert p.metrics()["buffer_available_bytes"] == 2 * RECORD_BYTES


def test_max_block_ms_zero_fails_at_once_when_full(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, config={"buffer.memory": RECORD_BYTES, "max.block.ms": 0}, linger_ms=0)
    p.send("t", value(0))
    with pytest.raises(errors.BufferExhausted):
        p.send("t", value(1))
    conn.go.set()
    p.close()
    assert values_in_log(broker, "t") == [value(0)]


@pytest.mark.parametrize("record", [
    dict(value=b"v" * 200),                                   # the fast path's shape
    dict(value=b"v" * 40, key=b"k" * 40, headers=[("h", b"x" * 20)]),  # key + headers count too
])
def test_a_record_larger_than_buffer_memory_is_refused_at_once(broker, record):
    broker.create_topic("t", 1)
    conn = Stalls(broker)  # a send that waited instead would never get room
    p = pylog.Producer(conn, buffer_memory=100, max_block_ms=60_000)
    p.send("t", b"warm-up")  # the topic is known: the next send can take the fast path
    with pytest.raises(errors.RecordTooLarge, match="buffer.memory=100"):
        p.send("t", **record)
    assert p.metrics()["blocked_sends_total"] == 0
    conn.go.set()
    p.close()
    assert values_in_log(broker, "t") == [b"warm-up"]


def test_a_waiting_send_takes_free_room_first_so_later_small_ones_cannot_overtake_it(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, buffer_memory=10 * RECORD_BYTES, linger_ms=0, max_block_ms=60_000)
    for i in range(5):
        p.send("t", value(i))
    big: List[Any] = []
    t = threading.Thread(target=lambda: big.append(p.send("t", b"B" * (8 * RECORD_BYTES))))
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "the large send to block")
    # Half the buffer is free, but it is reserved for the waiting send (first come,
    # first served), so a small record could not slip in before it.
    assert p.metrics()["buffer_available_bytes"] == 0
    conn.go.set()
    t.join(WAIT_S)
    p.close()
    assert big[0].result().offset == 5
    assert values_in_log(broker, "t")[5] == b"B" * (8 * RECORD_BYTES)


def test_a_woken_send_ships_its_batch_when_another_still_waits_for_those_bytes(broker):
    """With a long linger.ms, the record a woken send appends may hold the very bytes the
    next waiting send needs: its batch must be sent, not left to linger."""
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, buffer_memory=2 * RECORD_BYTES, linger_ms=10**9, max_block_ms=30_000)
    p.send("t", value(0))
    p.send("t", value(1))  # the buffer is full; both linger in one open batch
    big = b"B" * (2 * RECORD_BYTES - 14 - 28)  # needs 2 records' room minus 28 bytes
    got: List[Any] = []
    failures: List[BaseException] = []

    def send(v: bytes) -> None:
        try:
            got.append(p.send("t", v))
        except BaseException as exc:  # noqa: B902 - reported below
            failures.append(exc)

    first = threading.Thread(target=send, args=(value(2),))
    first.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "the first send to block")
    second = threading.Thread(target=send, args=(big,))
    second.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 2, "the second send to block")
    # The stalled batch's release wakes the first send and gives the rest to the second,
    # which then needs bytes that only the first send's record will free.
    conn.go.set()
    for t in (first, second):
        t.join(WAIT_S * 4)
        assert not t.is_alive()
    assert failures == []
    p.close()
    assert values_in_log(broker, "t") == [value(0), value(1), value(2), big]


def test_close_wakes_a_blocked_send_with_producer_closed(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, buffer_memory=RECORD_BYTES, linger_ms=0, max_block_ms=60_000)
    first = p.send("t", value(0))
    raised: List[BaseException] = []

    def blocked_send() -> None:
        try:
            p.send("t", value(1))
        except BaseException as exc:  # noqa: B902 - the test inspects it
            raised.append(exc)

    t = threading.Thread(target=blocked_send)
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "send() to block")
    closer = threading.Thread(target=p.close)
    closer.start()  # close() itself waits for the stalled batch
    t.join(WAIT_S)
    assert not t.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], errors.ProducerClosed)
    assert "closed" in str(raised[0])
    conn.go.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert first.result().offset == 0
    assert values_in_log(broker, "t") == [value(0)]
    with pytest.raises(errors.ProducerClosed):
        p.send("t", value(2))


def test_flush_works_while_another_thread_is_blocked_in_send(broker):
    broker.create_topic("t", 1)
    conn = Stalls(broker)
    p = pylog.Producer(conn, buffer_memory=2 * RECORD_BYTES, linger_ms=0, max_block_ms=60_000)
    futs: List[Any] = []
    t = threading.Thread(target=lambda: futs.extend(p.send("t", value(i)) for i in range(6)))
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1, "send() to block")
    with pytest.raises(errors.RequestTimedOut, match="flush"):  # flush is not stuck behind the send
        p.flush(timeout=0.05)
    conn.go.set()
    p.flush()
    t.join(WAIT_S)
    assert not t.is_alive()
    p.flush()
    assert [f.result().offset for f in futs] == list(range(6))
    assert values_in_log(broker, "t") == [value(i) for i in range(6)]
    p.close()


def test_a_callback_that_sends_into_a_full_buffer_fails_at_once(broker):
    """Only the sender thread frees room, so a callback (run by it) must not wait."""
    broker.create_topic("t", 1)
    raised: List[BaseException] = []
    with pylog.Producer(broker, buffer_memory=RECORD_BYTES, linger_ms=10**9, max_block_ms=60_000) as p:
        def resend(fut: Any) -> None:
            try:
                p.send("t", value(1))
            except BaseException as exc:  # noqa: B902 - the test inspects it
                raised.append(exc)

        p.send("t", value(0)).add_done_callback(resend)
        p.flush()
    assert len(raised) == 1 and isinstance(raised[0], errors.BufferExhausted)
    assert "callback" in str(raised[0])
    assert values_in_log(broker, "t") == [value(0)]


@pytest.mark.parametrize("kwargs", [
    {"buffer_memory": -1}, {"buffer_memory": 0}, {"buffer_memory": "32m"}, {"buffer_memory": 1.5},
    {"buffer_memory": True}, {"max_block_ms": -1}, {"max_block_ms": None}, {"max_block_ms": 0.5},
    {"config": {"buffer.memory": -5}}, {"config": {"max.block.ms": "60s"}},
])
def test_bad_buffer_configs(broker, kwargs):
    with pytest.raises(errors.InvalidConfig) as info:
        pylog.Producer(broker, **kwargs)
    assert "unknown" not in str(info.value)  # refused for its value, not its name
    assert "buffer.memory" in str(info.value) or "max.block.ms" in str(info.value)


def test_buffer_configs_by_kafka_name_and_defaults(broker):
    p = pylog.Producer(broker, config={"buffer.memory": 1000, "max.block.ms": 5})
    assert (p.buffer_memory, p.max_block_ms) == (1000, 5)
    assert p.metrics()["buffer_total_bytes"] == 1000
    p.close()
    q = pylog.Producer(broker)
    assert (q.buffer_memory, q.max_block_ms) == (33_554_432, 60_000)
    assert q.metrics()["buffer_available_bytes"] == 33_554_432
    q.close()


@pytest.mark.parametrize("linger_ms", [5, 10**9])  # 10**9: only the waiting sends ship batches
def test_many_threads_share_a_small_buffer(broker, linger_ms):
    broker.create_topic("t", 3)
    n_threads, per, room = 6, 300, 8
    results: List[List[Any]] = [[] for _ in range(n_threads)]
    failures: List[BaseException] = []
    p = pylog.Producer(broker, buffer_memory=room * RECORD_BYTES, batch_size=4 * RECORD_BYTES,
                       linger_ms=linger_ms, max_block_ms=60_000)

    def work(i: int) -> None:
        try:
            for j in range(per):
                results[i].append(p.send("t", value(i * per + j), key=b"%d" % i))
        except BaseException as exc:  # noqa: B902 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 6)
        assert not t.is_alive()
    assert failures == []
    p.flush()
    m = p.metrics()
    assert m["blocked_sends_total"] > 0 and m["buffer_exhausted_total"] == 0
    assert m["buffer_available_bytes"] == room * RECORD_BYTES and m["waiting_threads"] == 0
    p.close()
    for futs in results:
        offsets = [f.result().offset for f in futs]
        assert offsets == sorted(offsets)  # one thread, one key: its order is kept
    written = sorted(v for part in range(3) for v in values_in_log(broker, "t", part))
    assert written == [value(k) for k in range(n_threads * per)]
