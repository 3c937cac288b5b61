"""pl_segment_read / pl_segment_lookup / pl_index_lookup / pl_segment_find_timestamp."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib
from pl_native_helpers import batch_of_size


def _fill(s, sizes, tss=None, gaps=None):
    """Append one batch per size (records = 1 + size % 4); gaps: offsets skipped before."""
    for i, sz in enumerate(sizes):
        ts = tss[i] if tss else 1000 + i
        b = batch_of_size(sz, base_timestamp=ts, n_records=1 + sz % 4)
        if gaps:
            import struct
            base = s.c.next_offset + gaps[i]
            b = struct.pack(">q", base) + b[8:]
            assert s.append(b, assign=False)[0] == lib.PL_OK
        else:
            assert s.append(b)[0] == lib.PL_OK
    return s.batches()


def model_read(batches, offset, max_bytes, max_offset, max_batches):
    out = []
    if offset >= max_offset:
        return out
    start = None
    for b in batches:
        if b.last < offset:
            continue
        if b.base >= max_offset:
            break
        if start is None:
            start = b.pos
        elif b.pos + b.size - start > max_bytes:
            break
        out.append(b.pos)
        if len(out) == max_batches:
            break
    return out


@pytest.fixture
def filled(make_seg):
    s = make_seg(base_offset=1000, interval=300, index_entries=512, log_bytes=1 << 17)
    rng = random.Random(7)
    sizes = [rng.choice([61, 80, 150, 400, 900, 2000]) for _ in range(120)]
    batches = _fill(s, sizes)
    return s, batches


def test_read_every_offset_matches_model(filled):
    s, batches = filled
    for off in range(s.c.base_offset - 2, s.c.next_offset + 2):
        for max_bytes in (0, 100, 1000, 5000, 1 << 30):
            st_, pos, end = s.read(off, max_bytes=max_bytes)
            assert st_ == lib.PL_OK
            expect = model_read(batches, off, max_bytes, 1 << 62, 1024)
            if off >= s.c.next_offset:
                expect = []
            assert pos == expect, (off, max_bytes)
            if pos:
                last = next(b for b in batches if b.pos == pos[-1])
                assert end == last.pos + last.size
                assert end - pos[0] <= max_bytes or len(pos) == 1


def test_read_at_least_one_batch_even_if_larger(filled):
    s, batches = filled
    big = next(b for b in batches if b.size >= 2000)
    st_, pos, end = s.read(big.base, max_bytes=1)
    assert st_ == lib.PL_OK and pos == [big.pos] and end == big.pos + big.size


def test_read_max_offset(filled):
    s, batches = filled
    b5 = batches[5]
    # stops before a batch whose base >= max_offset
    st_, pos, _ = s.read(batches[0].base, max_offset=b5.base)
    assert pos == [b.pos for b in batches[:5]]
    # a batch straddling max_offset is included
    st_, pos, _ = s.read(batches[0].base, max_offset=b5.base + 1)
    assert pos == [b.pos for b in batches[:6]]
    # nothing when offset >= max_offset
    st_, pos, end = s.read(b5.base, max_offset=b5.base)
    assert st_ == lib.PL_OK and pos == [] and end == 0


def test_read_max_batches(filled):
    s, batches = filled
    st_, pos, end = s.read(batches[3].base, max_batches=4)
    assert pos == [b.pos for b in batches[3:7]]
    assert end == batches[6].pos + batches[6].size
    positions = ffi.new("uint64_t[1]")
    n = ffi.new("uint32_t *")
    e = ffi.new("uint64_t *")
    assert lib.pl_segment_read(s.c, 0, 100, 1 << 40, positions, 0, n, e) == lib.PL_E_ARG
    assert lib.pl_segment_read(s.c, -1, 100, 1 << 40, positions, 1, n, e) == lib.PL_E_ARG


def test_read_empty_segment(make_seg):
    s = make_seg()
    assert s.read(0) == (lib.PL_OK, [], 0)
    assert s.lookup(0)[0] == lib.PL_E_OFFSET_RANGE
    assert s.find_ts(0)[0] == lib.PL_E_OFFSET_RANGE


def test_lookup_every_offset(filled):
    s, batches = filled
    for b in batches:
        for off in {b.base, (b.base + b.last) // 2, b.last}:
            assert s.lookup(off) == (lib.PL_OK, b.pos)
    assert s.lookup(s.c.next_offset)[0] == lib.PL_E_OFFSET_RANGE
    assert s.lookup(s.c.base_offset - 5) == (lib.PL_OK, 0)


def test_index_lookup(filled):
    s, batches = filled
    oi = s.oi()
    rel = ffi.new("uint32_t *")
    pos = ffi.new("uint32_t *")
    assert lib.pl_index_lookup(s.c, 0, rel, pos) == lib.PL_OK and (rel[0], pos[0]) == (0, 0)
    for off in range(s.c.base_offset, s.c.next_offset + 3):
        assert lib.pl_index_lookup(s.c, off, rel, pos) == lib.PL_OK
        cands = [e for e in oi if e[0] <= off - s.c.base_offset]
        assert (rel[0], pos[0]) == (cands[-1] if cands else (0, 0))


def test_read_with_offset_gaps(make_seg):
    s = make_seg(base_offset=0, interval=0)
    batches = _fill(s, [80, 90, 100, 110, 120], gaps=[3, 0, 10, 1, 0])
    # offsets inside a gap read from the next batch
    for b_prev, b in zip([None] + batches, batches):
        lo = 0 if b_prev is None else b_prev.last + 1
        for off in range(lo, b.base + 1):
            assert s.read(off)[1][0] == b.pos
            assert s.lookup(off) == (lib.PL_OK, b.pos)


def brute_find_ts(batches, ts):
    for b in batches:
        if b.max_ts >= ts:
            return b.pos, b.base
    return None


@pytest.mark.parametrize("interval", [0, 200, 1 << 20])
def test_find_timestamp_matches_model(make_seg, interval):
    rng = random.Random(interval)
    s = make_seg(interval=interval, index_entries=512, log_bytes=1 << 17)
    tss = [rng.choice([-1, 5, 10, 10, 20]) + i // 3 for i in range(100)]
    batches = _fill(s, [rng.choice([61, 150, 300]) for _ in range(100)], tss=tss)
    for ts in range(-3, max(tss) + 3):
        st_, pos, off = s.find_ts(ts)
        expect = brute_find_ts(batches, ts)
        if expect is None:
            assert st_ == lib.PL_E_OFFSET_RANGE
        else:
            assert st_ == lib.PL_OK and (pos, off) == expect, ts


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=61, max_value=1500), min_size=1, max_size=60),
    tss=st.lists(st.integers(min_value=-1, max_value=100), min_size=60, max_size=60),
    interval=st.sampled_from([0, 100, 1000, 4096]),
    queries=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 6000), st.integers(0, 400),
                               st.integers(1, 10)), min_size=1, max_size=20),
)
def test_read_and_find_match_model(make_seg, sizes, tss, interval, queries):
    s = make_seg(base_offset=0, interval=interval, index_entries=256, log_bytes=1 << 17)
    batches = _fill(s, sizes, tss=tss[: len(sizes)])
    for off, max_bytes, max_offset, max_batches in queries:
        st_, pos, _ = s.read(off, max_bytes=max_bytes, max_offset=max_offset,
                             max_batches=max_batches)
        expect = [] if off >= s.c.next_offset else model_read(batches, off, max_bytes,
                                                              max_offset, max_batches)
        assert st_ == lib.PL_OK and pos == expect
    for ts in set(tss):
        st_, pos, off = s.find_ts(ts)
        expect = brute_find_ts(batches, ts)
        assert (st_ == lib.PL_OK and (pos, off) == expect) or (expect is None and st_ == lib.PL_E_OFFSET_RANGE)


def test_snapshot(filled):
    s, batches = filled
    snap = ffi.new("pl_segment_snapshot *")
    lib.pl_segment_snapshot_get(s.c, snap)
    assert (snap.log_size, snap.next_offset, snap.max_timestamp) == (
        s.c.log_size, s.c.next_offset, s.c.max_timestamp)


def test_corrupt_index_entry_never_reads_out_of_bounds(make_seg):
    s = make_seg(interval=0)
    _fill(s, [100, 100, 100])
    # point entry 1 past log_size / at a non-batch position
    import struct
    s.maps[1][8:16] = struct.pack(">II", 1, 60000)
    assert s.read(1)[0] == lib.PL_E_INDEX
    s.maps[1][8:16] = struct.pack(">II", 1, 50)
    assert s.read(1)[0] != lib.PL_OK
    assert lib.pl_segment_check_indexes(s.c) == lib.PL_E_INDEX


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    junk=st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=16)),
                  min_size=1, max_size=12),
    where=st.sampled_from(["log", "index", "timeindex", "counts"]),
    queries=st.lists(st.integers(-2, 300), min_size=1, max_size=8),
)
def test_corrupt_segment_never_reads_out_of_bounds(make_seg, junk, where, queries):
    """Whatever the mapped bytes say, the C functions return a status (run under ASan)."""
    s = make_seg(base_offset=0, interval=120, index_entries=64, log_bytes=4096)
    _fill(s, [61, 100, 180, 300, 90, 70, 400, 61, 250])
    m = {"log": s.maps[0], "index": s.maps[1], "timeindex": s.maps[2]}.get(where)
    for at, data in junk:
        if m is not None:
            at %= len(m)
            m[at: at + len(data)] = data[: len(m) - at]
        else:
            s.c.index_entries = at % 80
            s.c.timeindex_entries = (at * 7) % 80
            s.c.log_size = (at * 13) % 5000
    for q in queries:
        if q >= 0:
            s.read(q, max_bytes=q * 10)
            s.lookup(q)
        s.find_ts(q)
        rel = ffi.new("uint32_t *")
        pos = ffi.new("uint32_t *")
        lib.pl_index_lookup(s.c, q, rel, pos)
    lib.pl_segment_check_indexes(s.c)
    if s.c.log_size <= s.c.log_capacity:
        lib.pl_segment_load_clean(s.c, s.c.log_size)
        lib.pl_segment_check_indexes(s.c)
    size = ffi.new("uint64_t *")
    lib.pl_segment_truncate(s.c, queries[0], size)
    t = ffi.new("uint64_t *")
    s.c.index_entries = min(s.c.index_entries, 64)
    s.c.timeindex_entries = min(s.c.timeindex_entries, 64)
    lib.pl_segment_recover(s.c, 0, t)
    lib.pl_segment_recover(s.c, queries[-1] % 5000 if queries[-1] >= 0 else 0, t)
    assert s.c.log_size <= s.c.log_capacity
