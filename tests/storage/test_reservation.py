"""Disk reservation of active segments (LogConfig.preallocate, Kafka's ``preallocate``).

Without preallocate a new segment's .log is mapped at segment.bytes but nothing is
reserved until the first append, which reserves min(segment.bytes, 1 MiB); the
reservation grows in steps as the segment fills, so C never writes to an unreserved
page (which would SIGBUS on a full disk).  The indexes are sparse too and reserved a
page at a time, doubling.  With preallocate the whole segment is reserved up front.
A reservation that fails raises StorageError and writes nothing.
"""
from __future__ import annotations

import errno
import os

import pytest

import pylog.storage.segment as segment_mod
from pylog.errors import InvalidConfig, StorageError
from pylog.storage import Log, LogConfig
from pylog.storage.segment import RESERVE_FIRST_BYTES
from tests.storage.conftest import crash_copy
from tests.storage.helpers import SMALL_INDEX, FakeClock

MiB = 1 << 20


def open_log(path, **kw):
    kw.setdefault("segment_index_bytes", SMALL_INDEX)
    kw.setdefault("retention_ms", -1)
    return Log.open(path, clock=FakeClock(), **kw)


def allocated(path) -> int:
    """Bytes of disk the file holds (blocks reserved or written)."""
    return os.stat(path).st_blocks * 512


def active_log_path(log):
    return log.segments[-1].log_path


def test_config_name_default_and_validation():
    assert LogConfig().preallocate is False
    assert LogConfig.from_settings({"preallocate": True}).preallocate is True
    with pytest.raises(InvalidConfig, match="preallocate"):
        LogConfig(preallocate="yes")
    with pytest.raises(InvalidConfig, match="preallocate"):
        LogConfig(preallocate=1)


def test_new_segment_reserves_nothing_then_one_step_not_segment_bytes(tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=256 * MiB, segment_index_bytes=10 * MiB)
    try:
        seg = log.segments[-1]
        assert seg.reserved_bytes == 0
        assert os.path.getsize(seg.log_path) == 256 * MiB  # mapped whole (sparse)
        assert os.path.getsize(seg.index_path) == 10 * MiB  # sparse as well
        for path in (seg.log_path, seg.index_path, seg.timeindex_path):
            assert allocated(path) == 0
        log.append([b"a"])
        assert seg.reserved_bytes == RESERVE_FIRST_BYTES
        assert RESERVE_FIRST_BYTES <= allocated(seg.log_path) < 8 * MiB
        for path in (seg.index_path, seg.timeindex_path):
            assert 0 < allocated(path) <= 64 * 1024  # a page, not segment.index.bytes
    finally:
        log.close()


def test_small_segment_reserves_all_of_it(tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=64 * 1024)
    try:
        log.append([b"a"])
        assert log.segments[-1].reserved_bytes == 64 * 1024
    finally:
        log.close()


def test_reservation_grows_in_doubling_steps_and_always_covers_the_data(tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=64 * MiB, segment_index_bytes=1 << 16,
                   index_interval_bytes=1 << 20)
    value = b"x" * 60_000
    seen = []
    try:
        for i in range(200):  # ~12 MiB
            log.append([value] * 2)
            seg = log.segments[-1]
            assert seg.log_size <= seg.reserved_bytes <= 64 * MiB
            assert allocated(seg.log_path) >= seg.reserved_bytes
            if not seen or seen[-1] != seg.reserved_bytes:
                seen.append(seg.reserved_bytes)
        assert len(log.segments) == 1
        assert seen[:4] == [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB]
        for a, b in zip(seen, seen[1:]):
            assert b == 2 * a  # below 64 MiB each step doubles the reservation
    finally:
        log.close()
    with Log.open(tmp_path / "p", segment_index_bytes=1 << 16) as log:
        assert next(iter(log.records())).value == value


