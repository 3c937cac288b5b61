"""The producer's batches and futures: what one open or sealed batch holds, and the
handles :meth:`Producer.send` / :meth:`Producer.send_batch` return.

One :class:`BatchResult` per batch is completed by the sender; the per-record
:class:`FutureRecordMetadata` is a tuple pointing at it, so a record costs no object
beyond that tuple until its RecordMetadata is asked for.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from pylog.errors import PylogError, RequestTimedOut

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


class BatchResult:
    """Completion of one batch, shared by the futures of its records."""

    __slots__ = ("event", "base_offset", "timestamps", "error", "callbacks", "log_append_time", "split")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.base_offset = -1
        self.timestamps: Optional[List[int]] = None
        self.log_append_time = -1
        self.error: Optional[BaseException] = None
        self.callbacks: Optional[List[Tuple["FutureRecordMetadata", Callable]]] = None
        #: (index, first half's result, second half's result) when the batch was split.
        self.split: Optional[Tuple[int, "BatchResult", "BatchResult"]] = None

    def done(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.error = error
        self.event.set()
        cbs, self.callbacks = self.callbacks, None
        for fut, fn in cbs or ():
            try:
                fn(fut)
            except Exception:
                log.exception("producer callback raised")


class FutureRecordMetadata(tuple):
    """The result of :meth:`Producer.send`: ``result(timeout)`` gives RecordMetadata or
    raises the error the broker returned (after retries).

    (A tuple underneath — (batch result, index, (topic, partition), batch) — because
    one is made per record on the hot path and a tuple is the cheapest object.)
    """

    __slots__ = ()

    def done(self) -> bool:
        return self[0].event.is_set()

    def result(self, timeout: Optional[float] = None) -> RecordMetadata:
        r, i, tp, batch = self
        if not r.event.wait(timeout):
            raise RequestTimedOut(f"record to {tp[0]}-{tp[1]} not acknowledged within {timeout} s")
        while r.split is not None:  # the broker refused the batch as too large: it was halved
            half, first, second = r.split
            r, i = (first, i) if i < half else (second, i - half)
        if r.error is not None:
            raise r.error
        off = r.base_offset + i if r.base_offset >= 0 else -1
        ts = r.log_append_time if r.log_append_time >= 0 else batch.timestamp_of(self[1])
        return RecordMetadata(tp[0], tp[1], off, ts)

    get = result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            self.result(timeout)
        except RequestTimedOut:
            if not self[0].event.is_set():
                raise
            return self[0].error
        except PylogError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[["FutureRecordMetadata"], Any]) -> None:
        """Call ``fn(future)`` when the record is acknowledged or failed (in the sender
        thread; keep it short)."""
        r = self[0]
        if not r.event.is_set():
            with self[3].lock:
                if not r.event.is_set():
                    if r.callbacks is None:
                        r.callbacks = []
                    r.callbacks.append((self, fn))
                    return
        fn(self)

    def __repr__(self) -> str:
        return f"FutureRecordMetadata({self[2][0]}-{self[2][1]}, done={self.done()})"


new_future = tuple.__new__


class ProducerBatch:
    """An open batch of one partition, filled by send().

    ``keys`` is None until a record with a key arrives (then padded with None);
    headers and explicit timestamps are sparse: index -> value.
    """

    __slots__ = ("tp", "values", "keys", "headers", "timestamps", "size", "created_ms", "result",
                 "lock", "attempts", "sequence", "data", "first_send_ns", "released")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock) -> None:
        self.tp = tp
        self.values: List[Optional[bytes]] = []
        self.keys: Optional[List[Optional[bytes]]] = None
        self.headers: Optional[Dict[int, Any]] = None
        self.timestamps: Optional[Dict[int, int]] = None
        self.size = _BATCH_HEADER  #: bytes: header + records (approx.); the records count against buffer.memory
        self.created_ms = now_ms
        self.first_send_ns = time.perf_counter_ns()
        self.result = BatchResult()
        self.lock = lock
        self.attempts = 0
        self.sequence = -1
        self.data: Optional[bytes] = None
        #: Its record bytes were given back to buffer.memory (it completed).
        self.released = False

    def timestamp_of(self, i: int) -> int:
        if self.timestamps is not None:
            return self.timestamps.get(i, self.created_ms)
        return self.created_ms

    def slice(self, lo: int, hi: int) -> "ProducerBatch":
        part = ProducerBatch(self.tp, self.created_ms, self.lock)
        part.values = self.values[lo:hi]
        part.keys = None if self.keys is None else self.keys[lo:hi]
        if self.headers is not None:
            part.headers = {i - lo: h for i, h in self.headers.items() if lo <= i < hi}
        if self.timestamps is not None:
            part.timestamps = {i - lo: t for i, t in self.timestamps.items() if lo <= i < hi}
        part.first_send_ns = self.first_send_ns
        return part

    def __len__(self) -> int:
        return len(self.values)


class ArrayBatch(ProducerBatch):
    """A sealed batch of records [start, end) of a :class:`Columns` (from send_batch):
    built by one C call when the sender ships it."""

    __slots__ = ("cols", "start", "end")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock, cols: Any, start: int,
                 end: int, size: int) -> None:
        super().__init__(tp, now_ms, lock)
        self.cols = cols
        self.start = start
        self.end = end
        self.size = size

    def timestamp_of(self, i: int) -> int:
        ts = self.cols.timestamps
        return self.created_ms if ts is None else int(ts[self.start + i])

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
        return all(r.event.is_set() for r, _, _ in self._parts)

    def result(self, timeout: Optional[float] = None) -> np.ndarray:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = np.empty(self._n, dtype=np.int64)
        for r, where, count in self._parts:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not r.event.wait(left):
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
        first.event.wait()
        second.event.wait()
        return np.concatenate([_offsets_of(first, half), _offsets_of(second, count - half)])
    if r.error is not None:
        raise r.error
    if r.base_offset < 0:
        return np.full(count, -1, dtype=np.int64)
    return np.arange(r.base_offset, r.base_offset + count, dtype=np.int64)
