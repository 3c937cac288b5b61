"""The producer's parts and its C record path: send() writes build_batch's bytes, a
batch the broker refuses as too large is split, buffer.memory blocks then raises
BufferExhausted, and one retry policy treats the batches of send() and send_batch()
alike, on the sequential and the pipelined sender."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, List

import numpy as np
import pytest

import pylog
from pylog import errors
from pylog.client.retry import FAIL, RETRY, SPLIT, RetryPolicy
from pylog.records import build_batch, iter_records

WAIT_S = 10.0


def wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


class Recording:
    """A broker wrapper that keeps the bytes of every produce call."""

    #: It wraps produce calls: without produce_many the sender makes one per batch.
    produce_many = None

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.produced: List[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def produce(self, topic, partition, data, **kw):
        self.produced.append(bytes(data))
        return self.broker.produce(topic, partition, data, **kw)


def test_send_writes_the_bytes_build_batch_writes(broker):
    broker.create_topic("t", 1)
    conn = Recording(broker)
    records = [(b"v0", None, None, None), (None, b"k1", [("h", b"x"), ("n", None)], None),
               (b"v2" * 50, b"", None, 1_600_000_000_000), (b"", None, [("e", b"")], None)]
    with pylog.Producer(conn, linger_ms=60_000) as p:
        futs = [p.send("t", v, key=k, headers=h, timestamp=ts) for v, k, h, ts in records]
        p.flush()
        pid, epoch = p._sender.producer_id, p._sender.producer_epoch
    assert len(conn.produced) == 1
    metas = [f.result() for f in futs]
    assert [m.offset for m in metas] == [0, 1, 2, 3]
    created = metas[0].timestamp
    assert metas[2].timestamp == 1_600_000_000_000 and metas[1].timestamp == created
    expect = build_batch([r[0] for r in records], keys=[r[1] for r in records],
                         headers=[r[2] or [] for r in records],
                         timestamps=[created if r[3] is None else r[3] for r in records],
                         producer_id=pid, producer_epoch=epoch, base_sequence=0)
    assert conn.produced[0] == expect
    assert [(r.value, r.key) for r in iter_records(conn.produced[0])] == [(r[0], r[1]) for r in records]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_a_batch_the_broker_refuses_as_too_large_is_split(broker, codec):
    broker.create_topic("small", 1, config={"max.message.bytes": 400})
    conn = Recording(broker)
    values = [b"%03d" % i + b"." * 60 for i in range(12)]
    with pylog.Producer(conn, linger_ms=60_000, compression_type=codec) as p:
        futs = [p.send("small", v, key=b"k%d" % (i % 2), headers=[("i", b"%d" % i)] if i % 3 == 0 else None)
                for i, v in enumerate(values)]
        p.flush()
    assert [f.result().offset for f in futs] == list(range(12))
    got = [r.value for r in broker.partition("small", 0).log.records()]
    assert got == values
    if codec == "none":
        assert len(conn.produced) > 2  # refused whole, then halves (and halves of halves)


def test_full_buffer_memory_blocks_send_then_raises_buffer_exhausted(broker):
    """A keyed record with headers (the C append's general path) waits for room while
    the sender is held, then gives up after max.block.ms with Kafka's BufferExhausted."""
    broker.create_topic("t", 1)
    go, stalled = threading.Event(), threading.Event()

    class Stalls(Recording):
        def produce(self, *a, **kw):
            stalled.set()
            assert go.wait(WAIT_S)
            return super().produce(*a, **kw)

    conn = Stalls(broker)
    record_bytes = 100 + 3 + (1 + 1 + 4) + 14  # value + key + header + per-record overhead
    p = pylog.Producer(conn, buffer_memory=2 * record_bytes, linger_ms=0, max_block_ms=300)
    first = [p.send("t", b"v" * 100, key=b"key", headers=[("h", b"x")]) for _ in range(2)]
    assert stalled.wait(WAIT_S)
    outcome: List[BaseException] = []

    def blocked_send() -> None:
        try:
            p.send("t", b"w" * 100, key=b"key", headers=[("h", b"x")])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=blocked_send)
    t.start()
    wait_for(lambda: p.metrics()["waiting_threads"] == 1 or outcome, "the send to block")
    t.join(WAIT_S)
    assert len(outcome) == 1 and isinstance(outcome[0], errors.BufferExhausted)
    m = p.metrics()
    assert (m["blocked_sends_total"], m["buffer_exhausted_total"], m["waiting_threads"]) == (1, 1, 0)
    go.set()
    p.close()
    assert [f.result().offset for f in first] == [0, 1]
    assert p.metrics()["buffer_available_bytes"] == 2 * record_bytes


