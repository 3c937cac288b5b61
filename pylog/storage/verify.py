"""Scrub a data directory: every batch's structure and CRC32C, every index entry.

:func:`verify_path` backs ``pylog verify --data-dir D``.  ``D`` is a broker data
directory (its partition directories are checked) or one partition's directory.  It
reads the files as they are, read-only, takes no lock and changes nothing, so it can
run beside a broker (it then sees the active segments as they were a moment ago:
preallocated zeros past their end are not damage).

What is checked, per segment ``<base>.log``:

* every batch from position 0: header (magic, batchLength within the file), CRC32C,
  records (count, lengths, offset deltas, timestamps: ``pl_batch_validate``), and that
  its baseOffset continues the previous batch (the segment's base offset for the
  first; baseOffset is outside the CRC);
* partitionLeaderEpoch (outside the CRC, not part of the records): -1 or more, and
  never below an earlier batch's (epochs only grow in a log; a raised epoch in the
  log's very last batch has nothing to contradict it);
* what follows the last batch: zeros (preallocation) are fine; other bytes are a torn
  write after a crash, which recovery cuts (a note), but damage in a log that was shut
  down cleanly;
* ``.index``: entries in increasing order in both fields, each pointing at the start
  of a batch whose baseOffset is the entry's offset;
* ``.timeindex``: timestamps increasing, each offset the baseOffset of a batch whose
  maxTimestamp is the entry's timestamp;
* across segments: each segment starts where the previous one ended.

A damaged batch header ends the walk of its segment (the next batch cannot be found);
a batch that only fails its CRC or record checks is reported and the walk goes on.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from pylog._native import ffi, lib, strerror
from pylog.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, parse_segment_file_name

__all__ = ["Damage", "VerifyReport", "verify_path", "partition_dirs"]

_HEADER = struct.Struct(">qiiBIhiqqqhii")
_HEADER_BYTES = 61
_INDEX_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")
_CLEAN_SHUTDOWN_FILE = ".pylog_cleanshutdown"
#: Damage lines printed per index file before the rest are only counted.
_MAX_INDEX_LINES = 10


@dataclass
class Damage:
    """One problem found: the file, where in it, and what."""

    path: Path
    position: Optional[int]  #: byte position in the file, None for the whole file
    offset: Optional[int]  #: the batch's (or entry's) offset, when known
    what: str

    def __str__(self) -> str:
        where = [] if self.position is None else [f"position {self.position}"]
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{self.path}: {', '.join(where) + ': ' if where else ''}{self.what}"


@dataclass
class VerifyReport:
    """What a scrub looked at and found."""

    partitions: int = 0
    segments: int = 0
    batches: int = 0
    records: int = 0
    bytes: int = 0
    damage: List[Damage] = field(default_factory=list)
    notes: List[Damage] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.damage


def partition_dirs(root: Path) -> List[Path]:
    """The partition directories under ``root``: ``root`` itself if it holds segment
    files, else its subdirectories that do (sorted)."""
    if _has_segments(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _has_segments(p))


def _has_segments(d: Path) -> bool:
    try:
        return any(parse_segment_file_name(n) is not None for n in os.listdir(d))
    except OSError:
        return False


def _read_file(path: Path) -> bytes:
    """The file's bytes (a read-only mapping for big ones; b"" if it is missing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        if size < (1 << 20):
            return os.read(fd, size)
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)  # type: ignore[return-value]
    finally:
        os.close(fd)


