"""The CRC32C check of Log.read_arrays / iter_arrays on batches as long as the bench's
(1000 records of 100 bytes, about 110 KB: the hybrid and fold paths of crc32c.c; the
decode checks a batch right after its record walk, issue 12 point 5).

A bit flipped in a batch is caught by every read, also after earlier reads of the same
bytes succeeded (nothing remembers "already verified"): the file is changed under the
open log, through its shared mapping, read, then restored and read again."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import List, Tuple

import pytest

from pylog import Log
from pylog.errors import CorruptRecordError
from pylog.records import build_batch
from tests.storage.helpers import T0, FakeClock

BATCHES = 4
PER_BATCH = 1000
SIZE = 100


def value(i: int) -> bytes:
    return (b"value-%08d-" % i).ljust(SIZE, b"x")


@pytest.fixture
def log(tmp_path):
    """An open log of BATCHES batches of PER_BATCH records, flushed; (log, segment
    file, [(batch position, size, base offset)])."""
    lg = Log.open(tmp_path / "t-0", clock=FakeClock(T0), segment_bytes=1 << 26)
    try:
        for b in range(BATCHES):
            first = b * PER_BATCH
            lg.append_batches(build_batch([value(i) for i in range(first, first + PER_BATCH)],
                                          base_offset=first, base_timestamp=T0))
        lg.flush()
        pos, where = 0, []
        for batch in lg.read(0, max_bytes=1 << 30, check_crcs=False):
            where.append((pos, batch.size_bytes, batch.base_offset))
            pos += batch.size_bytes
        assert len(where) == BATCHES and where[0][1] > 100_000
        seg = lg.segments[0].log_path
        yield lg, Path(seg), where
    finally:
        lg.close()


def flip(path: Path, at: int, bit: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, at)[0]
        assert os.pwrite(fd, bytes([old ^ bit]), at) == 1
    finally:
        os.close(fd)


def assert_all_good(lg: Log) -> None:
    a = lg.read_arrays(0, max_bytes=1 << 30)
    assert len(a) == BATCHES * PER_BATCH
    assert a.values()[::997] == [value(i) for i in range(0, BATCHES * PER_BATCH, 997)]
    assert sum(len(c) for c in lg.iter_arrays(0)) == BATCHES * PER_BATCH


def test_a_flipped_bit_in_a_record_is_caught_by_every_read(log):
    lg, seg, where = log
    rng = random.Random(2026)
    assert_all_good(lg)
    for _ in range(30):
        pos, size, base = where[rng.randrange(BATCHES)]
        at, bit = pos + rng.randrange(61, size), 1 << rng.randrange(8)  # the records section
        flip(seg, at, bit)
        try:
            with pytest.raises(CorruptRecordError) as ei:
                lg.read_arrays(0, max_bytes=1 << 30)
            assert "CRC32C mismatch" in str(ei.value) and f"offset {base}" in str(ei.value), str(ei.value)
            with pytest.raises(CorruptRecordError, match="CRC32C mismatch"):
                for _chunk in lg.iter_arrays(0):
                    pass
            with pytest.raises(CorruptRecordError, match="CRC32C mismatch"):
                lg.read_arrays(base + rng.randrange(PER_BATCH))
        finally:
            flip(seg, at, bit)
        assert_all_good(lg)  # restored: read in full again, checked


def test_a_flipped_bit_in_a_checked_header_field_is_caught(log):
    """Bytes 21..60 (attributes .. recordCount) are CRC-covered too: a flip there is
    reported as corruption, whatever field it lands in, and never returns records."""
    lg, seg, where = log
    rng = random.Random(7)
    for _ in range(40):
        pos, size, base = where[rng.randrange(BATCHES)]
        at, bit = pos + rng.randrange(21, 61), 1 << rng.randrange(8)
        flip(seg, at, bit)
        try:
            with pytest.raises(CorruptRecordError):
                lg.read_arrays(0, max_bytes=1 << 30)
            with pytest.raises(CorruptRecordError):
                for _chunk in lg.iter_arrays(0):
                    pass
        finally:
            flip(seg, at, bit)
    assert_all_good(lg)


def test_only_batches_before_the_damage_are_returned(log):
    """iter_arrays yields the chunks wholly before the damaged batch (each checked) and
    then raises; no record of the damaged batch is handed out."""
    lg, seg, where = log
    pos, size, base = where[2]
    flip(seg, pos + size - 3, 0x10)
    seen: List[Tuple[int, int]] = []
    with pytest.raises(CorruptRecordError, match="CRC32C mismatch"):
        for chunk in lg.iter_arrays(0, max_bytes=1):  # one batch a chunk
            seen.append((int(chunk.offsets[0]), int(chunk.offsets[-1])))
    assert seen == [(0, PER_BATCH - 1), (PER_BATCH, 2 * PER_BATCH - 1)]
