"""The Log's public API, exhaustively: round trips, dense offsets (Invariant 1), reopen,
rolls (segment.bytes / segment.ms / roll()), retention (retention.ms / retention.bytes),
delete_records, offset_for_timestamp, read()'s max_bytes / max_offset contract, flush
policy, and bad input for every public function (Invariant 7: a documented exception
and nothing changed on disk)."""
from __future__ import annotations

import os
import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog import Log
from pylog.errors import (
    CorruptRecordError,
    InvalidArgument,
    InvalidConfig,
    InvalidTimestamp,
    LogClosed,
    OffsetOutOfRange,
    PylogError,
    RecordBatchTooLarge,
    RecordTooLarge,
    StorageError,
)
from pylog.records import build_batch, validate_batches
from tests.storage.helpers import (
    CLEAN_MARKER,
    T0,
    FakeClock,
    Rec,
    append_derived,
    as_recs,
    check_indexes_on_disk,
    check_log,
    expected_offset_for_timestamp,
    open_log,
    segment_names,
    snapshot_dir,
    walk_batches,
)


def _random_batch(rng: random.Random, first: int, now: int):
    """values, keys, headers, timestamps of a random batch, and the Recs it becomes."""
    n = rng.randint(1, 12)
    values = [None if rng.random() < 0.1 else bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 90)))
              for _ in range(n)]
    keys = None
    if rng.random() < 0.6:
        keys = [None if rng.random() < 0.3 else b"key-%d" % rng.randint(0, 9) for _ in range(n)]
    headers = None
    if rng.random() < 0.4:
        headers = [[("h%d" % j, None if rng.random() < 0.2 else b"x" * rng.randint(0, 5))
                    for j in range(rng.randint(0, 3))] for _ in range(n)]
    timestamps = None
    if rng.random() < 0.7:
        timestamps = [now - rng.randint(0, 10_000) for _ in range(n)]
    recs = [Rec(first + i, keys[i] if keys else None, values[i],
                timestamps[i] if timestamps else now,
                tuple(tuple(h) for h in headers[i]) if headers else ())
            for i in range(n)]
    return values, keys, headers, timestamps, recs


