"""The record accumulator: each partition's open batch, and the batches ready to send.

:meth:`RecordAccumulator.append` puts a record in its partition's open batch (opening
one when needed), after reserving its bytes in the :class:`~pylog.client.buffer_pool.BufferPool`.
A batch is sealed (moved to ``ready``) when it reaches ``batch.size`` bytes, when the
next record would take it over ``max.request.size``, on flush/close, or when sends
wait for buffer room its bytes would free; the sender takes ready batches, and open
ones older than ``linger.ms``, with :meth:`drain_locked`.

One lock guards the accumulator, the buffer pool and the sender's bookkeeping; ``wake``
(a condition on it) wakes the sender and flush().
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from pylog.client.buffer_pool import BufferPool
from pylog.client.producer_batch import BATCH_HEADER_BYTES, FutureRecordMetadata, ProducerBatch, new_future
from pylog.client.producer_config import ProducerConfig
from pylog.errors import ProducerClosed, RecordTooLarge
from pylog.records.builder import NULL, builder_add
from pylog.util import now_ms as _now_ms

__all__ = ["RecordAccumulator", "RECORD_OVERHEAD_BYTES"]

RECORD_OVERHEAD_BYTES = 14  #: bytes a record adds to a batch beyond key and value (approx.)
#: Bytes an open batch's buffer has beyond batch.size: a record's varints may take
#: more than RECORD_OVERHEAD_BYTES, and the last record may cross batch.size.
_CAPACITY_SLACK = 256

TopicPartition = Tuple[str, int]


class RecordAccumulator:
    """Per-partition open batches (linger.ms / batch.size readiness) and the ready queue."""

    def __init__(self, config: ProducerConfig, pool: BufferPool, lock: threading.Lock) -> None:
        self.lock = lock
        self.wake = threading.Condition(lock)
        self.pool = pool
        self.batch_size = config.batch_size
        self.linger_ms = config.linger_ms
        self.max_request_size = config.max_request_size
        self.open: Dict[TopicPartition, ProducerBatch] = {}
        self.ready: Deque[ProducerBatch] = deque()
        self.in_flight = 0  #: batches the sender took and has not completed
        self.flushing = 0  #: flush() calls in progress: open batches ship at once
        self.closed = False
        pool.on_starved = self._seal_oldest_locked
        pool.open_bytes = self._open_bytes_locked

    # ------------------------------------------------------------- appending
    def append(self, tp: TopicPartition, value: Optional[bytes], key: Optional[bytes], headers: Any,
               timestamp: Optional[int], size: int) -> FutureRecordMetadata:
        """Add one record (``size`` bytes against buffer.memory) to ``tp``'s open batch.

        Raises RecordTooLarge (over max.request.size or buffer.memory), ProducerClosed,
        and what BufferPool.reserve_locked raises when there is no room.
        """
        if size + BATCH_HEADER_BYTES > self.max_request_size:
            raise RecordTooLarge(f"a record of about {size} bytes is over max.request.size="
                                 f"{self.max_request_size}")
        if size > self.pool.buffer_memory:
            raise RecordTooLarge(f"a record of about {size} bytes is larger than the total memory buffer "
                                 f"of the producer, buffer.memory={self.pool.buffer_memory}")
        with self.lock:
            if self.closed:
                raise ProducerClosed("send() after the producer was closed")
            self.pool.reserve_locked(size)
            try:
                b = self.open.get(tp)
                if b is not None and b.size + size > self.max_request_size:
                    self.seal_locked(tp, b)
                    b = None
                if b is None:
                    b = self._open_batch_locked(tp, size)
                i = b.builder.append(value, key, headers, timestamp)
            except BaseException:
                self.pool.available += size  # not appended: give its room back
                self.pool.grant_locked()
                if b is not None and len(b) == 0 and self.open.get(tp) is b:
                    del self.open[tp]  # opened for this record alone
                raise
            b.size += size
            if b.size >= self.batch_size:
                self.seal_locked(tp, b)
            elif self.pool.waiters:  # this record's bytes may be what another send waits for
                self.pool.ship_if_starved_locked()
        return new_future(FutureRecordMetadata, (b.result, i, tp, timestamp))

    def _open_batch_locked(self, tp: TopicPartition, size: int) -> ProducerBatch:
        # Room for batch.size bytes of records (the builder grows for a larger record).
        capacity = min(max(self.batch_size, size), self.max_request_size) + _CAPACITY_SLACK
        b = self.open[tp] = ProducerBatch(tp, _now_ms(), self.lock, capacity)
        if len(self.open) == 1:
            self.wake.notify_all()  # the sender's linger timer starts now
        return b

    def try_append_plain(self, tp: TopicPartition, value: bytes, key: Optional[bytes],
                         size: int) -> Optional[FutureRecordMetadata]:
        """send()'s fast path: a record with no headers or timestamp, into an open batch
        with room, without waiting, by one C call; None when the general :meth:`append`
        must decide (no open batch, no room in buffer.memory or in the batch's buffer)."""
        lock = self.lock
        lock.acquire()
        try:
            b = self.open.get(tp)
            pool = self.pool
            available = pool.available - size  # buffer.memory left after this record
            if b is None or available < 0 or b.size + size > self.max_request_size or self.closed:
                return None
            if key is None:
                i = builder_add(b.cdata, NULL, -1, value, len(value))
            else:
                i = builder_add(b.cdata, key, len(key), value, len(value))
            if i < 0:
                return None  # E_NOSPACE (append grows the buffer) or an error append raises
            pool.available = available
            bsize = b.size = b.size + size
            if bsize >= self.batch_size:
                self.seal_locked(tp, b)
            return new_future(FutureRecordMetadata, (b.result, i, tp, None))
        finally:
            lock.release()

    def add_sealed_locked(self, b: ProducerBatch) -> None:
        """Queue a batch built elsewhere (send_batch), after the partition's open batch
        so that records keep the order of the calls."""
        ob = self.open.get(b.tp)
        if ob is not None:
            self.seal_locked(b.tp, ob)
        self.ready.append(b)
        self.wake.notify_all()

    # --------------------------------------------------------------- sealing
    def seal_locked(self, tp: TopicPartition, b: ProducerBatch) -> None:
        del self.open[tp]
        self.ready.append(b)
        # All: flush() waits on the same condition, and must not take the sender's wake-up.
        self.wake.notify_all()

    def seal_all_locked(self) -> None:
        for tp in list(self.open):
            self.seal_locked(tp, self.open[tp])

    def _open_bytes_locked(self) -> int:
        return sum(b.size for b in self.open.values()) - BATCH_HEADER_BYTES * len(self.open)

    def _seal_oldest_locked(self, needed: int) -> None:
        """Seal lingering batches, oldest first, until ``needed`` bytes are on their way."""
        for b in sorted(self.open.values(), key=lambda b: b.created_ms):
            self.seal_locked(b.tp, b)
            needed -= b.size - BATCH_HEADER_BYTES
            if needed <= 0:
                return

    # -------------------------------------------------------------- draining
    def drain_locked(self) -> List[ProducerBatch]:
        """The ready batches, and the open ones past linger.ms (all of them while
        flushing or closed), in order."""
        out = list(self.ready)
        self.ready.clear()
        if self.open:
            now = _now_ms()
            for tp, b in list(self.open.items()):
                if self.closed or self.flushing or now - b.created_ms >= self.linger_ms:
                    del self.open[tp]
                    out.append(b)
        return out

    def linger_wait_locked(self) -> Optional[float]:
        """Seconds until the oldest open batch is due; None with no open batch."""
        if not self.open:
            return None
        oldest = min(b.created_ms for b in self.open.values())
        return max(0.0, (oldest + self.linger_ms - _now_ms()) / 1000.0) + 0.0005

    def pending_locked(self) -> bool:
        """Records are held that are not yet acknowledged or failed."""
        return bool(self.ready or self.in_flight or self.open)
