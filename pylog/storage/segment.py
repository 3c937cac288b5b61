"""LogSegment: one segment's three files, their mappings, and the C state over them.

A segment is ``<20-digit base offset>.log`` (concatenated record batches), ``.index``
(sparse offset index) and ``.timeindex`` (time index).  This module owns the files and
the mappings (Python's ``mmap`` objects); csrc/segment.c and csrc/index.c do the per-byte
work through the ``pl_segment`` struct whose pointers point into those mappings.

While a segment is active its ``.log`` is sized and mapped at segment.bytes and its
indexes are sized to segment.index.bytes and mapped whole, all three sparse; when it
becomes inactive (roll) or the log closes, the files shrink to what they hold.

Disk reservation (Kafka's ``preallocate``).  Pages of a shared file mapping that are
written over a hole get their disk block at the page fault, and a full disk then kills
the process with SIGBUS.  So C may only write to reserved (``posix_fallocate``d)
bytes: ``pl_segment.log_capacity``, ``index_capacity`` and ``timeindex_capacity`` are
the reserved prefixes of the three files, never the mapping sizes.  A new segment
reserves nothing (an idle partition holds no data blocks); :meth:`LogSegment.ensure_room`
reserves before each append what it may write: the .log grows in steps (the first is
min(segment.bytes, 1 MiB); each next step doubles the reservation, at most 64 MiB at a
time; with ``preallocate=True`` all of segment.bytes at once), each index by a page,
doubling, at most 1 MiB at a time.  A reservation that fails raises StorageError before
anything is written, and the next append tries again (appends resume by themselves when
space returns).

Opening never trusts bytes past the data to be reserved: a file left partly reserved
by a failed reservation or a crash counts as reserved only up to its data (log_size,
the index entries), and the next append reserves again before writing.  Recovery
writes nothing through a mapping: it rebuilds the indexes in private memory and writes
them with ``pwrite`` (a full disk then raises StorageError, never SIGBUS), and it cuts
a torn tail by truncating the file, which frees its blocks instead of writing zeros
over them.  What is left is a SIGBUS from outside: another process truncating a
segment file under the mapping (docs/architecture.md, "Full disks").

Zero-copy views (Invariant 3).  Views handed to readers are memoryview slices of the
``.log`` mapping; they keep the ``mmap`` object alive, so the pages stay mapped after the
segment is closed or its file unlinked (Linux keeps an unlinked, mapped inode).  Pages
that will be rewritten — the tail cut by a truncation, or a whole segment that is
closed while views exist — are first *detached* (csrc ``pl_map_detach``): replaced by
a private copy of their bytes, so a view keeps its bytes and never shows another
record's.  Only views at or below ``log_size`` are handed out, so shrinking the file
(which is always to ``log_size`` or more) never makes a view's page disappear.
"""
from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path
from typing import Optional

from pylog._native import check, ffi, lib
from pylog.errors import CorruptRecordError, StorageError

__all__ = ["LogSegment", "segment_file_name", "parse_segment_file_name"]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
_ZEROS = bytes(1 << 20)
#: First disk reservation of a segment's .log (preallocate=False), and the most any
#: later step adds at once.
RESERVE_FIRST_BYTES = 1 << 20
RESERVE_MAX_STEP_BYTES = 64 << 20
_PAGE = mmap.PAGESIZE
#: First disk reservation of an index file, and the most a later step adds at once.
INDEX_RESERVE_FIRST_BYTES = _PAGE
INDEX_RESERVE_MAX_STEP_BYTES = 1 << 20
_INDEX_BYTES = 8  #: offset-index entry
_TIMEINDEX_BYTES = 12  #: time-index entry
#: Batches built from this size on are built in a scratch buffer and written with
#: pwrite, smaller ones built in the mapping.  Measured on Linux 6.x / ext4 (the
#: project's VM), each way over 100 MB of appends: a store pays a page fault for each
#: new page (and the kernel's readahead zeroing), a pwrite one system call and a
#: second copy; in the mapping against scratch + pwrite, 5 against 7.7 us at 8 KiB,
#: 38 against 36-45 at 64 KiB, 51 against 44 at 88 KiB, 68-75 against 59-63 at
#: 128 KiB, and 1 MiB batches 16 ms against 31-53 ms per 110 MB.
PWRITE_MIN_BYTES = 64 * 1024
#: Ready batches (produce, replication) from this size on are copied into a scratch
#: buffer, checked there and written with pwrite (pl_segment_append_buffered), smaller
#: ones copied into the mapping and checked there (measured likewise: 8 against 10 us
#: at 16 KiB, 15 against 16 at 32 KiB, 30 against 24 at 64 KiB).
PWRITE_COPY_MIN_BYTES = 48 * 1024


