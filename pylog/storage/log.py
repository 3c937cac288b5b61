"""Log: one partition's durable log — a directory of segments, and the policy over them.

The directory ``<topic>-<partition>/`` (any name works) holds Kafka-named segment files
``<20-digit base offset>.log/.index/.timeindex`` plus, per log:

``recovery-point-offset-checkpoint``
    offset below which everything is known to be on stable storage (Kafka's format).
``log-start-offset-checkpoint``
    the log start offset, which delete_records may move into the middle of a segment.
``.pylog_cleanshutdown``
    written last by :meth:`Log.close`; its absence at open means a crash.
``.lock``
    flock'ed while the log is open: a second opener gets StorageError.

What this module decides (policy): which segment takes an append, when to roll
(segment.bytes, segment.ms, index full, relative offset overflow), retention
(retention.ms, retention.bytes, delete_records), flushing (flush.messages, flush.ms),
and recovery at open.  The per-byte work (batch building, copying, indexing, CRC
checks, recovery scans) is in C; each public call crosses into C once per batch.

Recovery (Invariant 2).  After a clean shutdown every segment is trusted as the files
say (and its indexes are checked; a bad index is rebuilt).  After a crash, segments
wholly below the recovery point are trusted; from the segment holding the recovery
point on, every batch is scanned and CRC-checked, the log is cut at the first torn or
corrupt batch (later segments are deleted), indexes are rebuilt, and the recovered
data is flushed before the recovery point moves up to the new log end offset.

Threads (issue point 8).  Any number of threads may call any method; a lock
serialises the C calls (each is short: index search, one memcpy per append).  Views
and records handed out are immutable bytes that stay valid after the log changes.
"""
from __future__ import annotations

import bisect
import fcntl
import itertools
import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pylog._native import check, ffi, lib
from pylog._native._records import append_many as _append_many
from pylog._native._records import append_one as _append_one
from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    InvalidRecord,
    InvalidTimestamp,
    LogClosed,
    OffsetOutOfRange,
    PylogError,
    RecordBatchTooLarge,
    RecordTooLarge,
    StorageError,
)
from pylog.records import (
    Record,
    RecordArrays,
    RecordBatch,
    check_crcs as _check_crcs,
    decode_records,
    iter_batches,
    iter_records,
    lazy_records,
    prepare_batch,
    validate_batches,
)
from pylog.records.columnar import prepare_columns
from pylog.storage.checkpoint import OffsetCheckpointFile, fsync_dir
from pylog.storage.config import LogConfig
from pylog.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    PWRITE_COPY_MIN_BYTES,
    PWRITE_MIN_BYTES,
    TIMEINDEX_SUFFIX,
    LogSegment,
    parse_segment_file_name,
    segment_file_name,
)
from pylog.util import check_int, now_ms

__all__ = ["Log", "AppendInfo", "SegmentSnapshot", "ScrubDamage", "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP"]

logger = logging.getLogger("pylog.storage")

#: Batches built here of PWRITE_MIN_BYTES up to this size are built in a buffer of
#: the appending thread and written with one pwrite (faster than stores into the
#: mapping, see PWRITE_MIN_BYTES); larger ones are built in the mapping.
SCRATCH_MAX_BYTES = 16 << 20
_scratch = threading.local()


def _scratch_buffer(size: int) -> Any:
    """This thread's scratch buffer, of at least ``size`` bytes (1 MiB at first)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        buf = _scratch.buf = ffi.new("uint8_t[]", max(size, 1 << 20))
        _scratch.address = (int(ffi.cast("uintptr_t", buf)), len(buf))
    return buf


def _scratch_address() -> Tuple[int, int]:
    """(address, length) of this thread's scratch buffer, for append_many."""
    addr = getattr(_scratch, "address", None)
    if addr is None:
        _scratch_buffer(0)
        addr = _scratch.address
    return addr


def _build_call(result: Any, cdata: Any, size: int) -> Callable[[LogSegment], int]:
    """The C call that builds ``cdata`` (a batch of at most ``size`` bytes) into a
    segment: through this thread's scratch buffer and one pwrite when the size makes
    that faster, else straight into the mapping."""
    if size < PWRITE_MIN_BYTES or size > SCRATCH_MAX_BYTES:
        return lambda seg: lib.pl_segment_append_build(seg.c, cdata, result)
    buf = _scratch_buffer(size)
    return lambda seg: lib.pl_segment_append_build_buffered(seg.c, cdata, buf, len(buf), result)


RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".pylog_cleanshutdown"
LOCK_FILE = ".lock"
#: Cleaner staging (uncommitted) and swap (committed) directories, and file suffixes.
CLEANED_DIR = "cleaner.cleaned"
SWAP_DIR = "cleaner.swap"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

#: Test hook: called with the name of each step of replace_segments ("cleaned",
#: "committed", "replaced_first", "done"); crash tests kill the process there.
SWAP_HOOK: Optional[Callable[[str], None]] = None


def _swap_step(step: str) -> None:
    hook = SWAP_HOOK
    if hook is not None:
        hook(step)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for name in os.listdir(path):
        (path / name).unlink()
    path.rmdir()

#: Kafka's ListOffsets sentinels accepted by offset_for_timestamp.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2

_MAX_READ_BATCHES = 4096  #: batch positions one C read call may return
#: bytes of batches records() decodes per chunk: small enough that a chunk's records
#: (about 2.5x its bytes as Python objects) stay in the CPU cache until they are used
_RECORDS_CHUNK_BYTES = 256 << 10
#: Default max_bytes of read_arrays (Kafka's max.partition.fetch.bytes default): big enough
#: that the C decode dominates the call, small enough that one call's columns stay in the
#: CPU cache and are reused from the allocator's free memory (bench: 1 MiB chunks decode
#: about twice as fast as 8 MiB ones).
READ_ARRAYS_MAX_BYTES = 1 << 20
_MAX_RELATIVE_OFFSET = 0x7FFFFFFF  #: index offsets are relative u32; Kafka keeps them < 2^31
_TOPIC_PARTITION = re.compile(r"^(.+)-(\d+)$")


@dataclass(frozen=True)
class SegmentSnapshot:
    """One segment as :meth:`Log.snapshot_segments` saw it."""

    base_offset: int  #: first offset the segment covers
    next_offset: int  #: offset after its last batch
    size_bytes: int  #: bytes of batches
    max_timestamp: int  #: largest record timestamp (ms), -1 if none
    modified_ms: int  #: file modification time (ms): when the cleaner last rewrote it
    active: bool  #: the segment taking appends
    data: memoryview  #: zero-copy view of its batches [0, size_bytes)
    segment: Any  #: the LogSegment (identity checked by replace_segments)


@dataclass(frozen=True)
class ScrubDamage:
    """The first damaged batch :meth:`Log.scrub` found: records from ``offset`` on
    cannot be served as they are."""

    offset: int  #: the damaged batch's base offset (where the readable prefix ends)
    what: str  #: the CorruptRecordError's message (file, position, CRCs)


@dataclass(frozen=True)
class AppendInfo:
    """What an append wrote."""

    first_offset: int  #: offset of the first record appended
    last_offset: int  #: offset of the last record appended
    batches: int  #: record batches written
    records: int  #: records written
    size_bytes: int  #: bytes written to the log
    max_timestamp: int  #: largest record timestamp (ms) among them