def verify_path(root: "os.PathLike[str] | str", progress: Optional[Callable[[str], None]] = None) -> VerifyReport:
    """Scrub every partition directory under ``root`` (see the module docstring).

    Raises FileNotFoundError / NotADirectoryError for a bad ``root``, and ValueError if
    it holds no segment file at all."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    dirs = partition_dirs(root)
    if not dirs:
        raise ValueError(f"{root} holds no partition directory (no <base offset>.log segment file)")
    report = VerifyReport()
    for d in dirs:
        if progress is not None:
            progress(f"verifying {d}")
        _verify_partition(d, report)
    return report


def _verify_partition(d: Path, report: VerifyReport) -> None:
    report.partitions += 1
    # the log's own marker, or its broker's, one per data directory (Broker.close)
    clean = (d / _CLEAN_SHUTDOWN_FILE).exists() or (d.parent / _CLEAN_SHUTDOWN_FILE).exists()
    bases = sorted(b for b in (parse_segment_file_name(n) for n in os.listdir(d)) if b is not None)
    prev_end: Optional[int] = None
    epoch = [-1]  #: the largest partitionLeaderEpoch so far, carried across segments
    for base in bases:
        report.segments += 1
        name = f"{base:020d}"
        end = _verify_segment(d / (name + LOG_SUFFIX), d / (name + INDEX_SUFFIX),
                              d / (name + TIMEINDEX_SUFFIX), base, clean, report, epoch)
        if prev_end is not None and prev_end != base:
            report.damage.append(Damage(d / (name + LOG_SUFFIX), None, base,
                                        f"segment starts at offset {base} but the previous one ends at "
                                        f"offset {prev_end}"))
        prev_end = end


def _batches(data, base: int, path: Path, clean: bool, report: VerifyReport,
             epoch: List[int]) -> Iterator[tuple]:
    """(position, header tuple) of each batch whose header can be walked; damage found
    on the way goes into ``report``."""
    size = len(data)
    info = ffi.new("pl_batch_info *")
    expect = base
    pos = 0
    with ffi.from_buffer("uint8_t[]", data) as buf:
        while size - pos >= _HEADER_BYTES:
            h = _HEADER.unpack_from(data, pos)
            if not any(data[pos:pos + _HEADER_BYTES]):
                break  # preallocated zeros: the end of the batches
            total = 12 + h[1]
            if h[3] != 2 or h[1] < 49 or total > size - pos:
                report.damage.append(Damage(
                    path, pos, h[0], f"not a valid batch header (magic {h[3]}, batchLength {h[1]}, "
                    f"{size - pos} bytes left); the rest of the segment ({size - pos} bytes) is not checked"))
                return
            rc = lib.pl_batch_validate(buf + pos, total, info)
            if rc == lib.PL_E_CRC:
                crc = lib.pl_crc32c(0, buf + pos + 21, total - 21)
                report.damage.append(Damage(path, pos, h[0], f"CRC32C mismatch: stored 0x{h[4]:08x}, "
                                                             f"computed 0x{crc:08x}"))
            elif rc != lib.PL_OK:
                report.damage.append(Damage(path, pos, h[0], f"bad batch: {strerror(rc)}"))
            if h[0] != expect:
                report.damage.append(Damage(path, pos, h[0], f"baseOffset {h[0]} does not continue the "
                                                             f"previous batch (expected {expect})"))
            if h[2] < -1 or h[2] < epoch[0]:
                report.damage.append(Damage(path, pos, h[0], f"partitionLeaderEpoch {h[2]} is "
                                            + ("below -1" if h[2] < -1 else f"below an earlier batch's {epoch[0]}")))
            epoch[0] = max(epoch[0], h[2])
            report.batches += 1
            report.records += max(h[12], 0)
            report.bytes += total
            yield pos, h
            expect = h[0] + h[6] + 1
            pos += total
        rest = data[pos:]
        if any(rest):
            what = (f"{size - pos} bytes after the last batch are not a batch (nor zeros)")
            if clean:
                report.damage.append(Damage(path, pos, expect, what))
            else:
                report.notes.append(Damage(path, pos, expect, what + ": a torn write, which recovery cuts"))


def _verify_segment(log_path: Path, index_path: Path, time_path: Path, base: int, clean: bool,
                    report: VerifyReport, epoch: List[int]) -> int:
    """Checks one segment; returns the offset after its last batch."""
    data = _read_file(log_path)
    starts: Dict[int, int] = {}  #: position -> baseOffset
    bases: Dict[int, int] = {}  #: baseOffset -> maxTimestamp
    end = base
    try:
        for pos, h in _batches(data, base, log_path, clean, report, epoch):
            starts[pos] = h[0]
            bases[h[0]] = h[8]
            end = h[0] + h[6] + 1
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    _verify_index(index_path, base, starts, report)
    _verify_timeindex(time_path, base, bases, report)
    return end


def _entries(data, entry: struct.Struct) -> Iterator[tuple]:
    """Entries in use: up to a whole-zero entry past the first (preallocation)."""
    n = len(data) // entry.size
    for i in range(n):
        at = i * entry.size
        if i > 0 and not any(data[at:at + entry.size]):
            return
        yield i, at, entry.unpack_from(data, at)


def _verify_index(path: Path, base: int, starts: Dict[int, int], report: VerifyReport) -> None:
    data = _read_file(path)
    found: List[Damage] = []
    try:
        if len(data) % _INDEX_ENTRY.size:
            found.append(Damage(path, None, None, f"size {len(data)} is not a multiple of "
                                                  f"{_INDEX_ENTRY.size}"))
        prev = None
        for i, at, (rel, pos) in _entries(data, _INDEX_ENTRY):
            if i == 0 and rel == 0 and pos == 0 and not starts:
                break  # an empty segment's (preallocated) index
            if prev is not None and (rel <= prev[0] or pos <= prev[1]):
                found.append(Damage(path, at, base + rel, f"entry {i} (offset {base + rel}, position {pos}) "
                                                          f"is not above entry {i - 1}"))
            if starts.get(pos) != base + rel:
                got = starts.get(pos)
                found.append(Damage(path, at, base + rel, f"entry {i} points at position {pos}, which is "
                                    + ("not the start of a batch" if got is None
                                       else f"the batch at offset {got}, not {base + rel}")))
            prev = (rel, pos)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    _add_capped(found, report)


def _verify_timeindex(path: Path, base: int, bases: Dict[int, int], report: VerifyReport) -> None:
    data = _read_file(path)
    found: List[Damage] = []
    try:
        if len(data) % _TIME_ENTRY.size:
            found.append(Damage(path, None, None, f"size {len(data)} is not a multiple of "
                                                  f"{_TIME_ENTRY.size}"))
        prev = None
        for i, at, (ts, rel) in _entries(data, _TIME_ENTRY):
            if i == 0 and ts == 0 and rel == 0 and not bases:
                break
            if prev is not None and (ts <= prev[0] or rel < prev[1]):
                found.append(Damage(path, at, base + rel, f"entry {i} (timestamp {ts}, offset {base + rel}) "
                                                          f"is not above entry {i - 1}"))
            if base + rel not in bases:
                found.append(Damage(path, at, base + rel, f"entry {i}: offset {base + rel} is not the "
                                                          f"baseOffset of a batch"))
            elif bases[base + rel] != ts:
                found.append(Damage(path, at, base + rel, f"entry {i}: timestamp {ts}, but the batch at "
                                                          f"offset {base + rel} has maxTimestamp "
                                                          f"{bases[base + rel]}"))
            prev = (ts, rel)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    _add_capped(found, report)


def _add_capped(found: List[Damage], report: VerifyReport) -> None:
    report.damage.extend(found[:_MAX_INDEX_LINES])
    if len(found) > _MAX_INDEX_LINES:
        report.damage.append(Damage(found[0].path, None, None,
                                    f"{len(found) - _MAX_INDEX_LINES} more bad entries"))
