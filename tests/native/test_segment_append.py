"""pl_segment_init / pl_segment_append / pl_segment_append_build."""
from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog._native import ffi, lib
from pl_native_helpers import (
    Seg,
    batch_of_size,
    check_model,
    make_batch,
)


def test_init_fresh_segment(make_seg):
    s = make_seg(base_offset=100)
    c = s.c
    assert (c.base_offset, c.log_size, c.next_offset) == (100, 0, 100)
    assert (c.max_timestamp, c.index_entries, c.timeindex_entries) == (-1, 0, 0)
    assert c.index_interval_bytes == 256 and c.bytes_since_index == 0


def test_init_rejects_bad_arguments(make_seg):
    s = make_seg(init=False)
    assert lib.pl_segment_init(s.c, -1, 4096) == lib.PL_E_ARG
    assert lib.pl_segment_init(ffi.NULL, 0, 4096) == lib.PL_E_ARG
    s.c.log = ffi.NULL
    assert lib.pl_segment_init(s.c, 0, 4096) == lib.PL_E_ARG


def test_append_one_batch_assigns_offsets(make_seg):
    s = make_seg(base_offset=50)
    b = make_batch([b"a", b"bb", b"ccc"], base_offset=999, base_timestamp=7_000)
    st_, res = s.append(b, epoch=4)
    assert st_ == lib.PL_OK
    assert (res.first_offset, res.last_offset, res.position) == (50, 52, 0)
    assert (res.bytes, res.batches, res.max_timestamp) == (len(b), 1, 7_000)
    assert s.c.next_offset == 53 and s.c.log_size == len(b)
    stored = bytes(s.log[: len(b)])
    base, _, epoch = struct.unpack_from(">qii", stored)
    assert (base, epoch) == (50, 4)
    assert stored[16:] == b[16:]  # CRC and everything it covers untouched
    assert s.oi() == [(0, 0)] and s.ti() == [(7_000, 0)]
    check_model(s)


def test_append_keeps_epoch_when_negative(make_seg):
    s = make_seg()
    b = make_batch([b"x"], epoch=9)
    assert s.append(b, epoch=-1)[0] == lib.PL_OK
    assert struct.unpack_from(">i", s.log, 12)[0] == 9


def test_append_many_batches_in_one_call_and_many_calls(make_seg):
    s = make_seg(interval=200)
    batches = [make_batch([b"v" * (i * 13 % 90)] * (1 + i % 4), base_timestamp=1000 + i)
               for i in range(30)]
    st_, res = s.append(b"".join(batches[:10]))
    assert st_ == lib.PL_OK and res.batches == 10
    for b in batches[10:]:
        assert s.append(b)[0] == lib.PL_OK
    stored = s.batches()
    assert len(stored) == 30
    expect = 0
    for info, b in zip(stored, batches):
        assert info.base == expect
        expect = info.last + 1
        assert bytes(s.log[info.pos + 8: info.pos + info.size]) == b[8:]
    assert s.c.next_offset == expect
    check_model(s)