def test_steps_stop_growing_past_64_mib_per_step(tmp_path, monkeypatch):
    """Steps are capped: from a 64 MiB reservation the next one is 128 MiB, then 192."""
    calls = []
    real = os.posix_fallocate

    log = open_log(tmp_path / "p", segment_bytes=512 * MiB)
    seg = log.segments[-1]

    def spy(fd, off, size):
        if fd == seg._log_fd:  # the .log's steps (not the indexes')
            calls.append(size)
        return real(fd, off, min(size, 4 * MiB))  # keep the test's disk use small

    try:
        monkeypatch.setattr(segment_mod.os, "posix_fallocate", spy)
        seg.c.log_capacity = 64 * MiB  # pretend the segment already reserved 64 MiB
        seg.c.log_size = 64 * MiB - 10
        seg.ensure_room(100)
        seg.c.log_size = 128 * MiB - 10
        seg.ensure_room(100)
        assert calls == [128 * MiB, 192 * MiB]
        seg.c.log_size = 0
        seg.c.log_capacity = RESERVE_FIRST_BYTES
    finally:
        monkeypatch.undo()
        log.close()


def test_preallocate_reserves_the_whole_segment(tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=32 * MiB, preallocate=True)
    try:
        seg = log.segments[-1]
        assert seg.reserved_bytes == 32 * MiB
        assert allocated(seg.log_path) >= 32 * MiB
        log.append([b"a"])
        log.roll()
        assert allocated(log.segments[-1].log_path) >= 32 * MiB
    finally:
        log.close()


def test_full_disk_raises_storage_error_and_writes_nothing(tmp_path, monkeypatch):
    log = open_log(tmp_path / "p", segment_bytes=64 * MiB)
    value = b"y" * 100_000
    while log.segments[-1].log_size + 2 * len(value) < RESERVE_FIRST_BYTES:
        log.append([value])
    before_end = log.log_end_offset
    before = [r.value for r in log.records()]
    size = log.segments[-1].log_size

    def full(fd, off, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_mod.os, "posix_fallocate", full)
    with pytest.raises(StorageError, match="reserving") as info:
        for _ in range(5):
            log.append([value])
    assert info.value.errno == errno.ENOSPC
    # everything that fitted the reservation went in; the failing append wrote nothing
    seg = log.segments[-1]
    assert seg.log_size + len(value) > seg.reserved_bytes
    got_end = log.log_end_offset
    assert got_end >= before_end
    assert [r.value for r in log.records()] == before + [value] * (got_end - before_end)
    assert seg.log_size >= size
    monkeypatch.undo()
    assert log.append([b"after"]) == got_end
    log.close()
    log = open_log(tmp_path / "p", segment_bytes=64 * MiB)
    assert [r.value for r in log.records()][-2:] == [value, b"after"]
    log.close()


def test_close_shrinks_and_reopen_reserves_past_the_data(tmp_path):
    path = tmp_path / "p"
    log = open_log(path, segment_bytes=8 * MiB)
    for i in range(30):
        log.append([b"z" * 100_000])
    size = log.segments[-1].log_size
    log_path = active_log_path(log)
    log.close()
    assert os.path.getsize(log_path) == size
    log = open_log(path, segment_bytes=8 * MiB)
    seg = log.segments[-1]
    assert seg.log_size == size and size <= seg.reserved_bytes < size + 2 * MiB
    assert allocated(seg.log_path) >= seg.reserved_bytes
    log.append([b"more"])
    log.close()


def test_crash_recovery_scans_the_whole_mapping_then_reserves(tmp_path):
    path = tmp_path / "p"
    log = open_log(path, segment_bytes=4 * MiB)
    values = [b"%d" % i * 1000 for i in range(3000)]
    for v in values:
        log.append([v])
    n_segments = len(log.segments)
    crash_copy(path, tmp_path / "c")
    log.close()
    log = open_log(tmp_path / "c", segment_bytes=4 * MiB)
    try:
        assert [r.value for r in log.records()] == values
        assert len(log.segments) == n_segments
        seg = log.segments[-1]
        assert seg.log_size <= seg.reserved_bytes <= 4 * MiB
        log.append([b"next"])
    finally:
        log.close()


def test_truncation_into_an_inactive_segment_reserves_again(tmp_path):
    log = open_log(tmp_path / "p", segment_bytes=64 * 1024)
    for i in range(400):
        log.append([b"q" * 500])
    assert len(log.segments) > 2
    log.truncate_to(10)
    seg = log.segments[-1]
    assert seg.active and seg.log_size <= seg.reserved_bytes <= 64 * 1024
    log.append([b"r" * 500] * 10)
    assert log.log_end_offset == 20
    log.close()
