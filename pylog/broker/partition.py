"""One topic-partition on this broker: its log, its high watermark, its producers.

:class:`Partition` is where replication plugs in (issue 4): today a partition has one
replica, this broker, so it is always the leader, the ISR is ``[broker_id]`` and the
high watermark follows the log end offset.  Everything a client sees goes through it:

* :meth:`append` takes Kafka v2 record batches (as a ProduceRequest carries them),
  applies idempotent-producer checks (sequence numbers, epochs, duplicate retries),
  recompresses when the topic's ``compression.type`` asks for a codec, and writes them
  with leader-assigned offsets;
* :meth:`read` serves batches below the high watermark (consumers) or the log end
  (followers, later) as zero-copy views.
"""
from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from pylog.broker.config import TopicConfig
from pylog.broker.producer_state import INT32_MAX, MAX_CACHED_BATCHES, ProducerStateManager, batch_sequence_count
from pylog.errors import (CorruptRecordError, InvalidArgument, InvalidRecord, OffsetOutOfRange, PylogError,
                          StorageError)
from pylog.records import BATCH_HEADER, RecordBatch, build_batch, iter_batches, iter_records, validate_batches
from pylog.records.compression import CODECS
from pylog.storage import Log
from pylog.util import check_int

__all__ = ["Partition", "OfflinePartition", "AppendResult", "PRODUCER_SNAPSHOT"]

_logger = logging.getLogger(__name__)

#: File in the partition directory holding the producer state at a clean shutdown.
PRODUCER_SNAPSHOT = "producer-state.json"


@dataclass(frozen=True)
class AppendResult:
    """What a produce to one partition returns (Kafka's PartitionProduceResponse)."""

    base_offset: int  #: offset of the first record written (or of the duplicate's first)
    last_offset: int
    log_append_time: int  #: -1 unless the topic uses LogAppendTime
    log_start_offset: int
    records: int  #: records written now (0 for a duplicate retry)
    bytes: int
    duplicate: bool = False