@pytest.mark.parametrize("interval", [0, 1, 100, 256, 1000, 1 << 20])
def test_index_cadence(make_seg, interval):
    s = make_seg(interval=interval, index_entries=512)
    for i in range(60):
        b = batch_of_size(70 + (i * 37) % 300, base_timestamp=[5, 3, 9, 9, 12][i % 5] + i // 5)
        assert s.append(b)[0] == lib.PL_OK
    check_model(s)
    oi = s.oi()
    assert oi[0] == (0, 0)
    if interval <= 1:
        assert len(oi) == 60  # every batch
    if interval == 1 << 20:
        assert len(oi) == 1
    # positions strictly increasing, all at batch starts
    starts = {b.pos for b in s.batches()}
    assert all(p in starts for _, p in oi)
    ts = [t for t, _ in s.ti()]
    assert ts == sorted(set(ts))


def test_time_index_only_when_max_grows(make_seg):
    s = make_seg(interval=0)
    for t in [100, 50, 100, 200, 150, 300]:
        assert s.append(make_batch([b"x"], base_timestamp=t))[0] == lib.PL_OK
    assert s.ti() == [(100, 0), (200, 3), (300, 5)]
    assert s.c.max_timestamp == 300 and s.c.max_timestamp_offset == 5


def test_no_time_entry_without_timestamps(make_seg):
    s = make_seg(interval=0)
    for _ in range(3):
        assert s.append(make_batch([b"x"], base_timestamp=-1))[0] == lib.PL_OK
    assert s.ti() == [] and s.c.max_timestamp == -1 and len(s.oi()) == 3


def test_assign_offsets_zero_keeps_offsets(make_seg):
    s = make_seg(base_offset=10)
    b1 = make_batch([b"a", b"b"], base_offset=12)
    b2 = make_batch([b"c"], base_offset=20)
    st_, res = s.append(b1 + b2, epoch=-1, assign=False)
    assert st_ == lib.PL_OK
    assert (res.first_offset, res.last_offset) == (12, 20)
    assert [(b.base, b.last) for b in s.batches()] == [(12, 13), (20, 20)]
    assert s.c.next_offset == 21
    assert s.oi() == [(2, 0)]
    check_model(s)


@pytest.mark.parametrize("offsets", [[5], [12, 12], [12, 13]])
def test_assign_offsets_zero_rejects_offsets_going_back(make_seg, offsets):
    s = make_seg(base_offset=10)
    if offsets == [5]:
        data = make_batch([b"a"], base_offset=5)
    else:
        data = b"".join(make_batch([b"a", b"b"], base_offset=o) for o in offsets)
    before = s.state()
    assert s.append(data, assign=False)[0] == lib.PL_E_OFFSET_DELTA
    assert s.state() == before


def _unchanged(s, before_state, before_bytes):
    assert s.state() == before_state
    assert bytes(s.log) == before_bytes[0]
    assert bytes(s.maps[1]) == before_bytes[1]
    assert bytes(s.maps[2]) == before_bytes[2]


def _snap(s):
    return s.state(), (bytes(s.log), bytes(s.maps[1]), bytes(s.maps[2]))


def test_full_log_leaves_segment_unchanged(make_seg):
    s = make_seg(log_bytes=1000, interval=0)
    b = batch_of_size(300)
    assert s.append(b)[0] == lib.PL_OK
    assert s.append(b + b)[0] == lib.PL_OK
    st0, by0 = _snap(s)
    # 1000 - 3 * len(b) bytes are left: less than one more batch
    assert s.append(b)[0] == lib.PL_E_FULL
    _unchanged(s, st0, by0)
    small = make_batch([b"z"])
    assert s.append(small * 5)[0] == lib.PL_E_FULL  # all or nothing
    _unchanged(s, st0, by0)
    assert s.append(small)[0] == lib.PL_OK


def test_exactly_full_log(make_seg):
    b = make_batch([b"q" * 40])
    s = make_seg(log_bytes=len(b) * 3)
    assert s.append(b * 3)[0] == lib.PL_OK
    assert s.c.log_size == s.c.log_capacity
    assert s.append(b)[0] == lib.PL_E_FULL


def test_full_index_leaves_segment_unchanged(make_seg):
    s = make_seg(index_entries=3, interval=0)
    b = make_batch([b"x"])
    assert s.append(b * 2)[0] == lib.PL_OK
    st0, by0 = _snap(s)
    assert s.append(b * 2)[0] == lib.PL_E_FULL
    _unchanged(s, st0, by0)
    assert s.append(b)[0] == lib.PL_OK
    assert s.append(b)[0] == lib.PL_E_FULL


def test_full_time_index_is_full(make_seg):
    s = make_seg(index_entries=8, interval=0)
    # shrink the time index's capacity to 1 entry
    s.c.timeindex_capacity = 12
    assert s.append(make_batch([b"x"], base_timestamp=1))[0] == lib.PL_OK
    assert s.append(make_batch([b"x"], base_timestamp=1))[0] == lib.PL_OK  # no time entry due
    st0, by0 = _snap(s)
    assert s.append(make_batch([b"x"], base_timestamp=2))[0] == lib.PL_E_FULL
    _unchanged(s, st0, by0)


def test_relative_offset_overflow_is_full(make_seg):
    s = make_seg(base_offset=0)
    b = make_batch([b"x"], base_offset=0x80000000)
    assert s.append(b, assign=False)[0] == lib.PL_E_FULL
    b = make_batch([b"x", b"y"], base_offset=0x7FFFFFFE)  # last offset 0x7fffffff fits
    assert s.append(b, assign=False)[0] == lib.PL_OK
    assert s.c.next_offset == 0x80000000
    assert s.append(make_batch([b"y"]))[0] == lib.PL_E_FULL


def test_malformed_input_rejected_before_writing(make_seg):
    s = make_seg()
    good = make_batch([b"abc"])
    assert s.append(good)[0] == lib.PL_OK
    st0, by0 = _snap(s)
    # input ends inside the second batch
    assert s.append(good + good[:-1])[0] == lib.PL_E_TRUNCATED
    _unchanged(s, st0, by0)
    # bad magic in the second batch
    bad = bytearray(good)
    bad[16] = 1
    assert s.append(good + bytes(bad))[0] != lib.PL_OK
    _unchanged(s, st0, by0)
    # batchLength too small
    bad = bytearray(good)
    bad[8:12] = struct.pack(">i", 10)
    assert s.append(bytes(bad))[0] != lib.PL_OK
    # trailing bytes shorter than a header
    assert s.append(good + b"\x00" * 20)[0] != lib.PL_OK
    # negative lastOffsetDelta
    bad = bytearray(good)
    bad[23:27] = struct.pack(">i", -1)
    assert s.append(bytes(bad))[0] == lib.PL_E_OFFSET_DELTA
    _unchanged(s, st0, by0)
    assert s.append(b"")[0] == lib.PL_E_ARG


def test_crc_is_checked_on_the_copy(make_seg):
    # The caller validated its buffer, but it may have changed since: the CRC is checked
    # on the bytes copied into the log, so a stale CRC is refused, never published.
    s = make_seg(interval=0)
    good = make_batch([b"abc"])
    assert s.append(good)[0] == lib.PL_OK
    st0 = s.state()
    bad = bytearray(good)
    bad[-2] ^= 1  # a value byte: every header field still checks out
    for data in (bytes(bad), good + bytes(bad), bytes(bad) + good):
        assert s.append(data)[0] == lib.PL_E_CRC
        assert s.state() == st0
        # nothing half-written: a recovery scan finds exactly what was published (not
        # the copy's good leading batch, which was never published)
        assert s.recover()[0] == lib.PL_OK
        assert s.state() == st0
    assert s.append(good)[0] == lib.PL_OK
    assert [b.base for b in s.batches()] == [0, 1]


def test_append_rejects_inconsistent_segment(make_seg):
    s = make_seg(log_bytes=4096)
    s.c.log_size = 5000
    assert s.append(make_batch([b"x"]))[0] == lib.PL_E_ARG


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=40),
    groups=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=40),
    interval=st.sampled_from([0, 64, 500, 4096]),
    tss=st.lists(st.integers(min_value=-1, max_value=50), min_size=1, max_size=40),
)
def test_append_matches_model(make_seg, sizes, groups, interval, tss):
    s = make_seg(interval=interval, index_entries=256, log_bytes=1 << 16)
    batches = [batch_of_size(sz, base_timestamp=tss[i % len(tss)], n_records=1 + sz % 3)
               for i, sz in enumerate(sizes)]
    i = 0
    g = 0
    while i < len(batches):
        k = groups[g % len(groups)]
        g += 1
        st_, res = s.append(b"".join(batches[i:i + k]))
        assert st_ == lib.PL_OK
        i += k
    check_model(s)
    assert len(s.batches()) == len(batches)