class Log:
    """A partition's append-only log of Kafka v2 record batches.  Use :meth:`open`."""

    def __init__(self, directory: Path, config: LogConfig, clock: Callable[[], int]) -> None:
        self.dir = directory
        #: None: this log keeps its own clean-shutdown marker; True/False: its owner keeps
        #: one per data directory (see open(clean_shutdown=...))
        self._owner_marker: Optional[bool] = None
        self.config = config
        self._clock = clock
        self._wall_clock = clock is now_ms  #: append's C path may read the clock itself
        self._lock = threading.Lock()
        self._segments: List[LogSegment] = []
        self._bases: List[int] = []
        self._log_start_offset = 0
        self._recovery_point = 0
        self._last_flush_ms = clock()
        self._closed = False
        self._dir_dirty = False
        self._lock_fd = -1
        #: checkpoint file name -> the offset it holds for this log (absent: unknown)
        self._checkpointed: Dict[str, int] = {}
        #: batch positions of the last read (32 KiB): made at the first read, so that
        #: thousands of idle partitions do not hold them
        self._positions: Any = None
        self._n = ffi.new("uint32_t *")
        self._end = ffi.new("uint64_t *")
        self._result = ffi.new("pl_append_result *")
        self._result_address = int(ffi.cast("uintptr_t", self._result))
        self._fast: tuple = (None,)  #: see _fast_settings
        m = _TOPIC_PARTITION.match(directory.name)
        self._key = (m.group(1), int(m.group(2))) if m else (directory.name, 0)
        self._rp_file = OffsetCheckpointFile(directory / RECOVERY_POINT_FILE)
        self._ls_file = OffsetCheckpointFile(directory / LOG_START_FILE)

    # ================================================================== open
    @classmethod
    def open(
        cls,
        path: "os.PathLike[str] | str",
        *,
        config: Optional[Mapping[str, Any]] = None,
        clock: Optional[Callable[[], int]] = None,
        dir_lock: bool = True,
        clean_shutdown: Optional[bool] = None,
        **settings: Any,
    ) -> "Log":
        """Open (creating if needed) the log in directory ``path``.

        Settings are Kafka's topic configs, as ``config={"segment.bytes": ...}`` and/or
        snake_case keywords (``segment_bytes=...``); see :class:`LogConfig`.  ``clock``
        returns the time in ms (default: wall clock) and drives segment.ms, retention.ms,
        flush.ms and default timestamps — tests pass a fake one.  ``dir_lock=False``
        takes no ``.lock`` (one descriptor less per open log) for a caller that already
        guarantees it alone opens the directory (a broker holding its data directory's
        lock, as Kafka locks each data directory rather than each partition).

        ``clean_shutdown``: None (default) — the log keeps its own clean-shutdown marker
        (``.pylog_cleanshutdown``, written by :meth:`close`, removed at open); True or
        False — the caller keeps one marker for a whole data directory, as Kafka's
        ``.kafka_cleanshutdown``, and says whether it was there: this log then writes
        and removes none (two fsyncs less per log at open and at close), and the caller
        writes its marker only after every log in the directory closed without an error,
        and removes it durably before anything is appended.

        Raises InvalidConfig for a bad setting, StorageError if the directory cannot be
        used or another Log has it open.
        """
        cfg = LogConfig.from_settings(config, **settings)
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if clock is not None and not callable(clock):
            raise InvalidArgument(f"clock must be a callable returning ms, got {clock!r}")
        directory = Path(path)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"creating log directory {directory}: {exc.strerror}") from exc
        if not directory.is_dir():
            raise StorageError(0, f"{directory} is not a directory")
        log = cls(directory, cfg, clock or now_ms)
        log._owner_marker = clean_shutdown
        if dir_lock:
            log._take_dir_lock()
        try:
            log._load()
        except BaseException:
            log._abandon()
            raise
        return log

    def _take_dir_lock(self) -> None:
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StorageError(exc.errno or 0, f"log directory {self.dir} is already open (locked)") from exc
        self._lock_fd = fd

    def _load(self) -> None:
        marker = self.dir / CLEAN_SHUTDOWN_FILE
        own = marker.exists()  # also under an owner's marker: left by a close of the log's own
        clean = own or bool(self._owner_marker)
        rp_ckpt = self._read_checkpoint(self._rp_file)
        ls_ckpt = self._read_checkpoint(self._ls_file)
        self._recover_swaps()
        bases = self._scan_dir()
        fresh = not bases  # nothing to recover (its files are made durable at flush)
        if fresh:
            bases = [ls_ckpt]
            self._segments = [self._new_segment(ls_ckpt)]
        else:
            self._open_segments(bases, clean=clean, recovery_point=rp_ckpt)
        self._bases = [s.base_offset for s in self._segments]
        leo = self.log_end_offset
        if clean and rp_ckpt > 0 and rp_ckpt != leo:
            # A clean close wrote the recovery point = the log end offset; they differ
            # only if the checkpoint or the last batch's header is damaged (a raised
            # baseOffset there has no next batch to contradict it).
            raise CorruptRecordError(
                f"log {self.dir} was closed cleanly at offset {rp_ckpt} (its recovery point) but its "
                f"last segment {self._segments[-1].log_path} ends at offset {leo}: a damaged batch header "
                f"or checkpoint; the log is not opened (run `pylog verify --data-dir {self.dir}`)")
        self._log_start_offset = min(max(ls_ckpt, self._segments[0].base_offset), leo)
        if clean or fresh:
            self._recovery_point = leo
        else:
            # Recovered bytes may live only in the page cache (process kill): make them
            # durable before claiming them below the recovery point.
            for seg in self._segments:
                if seg.unflushed:
                    seg.flush()
            self._recovery_point = leo
        # Older checkpoints on disk are safe (the next open recovers from the older
        # recovery point and computes the same log start): a full disk must not stop
        # the log from opening.
        self._write_checkpoints(strict=False)
        if own:
            marker.unlink()
            fsync_dir(self.dir)
        for seg in self._segments:
            seg.release_fds()  # reopened when used: an idle log holds only its .lock

    def _read_checkpoint(self, f: OffsetCheckpointFile) -> int:
        """This log's entry; a per-log file's single entry counts even if the directory
        was renamed since it was written."""
        entries = f.read()
        if entries == {} and not f.path.exists():
            # A missing file reads as 0, as one holding 0 does: a new log writes none
            # (creating thousands of partitions costs no checkpoint fsyncs).
            self._checkpointed[f.path.name] = 0
            return 0
        if self._key in entries:
            if len(entries) == 1:
                self._checkpointed[f.path.name] = entries[self._key]
            return entries[self._key]
        if len(entries) == 1:
            return next(iter(entries.values()))
        return 0

    def _scan_dir(self) -> List[int]:
        """Base offsets of the segments on disk; removes orphan index files and temps."""
        bases: List[int] = []
        names = set(os.listdir(self.dir))
        for name in names:
            base = parse_segment_file_name(name)
            if base is not None:
                bases.append(base)
        for name in names:
            if name.endswith((INDEX_SUFFIX, TIMEINDEX_SUFFIX)):
                stem = name.rsplit(".", 1)[0]
                if stem + LOG_SUFFIX not in names:
                    (self.dir / name).unlink()
            elif name.endswith(".tmp"):
                (self.dir / name).unlink()
        return sorted(bases)

    def _open_segments(self, bases: List[int], *, clean: bool, recovery_point: int) -> None:
        cfg = self.config
        segments: List[LogSegment] = []
        try:
            for i, base in enumerate(bases):
                last = i == len(bases) - 1
                seg = LogSegment.open_existing(
                    self.dir, base, active=last, segment_bytes=cfg.segment_bytes,
                    index_entries=cfg.index_entries, index_interval_bytes=cfg.index_interval_bytes,
                    preallocate=cfg.preallocate,
                )
                segments.append(seg)
                below_rp = not last and bases[i + 1] <= recovery_point
                if (clean or below_rp) and seg.load_clean():
                    pass
                else:
                    if clean or below_rp:
                        logger.warning("log %s: segment %d failed its clean-load checks; recovering it",
                                       self.dir, base)
                    dropped = seg.recover(self._must_reach(bases, i, clean, recovery_point))
                    if dropped:
                        below = not clean and seg.next_offset < recovery_point
                        logger.log(logging.ERROR if below else logging.WARNING,
                                   "log %s: recovery cut %d bytes of torn or corrupt data at offset %d in "
                                   "segment %d%s", self.dir, dropped, seg.next_offset, base,
                                   f", below the recovery point {recovery_point}" if below else "")
                if not last and seg.next_offset != bases[i + 1] and (clean or below_rp):
                    raise CorruptRecordError(
                        f"segment {seg.log_path} ends at offset {seg.next_offset} but the next segment "
                        f"starts at offset {bases[i + 1]}, and both were flushed: a damaged batch header; "
                        f"the log is not opened (run `pylog verify --data-dir {self.dir}`)")
                if not last and seg.next_offset != bases[i + 1]:
                    # The next segment does not continue this one: the tail of this one
                    # was lost or damaged.  Keep the prefix; drop what follows.
                    logger.warning("log %s: segment %d ends at offset %d but the next starts at %d; "
                                   "deleting %d later segment(s)", self.dir, base, seg.next_offset,
                                   bases[i + 1], len(bases) - i - 1)
                    for later in bases[i + 1:]:
                        LogSegment(self.dir, later).delete()
                    self._dir_dirty = True
                    if not seg.active:
                        seg.activate(cfg.segment_bytes, cfg.index_entries)
                    break
            segments[-1].finish_open()
        except BaseException:
            for seg in segments:
                seg.close(shrink=False)
            raise
        self._segments = segments

    @staticmethod
    def _must_reach(bases: List[int], i: int, clean: bool, recovery_point: int) -> Optional[int]:
        """The offset the recovery of segment ``i`` must reach, or None.

        Records known flushed may not be cut: damage there is bit rot, not a torn
        write, and LogSegment.recover raises instead.  Known flushed: in a clean log
        everything (a segment must reach the next one's base offset, the last one the
        recovery point written at close); after a crash, what lies below the recovery
        point, as far as the next segment's base offset tells.  The last segment of a
        crashed log is cut where its scan stops, as Kafka's recovery does: its only
        bound would be the recovery point checkpoint, which may itself be damaged.
        """
        last = i == len(bases) - 1
        if last:
            bound = recovery_point if clean else None
        else:
            bound = bases[i + 1] if clean else min(recovery_point, bases[i + 1])
        return bound if bound is not None and bound > bases[i] else None

    def _new_segment(self, base_offset: int) -> LogSegment:
        cfg = self.config
        seg = LogSegment.create(self.dir, base_offset, segment_bytes=cfg.segment_bytes,
                                index_entries=cfg.index_entries,
                                index_interval_bytes=cfg.index_interval_bytes,
                                preallocate=cfg.preallocate)
        self._dir_dirty = True
        return seg

    # ============================================================ properties
    @property
    def log_start_offset(self) -> int:
        """The first offset a reader may ask for."""
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        return int(self._segments[-1].c.next_offset)

    @property
    def recovery_point(self) -> int:
        """Everything below this offset is on stable storage."""
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        """Bytes of record batches held by all segments."""
        return sum(s.size_bytes for s in self._segments)

    @property
    def segments(self) -> List[LogSegment]:
        """The segments, oldest first (a copy of the list)."""
        return list(self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"log {self.dir} is closed")

    # ================================================================ append
    def append(
        self,
        values: Sequence[Optional[bytes]],
        keys: Optional[Sequence[Optional[bytes]]] = None,
        headers: Optional[Sequence[Sequence[tuple]]] = None,
        timestamps: Optional[Sequence[int]] = None,
    ) -> int:
        """Append records as one record batch; return the offset of ``values[0]``.

        ``keys``, ``headers`` (per record: (str, bytes|None) pairs) and ``timestamps``
        (ms) are optional and, when given, as long as ``values``.  Timestamps default
        to now; with message.timestamp.type=LogAppendTime they are always now.

        Raises InvalidRecord (a null key when cleanup.policy contains "compact"),
        InvalidArgument (types, lengths, empty ``values``), InvalidTimestamp,
        RecordTooLarge (the batch exceeds max.message.bytes), RecordBatchTooLarge (it
        cannot fit in a segment), LogClosed.  A rejected append writes nothing.

        One record (``[value]``, optionally ``keys=[key]`` and ``timestamps=[ms]``;
        bytes or None) takes a shorter path when nothing about it needs the general
        one: a single C call (pylog._native._records.append_one) builds its batch
        straight into the segment.  So does a list of several records without headers
        or timestamps (append_many: the values and keys are read where they lie, no
        object is made per record).  Both write the same bytes as the general path
        and leave every check and error to it.
        """
        # The lock by hand, not `with`: this is the hot path of single-record appends,
        # and `with` costs a bound-method object for each of __enter__ and __exit__.
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                self._check_open()
            # With the wall clock (the default) append_one reads it itself.
            now = None if self._wall_clock else self._clock()
            if headers is None:
                # One record, or a list of them: one C call checks them and builds
                # their batch into the segment, or declines (None), writing nothing,
                # whenever anything about them needs the general path below (see
                # append_one and append_many).
                fast = self._fast
                if fast[0] is not self.config:
                    fast = self._fast_settings()
                seg = self._segments[-1]
                rolling = seg.rolling_timestamp_ms
                first = _append_one(seg.c_address, self._result_address, values, keys, timestamps,
                                    now, fast, rolling)
                if first is None and timestamps is None and type(values) is list and len(values) > 1:
                    # Many records: one C call too, their values read where they lie.
                    first = _append_many(seg.c_address, self._result_address, values, keys, now, fast,
                                         rolling, _scratch_address())
                if first is not None:
                    if first < 0:
                        check(first, f"appending to segment {seg.base_offset} of {self.dir}")
                    if rolling is None:
                        seg.note_appended(int(self._result.max_timestamp))
                    if fast[6]:
                        self._after_append(int(self._result.max_timestamp),
                                           self._clock() if now is None else now)
                    return first
            return self._append_locked(values, keys, headers, timestamps,
                                       self._clock() if now is None else now)
        finally:
            lock.release()

    def _fast_settings(self) -> tuple:
        """What append's single-record path needs of the configuration, computed once per
        config object: (config, attributes, compact, max batch bytes, segment.bytes,
        segment.ms, whether flush.messages or flush.ms is set)."""
        cfg = self.config
        self._fast = (cfg, lib.PL_ATTR_TIMESTAMP_TYPE if cfg.log_append_time else 0, cfg.compact,
                      min(cfg.max_message_bytes, cfg.segment_bytes), cfg.segment_bytes, cfg.segment_ms,
                      cfg.flush_messages is not None or cfg.flush_ms is not None)
        return self._fast

    def _append_locked(self, values: Sequence[Optional[bytes]], keys: Optional[Sequence[Optional[bytes]]],
                       headers: Optional[Sequence[Sequence[tuple]]], timestamps: Optional[Sequence[int]],
                       now: int) -> int:
        """The general path of :meth:`append` (lock held, log open)."""
        if self.config.log_append_time:
            timestamps = None
        if self.config.compact and (keys is None or any(k is None for k in keys)):
            raise InvalidRecord(
                f"log {self.dir} has cleanup.policy={self.config.cleanup_policy}: every record "
                "needs a key (compaction keeps the latest record per key)")
        prepared = prepare_batch(values, keys, headers, timestamps, base_timestamp=now)
        if self.config.log_append_time:
            prepared.cdata.attributes |= lib.PL_ATTR_TIMESTAMP_TYPE
        if prepared.size_bound > min(self.config.max_message_bytes, self.config.segment_bytes):
            prepared.tighten()  # an estimate must not refuse a batch that fits
        if prepared.size_bound > self.config.max_message_bytes:
            return self._append_oversized_bound(prepared, now)
        self._check_fits_segment(prepared.size_bound)
        res = self._append_c(prepared.count, now, _build_call(self._result, prepared.cdata, prepared.size_bound),
                             size=prepared.size_bound)
        self._after_append(res.max_timestamp, now)
        return int(res.first_offset)

    def append_arrays(
        self,
        values: Any,
        *,
        lengths: Any = None,
        offsets: Any = None,
        positions: Any = None,
        keys: Any = None,
        key_lengths: Any = None,
        key_offsets: Any = None,
        key_positions: Any = None,
        timestamps: Any = None,
    ) -> np.ndarray:
        """Append columnar records; return their offsets (int64 array, one per record).

        ``values`` is one contiguous bytes-like buffer (bytes, bytearray, memoryview,
        numpy array) and exactly one of, by keyword:

        * ``lengths=`` n lengths: values end to end from byte 0, -1 = null value;
        * ``offsets=`` n + 1 end offsets (Arrow style): value i is
          ``values[offsets[i]:offsets[i + 1]]``, no nulls;
        * ``positions=`` with ``lengths=``: value i at ``values[positions[i]:][:lengths[i]]``,
          the layout of ``poll_arrays`` / ``RecordArrays`` (``value_pos``, ``value_len``).

        ``keys`` likewise with ``key_lengths=`` / ``key_offsets=`` / ``key_positions=``
        (it may be the same buffer as ``values``); ``keys=None``: every key null.
        ``timestamps``: n ints (ms), default now; ignored with LogAppendTime.  No
        headers (use :meth:`append`).  Records read back as arrays go back in as they
        came::

            a = consumer.poll_arrays()  # a ConsumerArrays (or a RecordArrays)
            log.append_arrays(a.buffer, positions=a.value_pos, lengths=a.value_len,
                              keys=a.buffer, key_positions=a.key_pos, key_lengths=a.key_len,
                              timestamps=a.timestamps)

        The records become as few batches as max.message.bytes and segment.bytes allow,
        each built by one C call straight into the segment, with consecutive offsets.
        Every check is made before the first batch is written: bad input raises
        InvalidArgument (naming the array and entry), InvalidTimestamp, RecordTooLarge
        (one record alone over max.message.bytes), RecordBatchTooLarge (over
        segment.bytes), InvalidRecord (a null key when cleanup.policy contains
        "compact"), LogClosed — and writes nothing.  Each batch is appended atomically;
        only an I/O failure between batches (StorageError, e.g. the disk is full) can
        leave the first batches written, as log_end_offset then shows.
        """
        cols = prepare_columns(values, lengths=lengths, offsets=offsets, positions=positions, keys=keys,
                               key_lengths=key_lengths, key_offsets=key_offsets,
                               key_positions=key_positions, timestamps=timestamps)
        with self._lock:
            self._check_open()
            cfg = self.config
            if cfg.compact and not cols.all_keyed:
                raise InvalidRecord(
                    f"log {self.dir} has cleanup.policy={cfg.cleanup_policy}: every record "
                    "needs a key (compaction keeps the latest record per key)")
            now = self._clock()
            stamped = not cfg.log_append_time
            attributes = 0 if stamped else lib.PL_ATTR_TIMESTAMP_TYPE
            limit = min(cfg.max_message_bytes, cfg.segment_bytes)
            try:
                runs = cols.split(limit, with_timestamps=stamped)
            except RecordTooLarge as exc:
                if limit < cfg.max_message_bytes:
                    raise RecordBatchTooLarge(f"{exc} (segment.bytes={cfg.segment_bytes})") from None
                raise RecordTooLarge(f"{exc} (max.message.bytes={cfg.max_message_bytes})") from None
            first = -1
            max_ts = -1
            result = self._result
            try:
                with cols.pinned() as pinned:
                    for start, end, bound in runs:
                        cd, keep = cols.batch_input(pinned, start, end, base_timestamp=now,
                                                    with_timestamps=stamped, attributes=attributes)
                        res = self._append_c(end - start, now, _build_call(result, cd, bound), size=bound)
                        if first < 0:
                            first = int(res.first_offset)
                        max_ts = max(max_ts, int(res.max_timestamp))
                        del cd, keep
            finally:
                if first >= 0:
                    self._after_append(max_ts, now)
            return np.arange(first, first + cols.count, dtype=np.int64)

    def _append_oversized_bound(self, prepared: Any, now: int) -> int:
        """The size bound is over max.message.bytes: build to learn the exact size."""
        buf = ffi.new("uint8_t[]", prepared.size_bound)
        size = check(lib.pl_batch_build(prepared.cdata, buf, prepared.size_bound), "building record batch")
        if size > self.config.max_message_bytes:
            raise RecordTooLarge(
                f"record batch of {prepared.count} records is {size} bytes, over max.message.bytes="
                f"{self.config.max_message_bytes}; append fewer records at a time")
        res = self._append_c(prepared.count, now,
                             lambda seg: lib.pl_segment_append(seg.c, buf, size, -1, 1, self._result),
                             size=size)
        self._after_append(res.max_timestamp, now)
        return int(res.first_offset)

    def append_batches(self, data: Any, *, assign_offsets: bool = True,
                       leader_epoch: int = -1, validated: Optional[Tuple[int, int]] = None) -> AppendInfo:
        """Append ready-made Kafka v2 record batches (bytes-like, concatenated).

        Every batch is validated (lengths, magic, CRC32C, records) before anything is
        written.  With ``assign_offsets`` (a leader) the batches get the next offsets;
        without (a follower copying a leader) they keep theirs, which must start at or
        above the log end offset.  ``leader_epoch`` >= 0 is written into each batch.

        Raises CorruptRecordError, InvalidRecord (a record without a key when
        cleanup.policy contains "compact"), RecordTooLarge, RecordBatchTooLarge,
        InvalidArgument, LogClosed.  A rejected call writes nothing.

        ``validated``: (batches, records) as :func:`validate_batches` returned them for
        these very bytes, when the caller (a partition) has just validated them; the
        Python validation pass is then not repeated.  Whatever the caller passes, the C
        append checks each batch's CRC32C again on the bytes it copied into the log, so
        a buffer changed after its validation raises CorruptRecordError, never reaching
        the log with a stale CRC.
        """
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgument(f"data must be bytes-like, got {type(data).__name__}") from None
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if not isinstance(leader_epoch, int) or not -1 <= leader_epoch <= 0x7FFFFFFF:
            raise InvalidArgument(f"leader_epoch must be an int in [-1, 2^31-1], got {leader_epoch!r}")
        n_batches, n_records = validated if validated is not None else validate_batches(view)
        batches = list(iter_batches(view))
        if self.config.compact and any(
                b.record_count and not b.is_control and int(decode_records(b.buffer).key_len.min()) < 0
                for b in batches):
            raise InvalidRecord(
                f"log {self.dir} has cleanup.policy={self.config.cleanup_policy}: a record without a key "
                "cannot be appended (compaction keeps the latest record per key)")
        with self._lock:
            self._check_open()
            now = self._clock()
            for b in batches:
                if b.size_bytes > self.config.max_message_bytes:
                    raise RecordTooLarge(
                        f"record batch at offset {b.base_offset} is {b.size_bytes} bytes, over "
                        f"max.message.bytes={self.config.max_message_bytes}")
                self._check_fits_segment(b.size_bytes)
            if not assign_offsets and batches[0].base_offset < self.log_end_offset:
                raise InvalidArgument(
                    f"batch base offset {batches[0].base_offset} is below the log end offset "
                    f"{self.log_end_offset}; a follower must truncate first")
            if self.config.log_append_time:
                view = memoryview(_stamp_log_append_time(view, batches, now))
                batches = list(iter_batches(view))
            first = last = -1
            max_ts = -1
            total = 0
            # Usually one C call for everything; when the segment fills, batch by batch.
            chunks = [(view, n_records)]
            for attempt in (0, 1):
                try:
                    for chunk, count in chunks:
                        # released when the call returns or raises: a live export of the
                        # caller's buffer must never sit in an exception's traceback
                        n = len(chunk)
                        # From 48 KiB (and up to the scratch limit) the batches are
                        # copied and checked in this thread's scratch buffer and written
                        # with one pwrite (pl_segment_append_buffered).
                        scratch = (_scratch_buffer(n) if PWRITE_COPY_MIN_BYTES <= n <= SCRATCH_MAX_BYTES
                                   else ffi.NULL)
                        with ffi.from_buffer("uint8_t[]", chunk) as src:
                            res = self._append_c(
                                count, now,
                                lambda seg, src=src, n=n, scratch=scratch: lib.pl_segment_append_buffered(
                                    seg.c, src, n, leader_epoch, 1 if assign_offsets else 0, scratch,
                                    len(scratch) if scratch else 0, self._result),
                                split_ok=(attempt == 0 and len(batches) > 1), size=n)
                        if first < 0:
                            first = int(res.first_offset)
                        last = int(res.last_offset)
                        max_ts = max(max_ts, int(res.max_timestamp))
                        total += int(res.bytes)
                    break
                except _SplitNeeded:
                    chunks = [(b.buffer, b.record_count) for b in batches]
            self._after_append(max_ts, now)
            return AppendInfo(first, last, n_batches, n_records, total, max_ts)

    def _check_fits_segment(self, size: int) -> None:
        if size > self.config.segment_bytes:
            raise RecordBatchTooLarge(
                f"record batch of {size} bytes can never fit in a segment (segment.bytes="
                f"{self.config.segment_bytes})")

    def _append_c(self, count: int, now: int, call: Callable[[LogSegment], int],
                  split_ok: bool = False, *, size: int) -> Any:
        """Run an append C call on the active segment, rolling once if it is full.

        ``size`` bounds the bytes the call writes: disk for them is reserved first
        (StorageError, nothing written, if the disk is full)."""
        seg = self._segments[-1]
        if self._should_roll_before(seg, count, now, size):
            seg = self._roll_locked()
        seg.ensure_room(size)
        rc = call(seg)
        if rc == lib.PL_E_FULL:
            if seg.is_empty:
                if split_ok:
                    raise _SplitNeeded()
                raise RecordBatchTooLarge(
                    f"record batch does not fit in an empty segment (segment.bytes="
                    f"{self.config.segment_bytes}, segment.index.bytes={self.config.segment_index_bytes})")
            seg = self._roll_locked()
            seg.ensure_room(size)
            rc = call(seg)
            if rc == lib.PL_E_FULL:
                if split_ok:
                    raise _SplitNeeded()
                raise RecordBatchTooLarge(
                    f"record batch does not fit in an empty segment (segment.bytes="
                    f"{self.config.segment_bytes})")
        check(rc, f"appending to segment {seg.base_offset} of {self.dir}")
        seg.note_appended(int(self._result.max_timestamp))
        return self._result

    def _should_roll_before(self, seg: LogSegment, count: int, now: int, size: int) -> bool:
        if seg.is_empty:
            return False
        if seg.c.next_offset + count - seg.base_offset > _MAX_RELATIVE_OFFSET:
            return True
        if seg.mapped_bytes > self.config.segment_bytes and seg.log_size + size > self.config.segment_bytes:
            return True  # segment.bytes was lowered (reconfigure) after this segment was made
        rolling = seg.rolling_timestamp_ms
        return rolling is not None and rolling >= 0 and now - rolling > self.config.segment_ms

    def _after_append(self, max_timestamp: int, now: int) -> None:
        cfg = self.config
        if cfg.flush_messages is not None and self.log_end_offset - self._recovery_point >= cfg.flush_messages:
            self._flush_locked(now)
        elif cfg.flush_ms is not None and now - self._last_flush_ms >= cfg.flush_ms:
            self._flush_locked(now)

    # ============================================================ settings
    def reconfigure(self, config: Optional[Mapping[str, Any]] = None, **settings: Any) -> LogConfig:
        """Replace this open log's settings; returns the new :class:`LogConfig`.

        Settings are given as :meth:`open` takes them (Kafka names in ``config`` and/or
        snake_case keywords; a setting not given gets its default, as at open): this is
        the log's whole configuration, not a patch.  Every setting can change on an open
        log.  Retention, flushing, segment.ms, max.message.bytes, message.timestamp.type
        and cleanup.policy apply from the next call that uses them.  The shape of a
        segment (segment.bytes, segment.index.bytes, index.interval.bytes, preallocate)
        applies to segments created from now on; the active segment rolls at the next
        append that would take it past a lowered segment.bytes (a raised one applies
        from the next segment).  Thread-safe; raises InvalidConfig (nothing changes) or
        LogClosed.
        """
        new = LogConfig.from_settings(config, **settings)
        with self._lock:
            self._check_open()
            self.config = new
        return new

    # ================================================================== roll
    def roll(self) -> None:
        """Close the active segment to appends and start a new one (if it holds data)."""
        with self._lock:
            self._check_open()
            self._roll_locked()

    def _roll_locked(self) -> LogSegment:
        active = self._segments[-1]
        if active.is_empty:
            return active
        new_base = self.log_end_offset
        new = self._new_segment(new_base)  # StorageError: nothing changed, no files left
        try:
            active.make_inactive()
        except BaseException:
            new.delete()
            raise
        self._segments.append(new)
        self._bases.append(new_base)
        self._enforce_retention_locked(self._clock())
        return self._segments[-1]

    # ================================================================== read
    def read(self, offset: int, max_bytes: int = 1 << 20,
             max_offset: Optional[int] = None, *, check_crcs: bool = True) -> List[RecordBatch]:
        """Whole record batches from the one holding ``offset``, as zero-copy views.

        Returns batches of one segment totalling at most ``max_bytes``, but always at
        least one batch when ``offset`` < log end (as Kafka's fetch, KIP-74); none at or
        above ``max_offset`` (e.g. a high watermark).  The first batch may start below
        ``offset``.  Views stay valid after the log changes or closes.

        With ``check_crcs`` (default) every batch's CRC32C is checked (one C pass over
        the bytes) before any is returned; ``check_crcs=False`` is the zero-copy path
        of a broker's fetch, whose clients check (Kafka's check.crcs).

        Raises OffsetOutOfRange outside [log_start_offset, log_end_offset], LogClosed,
        CorruptRecordError naming the segment file, the batch's position and offset
        when a batch fails its CRC (nothing is returned then).
        """
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidArgument(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        with self._lock:
            self._check_open()
            found = self._read_locked(offset, max_bytes, max_offset)
            if found is None:
                return []
            seg, n, end = found
            pos = self._positions
            starts = [int(pos[i]) for i in range(n)]
            starts.append(end)
            views = [seg.view(starts[i], starts[i + 1]) for i in range(n)]
            if check_crcs:
                whole = seg.view(starts[0], end)
                origin = (str(seg.log_path), starts[0])
        if check_crcs:
            _check_crcs(whole, origin)
        return [RecordBatch(v) for v in views]

    def _check_offset(self, offset: Any) -> None:
        check_int("offset", offset)
        if not self._log_start_offset <= offset <= self.log_end_offset:
            raise OffsetOutOfRange(
                f"offset {offset} is outside the log's range [{self._log_start_offset}, "
                f"{self.log_end_offset}] ({self.dir})")

    def _read_locked(self, offset: int, max_bytes: int, max_offset: Optional[int],
                     max_batches: int = _MAX_READ_BATCHES):
        """(segment, n, end) for batches from ``offset``, or None at the end."""
        self._check_offset(offset)
        if max_offset is None:
            max_offset = 2**63 - 1
        else:
            check_int("max_offset (or None)", max_offset)
        if offset >= max_offset or offset == self.log_end_offset:
            return None
        i = bisect.bisect_right(self._bases, offset) - 1
        segments = self._segments
        while i < len(segments):
            seg = segments[max(i, 0)]
            if offset < seg.c.next_offset:
                if self._positions is None:
                    self._positions = ffi.new("uint64_t[]", _MAX_READ_BATCHES)
                check(lib.pl_segment_read(seg.c, max(offset, seg.base_offset), max_bytes, max_offset,
                                          self._positions, max_batches, self._n, self._end),
                      f"reading offset {offset} from {seg.log_path}")
                n = int(self._n[0])
                if n == 0:
                    return None
                return seg, n, int(self._end[0])
            i += 1
        return None

    def records(self, offset: Optional[int] = None,
                max_offset: Optional[int] = None, *, check_crcs: bool = True) -> Iterator[Record]:
        """Iterate records from ``offset`` (default: log start) up to the log end offset
        as of this call (or ``max_offset``, exclusive).

        Records are decoded a few hundred KiB of batches at a time, each chunk's
        Record objects built by one C call (pylog._native._records).  Raises
        OffsetOutOfRange / LogClosed at the call; if the log is truncated below the
        position while iterating, the iteration ends there.  With ``check_crcs``
        (default) each batch's CRC32C is checked, in the same C walk, before any of its
        records is handed out: a damaged batch raises CorruptRecordError (naming the
        segment file, position and offset) when the iteration reaches it.
        """
        with self._lock:
            self._check_open()
            start = self._log_start_offset if offset is None else offset
            self._check_offset(start)
            if max_offset is not None:
                check_int("max_offset (or None)", max_offset)
            end = self.log_end_offset if max_offset is None else min(max_offset, self.log_end_offset)
        return self._iter_records(start, end, check_crcs)

    def _iter_records(self, pos: int, end: int, check_crcs: bool) -> Iterator[Record]:
        # Each chunk's Records are made in C, one when it is asked for (lazy_records);
        # chain hands them out without a Python frame per record.
        return itertools.chain.from_iterable(self._record_chunks(pos, end, check_crcs))

    def _record_chunks(self, pos: int, end: int, check_crcs: bool) -> Iterator[Iterator[Record]]:
        """Iterators over the records in [pos, end), a few hundred KiB of batches each."""
        while pos < end:
            with self._lock:
                self._check_open()
                if not self._log_start_offset <= pos < self.log_end_offset:
                    return
                found = self._read_locked(pos, _RECORDS_CHUNK_BYTES, end)
                if found is None:
                    return
                seg, n, stop = found
                first = int(self._positions[0])
                chunk = seg.view(first, stop)
                last = RecordBatch(seg.view(int(self._positions[n - 1]), stop))
            yield lazy_records(chunk, pos, end, check_crcs=check_crcs, origin=(str(seg.log_path), first))
            pos = last.next_offset

    def read_arrays(self, offset: Optional[int] = None, max_offset: Optional[int] = None, *,
                    max_records: Optional[int] = None,
                    max_bytes: int = READ_ARRAYS_MAX_BYTES, check_crcs: bool = True) -> RecordArrays:
        """Records from ``offset`` (default: log start) as numpy columns, from ONE segment.

        The result is :class:`~pylog.records.RecordArrays`.  For uncompressed batches
        its ``buffer`` is a zero-copy view of the segment's mapping: positions and
        lengths are computed in C and no payload byte is copied.  Compressed batches are
        decompressed once, into one new buffer.  Records below ``offset`` (the first
        batch may start below it) and at or above ``max_offset`` are left out, and at
        most ``max_records`` are returned.

        ``max_bytes`` bounds the work of one call: the batches read (whole ones, at
        least one, as :meth:`read`), and for compressed batches also the decompressed
        bytes.  One call never crosses a segment boundary.  To read on, call again from
        ``result.next_offset``, until it reaches the end you want (:meth:`iter_arrays`
        does that loop); a call may return no records and still move ``next_offset``
        forward (batches that compaction emptied).  At the log end (or ``max_offset``)
        the result is empty with ``next_offset == offset``.

        The buffer stays valid, with the same bytes, after the log changes or closes:
        retention, truncation, compaction and close detach or keep the mapping while
        views of it live (Invariant 3); holding the arrays keeps that memory.

        With ``check_crcs`` (default) each batch's CRC32C is checked in the C walk that
        decodes it.

        Raises OffsetOutOfRange outside [log_start_offset, log_end_offset], LogClosed,
        InvalidArgument for a bad limit, CorruptRecordError for a damaged batch (a CRC
        mismatch names the segment file, the batch's position and offset).
        """
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise InvalidArgument(f"max_bytes must be a positive int, got {max_bytes!r}")
        if max_records is not None:
            check_int("max_records (or None)", max_records, min=1)
        with self._lock:
            self._check_open()
            start = self._log_start_offset if offset is None else offset
            found = self._read_locked(start, max_bytes, max_offset)
            if found is None:
                return _empty_arrays(start)
            seg, _, end = found
            first = int(self._positions[0])
            view = seg.view(first, end)
        arrays = decode_records(view, start, max_bytes=max_bytes, check_crcs=check_crcs,
                                origin=(str(seg.log_path), first))
        if max_offset is not None and len(arrays) and int(arrays.offsets[-1]) >= max_offset:
            arrays = arrays.head(int(np.searchsorted(arrays.offsets, max_offset)))
            arrays.next_offset = max_offset
        if max_records is not None:
            arrays = arrays.head(max_records)
        return arrays

    def iter_arrays(self, offset: Optional[int] = None, max_offset: Optional[int] = None, *,
                    max_bytes: int = READ_ARRAYS_MAX_BYTES, check_crcs: bool = True) -> Iterator[RecordArrays]:
        """:meth:`read_arrays` chunk after chunk from ``offset`` (default: log start) up
        to the log end offset as of this call (or ``max_offset``, exclusive); each chunk
        holds records of one segment (zero copy for uncompressed batches).  Empty chunks
        are not yielded.  If the log is truncated below the position meanwhile, or its
        start moves past it, the iteration ends there."""
        with self._lock:
            self._check_open()
            pos = self._log_start_offset if offset is None else offset
            self._check_offset(pos)
            if max_offset is not None:
                check_int("max_offset (or None)", max_offset)
            end = self.log_end_offset if max_offset is None else min(max_offset, self.log_end_offset)
        return self._iter_arrays(pos, end, max_bytes, check_crcs)

    def _iter_arrays(self, pos: int, end: int, max_bytes: int, check_crcs: bool) -> Iterator[RecordArrays]:
        while pos < end:
            try:
                arrays = self.read_arrays(pos, end, max_bytes=max_bytes, check_crcs=check_crcs)
            except OffsetOutOfRange:
                return
            nxt = arrays.next_offset
            if len(arrays):
                yield arrays
            if nxt is None or nxt <= pos:
                return
            pos = nxt

    def offset_for_timestamp(self, timestamp: int) -> Optional[int]:
        """The first offset whose record timestamp is >= ``timestamp`` (ms), or None.

        Kafka's sentinels: -1 (LATEST) gives the log end offset, -2 (EARLIEST) the log
        start offset.
        """
        check_int("timestamp (ms, or -1 latest, -2 earliest)", timestamp)
        with self._lock:
            self._check_open()
            if timestamp == LATEST_TIMESTAMP:
                return self.log_end_offset
            if timestamp == EARLIEST_TIMESTAMP:
                return self._log_start_offset
            if timestamp < 0:
                raise InvalidTimestamp(f"timestamp must be >= 0, -1 (latest) or -2 (earliest), got {timestamp}")
            position = ffi.new("uint64_t *")
            base = ffi.new("int64_t *")
            for seg in self._segments:
                if seg.c.max_timestamp < timestamp or seg.c.next_offset <= self._log_start_offset:
                    continue
                rc = lib.pl_segment_find_timestamp(seg.c, timestamp, position, base)
                if rc == lib.PL_E_OFFSET_RANGE:
                    continue
                check(rc, f"searching timestamp {timestamp} in {seg.log_path}")
                # The batch found holds a record at or after `timestamp`; walk batch by
                # batch (only the first one usually) in case it lies below log start.
                off = max(int(base[0]), self._log_start_offset)
                first = True
                while off < seg.c.next_offset:
                    found = self._read_locked(off, 0, None, max_batches=1)
                    if found is None:
                        break
                    _, _, stop = found
                    if first and off == int(base[0]) and int(self._positions[0]) != int(position[0]):
                        # The time walk and the offset walk disagree on where that
                        # offset is: a damaged baseOffset (outside the CRC).
                        raise CorruptRecordError(
                            f"{seg.log_path}: the batch at position {int(position[0])} claims offset "
                            f"{off}, which the offset index places at position {int(self._positions[0])} "
                            f"(a damaged batch header)")
                    first = False
                    batch = seg.view(int(self._positions[0]), stop)
                    _check_crcs(batch, (str(seg.log_path), int(self._positions[0])))
                    for rec in iter_records(batch, self._log_start_offset):
                        if rec.timestamp >= timestamp:
                            return rec.offset
                    off = RecordBatch(batch).next_offset
            return None

    # ========================================================== truncation
    def truncate_to(self, offset: int) -> None:
        """Remove every record at or above ``offset``: afterwards log_end_offset <= offset.

        If ``offset`` falls inside a batch, that whole batch goes (as Kafka's
        truncateTo), so the log may end below ``offset``.  Views of removed batches keep
        their bytes.  Raises OffsetOutOfRange unless log_start_offset <= offset <=
        log_end_offset.
        """
        with self._lock:
            self._check_open()
            self._check_offset(offset)
            if offset == self.log_end_offset:
                return
            keep = [s for s in self._segments if s.base_offset < offset]
            drop = [s for s in self._segments if s.base_offset >= offset]
            cut = None
            if keep and offset < keep[-1].c.next_offset:
                # find the batch holding `offset` before anything changes on disk
                seg = keep[-1]
                position = ffi.new("uint64_t *")
                check(lib.pl_segment_lookup(seg.c, offset, position), f"truncating {self.dir} to {offset}")
                cut = RecordBatch(seg.view(int(position[0]), seg.log_size)[:lib.PL_BATCH_HEADER_BYTES]).base_offset
            for seg in drop:
                seg.delete()
            self._dir_dirty = True
            if not keep:
                self._segments = [self._new_segment(offset)]
            else:
                self._segments = keep
                seg = keep[-1]
                if not seg.active:
                    seg.activate(self.config.segment_bytes, self.config.index_entries)
                if cut is not None:
                    seg.truncate_to(cut)
            self._bases = [s.base_offset for s in self._segments]
            self._recovery_point = min(self._recovery_point, self.log_end_offset)
            self._log_start_offset = min(self._log_start_offset, self.log_end_offset)
            self._write_checkpoints()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Remove every record and make the log empty, starting at ``offset`` (Kafka's
        truncateFullyAndStartAt): for a follower whose leader's log now starts past this
        log's end.  Afterwards log_start_offset == log_end_offset == ``offset``.  Views of
        removed batches keep their bytes.  Raises InvalidArgument, LogClosed.
        """
        check_int("offset", offset, min=0)
        with self._lock:
            self._check_open()
            for seg in self._segments:
                seg.delete()
            self._dir_dirty = True
            self._segments = [self._new_segment(offset)]
            self._bases = [offset]
            self._log_start_offset = self._recovery_point = offset
            self._write_checkpoints()

    def delete_records(self, before: int) -> None:
        """Advance the log start offset to ``before`` and delete segments wholly below it.

        As Kafka's DeleteRecords: records below ``before`` become unreadable at once;
        a segment's files go when every record in it is below.  Raises OffsetOutOfRange
        if ``before`` > log_end_offset, StorageError (nothing changed) if the log start
        checkpoint cannot be written.
        """
        check_int("before", before)
        with self._lock:
            self._check_open()
            if before > self.log_end_offset or before < 0:
                raise OffsetOutOfRange(
                    f"cannot delete records before {before}: log end offset is {self.log_end_offset}")
            if before <= self._log_start_offset:
                return
            # The checkpoint first: if the disk refuses it, nothing has changed.
            old = self._log_start_offset
            self._log_start_offset = before
            try:
                self._write_checkpoints()
            except StorageError:
                self._log_start_offset = old
                raise
            self._delete_below_start_locked()

    def _delete_below_start_locked(self) -> int:
        deleted = 0
        while len(self._segments) > 1 and self._segments[1].base_offset <= self._log_start_offset:
            self._delete_oldest_locked()
            deleted += 1
        return deleted

    def _delete_oldest_locked(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        seg.delete()
        self._dir_dirty = True
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)

    def scrub(self, chunk_bytes: int = 4 << 20) -> Optional[ScrubDamage]:
        """Check the CRC32C of every batch from the log start to the log end offset as of
        this call, a chunk at a time (the lock is taken per chunk, appends go on).
        Returns the first damage found, or None.  Reads only; changes nothing.  (The
        broker's background scrub, log.scrub.interval.ms, runs this.)"""
        with self._lock:
            self._check_open()
            pos, end = self._log_start_offset, self.log_end_offset
        while pos < end:
            try:
                batches = self.read(pos, chunk_bytes, max_offset=end)  # CRCs checked
            except OffsetOutOfRange:  # retention or truncation moved past pos meanwhile
                with self._lock:
                    if pos >= self.log_end_offset:
                        return None
                    pos = max(pos, self._log_start_offset)
                continue
            except CorruptRecordError as exc:  # names the file, position, offset and CRCs
                return ScrubDamage(self._first_damaged(pos, chunk_bytes, end), str(exc))
            if not batches:
                return None
            pos = batches[-1].next_offset
        return None

    def _first_damaged(self, pos: int, chunk_bytes: int, end: int) -> int:
        """The base offset of the first batch from ``pos`` whose CRC fails (``pos`` when
        the chunk's headers themselves cannot be walked)."""
        try:
            batches = self.read(pos, chunk_bytes, max_offset=end, check_crcs=False)
        except CorruptRecordError:
            return pos
        for b in batches:
            try:
                b.check_crc()
            except CorruptRecordError:
                return max(pos, b.base_offset)
        return pos

    def enforce_retention(self, now_ms: Optional[int] = None) -> int:
        """Delete old segments by retention.ms and retention.bytes; return how many.

        The active segment is never deleted.  Called automatically at every roll.
        retention.ms/retention.bytes apply only when cleanup.policy contains "delete";
        segments wholly below the log start offset always go.
        """
        if now_ms is not None:
            check_int("now_ms (ms, or None for now)", now_ms)
        with self._lock:
            self._check_open()
            deleted = self._enforce_retention_locked(self._clock() if now_ms is None else now_ms)
            if deleted:
                self._write_checkpoints()
            return deleted

    def _enforce_retention_locked(self, now: int) -> int:
        cfg = self.config
        deleted = self._delete_below_start_locked()
        if not cfg.delete:
            return deleted  # cleanup.policy=compact: only the cleaner removes records
        if cfg.retention_ms >= 0:
            while len(self._segments) > 1 and now - self._segments[0].last_modified_ms() > cfg.retention_ms:
                self._delete_oldest_locked()
                deleted += 1
        if cfg.retention_bytes >= 0:
            total = self.size_bytes
            while len(self._segments) > 1 and total - self._segments[0].size_bytes >= cfg.retention_bytes:
                total -= self._segments[0].size_bytes
                self._delete_oldest_locked()
                deleted += 1
        return deleted

    # ========================================================== compaction
    @property
    def topic_partition(self) -> tuple:
        """(topic, partition) parsed from the directory name ``<topic>-<partition>``
        (the whole name and 0 otherwise): the key of this log's checkpoint entries."""
        return self._key

    def snapshot_segments(self) -> List["SegmentSnapshot"]:
        """The segments as they are now, oldest first, each with a zero-copy view of
        its batches (valid even after the segment is replaced or deleted)."""
        with self._lock:
            self._check_open()
            out = []
            for seg in self._segments:
                size = seg.log_size
                out.append(SegmentSnapshot(
                    seg.base_offset, seg.next_offset, size, seg.max_timestamp,
                    seg.modified_ms(), seg.active, seg.view(0, size), seg))
            return out

    def replace_segments(self, replacements: Sequence[tuple], *, modified_ms: int) -> bool:
        """Swap inactive segments for rewritten (compacted) copies, crash-safely.

        ``replacements`` holds (SegmentSnapshot, data) pairs: ``data`` is the new content
        of that segment, concatenated batches that tile exactly the same offsets
        [base_offset, next_offset) (each batch's baseOffset is the previous batch's
        last offset + 1).  ``modified_ms`` becomes the new files' modification time
        (the cleaner's clock: when the segments were cleaned).

        All or nothing, across a crash too: the new files are written as
        ``<base>.log.cleaned`` in ``cleaner.cleaned/``, fsynced, and that directory is
        renamed to ``cleaner.swap/`` (the commit point); then each old segment is
        deleted and its ``.swap`` file renamed into place.  Opening a log finishes a
        committed swap and discards an uncommitted one.  Views of replaced segments
        keep their bytes (the old files are unlinked, not rewritten).

        A StorageError before the commit point (a full disk while writing the cleaned
        files) changes nothing; one after it closes this Log, and opening the directory
        again finishes the swap.

        Returns False, changing nothing, if any segment changed since its snapshot
        (truncated, deleted, re-activated).  Raises CorruptRecordError / InvalidArgument
        if ``data`` is not a valid tiling of the segment's offsets.
        """
        check_int("modified_ms", modified_ms, min=0)
        checked = []
        for snap, data in replacements:
            view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
            self._check_tiling(snap, view)
            checked.append((snap, view))
        if not checked:
            return True
        staging = self.dir / CLEANED_DIR
        swap = self.dir / SWAP_DIR
        with self._lock:
            self._check_open()
            if not self._snapshots_current([snap for snap, _ in checked]):
                return False
            try:
                _remove_tree(staging)
                staging.mkdir()
                for snap, view in checked:
                    name = staging / (segment_file_name(snap.base_offset, LOG_SUFFIX) + CLEANED_SUFFIX)
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        pos = 0
                        while pos < len(view):
                            pos += os.write(fd, view[pos:])
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.utime(name, ns=(modified_ms * 1_000_000, modified_ms * 1_000_000))
                fsync_dir(staging)
                _swap_step("cleaned")
                for name in os.listdir(staging):
                    os.rename(staging / name, staging / (name[: -len(CLEANED_SUFFIX)] + SWAP_SUFFIX))
                fsync_dir(staging)
                os.rename(staging, swap)  # the commit point
                fsync_dir(self.dir)
                _swap_step("committed")
            except OSError as exc:
                _remove_tree(staging)
                raise StorageError(exc.errno or 0, f"writing cleaned segments in {self.dir}: {exc.strerror}") from exc
            by_base = {seg.base_offset: i for i, seg in enumerate(self._segments)}
            try:
                for k, (snap, _) in enumerate(checked):
                    i = by_base[snap.base_offset]
                    self._segments[i].delete()
                    self._segments[i] = self._finish_swap_one(snap.base_offset)
                    if k == 0:
                        _swap_step("replaced_first")
                os.rmdir(swap)
                fsync_dir(self.dir)
            except (OSError, PylogError) as exc:
                # Past the commit point the swap is finished by the next open; this
                # log object must not go on with half of it: it lets go of everything.
                self._abandon()
                raise StorageError(getattr(exc, "errno", None) or 0,
                                   f"finishing the committed segment swap in {self.dir}: {exc}; the log "
                                   "was closed, and opening it again finishes the swap") from exc
            _swap_step("done")
            return True

    def _check_tiling(self, snap: "SegmentSnapshot", view: memoryview) -> None:
        validate_batches(view)
        expect = snap.base_offset
        for b in iter_batches(view):
            if b.base_offset != expect:
                raise InvalidArgument(
                    f"cleaned segment {snap.base_offset}: batch at offset {b.base_offset} does not "
                    f"continue at {expect} (batches must tile the segment's offsets)")
            expect = b.next_offset
        if expect != snap.next_offset:
            raise InvalidArgument(
                f"cleaned segment {snap.base_offset} ends at offset {expect}, the segment at {snap.next_offset}")
        if len(view) > max(self.config.segment_bytes, snap.size_bytes):
            raise InvalidArgument(f"cleaned segment {snap.base_offset} is larger than segment.bytes")

    def _snapshots_current(self, snaps: Sequence["SegmentSnapshot"]) -> bool:
        live = {id(seg): seg for seg in self._segments}
        for snap in snaps:
            seg = live.get(id(snap.segment))
            if (seg is None or seg.closed or seg.active or seg.log_size != snap.size_bytes
                    or seg.next_offset != snap.next_offset):
                return False
        return True

    def _finish_swap_one(self, base: int) -> LogSegment:
        """Move ``cleaner.swap/<base>.log.swap`` into place (old files already gone)
        and open it; its indexes are rebuilt from the data."""
        for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            try:
                (self.dir / segment_file_name(base, suffix)).unlink()
            except FileNotFoundError:
                pass
        src = self.dir / SWAP_DIR / (segment_file_name(base, LOG_SUFFIX) + SWAP_SUFFIX)
        os.replace(src, self.dir / segment_file_name(base, LOG_SUFFIX))
        cfg = self.config
        seg = LogSegment.open_existing(self.dir, base, active=False, segment_bytes=cfg.segment_bytes,
                                       index_entries=cfg.index_entries,
                                       index_interval_bytes=cfg.index_interval_bytes,
                                       preallocate=cfg.preallocate)
        try:
            seg.recover()
        except BaseException:
            seg.close(shrink=False)
            raise
        return seg

    def _recover_swaps(self) -> None:
        """At open: discard an uncommitted cleaning, finish a committed one."""
        staging = self.dir / CLEANED_DIR
        if staging.exists():
            logger.warning("log %s: discarding an unfinished log cleaning (%s)", self.dir, CLEANED_DIR)
            _remove_tree(staging)
        swap = self.dir / SWAP_DIR
        if not swap.exists():
            return
        logger.warning("log %s: finishing an interrupted segment swap of the log cleaner", self.dir)
        for name in sorted(os.listdir(swap)):
            if not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
                (swap / name).unlink()
                continue
            base = parse_segment_file_name(name[: -len(SWAP_SUFFIX)])
            if base is None:
                (swap / name).unlink()
                continue
            for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
                try:
                    (self.dir / segment_file_name(base, suffix)).unlink()
                except FileNotFoundError:
                    pass
            os.replace(swap / name, self.dir / segment_file_name(base, LOG_SUFFIX))
        os.rmdir(swap)
        fsync_dir(self.dir)

    # ========================================================== durability
    def flush(self) -> None:
        """Make everything appended durable; the recovery point becomes the log end."""
        with self._lock:
            self._check_open()
            self._flush_locked(self._clock())

    def _flush_locked(self, now: int) -> None:
        for seg in self._segments:
            if seg.unflushed:
                seg.flush()
        if self._dir_dirty:
            fsync_dir(self.dir)
            self._dir_dirty = False
        self._last_flush_ms = now
        if self._recovery_point != self.log_end_offset:
            self._recovery_point = self.log_end_offset
        # The data is durable now; a recovery point that cannot be written (full disk)
        # only makes the next crash recovery scan more, so the flush still succeeds.
        self._write_checkpoints(strict=False)

    def _write_checkpoints(self, *, strict: bool = True) -> None:
        """Write the recovery point and log start checkpoints if they changed.

        A failure raises StorageError (each file keeps its old content), or with
        ``strict=False`` is logged and retried at the next write."""
        try:
            for f, value in ((self._rp_file, self._recovery_point), (self._ls_file, self._log_start_offset)):
                if self._checkpointed.get(f.path.name) != value:
                    self._checkpointed.pop(f.path.name, None)
                    f.write({self._key: value})
                    self._checkpointed[f.path.name] = value
        except OSError as exc:
            err = StorageError(exc.errno or 0, f"writing checkpoints in {self.dir}: {exc.strerror}")
            if strict:
                raise err from exc
            logger.warning("log %s: %s (kept the older checkpoints; retried at the next flush)", self.dir, err)

    def close(self) -> None:
        """Flush, shrink the files to their content, and mark a clean shutdown.

        Idempotent.  Views handed out earlier stay valid.  Afterwards every method
        raises LogClosed.  The files and the directory lock are always released; if a
        step fails (a full disk) the others still run, no clean-shutdown marker is
        written (the next open recovers, from what is on disk) and the first error is
        raised as StorageError.
        """
        with self._lock:
            if self._closed:
                return
            errors: List[OSError] = []
            try:
                try:
                    for seg in self._segments:
                        if seg.unflushed:
                            seg.flush()
                except OSError as exc:
                    errors.append(exc)
                # Shrinking first gives back the unused reservation of the active
                # segment: on a full disk that is what lets the checkpoints be written.
                for seg in self._segments:
                    try:
                        seg.close()  # shrinks the active segment's files
                    except OSError as exc:
                        errors.append(exc)
                try:
                    # The shrink changed file sizes: make it durable before claiming clean.
                    fsync_dir(self.dir)
                    if not errors:
                        self._recovery_point = self.log_end_offset
                    self._write_checkpoints()
                    if not errors and self._owner_marker is None:
                        marker = self.dir / CLEAN_SHUTDOWN_FILE
                        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                        fsync_dir(self.dir)
                except OSError as exc:
                    errors.append(exc)
            finally:
                self._closed = True
                self._abandon()
            if errors:
                first = errors[0]
                if isinstance(first, StorageError):
                    raise first
                raise StorageError(first.errno or 0, f"closing log {self.dir}: {first.strerror}") from first

    def abandon(self) -> None:
        """Let go of the log as a killed process would (SIGKILL): no flush, no
        checkpoint, no clean-shutdown marker, files left as they are (the page cache
        keeps every write).  Mappings, files and the directory lock are released, so
        the directory can be opened again — that open runs crash recovery.  Views
        handed out keep their bytes.  Idempotent; a closed log is left alone."""
        with self._lock:
            self._abandon()

    def _abandon(self) -> None:
        """Release files and the directory lock without any shutdown work."""
        for seg in self._segments:
            if not seg.closed:
                seg.close(shrink=False)
        self._closed = True
        if self._lock_fd >= 0:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = -1

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            f"start={self._log_start_offset}, end={self.log_end_offset}, segments={len(self._segments)}")
        return f"Log({str(self.dir)!r}, {state})"


class _SplitNeeded(Exception):
    """Internal: a multi-batch append must go batch by batch (segment full)."""


def _empty_arrays(next_offset: int) -> RecordArrays:
    """No records; reading on starts at ``next_offset``."""
    arrays = decode_records(b"")
    arrays.next_offset = next_offset
    return arrays


def _stamp_log_append_time(view: memoryview, batches: List[RecordBatch], now: int) -> bytearray:
    """A copy of ``view`` with every batch marked LogAppendTime at ``now`` (CRC redone)."""
    out = bytearray(view)
    pos = 0
    for b in batches:
        attrs = struct.unpack_from(">h", out, pos + 21)[0] | lib.PL_ATTR_TIMESTAMP_TYPE
        struct.pack_into(">h", out, pos + 21, attrs)
        struct.pack_into(">q", out, pos + 35, now)
        end = pos + b.size_bytes
        buf = ffi.from_buffer("uint8_t[]", out)
        try:
            crc = lib.pl_crc32c(0, buf + pos + 21, end - pos - 21)
        finally:
            ffi.release(buf)
        struct.pack_into(">I", out, pos + 17, crc)
        pos = end
    return out