class FailsFirst:
    """Each distinct batch (by its bytes) fails its first ``n`` attempts with a
    retriable NotEnoughReplicas; counts the attempts.  ``pipelined`` makes the producer
    use produce_async + drive."""

    #: It wraps produce calls: without produce_many the sender makes one per batch.
    produce_many = None

    def __init__(self, broker: Any, n: int, pipelined: bool) -> None:
        self.broker = broker
        self.n = n
        self.attempts: Counter = Counter()
        self.pipelined_produce = pipelined

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def produce(self, topic, partition, data, **kw):
        key = bytes(data)
        self.attempts[key] += 1
        if self.attempts[key] <= self.n:
            raise errors.NotEnoughReplicas("not enough replicas (injected)")
        return self.broker.produce(topic, partition, data, **kw)

    def produce_async(self, topic, partition, data, *, acks=-1, callback):
        try:
            res = self.produce(topic, partition, data, acks=acks)
        except errors.PylogError as exc:
            callback(exc, None)
            return
        callback(None, res)

    def drive(self, done, timeout_s):
        return bool(done())


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("fails, succeeds", [(2, True), (5, False)])
def test_send_and_send_batch_are_retried_by_one_policy(broker, pipelined, fails, succeeds):
    broker.create_topic("t", 2)
    conn = FailsFirst(broker, fails, pipelined)
    with pylog.Producer(conn, retries=2, retry_backoff_ms=0, linger_ms=0) as p:
        assert p._sender.retry is p.retry_policy and p._sender.pipelined is pipelined
        rec = p.send("t", b"one", partition=0)
        p.flush()
        arr = p.send_batch("t", np.frombuffer(b"abc", dtype=np.uint8), lengths=[1, 1, 1], partition=1)
        p.flush()
    # One batch each, each sent 1 + retries times at most.
    assert len(conn.attempts) == 2
    assert sorted(conn.attempts.values()) == [3, 3]
    if succeeds:
        assert rec.result().offset == 0
        assert list(arr.result()) == [0, 1, 2]
    else:
        with pytest.raises(errors.NotEnoughReplicas):
            rec.result()
        with pytest.raises(errors.NotEnoughReplicas):
            arr.result()


class _B:
    def __init__(self, n: int, created_ms: int = 0) -> None:
        self.n, self.attempts, self.created_ms = n, 0, created_ms

    def __len__(self) -> int:
        return self.n


def test_retry_policy_decisions():
    pol = RetryPolicy(retries=1, retry_backoff_ms=0, delivery_timeout_ms=1000)
    b = _B(3)
    assert pol.decide(b, errors.NotEnoughReplicas("x"), now_ms=10) == RETRY
    assert pol.decide(b, errors.NotEnoughReplicas("x"), now_ms=10) == FAIL  # retries=1 used up
    assert pol.decide(_B(3), errors.RecordTooLarge("x"), now_ms=10) == SPLIT
    assert pol.decide(_B(1), errors.RecordTooLarge("x"), now_ms=10) == FAIL
    assert pol.decide(_B(2), errors.InvalidArgument("x"), now_ms=10) == FAIL  # not retriable
    assert pol.decide(_B(2), errors.InvalidArgument("x"), now_ms=10, behind_retry=True) == RETRY
    assert pol.decide(_B(2), errors.NotEnoughReplicas("x"), now_ms=1000) == FAIL  # delivery.timeout.ms


def test_no_python_object_per_record_is_kept_in_an_open_batch(broker):
    broker.create_topic("t", 1)
    with pylog.Producer(broker, linger_ms=60_000) as p:
        for i in range(100):
            p.send("t", b"v%d" % i)
        b = p._acc.open[("t", 0)]
        assert len(b) == 100 and not hasattr(b, "values")
        assert b.size_bytes > 100 * 3
        p.flush()
    assert len(list(broker.partition("t", 0).log.records())) == 100
