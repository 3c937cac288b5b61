"""Helpers shared by the Log tests: a fake clock, directory snapshots (what a crash
leaves behind), a batch walker over raw segment bytes, and a checker that compares a
Log with the records a test expects it to hold.

Everything here reads files and the public Log API only; nothing reaches into the
implementation's private state.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from pylog import Log

#: The 61-byte v2 batch header (docs/architecture.md / csrc/pylog.h).
BATCH_HEADER = struct.Struct(">qiiBIhiqqqhii")
HEADER_BYTES = 61
LOCK_FILE = ".lock"
CLEAN_MARKER = ".pylog_cleanshutdown"

#: Small per-segment index files: crash tests copy whole directories, and the default
#: segment.index.bytes preallocates 10 MiB + 15 MiB per active segment.
SMALL_INDEX = 4096
#: Segment size of open_log (Kafka's 1 GiB unless a test asks): 16 MiB is far above what
#: the tests write into one segment unless they set segment_bytes themselves.
SMALL_SEGMENT = 16 << 20
#: Record timestamps of append_derived are T0 + offset; FakeClock starts later.
T0 = 1_700_000_000_000


class FakeClock:
    """A virtual clock in ms (segment.ms / retention.ms / flush.ms, group session tests);
    only the test's own thread advances it, others just read it."""

    def __init__(self, now: int = T0 + 10_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


# ------------------------------------------------------------------ directories
def open_log(path: Path, clock: Optional[FakeClock] = None, **settings) -> Log:
    """Log.open with a fake clock (so that the T0-based timestamps of append_derived
    are recent: no segment.ms roll, no retention.ms deletion unless a test asks) and
    small index and segment files (a test that reads a log's files whole, as
    snapshot_dir does, reads what the segment reserves: 1 GiB by default)."""
    settings.setdefault("segment_index_bytes", SMALL_INDEX)
    settings.setdefault("segment_bytes", SMALL_SEGMENT)
    return Log.open(path, clock=clock or FakeClock(), **settings)


def snapshot_dir(path: Path, *, skip_lock: bool = False) -> Dict[str, bytes]:
    """Every regular file of ``path`` (name -> bytes).  Reading the files of an open log
    gives what a process kill leaves: mmap writes are in the page cache."""
    out: Dict[str, bytes] = {}
    for name in sorted(os.listdir(path)):
        if skip_lock and name == LOCK_FILE:
            continue
        p = Path(path) / name
        if p.is_file():
            out[name] = p.read_bytes()
    return out


def crash_snapshot(path: Path) -> Dict[str, bytes]:
    """The files a crash of the process holding the open log at ``path`` leaves."""
    files = snapshot_dir(path, skip_lock=True)
    assert CLEAN_MARKER not in files, "an open log must not carry the clean-shutdown marker"
    return files


def write_dir(files: Dict[str, bytes], path: Path) -> Path:
    """Create ``path`` holding exactly ``files``."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def segment_names(files: Iterable[str], suffix: str = ".log") -> List[str]:
    return sorted(n for n in files if n.endswith(suffix) and len(n) == 20 + len(suffix)
                  and n[:20].isdigit())


# ---------------------------------------------------------------------- batches
class RawBatch(NamedTuple):
    pos: int  #: byte position in the .log file
    size: int  #: 12 + batchLength
    base_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int


def walk_batches(data: bytes) -> List[RawBatch]:
    """The batches at the start of a .log file's bytes, by header walk (no CRC check);
    stops at zeros, a bad length/magic or a batch running past the end."""
    out: List[RawBatch] = []
    pos = 0
    while len(data) - pos >= HEADER_BYTES:
        h = BATCH_HEADER.unpack_from(data, pos)
        base, length, magic, delta = h[0], h[1], h[3], h[6]
        if length < 49 or magic != 2 or pos + 12 + length > len(data) or delta < 0:
            break
        out.append(RawBatch(pos, 12 + length, base, base + delta, h[8], h[12]))
        pos += 12 + length
    return out


def value_for(offset: int, salt: bytes = b"") -> bytes:
    """A value derivable from its offset (and of varying length)."""
    return b"v%d|" % offset + salt + b"#" * (offset * 7 % 31)


def key_for(offset: int) -> Optional[bytes]:
    return None if offset % 3 == 0 else b"k%d" % (offset % 5)


class Rec(NamedTuple):
    """What a test expects at one offset."""

    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    timestamp: int
    headers: Tuple = ()


def append_derived(log: Log, n: int, *, salt: bytes = b"", ts: Optional[int] = None) -> List[Rec]:
    """Append one batch of ``n`` records whose values derive from their offsets."""
    first = log.log_end_offset
    offs = range(first, first + n)
    tss = [ts if ts is not None else T0 + o for o in offs]
    got = log.append([value_for(o, salt) for o in offs], keys=[key_for(o) for o in offs], timestamps=tss)
    assert got == first
    return [Rec(o, key_for(o), value_for(o, salt), t) for o, t in zip(offs, tss)]


def as_recs(records: Iterable) -> List[Rec]:
    return [Rec(r.offset, r.key, r.value, r.timestamp, tuple(r.headers)) for r in records]


def check_log(log: Log, expected: Sequence[Rec], *, start: Optional[int] = None,
              every_offset: bool = False) -> None:
    """Assert ``log`` holds exactly ``expected`` (the records from its log start on):
    offsets dense, records() equal, every batch read() returns CRC-valid and equal."""
    exp = list(expected)
    if start is None:
        start = exp[0].offset if exp else log.log_start_offset
    end = exp[-1].offset + 1 if exp else start
    assert log.log_start_offset == start, (log.log_start_offset, start)
    assert log.log_end_offset == end, (log.log_end_offset, end)
    assert [r.offset for r in exp] == list(range(start, end)), "expected records must be dense"
    assert as_recs(log.records()) == exp
    by_offset = {r.offset: r for r in exp}
    # Walk the whole log batch by batch through read(): every batch valid, dense.
    pos = start
    while pos < end:
        batches = log.read(pos, max_bytes=1 << 20)
        assert batches, f"read({pos}) returned nothing below the log end {end}"
        assert batches[0].base_offset <= pos <= batches[0].last_offset
        for b in batches:
            b.validate()
            recs = list(b.records())
            assert [r.offset for r in recs] == list(range(b.base_offset, b.last_offset + 1))
            for r in recs:
                if r.offset >= start:
                    assert as_recs([r])[0] == by_offset[r.offset]
            assert b.base_offset <= pos, "gap between batches"
            pos = b.last_offset + 1
    if every_offset:
        for o in range(start, end):
            b = log.read(o, max_bytes=0)
            assert len(b) == 1 and b[0].base_offset <= o <= b[0].last_offset
            assert next(iter(log.records(o))).offset == o


def check_indexes_on_disk(path: Path, index_interval_bytes: Optional[int] = None) -> None:
    """Every closed segment's .index / .timeindex entries are well-formed against its
    .log (the on-disk format of csrc/pylog.h): sorted, at batch starts with matching
    base offsets; time entries increasing and naming real batches.  With
    ``index_interval_bytes``, the offset index must also be as dense as the setting
    asks (one entry per index.interval.bytes of log, give or take one batch)."""
    for name in segment_names(os.listdir(path)):
        base = int(name[:20])
        data = (path / name).read_bytes()
        batches = walk_batches(data)
        starts = {b.pos: b for b in batches}
        by_base = {b.base_offset: b for b in batches}
        idx = (path / (name[:20] + ".index")).read_bytes()
        assert len(idx) % 8 == 0, f"{name}: .index size {len(idx)} is not a multiple of 8"
        prev = (-1, -1)
        for i in range(0, len(idx), 8):
            rel, pos = struct.unpack_from(">II", idx, i)
            assert (rel, pos) > prev and rel > prev[0] and pos > prev[1], f"{name}: index not sorted"
            prev = (rel, pos)
            assert pos in starts and starts[pos].base_offset == base + rel, \
                f"{name}: index entry ({rel}, {pos}) is not at a batch of offset {base + rel}"
        if index_interval_bytes is not None and batches:
            positions = [struct.unpack_from(">II", idx, i)[1] for i in range(0, len(idx), 8)]
            biggest = max(b.size for b in batches)
            assert positions and positions[0] == 0, f"{name}: no index entry for the first batch"
            for a, b in zip(positions, positions[1:] + [len(data)]):
                assert b - a <= index_interval_bytes + biggest, \
                    f"{name}: {b - a} bytes of log between index entries at {a} and {b} " \
                    f"(index.interval.bytes={index_interval_bytes}): the index was not rebuilt"
        tidx = (path / (name[:20] + ".timeindex")).read_bytes()
        assert len(tidx) % 12 == 0, f"{name}: .timeindex size {len(tidx)} is not a multiple of 12"
        prev_ts = None
        for i in range(0, len(tidx), 12):
            ts, rel = struct.unpack_from(">qI", tidx, i)
            assert prev_ts is None or ts > prev_ts, f"{name}: timeindex not increasing"
            prev_ts = ts
            assert base + rel in by_base, f"{name}: timeindex names offset {base + rel}, no batch starts there"
            b = by_base[base + rel]
            assert b.max_timestamp == ts, f"{name}: timeindex says {ts} for a batch whose max is {b.max_timestamp}"
            assert all(x.max_timestamp < ts for x in batches if x.pos < b.pos), \
                f"{name}: timeindex entry {ts} is not where the max timestamp was first reached"


def expected_offset_for_timestamp(expected: Sequence[Rec], ts: int) -> Optional[int]:
    for r in expected:
        if r.timestamp >= ts:
            return r.offset
    return None