class Partition:
    """A topic-partition replica (today: the only one, and so the leader)."""

    #: True for an :class:`OfflinePartition` (its log directory failed).
    offline = False

    def __init__(self, topic: str, index: int, log: Log, config: TopicConfig,
                 broker_id: int, clock: Callable[[], int]) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.config = config
        self.broker_id = broker_id
        self._clock = clock
        self._lock = threading.Lock()
        self.producers = ProducerStateManager()
        self._high_watermark = log.log_end_offset
        #: False: one replica, the HW follows the log end.  True (a replicated
        #: partition): the replication driver sets the HW with set_high_watermark.
        self.replicated = False
        #: Stamped into every batch a leader appends (partitionLeaderEpoch); -1: none.
        self.leader_epoch = -1
        #: The leader-epoch cache of a replicated partition
        #: (:class:`~pylog.replication.epochs.LeaderEpochCache`), set by the replication
        #: driver; None on a single broker, whose batches carry no epoch.
        self.epochs: Any = None
        #: the StorageError that refused the last append (a full disk), None once
        #: appends go through again: said once in the log each way, not per request
        self.storage_error: Optional[StorageError] = None
        #: Called (partition, error) when the disk refuses an append, with this
        #: partition's lock held: the owner only notes the failure there (a log
        #: directory that failed with EIO/EROFS goes offline, see LogDirs) and takes
        #: locks of its own later.
        self.on_storage_error: Optional[Callable[["Partition", StorageError], None]] = None
        self._load_producer_state()

    # ------------------------------------------------------------- opening
    @classmethod
    def open(cls, topic: str, index: int, directory: Path, config: TopicConfig, broker_id: int,
             clock: Callable[[], int], *, dir_lock: bool = True,
             clean_shutdown: Optional[bool] = None) -> "Partition":
        """Open (creating) the partition's log; ``dir_lock=False`` for a caller that
        holds its data directory's lock, ``clean_shutdown`` for one that keeps the
        directory's clean-shutdown marker (see :meth:`Log.open`)."""
        log = Log.open(directory, config=config.log_settings(), clock=clock, dir_lock=dir_lock,
                       clean_shutdown=clean_shutdown)
        return cls(topic, index, log, config, broker_id, clock)

    def _load_producer_state(self) -> None:
        path = self.log.dir / PRODUCER_SNAPSHOT
        state, end = ProducerStateManager.load(path)
        start = self.log.log_start_offset
        if 0 <= end <= self.log.log_end_offset:
            self.producers = state
            start = max(start, end)
        try:
            path.unlink()  # a snapshot is valid once: appends after this reopen make it stale
        except OSError:
            pass
        self._scan_producers(start)

    def _scan_producers(self, offset: int) -> None:
        """Replay batch headers from ``offset`` to the log end into the producer state
        (after a crash: no snapshot).  A compacted log rebuilds the same state: the
        cleaner keeps the header range of a producer's batches and its last batch."""
        for b in self._batch_headers(offset, self.log.log_end_offset):
            self.producers.replay(b)

    def _batch_headers(self, offset: int, stop: int) -> Iterator[RecordBatch]:
        """The batches from ``offset`` below ``stop``, for their headers only: not
        CRC-checked, as one damaged batch must not keep the broker from opening or a
        replica from truncating (its records raise when they are read)."""
        while offset < stop:
            batches = self.log.read(offset, 4 << 20, max_offset=stop, check_crcs=False)
            if not batches:
                return
            yield from batches
            offset = batches[-1].next_offset

    # ---------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    @property
    def leader(self) -> int:
        return self.broker_id

    @property
    def replicas(self) -> List[int]:
        return [self.broker_id]

    @property
    def isr(self) -> List[int]:
        return [self.broker_id]

    @property
    def high_watermark(self) -> int:
        """Offset below which every in-sync replica has the data (consumers read below)."""
        return self._high_watermark

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    # -------------------------------------------------------------- append
    def append(self, data: bytes, *, required_acks: int = -1) -> AppendResult:
        """Append producer batches with leader-assigned offsets.

        ``data`` is one or more Kafka v2 batches.  Batches from an idempotent producer
        (producerId >= 0) are checked against the producer state: a retried duplicate
        returns the first write's offsets and writes nothing; an out-of-order sequence
        raises OutOfOrderSequence; a fenced epoch InvalidProducerEpoch; a batch whose
        recordCount is not lastOffsetDelta + 1 InvalidRecord.  Raises also what
        :meth:`Log.append_batches` raises.  A rejected call writes nothing.
        """
        if required_acks not in (-1, 0, 1):
            raise InvalidArgument(f"required_acks must be -1, 0 or 1, got {required_acks!r}")
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgument(f"record batches must be bytes-like, got {type(data).__name__}") from None
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        counts = validate_batches(view)
        batches = list(iter_batches(view))
        for b in batches:  # as Kafka's validator: a producer numbers its records densely
            if b.record_count != b.last_offset_delta + 1:
                raise InvalidRecord(
                    f"record batch with base sequence {b.base_sequence} has recordCount {b.record_count} "
                    f"but its offsets span lastOffsetDelta + 1 = {b.last_offset_delta + 1}")
        codec = self._target_codec()
        with self._lock:
            if any(b.producer_id >= 0 for b in batches):
                return self._append_idempotent(batches, codec, counts)
            if codec is not None:
                return self._append_locked(self._recompressed(batches, codec))
            return self._append_locked(view, counts)

    def append_many(self, payloads: Sequence[Any], *,
                    required_acks: int = -1) -> Tuple[List[AppendResult], Optional[PylogError]]:
        """:meth:`append` of each of ``payloads`` in turn, with the same results: an
        embedded producer's several batches for this partition in one call (not a
        Kafka request, which carries one batch per partition).

        Returns (results, error): the result of each payload written, in order, and
        None; or, when payload k was refused, the k results before it and its error
        (the payloads after it are not tried).  InvalidArgument for bad
        ``required_acks`` raises.

        Payloads of one batch each, on a topic that keeps batches as sent
        (compression.type ``producer``), numbered for one producer without a gap (or
        all without a producer id), are checked, then written as one append (with
        LogAppendTime they share one append time); anything else (a duplicate, a gap, a
        fenced epoch, a codec to convert to, a bad batch, a refused write) goes through
        :meth:`append` one payload at a time, which reports it exactly.
        """
        if required_acks not in (-1, 0, 1):
            raise InvalidArgument(f"required_acks must be -1, 0 or 1, got {required_acks!r}")
        if len(payloads) > 1 and self._target_codec() is None:
            try:
                joined = b"".join(payloads)
                sizes = [len(p) if type(p) is bytes else memoryview(p).nbytes for p in payloads]
            except TypeError:
                joined = None
            if joined is not None:
                with self._lock:
                    results = self._append_chain_locked(joined, sizes)
                if results is not None:
                    return results, None
        results = []
        for data in payloads:
            try:
                results.append(self.append(data, required_acks=required_acks))
            except PylogError as exc:
                return results, exc
        return results, None

    def _append_chain_locked(self, joined: bytes, sizes: List[int]) -> Optional[List[AppendResult]]:
        """:meth:`append_many`'s one write of the payloads ``joined`` (``sizes`` bytes
        each), or None (nothing written) when it is not for this path or a check or the
        write refused it."""
        view = memoryview(joined)
        try:
            counts = validate_batches(view)
        except PylogError:
            return None
        if counts[0] != len(sizes):
            return None
        heads = []
        pos = 0
        unpack = BATCH_HEADER.unpack_from
        for size in sizes:
            h = unpack(joined, pos)
            if h[1] + 12 != size:  # a payload of exactly one batch
                return None
            heads.append(h)
            pos += size
        first = heads[0]
        pid, epoch, seq = first[9], first[10], first[11]
        for h in heads:
            count = h[6] + 1  # lastOffsetDelta + 1
            if h[12] != count or h[9] != pid:
                return None
            if pid >= 0:
                if h[10] != epoch or h[11] != seq:
                    return None
                seq = (seq + count) % (INT32_MAX + 1)
        if pid >= 0:
            try:
                if self.producers.check(pid, epoch, first[11], first[6] + 1) is not None:
                    return None  # a retried duplicate: append() answers it
            except PylogError:
                return None
        try:
            res = self._append_locked(view, counts)
        except PylogError:
            return None  # nothing written: append() reports which payload and why
        results = []
        chain = []
        off, lat, start = res.base_offset, res.log_append_time, res.log_start_offset
        for h, size in zip(heads, sizes):
            count = h[6] + 1
            results.append(AppendResult(off, off + count - 1, lat, start, count, size))
            chain.append((h[11], count, off, off + count - 1, h[8]))
            off += count
        self.producers.update_chain(pid, epoch, chain)
        return results

    def append_records(self, values: Sequence[Optional[bytes]],
                       keys: Optional[Sequence[Optional[bytes]]] = None) -> int:
        """Append records this broker writes itself (a coordinator's, such as the group
        coordinator's offsets and group metadata in ``__consumer_offsets``) as one batch
        built here, and flush them to disk before returning.

        No producer checks and no recompression (they are not a producer's batches).
        The high watermark follows the log end as for :meth:`append` (a replicated
        partition's moves with the replication driver).  Returns the offset of
        ``values[0]``.  Raises what :meth:`Log.append` raises (nothing is written then),
        LogClosed.
        """
        with self._lock:
            try:
                first = self.log.append(values, keys=keys)
                self.log.flush()
            except StorageError as exc:
                self._note_storage_error(exc)
                raise
            self._note_storage_ok()
            if not self.replicated:
                self._high_watermark = self.log.log_end_offset  # single replica: HW = LEO
            return first

    def _target_codec(self) -> Optional[int]:
        ct = self.config.compression_type
        if ct == "producer":
            return None
        return 0 if ct == "uncompressed" else CODECS[ct]

    def _append_idempotent(self, batches: List[RecordBatch], codec: Optional[int],
                           counts: Tuple[int, int]) -> AppendResult:
        if len(batches) != 1:
            # A Kafka producer sends one batch per partition per request; several
            # batches with sequence numbers would need per-batch duplicate replies.
            raise CorruptRecordError(
                f"a produce request carries {len(batches)} batches from an idempotent producer; "
                "send one batch per partition per request")
        b = batches[0]
        # sequences span lastOffsetDelta + 1 (Kafka's lastSequence), as a rebuild from
        # the headers will count them
        count = batch_sequence_count(b)
        dup = self.producers.check(b.producer_id, b.producer_epoch, b.base_sequence, count)
        if dup is not None:
            return AppendResult(dup.first_offset, dup.last_offset, -1, self.log.log_start_offset,
                                0, 0, duplicate=True)
        if codec is not None:
            res = self._append_locked(self._recompressed(batches, codec))
        else:
            res = self._append_locked(b.buffer, counts)  # validated just now
        self.producers.update(b.producer_id, b.producer_epoch, b.base_sequence, count,
                              res.base_offset, res.last_offset, b.max_timestamp)
        return res

    def _append_locked(self, payload: Any, validated: Optional[Tuple[int, int]] = None) -> AppendResult:
        """``validated``: the counts of validate_batches when ``payload`` is the very
        bytes just validated (not a rebuilt payload), so the log skips its CRC pass."""
        try:
            info = self.log.append_batches(payload, assign_offsets=True, leader_epoch=self.leader_epoch,
                                           validated=validated)
        except StorageError as exc:
            self._note_storage_error(exc)
            raise
        if self.storage_error is not None:
            self._note_storage_ok()
        if not self.replicated:
            self._high_watermark = self.log.log_end_offset  # single replica: HW = LEO
        lat = info.max_timestamp if self.log.config.log_append_time else -1
        return AppendResult(info.first_offset, info.last_offset, lat, self.log.log_start_offset,
                            info.records, info.size_bytes)

    def _note_storage_error(self, exc: StorageError) -> None:
        """An append was refused by the disk: say why, once until appends work again
        (reads go on; appends resume by themselves when space returns)."""
        if self.storage_error is None:
            why = "the disk is full" if exc.errno == errno.ENOSPC else "the log directory cannot be written"
            _logger.error("partition %s: appends refused, %s (%s); reads continue, and appends resume "
                          "without a restart once the disk takes writes again", self.name, why, exc)
        self.storage_error = exc
        if self.on_storage_error is not None:
            self.on_storage_error(self, exc)

    def _note_storage_ok(self) -> None:
        if self.storage_error is not None:
            _logger.warning("partition %s: appends work again (after: %s)", self.name, self.storage_error)
            self.storage_error = None

    def _recompressed(self, batches: List[RecordBatch], codec: int) -> bytes:
        """Rebuild batches whose codec differs from the topic's compression.type."""
        if all(b.compression == codec for b in batches):
            return b"".join(bytes(b.buffer) for b in batches)
        out = []
        for b in batches:
            if b.compression == codec:
                out.append(bytes(b.buffer))
                continue
            recs = list(iter_records(b.buffer))
            out.append(build_batch(
                [r.value for r in recs], keys=[r.key for r in recs], headers=[r.headers for r in recs],
                timestamps=[r.timestamp for r in recs], producer_id=b.producer_id,
                producer_epoch=b.producer_epoch, base_sequence=b.base_sequence, compression=codec,
                timestamp_type=b.timestamp_type))
        return b"".join(out)

    # ------------------------------------------------------------ settings
    def reconfigure(self, config: TopicConfig) -> None:
        """Apply a topic's new configuration to this open partition at once: its log's
        settings (see :meth:`Log.reconfigure`) and compression.type for the next append.
        Raises InvalidConfig (nothing changes), LogClosed."""
        with self._lock:
            self.log.reconfigure(config.log_settings())
            self.config = config

    # ------------------------------------------------------------ offsets
    def delete_records(self, before_offset: int) -> int:
        """Kafka's DeleteRecords on this replica: records below ``before_offset`` (-1:
        the high watermark) become unreadable at once and their whole segments go.

        A ``before_offset`` at or below the log start offset changes nothing.  Returns
        the log start offset (Kafka's low watermark).  Raises OffsetOutOfRange if
        ``before_offset`` is above the high watermark or below -1, InvalidArgument if it
        is not an integer, LogClosed.
        """
        check_int("before_offset", before_offset)
        with self._lock:
            hw = self._high_watermark
            target = hw if before_offset == -1 else before_offset
            if not 0 <= target <= hw:
                raise OffsetOutOfRange(
                    f"cannot delete the records of {self.name} before offset {before_offset}: it must be "
                    f"between 0 and the high watermark {hw} (or -1 for the high watermark)")
            self.log.delete_records(target)
            start = self.log.log_start_offset
            if self.epochs is not None:
                self.epochs.truncate_from_start(start)
            return start

    def offset_for_leader_epoch(self, leader_epoch: int) -> Tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (the largest epoch <= ``leader_epoch`` this
        replica holds, the end offset of that epoch); (-1, -1) for ``leader_epoch`` -1.

        From the leader-epoch cache when there is one.  A partition without one (a
        single broker: its batches carry no epoch) has one unbroken epoch, so any
        ``leader_epoch`` >= 0 is the current one and ends at the log end offset.
        Raises InvalidArgument for an epoch that is not an integer in [-1, 2^31-1].
        """
        check_int("leader_epoch", leader_epoch, min=-1, max=(1 << 31) - 1)
        leo = self.log.log_end_offset
        if self.epochs is not None:
            return self.epochs.end_offset_for(leader_epoch, leo)
        if leader_epoch < 0:
            return -1, -1
        return leader_epoch, leo

    # ------------------------------------------------------------ replication
    def append_as_follower(self, data: Any) -> List[RecordBatch]:
        """Append batches copied from the leader, keeping their offsets and epochs.

        Returns the appended batches (views of ``data``).  Raises CorruptRecordError,
        InvalidArgument (a gap or overlap with the log end)."""
        view = memoryview(data)
        counts = validate_batches(view)
        batches = list(iter_batches(view))
        with self._lock:
            self.log.append_batches(view, assign_offsets=False, validated=counts)
            for b in batches:
                self.producers.replay(b)
        return batches

    def compact(self, cleaner: Any, now_ms: int, *, force: bool = False) -> Any:
        """Run ``cleaner`` (a :class:`~pylog.broker.cleaner.LogCleaner`) on this log, with no
        append or truncation meanwhile; only the producers still remembered keep their
        last batch.  Returns its CleanResult, or None if the partition is closed."""
        with self._lock:
            if self.log.closed:
                return None
            return cleaner.clean(self.log, now_ms=now_ms, force=force,
                                 producer_ids=self.producers.producer_ids())

    def expire_producers(self, now_ms: int, expiration_ms: int) -> List[int]:
        """Forget idempotent producers silent for ``expiration_ms`` (producer.id.expiration.ms);
        the cleaner then stops keeping their last batch.  Returns their ids."""
        with self._lock:
            gone = self.producers.expire(now_ms, expiration_ms)
        if gone:
            _logger.info("%s-%d: %d producer id(s) expired (producer.id.expiration.ms=%d)", self.topic,
                     self.index, len(gone), expiration_ms)
        return gone

    def truncate_to(self, offset: int) -> None:
        """Drop offsets >= ``offset`` (a follower diverging from its leader).

        The producer state becomes what it was when the log ended at ``offset``: each
        producer that lost a batch gets its last batches below ``offset`` back from the
        log, so that a retry of one of them (a producer whose request timed out during a
        leader change) is still answered as a duplicate when this replica leads."""
        with self._lock:
            self.log.truncate_to(offset)
            lost = self.producers.truncate_to(offset)
            if lost:
                self.producers.restore(lost, self._last_batches_of(lost, self.log.log_end_offset))
            self._high_watermark = min(self._high_watermark, self.log.log_end_offset)

    def _last_batches_of(self, producer_ids: Set[int], end: int) -> List[RecordBatch]:
        """The last MAX_CACHED_BATCHES batches of each of ``producer_ids`` below ``end``,
        in log order: read segment by segment from the end of the log back, until every
        producer has that many or the log start is reached (usually the last segment is
        enough)."""
        found: Dict[int, List[RecordBatch]] = {pid: [] for pid in producer_ids}
        start_offset = self.log.log_start_offset
        stop = end
        for seg in reversed(self.log.segments):
            start = max(seg.base_offset, start_offset)
            if start >= stop:
                continue
            chunk: Dict[int, List[RecordBatch]] = {}
            for b in self._batch_headers(start, stop):
                if b.producer_id in found:
                    chunk.setdefault(b.producer_id, []).append(b)
            for pid, bs in chunk.items():
                found[pid] = (bs + found[pid])[-MAX_CACHED_BATCHES:]
            stop = start
            if stop <= start_offset or all(len(v) >= MAX_CACHED_BATCHES for v in found.values()):
                break
        return sorted((b for bs in found.values() for b in bs), key=lambda b: b.base_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empty this replica and start it at ``offset`` (a follower whose leader's log
        starts past this one's end): log, producer state, epochs and HW all restart there."""
        with self._lock:
            self.log.truncate_fully_and_start_at(offset)
            self.producers = ProducerStateManager()
            self._high_watermark = offset
            if self.epochs is not None:
                self.epochs.clear()

    def set_high_watermark(self, hw: int) -> None:
        """The replication driver's HW (clamped to the log end)."""
        self._high_watermark = max(0, min(hw, self.log.log_end_offset))

    # ---------------------------------------------------------------- read
    def read(self, offset: int, max_bytes: int = 1 << 20, *, to_log_end: bool = False) -> List[RecordBatch]:
        """Zero-copy batches from ``offset``, below the high watermark (or the log end for
        a follower, ``to_log_end=True``), CRCs not checked.  Raises OffsetOutOfRange."""
        limit = None if to_log_end else self._high_watermark
        # The zero-copy fetch path: not re-checked here (each batch was checked when it
        # entered the log); its readers check the CRC (clients' check.crcs, a follower's
        # append, the coordinator's replay).
        return self.log.read(offset, max_bytes, max_offset=limit, check_crcs=False)

    def offset_for_timestamp(self, timestamp: int) -> Optional[int]:
        off = self.log.offset_for_timestamp(timestamp)
        if off is not None and off > self._high_watermark:
            return self._high_watermark if timestamp == -1 else None
        return off

    def timestamp_at(self, offset: int) -> int:
        """Timestamp of the record at ``offset`` (-1 if there is none below the HW)."""
        for rec in self.log.records(offset, max_offset=min(offset + 1, self._high_watermark)):
            return rec.timestamp
        return -1

    # ------------------------------------------------------------- closing
    def close(self) -> None:
        """Flush and close; a clean close saves the producer state snapshot."""
        with self._lock:
            if self.log.closed:
                return
            end = self.log.log_end_offset
            self.log.close()
            if len(self.producers):
                self.producers.save(self.log.dir / PRODUCER_SNAPSHOT, end)

    def __repr__(self) -> str:
        return (f"Partition({self.name}, start={self.log_start_offset}, hw={self._high_watermark}, "
                f"end={self.log_end_offset})")


class OfflinePartition:
    """A partition whose log directory failed (or could not be opened at start): it
    keeps its place in its topic, and everything but its name refuses with
    StorageError (KAFKA_STORAGE_ERROR on the wire) saying why."""

    offline = True

    def __init__(self, topic: str, index: int, config: TopicConfig, log_dir: Optional[Path], reason: str) -> None:
        self.topic = topic
        self.index = index
        self.config = config
        self.log_dir = log_dir
        self.reason = reason

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    def error(self) -> StorageError:
        where = f"log directory {self.log_dir}" if self.log_dir is not None else "its log directory"
        return StorageError(errno.EIO, f"partition {self.name} is offline: {where} failed ({self.reason})")

    def __getattr__(self, attr: str) -> Any:
        # Only reached for what the object lacks: every Partition attribute.
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise self.error()

    def close(self) -> None:
        """Nothing to close: the log was let go when the directory failed."""

    def __repr__(self) -> str:
        return f"OfflinePartition({self.name}, {self.reason})"
