"""The producer's batches and futures: what one open or sealed batch holds, and the
handles :meth:`Producer.send` / :meth:`Producer.send_batch` return.

A batch is its own :class:`BatchResult`, completed by the sender; the per-record
:class:`FutureRecordMetadata` is a tuple pointing at it, so a record costs no object
beyond that tuple until its RecordMetadata is asked for.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from pylog.errors import PylogError, RequestTimedOut
from pylog.records.batch import restamp_producer
from pylog._native import ffi
from pylog.records.builder import BuilderOps, setup_send

__all__ = ["RecordMetadata", "FutureRecordMetadata", "BatchFuture", "BatchResult", "ProducerBatch", "ArrayBatch",
           "new_future", "BATCH_HEADER_BYTES"]

log = logging.getLogger("pylog.producer")

BATCH_HEADER_BYTES = 61  #: bytes of a v2 RecordBatch header
_BATCH_HEADER = BATCH_HEADER_BYTES


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written (offset -1 with acks=0)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


#: Guards the making of a batch's waiter lock (rare: only a wait on a batch not yet
#: acknowledged makes one).
_WAITER_LOCK = threading.Lock()


class BatchResult:
    """Completion of one batch: the one future of a batch, shared by the handles of its
    records (each derives its RecordMetadata from it on demand).

    It is also the batch's one-shot event (``is_set()``, ``wait(timeout)``, set by
    :meth:`done`).  The lock a waiter blocks on is made by the first waiter, not with
    the batch.  The producer keeps up to buffer.memory of batches alive, and every
    object a batch holds is one more that young collections count and promote, until a
    full collection walks the whole heap: with five per batch (batch, result, event,
    its lock, builder) most runs of a million send()s had one, 50 ms with a million
    values in the caller's list, a tenth of the run."""

    __slots__ = ("_set", "_waiter", "base_offset", "error", "callbacks", "log_append_time", "split",
                 "created_ms", "lock")

    def __init__(self, created_ms: int, lock: threading.Lock) -> None:
        self._set = False
        #: A lock held until done(), made by the first waiter (see wait).
        self._waiter: Optional[threading.Lock] = None
        self.base_offset = -1
        self.log_append_time = -1
        self.error: Optional[BaseException] = None
        self.callbacks: Optional[List[Tuple["FutureRecordMetadata", Callable]]] = None
        #: (index, first half's result, second half's result) when the batch was split.
        self.split: Optional[Tuple[int, "BatchResult", "BatchResult"]] = None
        #: ms: the timestamp of the batch's records sent without one.
        self.created_ms = created_ms
        #: The producer's lock: callbacks are taken under it (see add_callback).
        self.lock = lock

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until done() (or ``timeout`` seconds); whether it is done."""
        if self._set:
            return True
        w = self._waiter
        if w is None:
            with _WAITER_LOCK:
                w = self._waiter
                if w is None:
                    w = threading.Lock()
                    w.acquire()
                    self._waiter = w
        # The waiter is published before _set is read again, and done() sets _set
        # before it reads _waiter: one of the two sees the other, so no wait is missed.
        if self._set:
            return True
        if timeout is None:
            got = w.acquire()
        else:
            got = w.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX))
        if got:
            w.release()  # the next waiter in turn
        return self._set

    def add_callback(self, fut: "FutureRecordMetadata", fn: Callable) -> bool:
        """Have ``fn(fut)`` called when the batch completes; False if it already has
        (the caller calls ``fn`` itself).  Exactly one of this and done() calls it."""
        if self._set:
            return False
        with self.lock:
            if self.callbacks is None:
                self.callbacks = []
            self.callbacks.append((fut, fn))
            if not self._set:
                return True
            # done() ran meanwhile and may have found no callbacks: take them (it takes
            # them under this lock too, so they are called once).
            cbs, self.callbacks = self.callbacks, None
        _call(cbs)
        return True

    def done(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        """Complete the batch (once, by the sender)."""
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.error = error
        was = self._set
        self._set = True
        if not was:
            w = self._waiter
            if w is not None:
                w.release()
        if self.callbacks is not None:
            with self.lock:
                cbs, self.callbacks = self.callbacks, None
            _call(cbs)


def _call(cbs: Optional[List[Tuple["FutureRecordMetadata", Callable]]]) -> None:
    for fut, fn in cbs or ():
        try:
            fn(fut)
        except Exception:
            log.exception("producer callback raised")


class FutureRecordMetadata(tuple):
    """The result of :meth:`Producer.send`: ``result(timeout)`` gives RecordMetadata or
    raises the error the broker returned (after retries).

    (A tuple underneath — (batch result, index in the batch, (topic, partition), the
    record's explicit timestamp or None) — because one is made per record on the hot
    path and a tuple is the cheapest object; the offset is the batch's base offset +
    the index, worked out when asked.)
    """

    __slots__ = ()

    def done(self) -> bool:
        return self[0].is_set()

    def result(self, timeout: Optional[float] = None) -> RecordMetadata:
        r, i, tp, ts = self
        if not r.wait(timeout):
            raise RequestTimedOut(f"record to {tp[0]}-{tp[1]} not acknowledged within {timeout} s")
        created_ms = r.created_ms
        while r.split is not None:  # the broker refused the batch as too large: it was halved
            half, first, second = r.split
            r, i = (first, i) if i < half else (second, i - half)
        if r.error is not None:
            raise r.error
        off = r.base_offset + i if r.base_offset >= 0 else -1
        if r.log_append_time >= 0:
            ts = r.log_append_time
        elif ts is None:
            ts = created_ms
        return RecordMetadata(tp[0], tp[1], off, ts)

    get = result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            self.result(timeout)
        except RequestTimedOut:
            if not self[0].is_set():
                raise
            return self[0].error
        except PylogError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[["FutureRecordMetadata"], Any]) -> None:
        """Call ``fn(future)`` when the record is acknowledged or failed (in the sender
        thread; keep it short)."""
        if not self[0].add_callback(self, fn):
            fn(self)

    def __repr__(self) -> str:
        return f"FutureRecordMetadata({self[2][0]}-{self[2][1]}, done={self.done()})"


new_future = tuple.__new__

#: Whether the C send path can build FutureRecordMetadata itself (it lays out as a
#: tuple); if not, every send() takes the Python path.
C_FUTURES = setup_send(FutureRecordMetadata)


class _SenderBatch(BatchResult):
    """What the sender needs of a batch, whatever filled it.  The batch is its own
    result (the futures of its records point at it): one object per batch, not two,
    for the garbage collector (see :class:`BatchResult`); :meth:`complete` drops the
    bytes, so a future kept after completion holds no more than a result."""

    __slots__ = ("tp", "size", "attempts", "sequence", "data", "first_send_ns", "released")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock) -> None:
        BatchResult.__init__(self, now_ms, lock)
        self.tp = tp
        self.size = _BATCH_HEADER  #: bytes: header + records (approx.); the records count against buffer.memory
        self.first_send_ns = time.perf_counter_ns()
        self.attempts = 0
        self.sequence = -1  #: baseSequence once numbered for idempotence
        self.data: Optional[bytes] = None  #: the batch's bytes once built (kept for retries)
        #: Its record bytes were given back to buffer.memory (it completed).
        self.released = False

    def complete(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        """Complete the batch's futures (:meth:`BatchResult.done`) and drop its bytes at
        once: the sender holds a round of batches (up to buffer.memory of them) until
        the round ends, and futures may be kept long after."""
        self.done(base_offset, log_append_time, error)
        self.data = None


class ProducerBatch(_SenderBatch, BuilderOps):
    """An open batch of one partition, filled by send(): each record is encoded into
    its buffer (C memory; the batch is its own builder, :class:`BuilderOps`) at once,
    by the C send path (:class:`SendPath`, while the accumulator has handed the batch
    to it) or by :meth:`BuilderOps.append`."""

    #: ``address``: the pl_batch_builder's, kept (for the C send path) rather than
    #: worked out per use as BuilderOps.address does.
    __slots__ = ("cdata", "_buf", "address")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock, capacity_bytes: int) -> None:
        super().__init__(tp, now_ms, lock)
        self._init_builder(capacity_bytes, now_ms)
        self.address = int(ffi.cast("uintptr_t", self.cdata))

    def build(self, producer_id: int, producer_epoch: int, codec: int) -> Any:
        """Header and CRC written now (``sequence`` as baseSequence); bytes-like (a view
        of the builder's buffer when uncompressed)."""
        return self.seal(producer_id, producer_epoch, self.sequence, codec)

    def complete(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        super().complete(base_offset, log_append_time, error)
        self.close()  # its buffer goes too (len() stays)

    def slice(self, lo: int, hi: int) -> "ProducerBatch":  # type: ignore[override]
        part = ProducerBatch(self.tp, self.created_ms, self.lock, self._records_bytes())
        self.copy_records(part, lo, hi)
        part.first_send_ns = self.first_send_ns
        return part

    def __len__(self) -> int:
        return self.cdata.count


class ArrayBatch(_SenderBatch):
    """A sealed batch of records [start, end) of a :class:`Columns` (from send_batch).

    :meth:`prebuild` encodes it in the thread that called send_batch (while the sender
    ships earlier batches), as a batch with no producer id; :meth:`build`, when the
    sender ships it, returns those bytes, restamped with the producer id, epoch and
    sequence number when it has them (one CRC pass), or builds it then (a slice after
    a split, or when the prebuild failed)."""

    __slots__ = ("cols", "start", "end", "prebuilt")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock, cols: Any, start: int,
                 end: int, size: int) -> None:
        super().__init__(tp, now_ms, lock)
        self.cols = cols
        self.start = start
        self.end = end
        self.size = size
        #: (codec, bytes) built by :meth:`prebuild`, no producer fields
        self.prebuilt: Optional[Tuple[int, Any]] = None

    def prebuild(self, codec: int) -> None:
        """Encode the batch now (no producer fields).  An error leaves it to be built
        when shipped, which reports it through the future."""
        try:
            self.prebuilt = (codec, self.cols.build(self.start, self.end, base_timestamp=self.created_ms,
                                                    codec=codec, size_bound=self.size))
        except PylogError:
            self.prebuilt = None

    def complete(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        super().complete(base_offset, log_append_time, error)
        self.prebuilt = None
        self.cols = None  # the caller's arrays: not kept alive by the BatchFuture

    def build(self, producer_id: int, producer_epoch: int, codec: int) -> Any:
        pre, self.prebuilt = self.prebuilt, None
        if pre is not None and pre[0] == codec:
            if producer_id < 0 and producer_epoch < 0 and self.sequence < 0:
                return pre[1]
            return restamp_producer(pre[1], producer_id, producer_epoch, self.sequence)
        return self.cols.build(self.start, self.end, base_timestamp=self.created_ms, producer_id=producer_id,
                               producer_epoch=producer_epoch, base_sequence=self.sequence, codec=codec,
                               size_bound=self.size)

    def slice(self, lo: int, hi: int) -> "ArrayBatch":
        part = ArrayBatch(self.tp, self.created_ms, self.lock, self.cols, self.start + lo, self.start + hi,
                          self.size)
        part.first_send_ns = self.first_send_ns
        return part

    def __len__(self) -> int:
        return self.end - self.start


class BatchFuture:
    """The result of :meth:`Producer.send_batch`: ``result(timeout)`` gives the offsets of
    the records (int64 array aligned with the input; -1 with acks=0) once every batch is
    acknowledged, or raises the first error a batch got (the other batches may be written).
    ``partitions`` (int32 array aligned with the input) is known at once."""

    __slots__ = ("topic", "partitions", "_parts", "_n")

    def __init__(self, topic: str, partitions: np.ndarray, parts: List[Tuple[BatchResult, Any, int]],
                 n: int) -> None:
        self.topic = topic
        self.partitions = partitions
        #: (batch result, indices of its records in the input (array or slice), count)
        self._parts = parts
        self._n = n

    def done(self) -> bool:
        return all(r.is_set() for r, _, _ in self._parts)

    def result(self, timeout: Optional[float] = None) -> np.ndarray:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = np.empty(self._n, dtype=np.int64)
        for r, where, count in self._parts:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not r.wait(left):
                raise RequestTimedOut(f"records to {self.topic} not acknowledged within {timeout} s")
            out[where] = _offsets_of(r, count)
        return out

    get = result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            self.result(timeout)
        except RequestTimedOut:
            raise
        except BaseException as exc:  # noqa: BLE001 - the future's own error
            return exc
        return None

    def __repr__(self) -> str:
        return f"BatchFuture({self.topic}, {self._n} records, done={self.done()})"


def _offsets_of(r: BatchResult, count: int) -> np.ndarray:
    """Offsets of the ``count`` records of a completed batch (halves if it was split)."""
    if r.split is not None:
        half, first, second = r.split
        first.wait()
        second.wait()
        return np.concatenate([_offsets_of(first, half), _offsets_of(second, count - half)])
    if r.error is not None:
        raise r.error
    if r.base_offset < 0:
        return np.full(count, -1, dtype=np.int64)
    return np.arange(r.base_offset, r.base_offset + count, dtype=np.int64)
