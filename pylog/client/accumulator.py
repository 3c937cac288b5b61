"""The record accumulator: each partition's open batch, and the batches ready to send.

:meth:`RecordAccumulator.append` puts a record in its partition's open batch (opening
one when needed), after reserving its bytes in the :class:`~pylog.client.buffer_pool.BufferPool`.
A batch is sealed (moved to ``ready``) when it reaches ``batch.size`` bytes, when the
next record would take it over ``batch.size`` or ``max.request.size`` (that record
starts the next batch, as in Kafka; a keyless one on another partition, see
:meth:`seal_if_full`), on flush/close, or when sends wait for buffer room its bytes
would free; the sender takes ready batches, and open ones older than ``linger.ms``,
with :meth:`drain_locked`.

One lock guards the accumulator, the buffer pool and the sender's bookkeeping; ``wake``
(a condition on it) wakes the sender and flush().

The C send path.  An open batch may be handed to the producer's :class:`SendPath`
(csrc/pysend.c), which then encodes send()'s common records into it without this
class: :meth:`_give_locked` lends it a credit of buffer.memory for the batch's next
records (an equal share of what is free among the open batches, up to the batch's
room below batch.size; none while a send waits for room), and :meth:`_take_locked`
takes the batch back -- its bytes counted and the credit it did not use -- before anything here reads or changes it: appending
through Python, sealing, draining, and before a send would wait for room
(:meth:`take_all_locked`, the pool's ``reclaim``).  Credit is free memory set aside,
not used: a send that does not fit takes every credit back before it waits, so
buffer.memory blocks and fails exactly as without C, and the producer's metrics count
credit as available.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from pylog.client.buffer_pool import BufferPool
from pylog.client.producer_batch import BATCH_HEADER_BYTES, FutureRecordMetadata, ProducerBatch, new_future
from pylog.client.producer_config import ProducerConfig
from pylog.errors import ProducerClosed, RecordTooLarge
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
        #: An open batch is sealed before a record that would take it over this.
        self._full_at = min(config.batch_size, config.max_request_size)
        self.open: Dict[TopicPartition, ProducerBatch] = {}
        self.ready: Deque[ProducerBatch] = deque()
        self.in_flight = 0  #: batches the sender took and has not completed
        self.flushing = 0  #: flush() calls in progress: open batches ship at once
        self.closed = False
        #: The producer's C send path (None: every record comes through append()).
        self.send_path: Any = None
        pool.on_starved = self._seal_oldest_locked
        pool.open_bytes = self._open_bytes_locked
        pool.reclaim = self.take_all_locked

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
            # (reserve_locked takes every credit back itself before it would wait)
            self.pool.reserve_locked(size)
            try:
                # Taken back only now: reserve_locked may have waited (the lock released),
                # and another send may have opened the batch and lent it to C meanwhile.
                b = self.open.get(tp)
                if b is not None:
                    self._take_locked(tp, b)
                if b is not None and b.size + size > self._full_at:
                    self.seal_locked(tp, b)  # the record starts the next batch (as Kafka's)
                    b = None
                if b is None:
                    b = self._open_batch_locked(tp, size)
                i = -1
                if self.send_path is not None:
                    i = self.send_path.add(b.address, key, value, headers, timestamp)  # one call, GIL kept
                if i < 0:  # (PL_E_NOSPACE: the buffer grows here; other errors raise)
                    i = b.append(value, key, headers, timestamp)
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
            elif self.send_path is not None:
                self._give_locked(tp, b)
        return new_future(FutureRecordMetadata, (b, i, tp, timestamp))

    def seal_if_full(self, tp: TopicPartition, size: int) -> bool:
        """Seal ``tp``'s open batch if a record of ``size`` bytes would take it over
        batch.size; True if it did.  (The keyless path: that record then starts a batch
        on another partition, as Kafka's sticky partitioner moves on with a new batch.)"""
        with self.lock:
            b = self.open.get(tp)
            if b is None:
                return False
            self._take_locked(tp, b)
            if b.size + size > self._full_at:
                self.seal_locked(tp, b)
                return True
            if self.send_path is not None:
                self._give_locked(tp, b)
            return False

    def _open_batch_locked(self, tp: TopicPartition, size: int) -> ProducerBatch:
        # Room for batch.size bytes of records (the builder grows for a larger record).
        capacity = min(max(self.batch_size, size), self.max_request_size) + _CAPACITY_SLACK
        b = self.open[tp] = ProducerBatch(tp, _now_ms(), self.lock, capacity)
        if len(self.open) == 1:
            self.wake.notify_all()  # the sender's linger timer starts now
        return b

    # ------------------------------------------------------ the C send path
    def _give_locked(self, tp: TopicPartition, b: ProducerBatch) -> None:
        """Hand the open batch ``b`` to the C send path with a credit of buffer.memory
        (none, and C falls back here, when room is short or a send waits)."""
        pool = self.pool
        # At most a fair share of what is free: with room short, one batch holding it all
        # would send every record of the other partitions through Python, each taking
        # the credit back from the batch before it (keyed records, 1 MiB batches: 5 %
        # of the records, and a third of the rate).
        credit = min(self.batch_size - b.size, pool.available // max(1, len(self.open)))
        if credit <= 0 or pool.waiters or self.closed:
            return
        self.send_path.give(tp[0], tp[1], b, b.address, tp, b.size, credit)
        pool.available -= credit

    def _take_locked(self, tp: TopicPartition, b: ProducerBatch) -> None:
        """Take ``b`` back from the C send path (if it had it): its size now, and the
        unused credit back to buffer.memory."""
        if self.send_path is None:
            return
        got = self.send_path.take(tp[0], tp[1])
        if got is not None:
            b.size, credit = got
            if credit:
                self.pool.available += credit
                if self.pool.waiters:
                    self.pool.grant_locked()

    def take_all_locked(self) -> None:
        """Every open batch back from the C send path (before a send waits for room,
        and at close: no record enters a batch behind the accumulator's back after)."""
        if self.send_path is not None:
            for tp, b in list(self.open.items()):
                self._take_locked(tp, b)

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
        self._take_locked(tp, b)
        del self.open[tp]
        self.ready.append(b)
        # All: flush() waits on the same condition, and must not take the sender's wake-up.
        self.wake.notify_all()

    def seal_all_locked(self) -> None:
        for tp in list(self.open):
            self.seal_locked(tp, self.open[tp])

    def _open_bytes_locked(self) -> int:
        # (Called while sends wait: the C send path holds no batch then.)
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
                    self._take_locked(tp, b)
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