# --------------------------------------------------------------- append_build


def _build_input(values, *, timestamps=None, keys=None, base_timestamp=1234, epoch=-1):
    keep = []
    inp = ffi.new("pl_batch_input *")
    inp.count = len(values)
    vbuf = ffi.from_buffer(b"".join(values))
    vl = ffi.new("int32_t[]", [len(v) for v in values])
    keep += [vbuf, vl]
    inp.values = vbuf
    inp.value_lens = vl
    if keys is not None:
        kbuf = ffi.from_buffer(b"".join(k or b"" for k in keys))
        kl = ffi.new("int32_t[]", [-1 if k is None else len(k) for k in keys])
        keep += [kbuf, kl]
        inp.keys = kbuf
        inp.key_lens = kl
    if timestamps is not None:
        t = ffi.new("int64_t[]", timestamps)
        keep.append(t)
        inp.timestamps = t
    inp.base_offset = 0
    inp.base_timestamp = base_timestamp
    inp.producer_id = -1
    inp.producer_epoch = -1
    inp.base_sequence = -1
    inp.partition_leader_epoch = epoch
    inp.attributes = 0
    return inp, keep


def _append_build(s, inp, res):
    """pl_segment_append_build into the mapping, or (the segment writing through its
    descriptor) pl_segment_append_build_buffered: built in a scratch buffer, one pwrite."""
    if s.write_path == "pwrite":
        scratch = ffi.new("uint8_t[]", 1 << 16)
        return lib.pl_segment_append_build_buffered(s.c, inp, scratch, len(scratch), res)
    return lib.pl_segment_append_build(s.c, inp, res)


