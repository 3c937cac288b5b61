"""Process kill and power-loss emulation (pylog.storage.faults): after either, Log.open
recovers a valid prefix that keeps everything below the recovery point, over many
seeds; the damage is reproducible from the seed; misuse is refused."""
from __future__ import annotations

import os
import random

import pytest

from pylog import Log
from pylog.errors import InvalidArgument, LogClosed, StorageError
from pylog.storage.faults import kill_process, power_loss, power_loss_log
from tests.storage.helpers import FakeClock, crash_snapshot, snapshot_dir, walk_batches

SETTINGS = dict(segment_index_bytes=4096, retention_ms=-1, segment_bytes=1024)


def value(offset: int) -> bytes:
    return b"r%d|" % offset + b"x" * (offset * 13 % 41)


def build(path, rng: random.Random, **settings):
    """A log with random batches, flushes, rolls, truncations and a moved log start;
    values derive from offsets.  Returns (log, views of some batches with their bytes)."""
    cfg = dict(SETTINGS, segment_bytes=rng.choice((1024, 2048, 8192)),
               index_interval_bytes=rng.choice((64, 4096)))
    cfg.update(settings)
    log = Log.open(path, clock=FakeClock(), **cfg)
    views = []
    for _ in range(rng.randint(0, 60)):
        r = rng.random()
        end = log.log_end_offset
        if r < 0.8:
            n = rng.randint(1, 6)
            log.append([value(end + i) for i in range(n)])
        elif r < 0.88:
            log.flush()
        elif r < 0.92:
            log.roll()
        elif r < 0.96 and end > log.log_start_offset:
            log.truncate_to(rng.randint(max(log.log_start_offset, end - 8), end))
        elif end > 0 and rng.random() < 0.5:
            log.delete_records(rng.randint(log.log_start_offset, min(end, log.log_start_offset + 4)))
        if log.log_end_offset > log.log_start_offset and rng.random() < 0.1:
            b = log.read(rng.randint(log.log_start_offset, log.log_end_offset - 1))[0]
            views.append((b, b.to_bytes()))
    return log, views


def check_recovered(path, *, durable: int, written_end: int, start_at_least: int, **settings):
    """Reopen: the end is in [durable, written_end]; every batch validates; offsets are
    dense; every record is the one written at its offset; appends continue."""
    log = Log.open(path, **dict(SETTINGS, **settings))
    try:
        end = log.log_end_offset
        assert durable <= end <= written_end, (durable, end, written_end)
        start = log.log_start_offset
        assert start >= min(start_at_least, end)
        pos = start
        while pos < end:
            batches = log.read(pos, 1 << 16)
            assert batches
            for b in batches:
                b.validate()
                assert b.base_offset <= pos <= b.last_offset or b.base_offset == pos
                pos = b.next_offset
        assert pos == end
        recs = list(log.records())
        assert [r.offset for r in recs] == list(range(start, end))
        assert all(r.value == value(r.offset) for r in recs)
        assert log.append([value(end)]) == end
        return end
    finally:
        log.close()


@pytest.mark.parametrize("seed", range(120))
def test_power_loss_recovers_a_prefix_at_least_durable(tmp_path, seed):
    rng = random.Random(seed)
    log, views = build(tmp_path / "t-0", rng)
    durable, written_end, start = log.recovery_point, log.log_end_offset, log.log_start_offset
    segment_bytes = log.config.segment_bytes
    tear, partial = rng.random() < 0.8, rng.random() < 0.5
    old = crash_snapshot(tmp_path / "t-0")
    report = power_loss_log(log, rng, tear=tear, partial_writeback=partial)
    assert log.closed
    if report.cut_segment is not None:
        # bytes before the cut are untouched; a torn tail is a strict prefix of the
        # batch at the cut, then garbage
        name = "%020d.log" % report.cut_segment
        new = (tmp_path / "t-0" / name).read_bytes()
        cut, torn = report.cut_position, report.torn_prefix_bytes
        assert new[:cut + torn] == old[name][:cut + torn]
        if torn:
            at_cut = [b for b in walk_batches(old[name]) if b.pos == cut]
            assert at_cut and torn < at_cut[0].size
        assert len(new) in (cut + torn + report.garbage_bytes, len(old[name]))
    assert report.durable_offset == durable and not report.clean
    assert durable <= report.cut_offset <= written_end
    for b, data in views:  # views handed out before the crash keep their bytes
        assert b.to_bytes() == data
    end = check_recovered(tmp_path / "t-0", durable=durable, written_end=written_end, start_at_least=start,
                          segment_bytes=segment_bytes)
    if not partial:
        # the cut is at the first batch boundary at or after the durable offset: a
        # torn batch can come back whole only if the torn-off bytes were zeros anyway
        assert end == report.cut_offset or (report.torn_prefix_bytes and end > report.cut_offset)
    if not tear:
        assert end == report.cut_offset and not report.index_damage and not report.garbage_bytes


@pytest.mark.parametrize("seed", range(30))
def test_kill_process_loses_nothing(tmp_path, seed):
    rng = random.Random(1000 + seed)
    log, views = build(tmp_path / "t-0", rng)
    end, start = log.log_end_offset, log.log_start_offset
    segment_bytes = log.config.segment_bytes
    kill_process(log)
    assert log.closed
    with pytest.raises(LogClosed):
        log.append([b"x"])
    kill_process(log)  # idempotent
    for b, data in views:
        assert b.to_bytes() == data
    assert not (tmp_path / "t-0" / ".pylog_cleanshutdown").exists()
    assert check_recovered(tmp_path / "t-0", durable=end, written_end=end, start_at_least=start,
                           segment_bytes=segment_bytes) == end


