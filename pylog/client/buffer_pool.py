"""buffer.memory / max.block.ms: the memory accounting of the producer (Kafka's BufferPool).

The records the producer holds (open, waiting, or in flight, until their batch is
acknowledged or failed) may take at most ``buffer_memory`` bytes.  pylog counts each
record's serialized size (key + value + header keys and values + a small fixed
per-record overhead), not Kafka's whole-batch allocations, and not the 61-byte batch
headers.  A send that does not fit waits, first come first served, up to
``max_block_ms`` for completed batches to free room, then raises
:class:`~pylog.errors.BufferExhausted`.

The pool shares the accumulator's lock: every ``*_locked`` method is called with it
held.  It knows nothing of batches beyond their ``size`` and ``released`` fields; when
sends wait and the bytes on their way back would not be enough, it calls
``on_starved(needed)`` (the accumulator seals lingering batches).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Sequence

from pylog.client.producer_batch import BATCH_HEADER_BYTES as _BATCH_HEADER
from pylog.errors import BufferExhausted, ProducerClosed

__all__ = ["BufferPool"]

#: The sender gives completed batches' bytes back in chunks of at least
#: buffer.memory / this, and at the end of each round: waking a blocked send for every
#: batch passes the GIL back and forth per batch (measured: ~30% of producer throughput).
RELEASE_CHUNKS = 16


class _SpaceWaiter:
    """A send() blocked for room.  Completed batches' bytes are granted to the oldest
    waiter first (so a large record is not starved by small ones); it is woken once it
    holds all it needs."""

    __slots__ = ("need", "granted", "cond")

    def __init__(self, need: int, lock: threading.Lock) -> None:
        self.need = need  #: bytes the record takes
        self.granted = 0  #: bytes reserved for it so far
        self.cond = threading.Condition(lock)


class BufferPool:
    """Counts the bytes of the records held against buffer.memory; blocks sends for room."""

    def __init__(self, buffer_memory: int, max_block_ms: int, lock: threading.Lock) -> None:
        assert buffer_memory >= 1
        self.buffer_memory = buffer_memory
        self.max_block_ms = max_block_ms
        self.lock = lock
        #: buffer.memory not taken by records held (open, ready, in flight); never < 0.
        self.available = buffer_memory
        self.waiters: Deque[_SpaceWaiter] = deque()
        self.release_chunk_bytes = max(1, buffer_memory // RELEASE_CHUNKS)
        self.closed = False
        #: The thread that frees room (the sender): it must never wait for room itself.
        self.freeing_thread: Optional[threading.Thread] = None
        #: Called (lock held) with the bytes still needed when waiting sends lack them.
        self.on_starved: Callable[[int], None] = lambda needed: None
        #: Bytes held by open batches (not yet on their way back), lock held.
        self.open_bytes: Callable[[], int] = lambda: 0
        #: Called (lock held) before a send waits: takes back the buffer.memory lent to
        #: the C send path's open batches (RecordAccumulator.take_all_locked).
        self.reclaim: Callable[[], None] = lambda: None
        self.blocked_sends_total = 0  #: sends that had to wait for room
        self.wait_ns_total = 0  #: time sends spent blocked for room
        self.exhausted_total = 0  #: sends that gave up after max.block.ms

    def reserve_locked(self, size: int) -> None:
        """Take ``size`` bytes, waiting for them if needed (see :meth:`wait_locked`)."""
        if self.available < size:
            self.reclaim()
        if self.available >= size:
            self.available -= size
        else:
            self.wait_locked(size)

    def wait_locked(self, size: int) -> None:
        """Block (the lock released meanwhile) until ``size`` bytes are reserved for the
        caller, after the sends that blocked before it.

        Raises BufferExhausted after max.block.ms (at once when called from the sender
        thread, i.e. a callback, which alone frees room), ProducerClosed if the producer
        is closed meanwhile; either way nothing stays reserved.
        """
        if threading.current_thread() is self.freeing_thread:
            self.exhausted_total += 1
            raise BufferExhausted(f"buffer.memory={self.buffer_memory} is full and send() was called from "
                                  f"a producer callback, which cannot wait for room (the sender thread "
                                  f"frees it)")
        self.blocked_sends_total += 1
        waiter = _SpaceWaiter(size, self.lock)
        self.waiters.append(waiter)
        self.grant_locked()
        start_ns = time.monotonic_ns()
        deadline_ns = start_ns + self.max_block_ms * 1_000_000
        reserved = False
        try:
            while waiter.granted < size and not self.closed:
                left_ns = deadline_ns - time.monotonic_ns()
                if left_ns <= 0:
                    break
                waiter.cond.wait(min(left_ns / 1e9, threading.TIMEOUT_MAX))
            reserved = waiter.granted == size and not self.closed
        finally:
            self.wait_ns_total += time.monotonic_ns() - start_ns
            if not reserved:  # give back what was granted; the next waiter may use it
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                self.available += waiter.granted
                waiter.granted = 0
                self.grant_locked()
        if reserved:
            return
        if self.closed:
            raise ProducerClosed("the producer was closed while send() waited for buffer.memory")
        self.exhausted_total += 1
        raise BufferExhausted(f"Failed to allocate {size} bytes for a record within max.block.ms="
                              f"{self.max_block_ms} (buffer.memory={self.buffer_memory}, "
                              f"{self.available} bytes available)")

    def grant_locked(self) -> None:
        """Hand free bytes to the blocked sends, oldest first; wake each one that now
        holds all it needs.  Afterwards either no send waits or no byte is free, and the
        sends still waiting have enough bytes on their way back."""
        waiters = self.waiters
        while waiters and self.available > 0:
            w = waiters[0]
            take = min(w.need - w.granted, self.available)
            w.granted += take
            self.available -= take
            if w.granted < w.need:
                break
            waiters.popleft()
            w.cond.notify()
        if waiters:
            self.ship_if_starved_locked()

    def ship_if_starved_locked(self) -> None:
        """While sends wait for room, make sure their bytes are on the way: if the
        batches already sealed (ready or in flight, released when they complete) hold
        fewer bytes than the waiting sends still need, have the accumulator seal
        lingering batches instead of letting them wait out linger.ms.  (Kafka makes
        every batch ready while its buffer is exhausted; sealing only what is needed
        keeps batches full.)"""
        needed = granted = 0
        for w in self.waiters:
            needed += w.need - w.granted
            granted += w.granted
        # Over-counts the bytes of a woken send not yet appended; its append checks again.
        on_the_way = self.buffer_memory - self.available - granted - self.open_bytes()
        if on_the_way < needed:
            self.on_starved(needed - on_the_way)

    def release_locked(self, batches: Sequence[Any]) -> None:
        """Give the record bytes of completed (acknowledged or failed) batches back, each
        batch once, and pass them on to blocked sends."""
        freed = 0
        for b in batches:
            if not b.released:
                b.released = True
                freed += b.size - _BATCH_HEADER
        if freed:
            self.available += freed
            assert self.available <= self.buffer_memory, "buffer.memory released twice"
            self.grant_locked()

    def close_locked(self) -> None:
        """Fail the blocked sends (ProducerClosed) and every later wait."""
        self.closed = True
        for w in self.waiters:
            w.cond.notify()

    def metrics_locked(self) -> Dict[str, int]:
        return {"buffer_total_bytes": self.buffer_memory, "buffer_available_bytes": self.available,
                "waiting_threads": len(self.waiters), "blocked_sends_total": self.blocked_sends_total,
                "bufferpool_wait_time_ns_total": self.wait_ns_total,
                "buffer_exhausted_total": self.exhausted_total}
