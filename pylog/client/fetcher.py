"""Fetcher: how a network consumer fetches (Kafka's consumer Fetcher, in short).

* **One Fetch per broker**: every fetchable partition led by a broker goes into one
  Fetch request, which long-polls (``fetch.max.wait.ms`` / ``fetch.min.bytes``) instead
  of the client polling in a loop.
* **Prefetch**: a partition whose fetched records have all been handed out is fetched
  again at once, at the end of the poll that drained it, so the next answer travels
  while the application works on this one.  At most one Fetch is in flight per broker
  (a broker answers a connection's requests one at a time: a second one would wait
  behind the long poll), so a Fetch sent while records are still buffered does not
  long-poll: it would hold back the partition being drained once that one runs dry.
* **Columns from the answer's bytes**: each partition's records are decoded into numpy
  columns by :func:`pylog.records.decode_records` (C, no Python per record) straight
  from the bytes of the answer; uncompressed records are not copied again.  With
  ``check_crcs`` (Kafka's check.crcs, default on) the batches are validated first
  (CRC32C, in C).  A batch a broker cut short at the end of a partition's records is
  left out and fetched next time.

Positions stay the consumer's: fetched data is kept with the position it continues
from, and dropped if the consumer's position moved meanwhile (seek, rebalance).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pylog.errors import OffsetOutOfRange, PylogError, UnknownTopicOrPartition
from pylog.records import decode_records, validate_batches
from pylog.records.batch import RecordArrays
from pylog.client.network.records import whole_prefix

__all__ = ["Fetcher"]

log = logging.getLogger("pylog.consumer")

TopicPartition = Tuple[str, int]
_COLS = ("offsets", "timestamps", "key_pos", "key_len", "value_pos", "value_len", "headers_pos", "headers_count")


class _Buffered:
    """Decoded records of one partition not handed out yet."""

    __slots__ = ("arrays", "cursor", "position", "end_offset")

    def __init__(self, arrays: RecordArrays, position: int, end_offset: int) -> None:
        self.arrays = arrays
        self.cursor = 0  #: next record to hand out
        self.position = position  #: the consumer position these records continue from
        self.end_offset = end_offset  #: offset after the last fetched batch


class Fetcher:
    """Fetch state of one network consumer (see the module docstring).  Used from the
    consumer's thread only."""

    def __init__(self, client: Any, *, max_wait_ms: int, min_bytes: int, max_bytes: int,
                 max_partition_bytes: int, check_crcs: bool = True, retry_backoff_ms: int = 100) -> None:
        self._client = client
        self.max_wait_ms = max_wait_ms
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.max_partition_bytes = max_partition_bytes
        self.check_crcs = check_crcs
        self.retry_backoff_s = retry_backoff_ms / 1000.0
        self._event = threading.Event()
        self._buffers: Dict[TopicPartition, _Buffered] = {}
        self._in_flight: Dict[int, Any] = {}  #: node -> FetchHandle
        self._in_flight_tps: Dict[TopicPartition, int] = {}
        #: (error, the position it happened at): handed to the consumer by collect
        self._errors: Dict[TopicPartition, Tuple[PylogError, int]] = {}
        self._backoff_until: Dict[TopicPartition, float] = {}
        self._next = 0

    # ------------------------------------------------------------------ answers
    def _absorb(self) -> None:
        """Turn finished Fetch answers into buffers and errors."""
        for node, handle in list(self._in_flight.items()):
            if not handle.done():
                continue
            del self._in_flight[node]
            offsets = {}
            for t, p, off in handle.wanted:
                self._in_flight_tps.pop((t, p), None)
                offsets[(t, p)] = off
            for tp, got in handle.result().items():
                pos = offsets.get(tp)
                if pos is None:
                    continue
                if got.error is not None:
                    self._failed(tp, got.error, pos)
                    continue
                try:
                    buffered = self._decode(got.records, pos)
                except PylogError as exc:
                    self._errors[tp] = (exc, pos)
                    continue
                if buffered is not None:
                    self._buffers[tp] = buffered

    def _failed(self, tp: TopicPartition, error: PylogError, pos: int) -> None:
        if isinstance(error, OffsetOutOfRange) or not (error.retriable or isinstance(error, UnknownTopicOrPartition)):
            self._errors[tp] = (error, pos)
            return
        # Leadership moving, a broker away, a topic being created or deleted: the
        # client looks the leader up again; nothing from this partition for a moment.
        log.debug("fetch of %s-%d: %s", tp[0], tp[1], error)
        self._backoff_until[tp] = time.monotonic() + self.retry_backoff_s

    def _decode(self, records: Any, pos: int) -> Optional[_Buffered]:
        if not records:
            return None
        mv = records if isinstance(records, memoryview) else memoryview(records)
        n, end_offset = whole_prefix(mv)
        if n == 0:
            return None
        data = mv[:n]
        if self.check_crcs:
            validate_batches(data)
        arrays = decode_records(data, pos)
        return _Buffered(arrays, pos, max(end_offset, pos))

    # ------------------------------------------------------------------ consumer side
    def collect(self, fetchable: Sequence[TopicPartition], positions: Dict[TopicPartition, Optional[int]],
                max_records: int, out_of_range: Callable[[TopicPartition, PylogError], None]
                ) -> List[Tuple[TopicPartition, RecordArrays]]:
        """Hand out up to ``max_records`` fetched records of ``fetchable`` partitions
        (rotating which goes first), advancing ``positions``; never waits.
        ``out_of_range(tp, error)`` is called for OffsetOutOfRange answers (it resets
        the position or raises); other errors of a partition are raised."""
        self._absorb()
        for tp, (err, pos) in list(self._errors.items()):
            if positions.get(tp) != pos or tp not in fetchable:
                del self._errors[tp]  # moved on since: the answer is moot
                continue
            del self._errors[tp]
            self._buffers.pop(tp, None)
            if isinstance(err, OffsetOutOfRange):
                out_of_range(tp, err)
            else:
                raise err
        out: List[Tuple[TopicPartition, RecordArrays]] = []
        if not fetchable:
            return out
        left = max_records
        start = self._next % len(fetchable)
        self._next += 1
        for k in range(len(fetchable)):
            if left <= 0:
                break
            tp = fetchable[(start + k) % len(fetchable)]
            b = self._buffers.get(tp)
            if b is None:
                continue
            if positions.get(tp) != b.position:
                del self._buffers[tp]  # seek or rebalance since the fetch
                continue
            arrays = b.arrays
            total = len(arrays)
            take = min(total - b.cursor, left)
            if take <= 0:
                positions[tp] = b.end_offset
                del self._buffers[tp]
                continue
            lo, hi = b.cursor, b.cursor + take
            if lo == 0 and hi == total:
                part = arrays
            else:
                part = RecordArrays(arrays.buffer, {c: getattr(arrays, c)[lo:hi] for c in _COLS})
            b.cursor = hi
            if hi == total:
                positions[tp] = max(b.end_offset, int(arrays.offsets[hi - 1]) + 1)
                del self._buffers[tp]
            else:
                positions[tp] = b.position = int(arrays.offsets[hi - 1]) + 1
            out.append((tp, part))
            left -= take
        return out

    def send(self, fetchable: Sequence[TopicPartition], positions: Dict[TopicPartition, Optional[int]]) -> None:
        """Send a Fetch to every broker without one in flight, for its fetchable
        partitions that have nothing buffered."""
        now = time.monotonic()
        wanted: Dict[TopicPartition, Tuple[int, int]] = {}
        for tp in fetchable:
            pos = positions.get(tp)
            if pos is None or tp in self._buffers or tp in self._in_flight_tps or tp in self._errors:
                continue
            if self._backoff_until.get(tp, 0.0) > now:
                continue
            try:
                node = self._client.leader_of(tp[0], tp[1])
            except PylogError as exc:
                self._failed(tp, exc, pos)
                continue
            if node in self._in_flight:
                continue
            wanted[tp] = (pos, self.max_partition_bytes)
        if not wanted:
            return
        self._event.clear()
        # Long-poll only when nothing else is buffered: a long poll on partitions at
        # their end would hold back the next fetch of a partition still being drained
        # (one Fetch in flight per broker); with records in hand an immediate answer,
        # empty or not, costs one round trip.
        wait_ms = 0 if self._buffers else self.max_wait_ms
        handles, errors = self._client.send_fetches(wanted, max_wait_ms=wait_ms, min_bytes=self.min_bytes,
                                                    max_bytes=self.max_bytes, waiter=self._event)
        for h in handles:
            self._in_flight[h.node] = h
            for t, p, _ in h.wanted:
                self._in_flight_tps[(t, p)] = h.node
        for tp, exc in errors.items():
            self._failed(tp, exc, wanted[tp][0])

    def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a Fetch answer (or, with none in flight, for the
        retry backoff)."""
        if any(h.done() for h in self._in_flight.values()):
            return
        if not self._in_flight:
            time.sleep(min(timeout_s, self.retry_backoff_s))
            return
        self._event.wait(timeout_s)
        self._event.clear()

    def has_data(self) -> bool:
        return bool(self._buffers) or any(h.done() for h in self._in_flight.values())

    def clear(self) -> None:
        """Forget everything fetched (the consumer is closing or unsubscribing)."""
        self._buffers.clear()
        self._errors.clear()