def segment_file_name(base_offset: int, suffix: str) -> str:
    """Kafka's file name: the base offset as 20 digits, then the suffix."""
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> Optional[int]:
    """Base offset of a ``.log`` file name, or None if it is not a segment's."""
    if not name.endswith(LOG_SUFFIX):
        return None
    stem = name[: -len(LOG_SUFFIX)]
    if len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def _first_hole(fd: int, size: int) -> int:
    """Where the file's first hole starts (``size`` if none, or if the OS cannot say)."""
    try:
        return min(os.lseek(fd, 0, os.SEEK_HOLE), size)
    except (OSError, AttributeError):
        return size


def _data_after(fd: int, start: int) -> bool:
    """Whether the file has data (not holes) at or after ``start``."""
    try:
        os.lseek(fd, start, os.SEEK_DATA)
        return True
    except OSError as exc:
        return exc.errno != errno.ENXIO
    except AttributeError:
        return True


def _pwrite_all(fd: int, data: memoryview, offset: int = 0) -> None:
    """Write all of ``data`` at ``offset`` (OSError, e.g. ENOSPC, if the disk refuses)."""
    try:
        pos = 0
        while pos < len(data):
            with data[pos:] as rest:
                pos += os.pwrite(fd, rest, offset + pos)
    finally:
        data.release()