def test_power_loss_after_kill_then_again_after_recovery(tmp_path):
    """A recovered log can lose power again: nothing it recovered (and flushed at open)
    is lost the second time."""
    rng = random.Random(7)
    path = tmp_path / "t-0"
    log = Log.open(path, **dict(SETTINGS, segment_bytes=2048))
    for i in range(40):
        log.append([value(log.log_end_offset + j) for j in range(3)])
        if i == 10:
            log.flush()
    power_loss_log(log, rng, partial_writeback=True)
    log = Log.open(path, **dict(SETTINGS, segment_bytes=2048))
    recovered = log.log_end_offset
    assert log.recovery_point == recovered
    for _ in range(10):
        log.append([value(log.log_end_offset)])
    written = log.log_end_offset
    power_loss_log(log, rng)
    assert check_recovered(path, durable=recovered, written_end=written, start_at_least=0,
                           segment_bytes=2048) >= recovered


def test_power_loss_after_the_process_was_killed(tmp_path):
    """A rack loses power after its broker process died: the killed Log's recovery
    point is still what was fsynced."""
    rng = random.Random(11)
    path = tmp_path / "t-0"
    log = Log.open(path, **SETTINGS)
    for i in range(30):
        log.append([value(log.log_end_offset + j) for j in range(2)])
        if i == 12:
            log.flush()
    durable, written = log.recovery_point, log.log_end_offset
    kill_process(log)
    report = power_loss_log(log, rng, tear=False)
    assert report.durable_offset == durable == 26 and report.cut_offset == durable
    assert check_recovered(path, durable=durable, written_end=written, start_at_least=0) == durable


def test_everything_flushed_loses_nothing_without_tearing(tmp_path):
    log, _ = build(tmp_path / "t-0", random.Random(3), segment_bytes=1024)
    log.flush()
    end = log.log_end_offset
    report = power_loss_log(log, random.Random(3), tear=False)
    assert report.cut_offset == end and report.deleted_segments == []
    assert check_recovered(tmp_path / "t-0", durable=end, written_end=end, start_at_least=0) == end


def test_nothing_flushed_can_lose_everything(tmp_path):
    path = tmp_path / "t-0"
    log = Log.open(path, **SETTINGS)
    for _ in range(30):
        log.append([value(log.log_end_offset + j) for j in range(4)])
    assert log.recovery_point == 0 and len(log.segments) > 2
    bases = [seg.base_offset for seg in log.segments]
    report = power_loss_log(log, random.Random(0), tear=False)
    assert report.cut_offset == 0 and report.cut_segment == 0
    assert report.deleted_segments == bases[1:]
    assert sorted(n for n in os.listdir(path) if n.endswith(".log")) == ["%020d.log" % 0]
    assert check_recovered(path, durable=0, written_end=120, start_at_least=0) == 0


def test_durable_offset_at_a_segment_boundary(tmp_path):
    path = tmp_path / "t-0"
    log = Log.open(path, **dict(SETTINGS, segment_bytes=4096))
    log.append([value(i) for i in range(5)])
    log.roll()
    log.flush()  # durable = 5 = base of the new (empty) active segment
    log.append([value(5 + i) for i in range(5)])
    report = power_loss_log(log, random.Random(1), tear=False)
    assert report.durable_offset == 5 and report.cut_offset == 5 and report.cut_segment == 5
    assert check_recovered(path, durable=5, written_end=10, start_at_least=0, segment_bytes=4096) == 5


def test_same_seed_same_damage(tmp_path):
    files = []
    reports = []
    for copy in ("a", "b"):
        log, _ = build(tmp_path / copy / "t-0", random.Random(42), segment_bytes=1024)
        reports.append(power_loss_log(log, random.Random(99), partial_writeback=True))
        files.append(snapshot_dir(tmp_path / copy / "t-0", skip_lock=True))
    assert reports[0] == reports[1]
    assert files[0].keys() == files[1].keys()
    # file mtimes differ, contents do not (checkpoint files name no paths)
    assert files[0] == files[1]


def test_refuses_an_open_log_and_bad_arguments(tmp_path):
    path = tmp_path / "t-0"
    log = Log.open(path, **SETTINGS)
    log.append([b"a", b"b"])
    log.flush()
    with pytest.raises(StorageError, match="still open"):
        power_loss(path, durable_offset=0, rng=random.Random(0))
    kill_process(log)
    with pytest.raises(InvalidArgument, match="below the recovery point"):
        power_loss(path, durable_offset=1, rng=random.Random(0))
    with pytest.raises(InvalidArgument, match="beyond the data"):
        power_loss(path, durable_offset=5, rng=random.Random(0))
    with pytest.raises(InvalidArgument):
        power_loss(path, durable_offset=-1, rng=random.Random(0))
    with pytest.raises(InvalidArgument):
        power_loss(path, durable_offset=2, rng=0)
    with pytest.raises(StorageError):
        power_loss(tmp_path / "missing", durable_offset=0, rng=random.Random(0))
    before = snapshot_dir(path)
    assert power_loss(path, durable_offset=2, rng=random.Random(0), tear=False).cut_offset == 2
    name = "00000000000000000000.log"
    after = snapshot_dir(path)[name]
    assert after and before[name].startswith(after) and not any(before[name][len(after):])


def test_a_cleanly_closed_log_loses_nothing(tmp_path):
    path = tmp_path / "t-0"
    log = Log.open(path, **SETTINGS)
    for _ in range(20):
        log.append([value(log.log_end_offset)])
    log.close()
    before = snapshot_dir(path)
    report = power_loss_log(log, random.Random(0))
    assert report.clean
    assert power_loss(path, durable_offset=0, rng=random.Random(0)).clean
    assert snapshot_dir(path) == before
    assert check_recovered(path, durable=20, written_end=20, start_at_least=0) == 20