# ----------------------------------------------------------------- round trips
def test_random_batches_round_trip_across_rolls_and_reopen(tmp_path):
    rng = random.Random(1)
    clock = FakeClock()
    path = tmp_path / "t-0"
    log = open_log(path, clock=clock, segment_bytes=2048, index_interval_bytes=256)
    expected: list[Rec] = []
    for i in range(150):
        values, keys, headers, timestamps, recs = _random_batch(rng, log.log_end_offset, clock.now)
        first = log.append(values, keys=keys, headers=headers, timestamps=timestamps)
        assert first == (expected[-1].offset + 1 if expected else 0)  # Invariant 1: dense
        expected += recs
        clock.advance(rng.randint(0, 50))
        if i % 40 == 39:
            log.close()
            log = open_log(path, clock=clock, segment_bytes=2048, index_interval_bytes=256)
    assert len(log.segments) > 5
    check_log(log, expected, every_offset=True)
    for off in range(0, len(expected), 13):
        assert as_recs(log.records(off)) == expected[off:]
        assert as_recs(log.records(off, max_offset=off + 7)) == expected[off:off + 7]
    log.close()
    check_indexes_on_disk(path)
    log = open_log(path, clock=clock, segment_bytes=2048, index_interval_bytes=256)
    check_log(log, expected)
    assert log.append([b"after"]) == len(expected)
    log.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=40)),
            st.one_of(st.none(), st.binary(max_size=20)),
            st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))), max_size=3),
            st.integers(min_value=0, max_value=2**62),
        ),
        min_size=1, max_size=20,
    )
)
def test_any_record_content_round_trips(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("rt") / "t-0"
    with open_log(path) as log:
        values = [r[0] for r in records]
        keys = [r[1] for r in records]
        headers = [r[2] for r in records]
        tss = [r[3] for r in records]
        assert log.append(values, keys=keys, headers=headers, timestamps=tss) == 0
        got = as_recs(log.records())
        want = [Rec(i, k, v, t, tuple(tuple(h) for h in hs)) for i, (v, k, hs, t) in enumerate(records)]
        assert got == want
        (batch,) = log.read(0)
        batch.validate()
        assert batch.record_count == len(records) and batch.base_offset == 0
        assert batch.max_timestamp == max(tss)


def test_null_and_empty_values_are_distinct_and_bytes_like_accepted(tmp_path):
    with open_log(tmp_path / "t-0") as log:
        log.append([None, b"", bytearray(b"ba"), memoryview(b"mv")],
                   keys=[b"", None, memoryview(b"k"), bytearray(b"kk")])
        got = [(r.key, r.value) for r in log.records()]
        assert got == [(b"", None), (None, b""), (b"k", b"ba"), (b"kk", b"mv")]


def test_default_timestamps_come_from_the_clock(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", clock=clock) as log:
        log.append([b"a", b"b"])
        clock.advance(7)
        log.append([b"c"])
        assert [r.timestamp for r in log.records()] == [clock.now - 7, clock.now - 7, clock.now]


def test_size_bytes_is_the_sum_of_batch_sizes(tmp_path):
    with open_log(tmp_path / "t-0", segment_bytes=1024) as log:
        total = 0
        for i in range(40):
            append_derived(log, 1 + i % 4)
        for seg in log.segments:
            sizes = 0
            off = max(seg.base_offset, log.log_start_offset)
            batches = log.read(off, max_bytes=1 << 30)
            sizes = sum(b.size_bytes for b in batches)
            assert seg.size_bytes == sizes
            total += sizes
        assert log.size_bytes == total


# ------------------------------------------------------------------------ rolls
def test_roll_at_segment_bytes_and_file_layout(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=4096)
    expected = []
    for i in range(120):
        expected += append_derived(log, 1 + i % 5)
    segs = log.segments
    assert len(segs) >= 4
    names = segment_names(os.listdir(path))
    assert names == ["%020d.log" % s.base_offset for s in segs]
    for s in segs:
        for suffix in (".index", ".timeindex"):
            assert (path / ("%020d" % s.base_offset + suffix)).exists()
    for s, nxt in zip(segs, segs[1:]):
        assert s.size_bytes <= 4096
        # an inactive segment's .log is shrunk to its content; its batches end where the next begins
        data = (path / ("%020d.log" % s.base_offset)).read_bytes()
        assert len(data) == s.size_bytes
        walked = walk_batches(data)
        assert sum(b.size for b in walked) == len(data)
        assert walked[0].base_offset == s.base_offset and walked[-1].last_offset + 1 == nxt.base_offset
        # it rolled because the next batch would not fit
        first_next = log.read(nxt.base_offset, max_bytes=0)[0]
        assert s.size_bytes + first_next.size_bytes > 4096
    # the active segment is preallocated while open
    assert os.path.getsize(path / ("%020d.log" % segs[-1].base_offset)) == 4096
    log.close()
    for s in segs:
        assert os.path.getsize(path / ("%020d.log" % s.base_offset)) == s.size_bytes
    check_indexes_on_disk(path)
    with open_log(path, segment_bytes=4096) as log:
        check_log(log, expected)
        assert [s.base_offset for s in log.segments] == [s.base_offset for s in segs]


def test_roll_at_segment_ms_uses_the_first_batch_timestamp(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", segment_ms=1000, retention_ms=-1, clock=clock) as log:
        log.append([b"a"])
        for _ in range(9):
            clock.advance(100)  # 900 ms after the first batch: no roll
            log.append([b"b"])
        assert len(log.segments) == 1
        clock.advance(101 + 100)  # now 1101 ms after the first batch
        log.append([b"c"])
        assert [s.base_offset for s in log.segments] == [0, 10]
        clock.advance(999)
        log.append([b"d"])
        assert len(log.segments) == 2
        clock.advance(2)  # 1001 ms after the second segment's first batch
        log.append([b"e"])
        assert [s.base_offset for s in log.segments] == [0, 10, 12]
        assert [r.value for r in log.records()] == [b"a"] + [b"b"] * 9 + [b"c", b"d", b"e"]


def test_roll_by_time_survives_reopen(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", segment_ms=1000, retention_ms=-1, clock=clock) as log:
        log.append([b"a"])
    clock.advance(1500)
    with Log.open(tmp_path / "t-0", segment_ms=1000, retention_ms=-1, clock=clock) as log:
        log.append([b"b"])
        assert [s.base_offset for s in log.segments] == [0, 1]


def test_explicit_roll(tmp_path):
    with open_log(tmp_path / "t-0") as log:
        log.roll()  # empty active segment: nothing to roll
        assert [s.base_offset for s in log.segments] == [0]
        append_derived(log, 3)
        log.roll()
        assert [s.base_offset for s in log.segments] == [0, 3]
        log.roll()  # the new segment is empty
        assert [s.base_offset for s in log.segments] == [0, 3]
        recs = append_derived(log, 2)
        assert log.read(3)[0].base_offset == 3 and recs[0].offset == 3


def test_roll_when_the_offset_index_is_full(tmp_path):
    # 3 index entries; every batch gets one (index.interval.bytes = 0)
    with open_log(tmp_path / "t-0", segment_index_bytes=24, index_interval_bytes=0) as log:
        expected = []
        for i in range(10):
            expected += append_derived(log, 2)
        assert [s.base_offset for s in log.segments] == [0, 6, 12, 18]
        check_log(log, expected, every_offset=True)


# -------------------------------------------------------------------- retention
def _fill_segments(log, clock, n_batches, *, step_ms=100, records=3):
    expected = []
    for _ in range(n_batches):
        first = log.log_end_offset
        vals = [b"r%d" % (first + j) + b"." * 60 for j in range(records)]
        log.append(vals)
        expected += [Rec(first + j, None, vals[j], clock.now) for j in range(records)]
        clock.advance(step_ms)
    return expected


def test_retention_ms_deletes_whole_expired_inactive_segments(tmp_path):
    clock = FakeClock()
    path = tmp_path / "t-0"
    log = Log.open(path, segment_bytes=1024, retention_ms=10_000, clock=clock)
    expected = _fill_segments(log, clock, 60)
    segs = log.segments
    assert len(segs) > 4
    seg_max = {}
    for s, nxt in zip(segs, segs[1:] + [None]):
        hi = nxt.base_offset if nxt else log.log_end_offset
        seg_max[s.base_offset] = max(r.timestamp for r in expected if s.base_offset <= r.offset < hi)
    # pick "now" so that exactly the first two segments are expired
    now = seg_max[segs[2].base_offset] + 10_000
    assert now - seg_max[segs[1].base_offset] > 10_000
    assert log.enforce_retention(now_ms=now) == 2
    assert log.log_start_offset == segs[2].base_offset
    assert [s.base_offset for s in log.segments] == [s.base_offset for s in segs[2:]]
    for s in segs[:2]:
        for suffix in (".log", ".index", ".timeindex"):
            assert not (path / ("%020d" % s.base_offset + suffix)).exists()
    check_log(log, expected[segs[2].base_offset:])
    with pytest.raises(OffsetOutOfRange):
        log.read(segs[2].base_offset - 1)
    with pytest.raises(OffsetOutOfRange):
        log.records(0)
    # everything expired: all but the active segment go
    assert log.enforce_retention(now_ms=now + 10**9) == len(segs) - 3
    assert log.segments[-1].base_offset == segs[-1].base_offset and len(log.segments) == 1
    assert log.log_start_offset == segs[-1].base_offset
    check_log(log, expected[segs[-1].base_offset:])
    log.close()
    with Log.open(path, segment_bytes=1024, retention_ms=10_000, clock=clock) as log:
        check_log(log, expected[segs[-1].base_offset:])


def test_retention_ms_uses_record_timestamps_not_append_time(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", retention_ms=1000, clock=clock) as log:
        log.append([b"old"], timestamps=[clock.now - 5000])  # an old CreateTime
        log.roll()  # (may already apply retention)
        log.append([b"new"])
        log.enforce_retention()
        assert [r.value for r in log.records()] == [b"new"]
        assert log.log_start_offset == 1 and [s.base_offset for s in log.segments] == [1]


def test_retention_bytes_deletes_oldest_segments_over_the_limit(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", segment_bytes=1024, retention_ms=-1, clock=clock) as log:
        expected = _fill_segments(log, clock, 60)
    for limit in (1, 1000, 2500, 5000, 10**6):
        path = tmp_path / ("copy%d" % limit) / "t-0"
        shutil.copytree(tmp_path / "t-0", path)
        with Log.open(path, segment_bytes=1024, retention_ms=-1, retention_bytes=limit, clock=clock) as log:
            segs = log.segments
            sizes = [s.size_bytes for s in segs]
            # Kafka's rule: drop the oldest while what remains still reaches the limit
            total, k = sum(sizes), 0
            while k < len(segs) - 1 and total - sizes[k] >= limit:
                total -= sizes[k]
                k += 1
            assert log.enforce_retention() == k
            assert [s.base_offset for s in log.segments] == [s.base_offset for s in segs[k:]]
            assert log.size_bytes == total
            assert log.log_start_offset == segs[k].base_offset
            check_log(log, expected[segs[k].base_offset:])


def test_retention_runs_by_itself_when_segments_roll(tmp_path):
    """Documented: enforce_retention is called at every roll."""
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", segment_bytes=1024, retention_ms=-1, retention_bytes=3000,
                  clock=clock) as log:
        expected = _fill_segments(log, clock, 200)
        assert log.size_bytes < 3000 + 2 * 1024
        check_log(log, expected[log.log_start_offset:])


def test_retention_never_deletes_the_active_segment(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", retention_ms=1, retention_bytes=1, clock=clock) as log:
        log.append([b"a"], timestamps=[0])
        assert log.enforce_retention(now_ms=clock.now + 10**9) == 0
        assert [r.value for r in log.records()] == [b"a"]


# --------------------------------------------------------------- delete_records
def test_delete_records_inside_a_batch_and_segments_below(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=1024)
    expected = []
    for i in range(40):
        expected += append_derived(log, 4)
    segs = log.segments
    assert len(segs) > 3
    before = segs[2].base_offset + 2  # inside the first batch of the third segment
    log.delete_records(before)
    assert log.log_start_offset == before
    assert [s.base_offset for s in log.segments] == [s.base_offset for s in segs[2:]]
    for s in segs[:2]:
        assert not (path / ("%020d.log" % s.base_offset)).exists()
    assert as_recs(log.records()) == expected[before:]
    (first, *_) = log.read(before)
    assert first.base_offset == segs[2].base_offset  # the batch holding `before`
    for bad in (before - 1, segs[2].base_offset, 0):
        with pytest.raises(OffsetOutOfRange):
            log.read(bad)
        with pytest.raises(OffsetOutOfRange):
            log.records(bad)
    assert log.offset_for_timestamp(0) == before
    assert log.offset_for_timestamp(-2) == before
    log.delete_records(before - 1)  # below the start: no-op
    assert log.log_start_offset == before
    log.close()
    log = open_log(path, segment_bytes=1024)
    assert log.log_start_offset == before
    assert as_recs(log.records()) == expected[before:]
    # up to the end: the log is empty but keeps its offsets
    end = log.log_end_offset
    log.delete_records(end)
    assert (log.log_start_offset, log.log_end_offset) == (end, end)
    assert list(log.records()) == [] and log.read(end) == []
    assert log.append([b"next"]) == end
    assert [r.value for r in log.records()] == [b"next"]
    log.close()


def test_delete_records_then_truncate_below_start(tmp_path):
    with open_log(tmp_path / "t-0") as log:
        for _ in range(5):
            append_derived(log, 4)
        log.delete_records(10)  # inside batch 8..11
        with pytest.raises(OffsetOutOfRange):
            log.truncate_to(9)
        log.truncate_to(10)  # the batch holding 10 goes entirely
        assert log.log_end_offset == 8 and log.log_start_offset == 8
        assert list(log.records()) == []
        assert log.append([b"x"]) == 8
        assert [r.offset for r in log.records()] == [8]


# ---------------------------------------------------------- offset_for_timestamp
def test_offset_for_timestamp_matches_brute_force(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "t-0"
    clock = FakeClock()
    log = open_log(path, clock=clock, segment_bytes=1024, index_interval_bytes=128, retention_ms=-1)
    expected = []
    for i in range(120):
        n = rng.randint(1, 4)
        first = log.log_end_offset
        # mostly increasing, sometimes far in the past or repeated (CreateTime is the producer's)
        tss = [T0 + i * 10 + rng.choice([0, 0, 3, -500, -5000, 7]) for _ in range(n)]
        log.append([b"%d" % (first + j) for j in range(n)], timestamps=tss)
        expected += [Rec(first + j, None, b"%d" % (first + j), tss[j]) for j in range(n)]
    probes = sorted({r.timestamp + d for r in expected for d in (-1, 0, 1)}) + [0, T0 + 10**6]

    def check(start):
        visible = [r for r in expected if r.offset >= start]
        for ts in probes:
            assert log.offset_for_timestamp(ts) == expected_offset_for_timestamp(visible, ts), ts
        assert log.offset_for_timestamp(-1) == log.log_end_offset
        assert log.offset_for_timestamp(-2) == log.log_start_offset

    check(0)
    log.close()
    log = open_log(path, clock=clock, segment_bytes=1024, index_interval_bytes=128, retention_ms=-1)
    check(0)
    log.delete_records(133)
    check(133)
    log.truncate_to(300)
    expected = [r for r in expected if r.offset < log.log_end_offset]
    check(133)
    log.close()


# ------------------------------------------------------------------------- read
def test_read_contract_from_every_offset(tmp_path):
    with open_log(tmp_path / "t-0", segment_bytes=2048) as log:
        expected = []
        rng = random.Random(3)
        for _ in range(80):
            expected += append_derived(log, rng.randint(1, 6))
        end = log.log_end_offset
        bases = [s.base_offset for s in log.segments]
        for off in range(0, end):
            for max_bytes in (0, 1, 100, 400, 1 << 20):
                for max_offset in (None, off + 1, off + 5, end):
                    batches = log.read(off, max_bytes=max_bytes, max_offset=max_offset)
                    assert batches, (off, max_bytes, max_offset)  # at least one batch
                    first = batches[0]
                    assert first.base_offset <= off <= first.last_offset
                    seg = max(b for b in bases if b <= first.base_offset)
                    nxt = min([b for b in bases if b > seg] + [end])
                    total = 0
                    for i, b in enumerate(batches):
                        if i:
                            assert b.base_offset == batches[i - 1].last_offset + 1
                            assert max_offset is None or b.base_offset < max_offset
                        assert b.last_offset < nxt, "read() crossed a segment boundary"
                        total += b.size_bytes
                    assert len(batches) == 1 or total <= max_bytes
                    # as many whole batches as fit: the next one would not
                    after = batches[-1].last_offset + 1
                    if after < nxt and (max_offset is None or after < max_offset):
                        nb = log.read(after, max_bytes=0)[0]
                        assert total + nb.size_bytes > max_bytes
        assert log.read(end) == []
        assert log.read(3, max_offset=3) == []
        assert log.read(3, max_offset=0) == []


# -------------------------------------------------------------------- flushing
def test_flush_and_recovery_point(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=1024)
    assert log.recovery_point == 0
    for _ in range(30):
        append_derived(log, 3)
    assert log.recovery_point == 0  # no flush policy: nothing forced
    log.flush()
    assert log.recovery_point == log.log_end_offset == 90
    append_derived(log, 3)
    assert log.recovery_point == 90
    log.truncate_to(45)
    assert log.recovery_point == 45
    log.close()
    with open_log(path, segment_bytes=1024) as log:
        assert log.recovery_point == log.log_end_offset == 45


def test_flush_messages_policy(tmp_path):
    with open_log(tmp_path / "t-0", flush_messages=10) as log:
        rps = []
        for _ in range(12):
            append_derived(log, 3)
            rps.append(log.recovery_point)
        # flushed as soon as 10 or more records are unflushed
        assert rps == [0, 0, 0, 12, 12, 12, 12, 24, 24, 24, 24, 36]


def test_flush_ms_policy(tmp_path):
    clock = FakeClock()
    with Log.open(tmp_path / "t-0", flush_ms=1000, clock=clock) as log:
        log.append([b"a"])
        clock.advance(600)
        log.append([b"b"])
        assert log.recovery_point == 0
        clock.advance(600)
        log.append([b"c"])
        assert log.recovery_point == 3
        clock.advance(10)
        log.append([b"d"])
        assert log.recovery_point == 3


# ----------------------------------------------------------------- append_batches
def test_append_batches_round_trip_and_compression(tmp_path):
    with open_log(tmp_path / "t-0") as log:
        data = b"".join([
            build_batch([b"a" * 50] * 5, keys=[b"k"] * 5, timestamps=[T0] * 5, base_offset=999),
            build_batch([b"b" * 50] * 3, compression="gzip", timestamps=[T0 + 1] * 3),
            build_batch([b"c" * 50] * 2, compression="zstd", timestamps=[T0 + 2] * 2),
        ])
        info = log.append_batches(data)
        assert (info.first_offset, info.last_offset, info.batches, info.records) == (0, 9, 3, 10)
        assert info.size_bytes == len(data) and info.max_timestamp == T0 + 2
        assert [r.value for r in log.records()] == [b"a" * 50] * 5 + [b"b" * 50] * 3 + [b"c" * 50] * 2
        assert [r.offset for r in log.records(6)] == [6, 7, 8, 9]
        assert [b.base_offset for b in log.read(0)] == [0, 5, 8]
        for b in log.read(0):
            b.validate()
        assert log.append([b"d"]) == 10


def test_append_batches_splits_over_segments(tmp_path):
    with open_log(tmp_path / "t-0", segment_bytes=1024) as log:
        data = b"".join(build_batch([b"%d" % i + b"." * 100] * 2) for i in range(30))
        info = log.append_batches(data)
        assert (info.first_offset, info.last_offset, info.batches) == (0, 59, 30)
        assert len(log.segments) > 3
        assert [r.offset for r in log.records()] == list(range(60))
        for s in log.segments:
            assert s.size_bytes <= 1024


def test_append_batches_refuses_a_buffer_changed_after_validation(tmp_path):
    # A partition validates, then appends with validated= (no second Python pass); a
    # caller's bytearray changed in between must not reach the log with a stale CRC.
    with open_log(tmp_path / "t-0") as log:
        log.append([b"before"])
        data = bytearray(build_batch([b"v%d" % i for i in range(5)], timestamps=[T0] * 5))
        counts = validate_batches(data)
        data[-3] ^= 0x20  # a byte of the last value, after validation
        with pytest.raises(CorruptRecordError, match="CRC"):
            log.append_batches(data, validated=counts)
        assert log.log_end_offset == 1
        assert [r.value for r in log.records()] == [b"before"]
        for b in log.read(0):
            b.validate()
        assert log.append([b"after"]) == 1


# ----------------------------------------------------------------- bad input
class _NotBytes:
    pass


def _bad_calls(log):
    """(expected exception, label, call) for every public function."""
    ok = build_batch([b"ok"])
    crc = bytearray(ok)
    crc[-1] ^= 0x40
    magic = bytearray(ok)
    magic[16] = 1
    length = bytearray(ok)
    length[8:12] = (10**6).to_bytes(4, "big")
    end = log.log_end_offset
    start = log.log_start_offset
    return [
        # append
        (InvalidArgument, "values empty", lambda: log.append([])),
        (InvalidArgument, "values str", lambda: log.append("abc")),
        (InvalidArgument, "values bytes", lambda: log.append(b"abc")),
        (InvalidArgument, "values None", lambda: log.append(None)),
        (InvalidArgument, "values int", lambda: log.append(5)),
        (InvalidArgument, "value str", lambda: log.append([b"a", "b"])),
        (InvalidArgument, "value int", lambda: log.append([b"a", 7])),
        (InvalidArgument, "value object", lambda: log.append([_NotBytes()])),
        (InvalidArgument, "keys short", lambda: log.append([b"a", b"b"], keys=[b"k"])),
        (InvalidArgument, "keys not list", lambda: log.append([b"a"], keys=b"k")),
        (InvalidArgument, "key str", lambda: log.append([b"a"], keys=["k"])),
        (InvalidArgument, "headers short", lambda: log.append([b"a", b"b"], headers=[[]])),
        (InvalidArgument, "header not pair", lambda: log.append([b"a"], headers=[[("k",)]])),
        (InvalidArgument, "header key bytes", lambda: log.append([b"a"], headers=[[(b"k", b"v")]])),
        (InvalidArgument, "header value str", lambda: log.append([b"a"], headers=[[("k", "v")]])),
        (InvalidArgument, "header value int", lambda: log.append([b"a"], headers=[[("k", 1)]])),
        (InvalidArgument, "timestamps short", lambda: log.append([b"a", b"b"], timestamps=[1])),
        (InvalidTimestamp, "timestamp negative", lambda: log.append([b"a"], timestamps=[-2])),
        (InvalidTimestamp, "timestamp > int64", lambda: log.append([b"a"], timestamps=[2**63])),
        ((InvalidTimestamp, InvalidArgument), "timestamp str", lambda: log.append([b"a"], timestamps=["1"])),
        ((InvalidTimestamp, InvalidArgument), "timestamp float", lambda: log.append([b"a"], timestamps=[1.5])),
        (RecordTooLarge, "over max.message.bytes", lambda: log.append([b"x" * 3000])),
        (RecordTooLarge, "many records over max", lambda: log.append([b"x" * 100] * 30)),
        (RecordBatchTooLarge, "larger than a segment", lambda: log.append([b"x" * 1500])),
        # append_batches
        (InvalidArgument, "batches int", lambda: log.append_batches(12)),
        (InvalidArgument, "batches str", lambda: log.append_batches("abc")),
        (InvalidArgument, "batches list", lambda: log.append_batches([ok])),
        (CorruptRecordError, "batches empty", lambda: log.append_batches(b"")),
        (CorruptRecordError, "batches zeros", lambda: log.append_batches(bytes(70))),
        (CorruptRecordError, "bad crc", lambda: log.append_batches(bytes(crc))),
        (CorruptRecordError, "bad magic", lambda: log.append_batches(bytes(magic))),
        (CorruptRecordError, "bad length", lambda: log.append_batches(bytes(length))),
        (CorruptRecordError, "truncated", lambda: log.append_batches(ok[:-1])),
        (CorruptRecordError, "header only", lambda: log.append_batches(ok[:61])),
        (CorruptRecordError, "trailing bytes", lambda: log.append_batches(ok + b"\x00")),
        (CorruptRecordError, "second bad", lambda: log.append_batches(ok + bytes(crc))),
        (RecordTooLarge, "batch over max", lambda: log.append_batches(build_batch([b"x" * 3000]))),
        (RecordBatchTooLarge, "batch larger than a segment", lambda: log.append_batches(build_batch([b"x" * 1500]))),
        (InvalidArgument, "follower below end",
         lambda: log.append_batches(build_batch([b"f"], base_offset=0), assign_offsets=False)),
        (InvalidArgument, "leader_epoch", lambda: log.append_batches(ok, leader_epoch=-5)),
        # read
        (OffsetOutOfRange, "read past end", lambda: log.read(end + 1)),
        (OffsetOutOfRange, "read below start", lambda: log.read(start - 1)),
        (OffsetOutOfRange, "read negative", lambda: log.read(-1)),
        (InvalidArgument, "read str", lambda: log.read("0")),
        (InvalidArgument, "read float", lambda: log.read(1.0)),
        (InvalidArgument, "read None", lambda: log.read(None)),
        (InvalidArgument, "read max_bytes negative", lambda: log.read(start, max_bytes=-1)),
        (InvalidArgument, "read max_bytes str", lambda: log.read(start, max_bytes="1")),
        (InvalidArgument, "read max_offset str", lambda: log.read(start, max_offset="9")),
        # records (raises at the call, not at the first next())
        (OffsetOutOfRange, "records past end", lambda: log.records(end + 1)),
        (OffsetOutOfRange, "records below start", lambda: log.records(start - 1)),
        (InvalidArgument, "records str", lambda: log.records("0")),
        (InvalidArgument, "records max_offset str", lambda: list(log.records(start, max_offset="9"))),
        # offset_for_timestamp
        (InvalidArgument, "oft str", lambda: log.offset_for_timestamp("1")),
        (InvalidArgument, "oft None", lambda: log.offset_for_timestamp(None)),
        (InvalidTimestamp, "oft -3", lambda: log.offset_for_timestamp(-3)),
        # truncate_to / delete_records
        (OffsetOutOfRange, "truncate past end", lambda: log.truncate_to(end + 1)),
        (OffsetOutOfRange, "truncate below start", lambda: log.truncate_to(start - 1)),
        (InvalidArgument, "truncate str", lambda: log.truncate_to("1")),
        (OffsetOutOfRange, "delete past end", lambda: log.delete_records(end + 1)),
        (OffsetOutOfRange, "delete negative", lambda: log.delete_records(-1)),
        (InvalidArgument, "delete str", lambda: log.delete_records("1")),
        (InvalidArgument, "delete float", lambda: log.delete_records(2.0)),
        # enforce_retention
        (InvalidArgument, "retention now str", lambda: log.enforce_retention(now_ms="1")),
        (InvalidArgument, "retention now float", lambda: log.enforce_retention(now_ms=1.5)),
    ]


def _make_bad_input_log(path):
    log = open_log(path, segment_bytes=1024, max_message_bytes=2000, retention_ms=-1)
    for _ in range(12):
        append_derived(log, 3)  # several segments, the active one not empty
    log.delete_records(2)
    log.flush()
    return log


_LABELS = [c[1] for c in _bad_calls(type("L", (), {"log_end_offset": 0, "log_start_offset": 0})())]


@pytest.mark.parametrize("label", _LABELS)
def test_bad_input_raises_documented_error_and_changes_nothing(tmp_path, label):
    path = tmp_path / "t-0"
    log = _make_bad_input_log(path)
    try:
        exc, _, call = next(c for c in _bad_calls(log) if c[1] == label)
        before = snapshot_dir(path)
        state = (log.log_start_offset, log.log_end_offset, log.recovery_point,
                 [s.base_offset for s in log.segments], log.size_bytes)
        recs = as_recs(log.records())
        with pytest.raises(exc) as info:
            call()
        assert isinstance(info.value, PylogError)
        assert str(info.value), "the exception must say what was wrong"
        assert (log.log_start_offset, log.log_end_offset, log.recovery_point,
                [s.base_offset for s in log.segments], log.size_bytes) == state
        assert as_recs(log.records()) == recs
        assert snapshot_dir(path) == before, "a rejected call changed files on disk"
    finally:
        log.close()


def test_bad_config_raises_and_creates_nothing(tmp_path):
    bad = [
        {"segment_bytes": 0}, {"segment_bytes": -1}, {"segment_bytes": 2**31}, {"segment_bytes": "1024"},
        {"segment_bytes": True}, {"segment_bytes": 1024.0}, {"segment_ms": 0}, {"segment_ms": -1},
        {"segment_index_bytes": 0}, {"index_interval_bytes": -1}, {"retention_ms": -2},
        {"retention_bytes": -2}, {"flush_messages": 0}, {"flush_messages": -1}, {"flush_ms": -1},
        {"max_message_bytes": -1}, {"message_timestamp_type": "Now"}, {"message_timestamp_type": None},
        {"segment_size": 1}, {"config": {"segment.bytez": 1}}, {"config": {"segment.bytes": -5}},
        {"config": {"retention.ms": "forever"}},
    ]
    for kwargs in bad:
        path = tmp_path / "never-0"
        with pytest.raises(InvalidConfig):
            Log.open(path, **kwargs)
        assert not path.exists(), f"{kwargs}: a rejected open created the directory"


def test_bad_open_arguments(tmp_path):
    with pytest.raises(InvalidArgument):
        Log.open(12345)
    with pytest.raises(InvalidArgument):
        Log.open(tmp_path / "c-0", clock=5)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError):
        Log.open(tmp_path / "file")
    with Log.open(tmp_path / "t-0"):
        with pytest.raises(StorageError):
            Log.open(tmp_path / "t-0")
    Log.open(tmp_path / "t-0").close()  # the lock went with the close


def test_every_method_raises_log_closed_after_close(tmp_path):
    path = tmp_path / "t-0"
    log = open_log(path)
    append_derived(log, 3)
    log.close()
    assert (path / CLEAN_MARKER).exists()
    before = snapshot_dir(path)
    calls = [
        lambda: log.append([b"a"]),
        lambda: log.append_batches(build_batch([b"a"])),
        lambda: log.read(0),
        lambda: log.records(),
        lambda: log.records(0),
        lambda: log.offset_for_timestamp(0),
        lambda: log.truncate_to(0),
        lambda: log.delete_records(1),
        lambda: log.roll(),
        lambda: log.enforce_retention(),
        lambda: log.flush(),
    ]
    for call in calls:
        with pytest.raises(LogClosed):
            call()
    log.close()  # idempotent
    assert snapshot_dir(path) == before


def test_iterator_raises_log_closed_when_the_log_closes_mid_iteration(tmp_path):
    log = open_log(tmp_path / "t-0")
    for _ in range(3):
        append_derived(log, 2)
    it = log.records(0)
    assert next(it).offset == 0
    log.close()
    try:
        rest = list(it)
    except LogClosed:
        return
    # or it ends with records that are exactly the log's
    assert [r.offset for r in rest] == list(range(1, len(rest) + 1))


# ------------------------------------------------------------------ reconfigure
def test_reconfigure_changes_an_open_log_at_once(tmp_path):
    """Log.reconfigure replaces the settings of an open log: a lowered segment.bytes
    rolls the active segment at the next append that would pass it, retention applies at
    the next check, max.message.bytes at the next append; a bad value changes nothing."""
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20)
    for i in range(20):
        log.append([b"x" * 200], timestamps=[T0 + i])
    assert len(log.segments) == 1
    with pytest.raises(InvalidConfig, match="segment.bytes"):
        log.reconfigure(segment_bytes=1, segment_index_bytes=4096)
    assert log.config.segment_bytes == 1 << 20
    cfg = log.reconfigure({"segment.bytes": 1024, "max.message.bytes": 600}, segment_index_bytes=4096)
    assert cfg is log.config and cfg.segment_bytes == 1024 and cfg.retention_bytes == -1
    log.append([b"y" * 200])  # the active segment holds 4 KiB: this append rolls first
    assert len(log.segments) == 2 and log.segments[-1].base_offset == 20
    for _ in range(10):
        log.append([b"z" * 200])
    assert all(s.size_bytes <= 1024 for s in log.segments[1:])
    with pytest.raises(RecordTooLarge):
        log.append([b"w" * 700])
    log.reconfigure(segment_bytes=1024, segment_index_bytes=4096, retention_bytes=2048)
    log.enforce_retention()
    assert log.log_start_offset > 20 and log.size_bytes - log.segments[0].size_bytes < 2048
    log.close()
    with pytest.raises(LogClosed):
        log.reconfigure(segment_bytes=1024)