def _reserve(fd: int, size: int) -> None:
    """Reserve disk blocks for file bytes [0, size) (extending the file if shorter).

    Raises OSError when the disk is full.  Where the OS or file system cannot reserve
    (no posix_fallocate, EOPNOTSUPP/EINVAL), this is a no-op: nothing better is
    possible there, and the file keeps its holes as before.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except AttributeError:
        return
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return
        raise


class _Mapping:
    """A file mapping plus the C pointer into it (released before the map is dropped)."""

    __slots__ = ("mm", "ptr", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.ptr = ffi.from_buffer("uint8_t[]", self.mm)
        self.size = size

    def release(self, keep_bytes_from: Optional[int] = None, keep_bytes_to: int = 0) -> bool:
        """Drop this mapping; return True if it is gone, False if views keep it alive.

        If views still use it and ``keep_bytes_from`` is given, first detach the pages
        covering [keep_bytes_from, keep_bytes_to) so those views keep their bytes while
        the file is rewritten elsewhere.
        """
        if self.ptr is not None:
            ffi.release(self.ptr)
            self.ptr = None
        try:
            self.mm.close()
            return True
        except BufferError:
            pass  # views exist: the mmap lives on until the last of them is gone
        if keep_bytes_from is not None:
            self.detach(keep_bytes_from, keep_bytes_to)
        return False

    def detach(self, start: int, end: int) -> None:
        """Give the pages covering [start, end) a private copy of their bytes (views
        of them keep what they show while the file changes)."""
        end = min(end, self.size)
        if end <= start or self.mm.closed:
            return
        ptr = ffi.from_buffer("uint8_t[]", self.mm)
        try:
            check(lib.pl_map_detach(ptr + start, end - start), "detaching pages under live views")
        finally:
            ffi.release(ptr)


class _IndexMapping:
    """A mapping of an index file for C alone (no Python views): made by C, so that
    it holds no descriptor (Python's mmap keeps a duplicate of the file's)."""

    __slots__ = ("ptr", "size")

    def __init__(self, fd: int, size: int) -> None:
        out = ffi.new("uint8_t **")
        check(lib.pl_map_file(fd, size, out), "mapping an index file")
        self.ptr = out[0]
        self.size = size

    def release(self) -> bool:
        if self.ptr is not None:
            check(lib.pl_unmap_file(self.ptr, self.size), "unmapping an index file")
            self.ptr = None
        return True


class _Superseded:
    """A .log mapping replaced by a truncation while views still used it.

    Its pages at and above ``attached_to`` were detached then; those below still show
    the file, so each later rewrite of the file below that point (another truncation,
    a close that lets another opener rewrite it) must detach them first.
    """

    __slots__ = ("mapping", "attached_to")

    def __init__(self, mapping: _Mapping, attached_to: int) -> None:
        self.mapping = mapping
        self.attached_to = attached_to


class LogSegment:
    """One segment of a partition log.  Not thread-safe: the Log serialises access."""

    __slots__ = (
        "dir",
        "base_offset",
        "c",
        "c_address",
        "_fds",
        "_paths",
        "_log_map",
        "_index_map",
        "_time_map",
        "_view",
        "active",
        "rolling_timestamp_ms",
        "_needs_fsync",
        "closed",
        "_index_suspect",
        "preallocate",
        "_mapped_log_bytes",
        "_superseded",
        "_max_index_entries",
    )

    def __init__(self, directory: Path, base_offset: int) -> None:
        self.dir = directory
        self.base_offset = base_offset
        self.c = ffi.new("pl_segment *")
        self.c.pwrite_min_bytes = PWRITE_MIN_BYTES
        self.c.pwrite_copy_min_bytes = PWRITE_COPY_MIN_BYTES
        #: address of ``c`` as an int, for pylog._native._records.append_one
        self.c_address = int(ffi.cast("uintptr_t", self.c))
        #: descriptors of the .log, .index and .timeindex (-1: not open; see _fd)
        self._fds = [-1, -1, -1]
        stem = os.path.join(directory, f"{base_offset:020d}")
        self._paths = (Path(stem + LOG_SUFFIX), Path(stem + INDEX_SUFFIX), Path(stem + TIMEINDEX_SUFFIX))
        self._log_map: Optional[_Mapping] = None
        self._index_map: Optional[_IndexMapping] = None
        self._time_map: Optional[_IndexMapping] = None
        self._view: Optional[memoryview] = None
        self.active = False
        #: first batch's max timestamp (Kafka's rule for segment.ms); None while empty
        self.rolling_timestamp_ms: Optional[int] = None
        #: file sizes changed since the last fsync (shrink/preallocate)
        self._needs_fsync = False
        self.closed = False
        #: index files missing, of partial-entry size, empty beside a non-empty log
        self._index_suspect = False
        #: reserve all of segment.bytes at once (Kafka's preallocate)
        self.preallocate = False
        #: size of the .log mapping (c.log_capacity is the reserved prefix of it)
        self._mapped_log_bytes = 0
        #: earlier .log mappings that views still use (see _Superseded)
        self._superseded: list = []
        #: offset-index entries segment.index.bytes allows (for rebuilding indexes)
        self._max_index_entries = 0

    # ----------------------------------------------------------- descriptors
    # The mappings need no descriptor of ours: a segment holds its files open only
    # while it uses them (reserving, shrinking, fsyncing), opening them again by path
    # on demand, and lets go of them when it goes idle (release_fds).  An idle segment
    # then costs one descriptor (the duplicate Python's mmap keeps for the .log
    # mapping; the index mappings are made in C and keep none), not four.

    # While the .log is open, C writes the appends of PWRITE_MIN_BYTES or more through
    # it (pwrite, see pl_segment's log_fd_plus_one); it lives and goes as the mappings
    # do, under the log's lock.

    def _fd(self, i: int) -> int:
        fd = self._fds[i]
        if fd < 0:
            self._set_fd(i, os.open(self._paths[i], os.O_RDWR))
            fd = self._fds[i]
        return fd

    def _set_fd(self, i: int, fd: int) -> None:
        assert self._fds[i] < 0
        self._fds[i] = fd
        if i == 0:
            self.c.log_fd_plus_one = fd + 1

    @property
    def _log_fd(self) -> int:
        return self._fd(0)

    @_log_fd.setter
    def _log_fd(self, fd: int) -> None:
        self._set_fd(0, fd)

    @property
    def _index_fd(self) -> int:
        return self._fd(1)

    @_index_fd.setter
    def _index_fd(self, fd: int) -> None:
        self._set_fd(1, fd)

    @property
    def _time_fd(self) -> int:
        return self._fd(2)

    @_time_fd.setter
    def _time_fd(self, fd: int) -> None:
        self._set_fd(2, fd)

    def release_fds(self) -> None:
        """Close the files (the mappings stay); they are opened again when needed."""
        self._close_files()

    @property
    def open_fds(self) -> int:
        """How many of the segment's files are open now."""
        return sum(fd >= 0 for fd in self._fds)

    # ----------------------------------------------------------------- paths
    @property
    def log_path(self) -> Path:
        return self._paths[0]

    @property
    def index_path(self) -> Path:
        return self._paths[1]

    @property
    def timeindex_path(self) -> Path:
        return self._paths[2]

    # ------------------------------------------------------------ open/create
    @classmethod
    def create(cls, directory: Path, base_offset: int, *, segment_bytes: int,
               index_entries: int, index_interval_bytes: int,
               preallocate: bool = False) -> "LogSegment":
        """A new, empty, active segment (files created, reserved, mapped)."""
        seg = cls(directory, base_offset)
        seg.preallocate = preallocate
        seg._max_index_entries = index_entries
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
            seg._log_fd = os.open(seg.log_path, flags, 0o644)
            seg._index_fd = os.open(seg.index_path, flags, 0o644)
            seg._time_fd = os.open(seg.timeindex_path, flags, 0o644)
            seg._map_active(segment_bytes, index_entries)
            check(lib.pl_segment_init(seg.c, base_offset, index_interval_bytes),
                  f"initialising segment {base_offset}")
            seg.active = True
            seg._needs_fsync = True
            seg._set_reserved_to_data()
            if preallocate:
                seg._reserve_to(seg._mapped_log_bytes)
        except OSError as exc:
            seg._discard_files()
            raise StorageError(exc.errno or 0, f"creating segment {seg.log_path}: {exc.strerror}") from exc
        except BaseException:
            seg._discard_files()
            raise
        return seg

    def _discard_files(self) -> None:
        """Undo a create that failed: unmap, close and unlink the files it made."""
        self._drop_maps(keep_views=False)
        self._close_files()
        self.closed = True
        for path in (self.log_path, self.index_path, self.timeindex_path):
            try:
                path.unlink()
            except OSError:
                pass

    @classmethod
    def open_existing(cls, directory: Path, base_offset: int, *, active: bool,
                      segment_bytes: int, index_entries: int,
                      index_interval_bytes: int, preallocate: bool = False) -> "LogSegment":
        """Open a segment's files and map them; its state is loaded by
        :meth:`load_clean` or :meth:`recover` afterwards, and then an active
        segment's disk reservation is made by :meth:`finish_open`.

        ``self.c.log_size`` / ``index_entries`` / ``timeindex_entries`` are set from the
        file sizes as found (the clean-shutdown view); recover() recomputes them.
        Until finish_open, ``c.log_capacity`` is the whole mapping, so that recovery
        scans every byte a crash may have left.
        """
        seg = cls(directory, base_offset)
        seg.preallocate = preallocate
        seg._max_index_entries = index_entries
        try:
            seg._log_fd = os.open(seg.log_path, os.O_RDWR)
            seg._index_suspect = not (seg.index_path.exists() and seg.timeindex_path.exists())
            flags = os.O_RDWR | os.O_CREAT
            seg._index_fd = os.open(seg.index_path, flags, 0o644)
            seg._time_fd = os.open(seg.timeindex_path, flags, 0o644)
            log_size = os.fstat(seg._log_fd).st_size
            index_size = os.fstat(seg._index_fd).st_size
            time_size = os.fstat(seg._time_fd).st_size
            if active:
                seg._map_active(segment_bytes, index_entries)
            else:
                seg._map_inactive(index_entries)
            check(lib.pl_segment_init(seg.c, base_offset, index_interval_bytes),
                  f"initialising segment {base_offset}")
            if (index_size % 8 or time_size % 12
                    or (log_size > 0 and (index_size == 0 or time_size == 0))):
                seg._index_suspect = True
            seg.c.log_size = min(log_size, seg.c.log_capacity)
            seg.c.index_entries = min(index_size // 8, seg.c.index_capacity // 8)
            seg.c.timeindex_entries = min(time_size // 12, seg.c.timeindex_capacity // 12)
            seg.active = active
        except OSError as exc:
            seg._close_files()
            raise StorageError(exc.errno or 0, f"opening segment {seg.log_path}: {exc.strerror}") from exc
        except BaseException:
            seg._close_files()
            raise
        return seg

    def _map_active(self, segment_bytes: int, index_entries: int) -> None:
        # All three sparse (no data blocks): disk is reserved in steps (ensure_room).
        for fd, size in ((self._log_fd, segment_bytes), (self._index_fd, index_entries * _INDEX_BYTES),
                         (self._time_fd, index_entries * _TIMEINDEX_BYTES)):
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        self._set_maps(
            _Mapping(self._log_fd, os.fstat(self._log_fd).st_size),
            _IndexMapping(self._index_fd, max(os.fstat(self._index_fd).st_size, 8)),
            _IndexMapping(self._time_fd, max(os.fstat(self._time_fd).st_size, 12)),
        )

    def _map_inactive(self, index_entries: int) -> None:
        # mmap cannot map an empty file: give every file room for at least one entry.
        for fd, least in ((self._log_fd, 1), (self._index_fd, 8), (self._time_fd, 12)):
            if os.fstat(fd).st_size < least:
                os.ftruncate(fd, least)
        self._set_maps(
            _Mapping(self._log_fd, os.fstat(self._log_fd).st_size),
            _IndexMapping(self._index_fd, os.fstat(self._index_fd).st_size),
            _IndexMapping(self._time_fd, os.fstat(self._time_fd).st_size),
        )

    def _set_maps(self, log_map: _Mapping, index_map: "_IndexMapping", time_map: "_IndexMapping") -> None:
        self._log_map, self._index_map, self._time_map = log_map, index_map, time_map
        self._view = memoryview(log_map.mm)
        c = self.c
        c.log = log_map.ptr
        c.log_capacity = log_map.size
        self._mapped_log_bytes = log_map.size
        c.index = index_map.ptr
        c.index_capacity = index_map.size
        c.timeindex = time_map.ptr
        c.timeindex_capacity = time_map.size

    # ------------------------------------------------------------ reservation
    @property
    def mapped_bytes(self) -> int:
        """Size of the .log mapping: the most this segment can hold (segment.bytes when
        it was created or activated, or its data if that was larger)."""
        return self._mapped_log_bytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes of the .log that appends may write (disk blocks reserved)."""
        return int(self.c.log_capacity)

    def _set_reserved_to_data(self) -> None:
        """Count as reserved only what holds data: the log's batches and the index
        entries (written, so their blocks exist).  Bytes past them may be holes of a
        file left partly reserved (a failed reservation, a crash): the next append
        reserves before it writes there."""
        c = self.c
        c.log_capacity = c.log_size
        c.index_capacity = int(c.index_entries) * _INDEX_BYTES
        c.timeindex_capacity = int(c.timeindex_entries) * _TIMEINDEX_BYTES

    def finish_open(self) -> None:
        """After load_clean/recover of the active segment: from now on appends may
        write only reserved bytes (reserved again by the first append)."""
        if self.active:
            self._set_reserved_to_data()

    def ensure_room(self, nbytes: int) -> None:
        """Make ``nbytes`` past log_size writable, and the index entries they may add,
        if the mappings can hold them.

        Grows the .log reservation by the next step (or to all of segment.bytes with
        preallocate) and each index's by its next step.  If the bytes or entries do not
        fit the mappings at all this reserves what fits: the append then fails with
        PL_E_FULL and the log rolls.  Raises StorageError (nothing written) if the disk
        cannot give the blocks.
        """
        c = self.c
        if not self.active:
            return
        need = int(c.log_size) + nbytes
        reserved = int(c.log_capacity)
        if reserved < need <= self._mapped_log_bytes:
            step = min(max(reserved, RESERVE_FIRST_BYTES), RESERVE_MAX_STEP_BYTES)
            self._reserve_to(max(need, reserved + step))
        # Index entries an append of nbytes may write: one at its first batch, then one
        # per index.interval.bytes, and never more than one per batch (>= 61 bytes).
        entries = 1 + nbytes // max(int(c.index_interval_bytes), lib.PL_BATCH_HEADER_BYTES)
        if (int(c.index_entries) + entries) * _INDEX_BYTES > int(c.index_capacity):
            self._reserve_index(False, (int(c.index_entries) + entries) * _INDEX_BYTES)
        if (int(c.timeindex_entries) + entries) * _TIMEINDEX_BYTES > int(c.timeindex_capacity):
            self._reserve_index(True, (int(c.timeindex_entries) + entries) * _TIMEINDEX_BYTES)

    def _reserve_to(self, size: int) -> None:
        """Reserve [0, size) rounded up to a page (all of it with preallocate) and let
        C write there.  The reservation never ends below the data."""
        mapped = self._mapped_log_bytes
        size = mapped if self.preallocate else min(mapped, -(-size // _PAGE) * _PAGE)
        size = max(size, int(self.c.log_size))
        try:
            _reserve(self._log_fd, size)
        except OSError as exc:
            raise StorageError(
                exc.errno or 0,
                f"reserving {size} bytes of disk for {self.log_path}: {exc.strerror}") from exc
        self.c.log_capacity = size
        self._needs_fsync = True

    def _reserve_index(self, time: bool, need: int) -> None:
        """Reserve the offset index (or the time index) up to at least ``need`` bytes
        (by a page, doubling, at most INDEX_RESERVE_MAX_STEP_BYTES more at a time), as
        far as its mapping reaches."""
        c = self.c
        mapping = self._time_map if time else self._index_map
        assert mapping is not None
        reserved = int(c.timeindex_capacity if time else c.index_capacity)
        if reserved >= mapping.size:
            return  # full: the append fails with PL_E_FULL and the log rolls
        step = min(max(reserved, INDEX_RESERVE_FIRST_BYTES), INDEX_RESERVE_MAX_STEP_BYTES)
        size = min(mapping.size, -(-max(need, reserved + step) // _PAGE) * _PAGE)
        path = self.timeindex_path if time else self.index_path
        try:
            _reserve(self._time_fd if time else self._index_fd, size)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"reserving {size} bytes of disk for {path}: {exc.strerror}") from exc
        if time:
            c.timeindex_capacity = size
        else:
            c.index_capacity = size
        self._needs_fsync = True

    # ---------------------------------------------------------------- loading
    def load_clean(self) -> bool:
        """Trust the file sizes (clean shutdown / below the recovery point).

        Returns False if the segment's content or indexes disagree, in which case the
        caller recovers it instead.
        """
        if self._index_suspect or self._zero_padded_index():
            return False
        if lib.pl_segment_load_clean(self.c, self.c.log_size) != lib.PL_OK:
            return False
        if lib.pl_segment_check_indexes(self.c) != lib.PL_OK:
            return False
        c = self.c
        c.flushed_size = c.log_size  # trusted means durable
        c.flushed_index_entries = c.index_entries
        c.flushed_timeindex_entries = c.timeindex_entries
        self._load_rolling_timestamp()
        return True

    def _zero_padded_index(self) -> bool:
        """A zero-filled last entry past the first: the file grew without entries."""
        c = self.c
        if c.index_entries > 1 and not any(ffi.buffer(c.index + (c.index_entries - 1) * 8, 8)):
            return True
        return c.timeindex_entries > 1 and not any(ffi.buffer(c.timeindex + (c.timeindex_entries - 1) * 12, 12))

    def recover(self, must_reach: Optional[int] = None) -> int:
        """Scan and CRC-check every batch; cut a torn or corrupt tail; rebuild indexes.

        Returns the number of bytes of damaged tail that were dropped.  Nothing is
        written through a mapping (pages of a crashed or partly reserved segment may
        be holes, and a write fault over a hole on a full disk is SIGBUS): the indexes
        are rebuilt in private memory and written with pwrite, and the tail past the
        valid batches is cut by truncating the .log, which zeroes it and frees its
        blocks.  Raises StorageError if the disk cannot take the rebuilt indexes.

        ``must_reach``: the offset the valid prefix must reach (records below it were
        known durable: the recovery point, or the next segment's base offset).  If the
        scan stops below it, the damage is in data that was flushed, not a torn tail:
        CorruptRecordError naming the file, position and offset is raised and no file
        is changed (Invariant 2: never lose what was below the recovery point; the
        operator decides, with ``pylog verify``).
        """
        c = self.c
        # Scan only up to the first hole: batches are written from byte 0 on, so none
        # lies past it, and reading a hole through a mapping is not safe everywhere
        # (tmpfs allocates a page for it, and SIGBUSes when it is full).
        mapped = int(c.log_capacity)
        first_hole = _first_hole(self._log_fd, mapped)
        c.log_capacity = first_hole
        entries = max(self._max_index_entries, 1, int(c.index_entries), int(c.timeindex_entries))
        # Anonymous memory: pages cost nothing until an entry is written there.
        index_buf = mmap.mmap(-1, entries * _INDEX_BYTES)
        time_buf = mmap.mmap(-1, entries * _TIMEINDEX_BYTES)
        index_ptr = ffi.from_buffer("uint8_t[]", index_buf)
        time_ptr = ffi.from_buffer("uint8_t[]", time_buf)
        try:
            c.index, c.index_capacity = index_ptr, len(index_buf)
            c.timeindex, c.timeindex_capacity = time_ptr, len(time_buf)
            c.log_size = 0
            c.index_entries = 0
            c.timeindex_entries = 0
            truncated = ffi.new("uint64_t *")
            try:
                check(lib.pl_segment_recover(c, 0, truncated), f"recovering segment {self.log_path}")
                if must_reach is not None and c.next_offset < must_reach:  # before any write
                    raise CorruptRecordError(
                        f"segment {self.log_path} is damaged at position {c.log_size} (offset {c.next_offset}): "
                        f"its records up to offset {must_reach} were flushed, so this is bit rot, not a torn "
                        f"write; the log is not opened (run `pylog verify --data-dir {self.dir}`)")
            finally:
                self._point_at_index_maps()
                c.log_capacity = mapped
            dropped = int(truncated[0])
            index_bytes = int(c.index_entries) * _INDEX_BYTES
            time_bytes = int(c.timeindex_entries) * _TIMEINDEX_BYTES
            try:
                with memoryview(index_buf) as view:
                    _pwrite_all(self._index_fd, view[:index_bytes])
                with memoryview(time_buf) as view:
                    _pwrite_all(self._time_fd, view[:time_bytes])
                # Cut what follows the valid data (stale entries, a torn tail) and free
                # its blocks; an active segment's files grow back, sparse, to the maps.
                # (The .log only when there is something to cut: a truncation sets
                # the file's mtime, which the cleaner and retention read.)
                os.ftruncate(self._index_fd, index_bytes)
                os.ftruncate(self._time_fd, time_bytes)
                if self.active:  # garbage, or data past a hole (never scanned)
                    cut_log = dropped > 0 or _data_after(self._log_fd, first_hole)
                else:
                    cut_log = os.fstat(self._log_fd).st_size != int(c.log_size)
                if cut_log:
                    os.ftruncate(self._log_fd, int(c.log_size))
                if self.active:
                    for fd, m in ((self._log_fd, self._log_map), (self._index_fd, self._index_map),
                                  (self._time_fd, self._time_map)):
                        assert m is not None
                        if fd != self._fds[0] or cut_log:
                            os.ftruncate(fd, m.size)
            except OSError as exc:
                raise StorageError(exc.errno or 0,
                                   f"writing the rebuilt indexes of {self.log_path}: {exc.strerror}") from exc
        finally:
            ffi.release(index_ptr)
            ffi.release(time_ptr)
            index_buf.close()
            time_buf.close()
        if not self.active:
            self._remap_inactive_indexes()
        # Index entries past the rebuilt ones may hold stale data: recovery owns the
        # count, and only entries below it are ever read.
        c.flushed_size = 0
        c.flushed_index_entries = 0
        c.flushed_timeindex_entries = 0
        self._needs_fsync = True
        self._load_rolling_timestamp()
        if not self.active:
            self._shrink_files()
        return dropped

    def _point_at_index_maps(self) -> None:
        """Point C at the index file mappings again (after a rebuild elsewhere)."""
        c = self.c
        assert self._index_map is not None and self._time_map is not None
        c.index, c.index_capacity = self._index_map.ptr, self._index_map.size
        c.timeindex, c.timeindex_capacity = self._time_map.ptr, self._time_map.size

    def _remap_inactive_indexes(self) -> None:
        """Map an inactive segment's index files again at their (rebuilt) sizes, so
        that every rebuilt entry lies inside its mapping."""
        try:
            for fd, least in ((self._index_fd, _INDEX_BYTES), (self._time_fd, _TIMEINDEX_BYTES)):
                if os.fstat(fd).st_size < least:
                    os.ftruncate(fd, least)  # mmap cannot map an empty file (a hole: read only)
            index_map = _IndexMapping(self._index_fd, os.fstat(self._index_fd).st_size)
            time_map = _IndexMapping(self._time_fd, os.fstat(self._time_fd).st_size)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"mapping the indexes of {self.log_path}: {exc.strerror}") from exc
        for m in (self._index_map, self._time_map):
            if m is not None:
                m.release()
        self._index_map, self._time_map = index_map, time_map
        self._point_at_index_maps()

    def _load_rolling_timestamp(self) -> None:
        if self.c.log_size >= lib.PL_BATCH_HEADER_BYTES:
            info = ffi.new("pl_batch_info *")
            if lib.pl_batch_parse_header(self.c.log, self.c.log_size, info) == lib.PL_OK:
                self.rolling_timestamp_ms = int(info.max_timestamp)

    # ------------------------------------------------------------------ state
    @property
    def log_size(self) -> int:
        return int(self.c.log_size)

    @property
    def next_offset(self) -> int:
        return int(self.c.next_offset)

    @property
    def max_timestamp(self) -> int:
        return int(self.c.max_timestamp)

    @property
    def size_bytes(self) -> int:
        return int(self.c.log_size)

    @property
    def is_empty(self) -> bool:
        return self.c.log_size == 0

    def view(self, start: int, end: int) -> memoryview:
        """A zero-copy view of log bytes [start, end), which must be <= log_size."""
        assert 0 <= start <= end <= self.c.log_size
        return self._view[start:end]

    def _log_stat(self) -> os.stat_result:
        """The .log's stat, without opening it when it is not open (idle segments)."""
        fd = self._fds[0]
        return os.fstat(fd) if fd >= 0 else os.stat(self._paths[0])

    def modified_ms(self) -> int:
        """The .log file's modification time in ms."""
        return self._log_stat().st_mtime_ns // 1_000_000

    def last_modified_ms(self) -> int:
        """Largest record timestamp, or the file's mtime when none is set (retention.ms)."""
        if self.c.max_timestamp >= 0:
            return int(self.c.max_timestamp)
        return int(self._log_stat().st_mtime * 1000)

    # ------------------------------------------------------------- mutations
    def note_appended(self, max_timestamp_ms: int) -> None:
        if self.rolling_timestamp_ms is None:
            self.rolling_timestamp_ms = max_timestamp_ms

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at or above ``offset`` (a batch boundary in this segment)."""
        c = self.c
        old_size = int(c.log_size)
        if offset < c.next_offset and self.active and -(-old_size // _PAGE) * _PAGE > int(c.log_capacity):
            # The cut is zeroed through the mapping: the pages it touches must have all
            # their blocks (a file shrunk at close has holes after its last byte, and a
            # block can be smaller than a page).
            self._reserve_to(old_size)
        if offset < c.next_offset:
            # Views of the cut batches must keep their bytes: before anything is
            # written, move to a new mapping and detach the old one's pages from the
            # cut onwards.
            position = ffi.new("uint64_t *")
            check(lib.pl_segment_lookup(c, offset, position), f"finding offset {offset} in segment {self.base_offset}")
            self._remap_detaching(int(position[0]), old_size)
        new_size = ffi.new("uint64_t *")
        check(lib.pl_segment_truncate(c, offset, new_size), f"truncating segment {self.base_offset} to {offset}")
        size = int(new_size[0])
        if size < old_size:
            self._zero_log(size, old_size)
            if c.flushed_size > size:
                c.flushed_size = size
            self._needs_fsync = True  # the zeroed cut must reach disk at the next flush
        if c.flushed_index_entries > c.index_entries:
            c.flushed_index_entries = c.index_entries
        if c.flushed_timeindex_entries > c.timeindex_entries:
            c.flushed_timeindex_entries = c.timeindex_entries
        if c.log_size == 0:
            self.rolling_timestamp_ms = None

    def activate(self, segment_bytes: int, index_entries: int) -> None:
        """Let an inactive segment take appends again (after a truncation made it the
        last): size its files for appends, map them whole, reserve disk."""
        if self.active:
            return
        old = (self._log_map, self._index_map, self._time_map)
        assert self._view is not None
        self._view.release()
        try:
            self._map_active(segment_bytes, index_entries)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"reactivating {self.log_path}: {exc.strerror}") from exc
        self._set_reserved_to_data()  # nothing unreserved is writable
        log_map, index_map, time_map = old
        if log_map is not None:
            # a truncation may follow and rewrite any of these bytes: detach under views
            log_map.release(0, int(self.c.log_size))
        for m in (index_map, time_map):
            if m is not None:
                m.release()
        self.active = True
        self._needs_fsync = True

    def _remap_detaching(self, keep_from: int, keep_to: int) -> None:
        """Move to a new .log mapping before bytes from ``keep_from`` on are rewritten:
        views of the old mapping (and of any earlier one) keep their bytes."""
        old = self._log_map
        assert old is not None
        assert self._view is not None
        self._view.release()
        self._detach_superseded(keep_from)
        new = _Mapping(self._log_fd, min(old.size, os.fstat(self._log_fd).st_size))
        if not old.release(keep_from, keep_to):
            self._superseded.append(_Superseded(old, keep_from))
        self._log_map = new
        self._view = memoryview(new.mm)
        self.c.log = new.ptr

    def _detach_superseded(self, start: int) -> None:
        """Before the file is rewritten from ``start`` on: detach that part of every
        superseded mapping still in use; forget the ones no view uses any more."""
        keep = []
        for sup in self._superseded:
            if sup.mapping.release():
                continue
            if start < sup.attached_to:
                sup.mapping.detach(start, sup.attached_to)
                sup.attached_to = start
            if sup.attached_to > 0:
                keep.append(sup)
        self._superseded = keep

    def _zero_log(self, start: int, end: int) -> None:
        """Zero log bytes [start, end) through the current mapping."""
        assert self._log_map is not None
        mm = self._log_map.mm
        pos = start
        while pos < end:
            n = min(end - pos, len(_ZEROS))
            mm[pos : pos + n] = _ZEROS[:n]
            pos += n

    def flush(self) -> None:
        """Make everything appended durable (msync of the new ranges; fsync if sizes changed)."""
        check(lib.pl_segment_flush(self.c), f"flushing segment {self.log_path}")
        if self._needs_fsync:
            try:
                for fd in (self._log_fd, self._index_fd, self._time_fd):
                    os.fsync(fd)
            except OSError as exc:
                raise StorageError(exc.errno or 0, f"fsync of {self.log_path}: {exc.strerror}") from exc
            self._needs_fsync = False
            if not self.active:
                self.release_fds()  # an inactive segment needs no descriptor

    @property
    def unflushed(self) -> bool:
        c = self.c
        return (self._needs_fsync or c.flushed_size != c.log_size
                or c.flushed_index_entries != c.index_entries
                or c.flushed_timeindex_entries != c.timeindex_entries)

    def make_inactive(self) -> None:
        """Shrink the files to their content (on roll): the segment takes no more appends."""
        if not self.active:
            return
        self._shrink_files()
        self.active = False

    def _shrink_files(self) -> None:
        c = self.c
        try:
            if os.fstat(self._log_fd).st_size != int(c.log_size):  # keep mtime when unchanged
                os.ftruncate(self._log_fd, max(int(c.log_size), 0))
            os.ftruncate(self._index_fd, int(c.index_entries) * 8)
            os.ftruncate(self._time_fd, int(c.timeindex_entries) * 12)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"shrinking {self.log_path}: {exc.strerror}") from exc
        # Capacities now exceed the files; C never touches bytes past the counts, and
        # inactive segments take no appends, so the mappings stay as they are.
        self._needs_fsync = True

    def close(self, *, shrink: bool = True) -> None:
        """Flush nothing; shrink the files (if active), unmap and close them.

        Views that are still alive keep their bytes: their pages are detached, since
        a later opener may rewrite this file.
        """
        if self.closed:
            return
        self.closed = True
        try:
            if shrink and self.active:
                self._shrink_files()
                self.active = False
        finally:
            self._drop_maps(keep_views=True)
            self._close_files()

    def delete(self) -> None:
        """Unmap, close and unlink the files.  Views stay valid (the inode lives on)."""
        if not self.closed:
            self.closed = True
            self._drop_maps(keep_views=False)
            self._close_files()
        for path in (self.log_path, self.index_path, self.timeindex_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(exc.errno or 0, f"deleting {path}: {exc.strerror}") from exc

    def _drop_maps(self, *, keep_views: bool) -> None:
        if keep_views:
            self._detach_superseded(0)
        self._superseded = []
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._log_map is not None:
            size = int(self.c.log_size)
            self._log_map.release(0 if keep_views else None, size)
            self._log_map = None
        for m in (self._index_map, self._time_map):
            if m is not None:
                m.release()
        self._index_map = self._time_map = None
        c = self.c
        c.log = c.index = c.timeindex = ffi.NULL
        c.log_capacity = c.index_capacity = c.timeindex_capacity = 0

    def _close_files(self) -> None:
        self.c.log_fd_plus_one = 0
        for i, fd in enumerate(self._fds):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                self._fds[i] = -1

    def __repr__(self) -> str:
        return (f"LogSegment(base_offset={self.base_offset}, next_offset={self.next_offset}, "
                f"size_bytes={self.size_bytes}, active={self.active})")