def test_append_build_buffered_scratch_too_small_and_failed_write(tmp_path, real_batch_c):
    """The scratch buffer too small for the batch: PL_E_NOSPACE (not PL_E_FULL: the
    segment has room); the write failing: PL_E_IO, errno set.  Either way nothing is
    published and the log's bytes are unchanged; then a good append works."""
    import os

    s = Seg(tmp_path, write_path="pwrite")
    try:
        inp, keep = _build_input([b"x" * 100] * 40)
        bound = int(lib.pl_batch_size_bound(inp))
        res = ffi.new("pl_append_result *")
        st0, raw0 = s.state(), bytes(s.log)
        small = ffi.new("uint8_t[]", bound // 2)
        assert lib.pl_segment_append_build_buffered(s.c, inp, small, len(small), res) == lib.PL_E_NOSPACE
        assert s.state() == st0 and bytes(s.log) == raw0
        ro = os.open(s.paths[0], os.O_RDONLY)
        try:
            s.c.log_fd_plus_one = ro + 1
            big = ffi.new("uint8_t[]", bound)
            assert lib.pl_segment_append_build_buffered(s.c, inp, big, len(big), res) == lib.PL_E_IO
            assert ffi.errno == errno.EBADF
            assert s.state() == st0 and bytes(s.log) == raw0
            assert s.recover()[0] == lib.PL_OK and s.state() == st0
        finally:
            s.attach()
            os.close(ro)
        assert lib.pl_segment_append_build_buffered(s.c, inp, big, len(big), res) == lib.PL_OK
        assert (res.first_offset, res.last_offset) == (0, 39)
        check_model(s)
    finally:
        s.close()


def test_append_build(make_seg, real_batch_c):
    s = make_seg(base_offset=40, interval=0)
    assert s.append(make_batch([b"pre"]))[0] == lib.PL_OK
    inp, keep = _build_input([b"hello", b"world", b"!"], timestamps=[5, 9, 7],
                             keys=[b"k", None, b"kk"], epoch=3)
    res = ffi.new("pl_append_result *")
    assert _append_build(s, inp, res) == lib.PL_OK
    assert (res.first_offset, res.last_offset, res.batches) == (41, 43, 1)
    assert res.position == s.batches()[1].pos and res.max_timestamp == 9
    b = s.batches()[1]
    assert (b.base, b.last, b.max_ts, b.epoch) == (41, 43, 9, 3)
    raw = bytes(s.log[b.pos: b.pos + b.size])
    assert lib.pl_batch_validate(raw, len(raw), ffi.NULL) == lib.PL_OK
    check_model(s)
    # equal to appending the same batch built elsewhere
    s2 = make_seg(base_offset=40, interval=0)
    assert s2.append(make_batch([b"pre"]))[0] == lib.PL_OK
    assert s2.append(raw, epoch=-1)[0] == lib.PL_OK
    assert s2.state() == s.state()


def test_append_build_full(make_seg, real_batch_c):
    inp, keep = _build_input([b"x" * 100] * 4)
    bound = lib.pl_batch_size_bound(inp)
    s = make_seg(log_bytes=int(bound) - 1)
    st0 = s.state()
    raw0 = bytes(s.log)
    res = ffi.new("pl_append_result *")
    assert _append_build(s, inp, res) == lib.PL_E_FULL
    assert s.state() == st0 and bytes(s.log) == raw0
    # index full: entry due (empty segment) but no index room
    s2 = make_seg(index_entries=1)
    s2.c.index_capacity = 0
    s2.c.timeindex_capacity = 0
    assert _append_build(s2, inp, res) == lib.PL_E_FULL
    assert s2.c.log_size == 0


def test_append_build_many_matches_model(make_seg, real_batch_c):
    s = make_seg(interval=300, index_entries=256)
    res = ffi.new("pl_append_result *")
    for i in range(50):
        inp, keep = _build_input([b"r%d" % j * (i % 7) for j in range(1 + i % 5)],
                                 base_timestamp=1000 + (i * 7) % 40)
        assert _append_build(s, inp, res) == lib.PL_OK
    check_model(s)
    raw = bytes(s.log[: s.c.log_size])
    n = ffi.new("uint32_t *")
    vb = ffi.new("uint64_t *")
    nr = ffi.new("uint64_t *")
    assert lib.pl_batches_validate(raw, len(raw), n, vb, nr) == lib.PL_OK
    assert n[0] == 50 and vb[0] == len(raw)


def test_batch_build_one_pass_reports_bad_input_before_lack_of_room_and_leaves_zeros(real_batch_c):
    # pl_batch_build checks and writes each record in one pass: a bad record after the
    # room ran out is still reported as bad input, and a refused build zeroes what it wrote.
    values = [b"v" * 50] * 8
    inp, keep = _build_input(values)
    bound = int(lib.pl_batch_size_bound(inp))
    whole = ffi.new("uint8_t[]", bound)
    n = lib.pl_batch_build(inp, whole, bound)
    assert n > 0
    for cap in (0, 61, bound // 2, n - 1):  # too small, records partly written first
        out = ffi.new("uint8_t[]", bound)
        assert lib.pl_batch_build(inp, out, cap) == lib.PL_E_NOSPACE
        assert bytes(ffi.buffer(out, bound)) == bytes(bound)
    bad, keep2 = _build_input(values)
    lens = ffi.new("int32_t[]", [50] * 7 + [-2])  # the last record's length is invalid
    keep2.append(lens)
    bad.value_lens = lens
    for cap in (bound // 2, bound):
        out = ffi.new("uint8_t[]", bound)
        assert lib.pl_batch_build(bad, out, cap) == lib.PL_E_ARG
        assert bytes(ffi.buffer(out, bound)) == bytes(bound)
    exact = ffi.new("uint8_t[]", n)
    assert lib.pl_batch_build(inp, exact, n) == n
    assert bytes(ffi.buffer(exact, n)) == bytes(ffi.buffer(whole, n))


def test_a_failed_write_publishes_nothing(make_seg, tmp_path):
    """The copy through the file fails (here: a descriptor opened read-only): PL_E_IO
    with errno set, nothing published, and a recovery scan finds only what was."""
    import os

    s = make_seg()
    good = make_batch([b"abc"])
    assert s.append(good)[0] == lib.PL_OK
    st0 = s.state()
    ro = os.open(s.paths[0], os.O_RDONLY)
    try:
        s.c.log_fd_plus_one = ro + 1
        assert s.append(make_batch([b"def"]))[0] == lib.PL_E_IO
        assert ffi.errno == errno.EBADF
        assert s.state() == st0
        assert s.recover()[0] == lib.PL_OK
        assert s.state() == st0
    finally:
        s.attach()
        os.close(ro)
    assert s.append(good)[0] == lib.PL_OK
    assert [b.base for b in s.batches()] == [0, 1]
