"""A producer batch is its own result: its one-shot event (wait, is_set), its
callbacks (each called exactly once, also when added while the sender completes the
batch), and the bytes it drops on completion."""
from __future__ import annotations

import gc
import sys
import threading

import pytest

from pylog._native import ffi
from pylog.client import Producer
from pylog.client.producer_batch import BatchResult, FutureRecordMetadata, ProducerBatch, new_future
from pylog.errors import InvalidArgument, RequestTimedOut


def _batch(lock: threading.Lock) -> ProducerBatch:
    b = ProducerBatch(("t", 0), 1000, lock, 1024)
    b.append(b"v")
    return b


def test_wait_times_out_then_wakes_when_done():
    r = BatchResult(0, threading.Lock())
    assert not r.is_set()
    assert r.wait(0.01) is False
    woke = []
    waiters = [threading.Thread(target=lambda: woke.append(r.wait())) for _ in range(3)]
    for t in waiters:
        t.start()
    r.done(42, -1, None)
    for t in waiters:
        t.join(10)
        assert not t.is_alive()
    assert woke == [True, True, True]
    assert r.wait(0) is True and r.base_offset == 42


def test_future_result_raises_timeout_before_done():
    b = _batch(threading.Lock())
    fut = new_future(FutureRecordMetadata, (b, 0, ("t", 0), None))
    with pytest.raises(RequestTimedOut):
        fut.result(0.01)
    b.complete(7, -1, None)
    md = fut.result(0)
    assert (md.offset, md.timestamp) == (7, 1000)


def test_callbacks_called_exactly_once_while_the_sender_completes():
    """Callbacks added from one thread while another completes the batches: every
    callback runs once (the switch interval made tiny to interleave the two)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        lock = threading.Lock()
        results = [BatchResult(0, lock) for _ in range(3000)]
        calls = [0] * len(results)

        def add():
            for i, r in enumerate(results):
                fut = new_future(FutureRecordMetadata, (r, 0, ("t", 0), None))
                for _ in range(2):
                    fut.add_done_callback(lambda f, i=i: calls.__setitem__(i, calls[i] + 1))

        def complete():
            for r in results:
                r.done(0, -1, None)

        threads = [threading.Thread(target=add), threading.Thread(target=complete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert calls == [2] * len(results)
    assert all(r.callbacks is None for r in results)


class _CompletesOnEnter:
    """The producer's lock, as add_callback takes it, with the sender completing the
    batch just before: the moment between add_callback's first look and its append."""

    def __init__(self) -> None:
        self.real = threading.Lock()
        self.result = None

    def __enter__(self):
        if self.result is not None and not self.result.is_set():
            self.result.done(1, -1, None)
        self.real.acquire()

    def __exit__(self, *exc):
        self.real.release()


def test_a_callback_added_as_the_batch_completes_is_called():
    lock = _CompletesOnEnter()
    r = lock.result = BatchResult(0, lock)
    fut = new_future(FutureRecordMetadata, (r, 0, ("t", 0), None))
    seen = []
    fut.add_done_callback(seen.append)
    assert seen == [fut] and r.callbacks is None
    fut.add_done_callback(seen.append)  # done already: called at once
    assert seen == [fut, fut]


def test_completion_drops_the_bytes_and_keeps_the_count():
    lock = threading.Lock()
    b = _batch(lock)
    b.append(b"w")
    b.data = b.build(-1, -1, 0)
    b.complete(5, -1, None)
    assert b.data is None and b._buf is None and b.cdata.buf == ffi.NULL
    assert len(b) == 2
    # The builder gave its buffer up: it refuses, it does not touch freed memory.
    with pytest.raises(InvalidArgument):
        b.append(b"x")
    with pytest.raises(InvalidArgument):
        b.seal()
    with pytest.raises(InvalidArgument):
        b.slice(0, 1)


def test_a_batch_is_one_object_for_the_collector():
    """What the young collections count and promote per open batch: the batch, its own
    result and builder (an event, a lock and a builder object per batch beside it
    brought a full collection of the heap in most runs of a million send()s)."""
    lock = threading.Lock()
    gc.collect()
    gc.disable()
    try:
        keep = []
        before = gc.get_count()[0]
        for _ in range(100):
            keep.append(ProducerBatch(("t", 0), 0, lock, 1024))
        per_batch = (gc.get_count()[0] - before) / 100
    finally:
        gc.enable()
    assert per_batch <= 1.5, per_batch


def test_the_futures_of_a_producer_point_at_their_batch(broker):
    broker.create_topic("results", 1)
    p = Producer(broker, linger_ms=0)
    try:
        futs = [p.send("results", b"x%d" % i) for i in range(5)]
        p.flush()
        assert [f.result(10).offset for f in futs] == list(range(5))
        assert all(isinstance(f[0], ProducerBatch) and f[0]._buf is None for f in futs)
    finally:
        p.close()
